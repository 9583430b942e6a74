# The PreviewShare model moves here from sessions_app; its table stays where it is.

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("sessions_app", "0003_session_foreground_queue"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="PreviewShare",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("port", models.PositiveIntegerField()),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("expires_at", models.DateTimeField()),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        ("created_by", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                         related_name="+", to=settings.AUTH_USER_MODEL)),
                        ("session", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                      related_name="preview_shares", to="sessions_app.session")),
                    ],
                    options={"db_table": "sessions_app_previewshare", "ordering": ["-created_at"]},
                ),
            ],
            database_operations=[],
        ),
    ]
