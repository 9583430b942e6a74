# The Snapshot model moves here from sessions_app; its table and constraint stay where they are.

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("labs", "0001_initial"),
        ("sessions_app", "0003_session_foreground_queue"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Snapshot",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("name", models.CharField(max_length=100)),
                        ("path", models.CharField(blank=True, max_length=500)),
                        ("size_bytes", models.BigIntegerField(default=0)),
                        ("reserved_bytes", models.BigIntegerField(default=0)),
                        ("includes_memory", models.BooleanField(default=False)),
                        ("status", models.CharField(choices=[("creating", "Creating"), ("ready", "Ready"),
                                                             ("failed", "Failed")],
                                                    default="creating", max_length=10)),
                        ("error", models.TextField(blank=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("lab", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                  related_name="snapshots", to="labs.lab")),
                        ("owner", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                    related_name="snapshots", to=settings.AUTH_USER_MODEL)),
                        ("source_session", models.ForeignKey(blank=True, null=True,
                                                             on_delete=django.db.models.deletion.SET_NULL,
                                                             related_name="snapshots", to="sessions_app.session")),
                    ],
                    options={
                        "db_table": "sessions_app_snapshot",
                        "ordering": ["-created_at"],
                        "constraints": [models.CheckConstraint(condition=models.Q(("size_bytes__gte", 0)),
                                                               name="snapshot_size_not_negative")],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
