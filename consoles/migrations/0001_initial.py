# The TerminalRecording model moves here from sessions_app; its table stays where it is.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("sessions_app", "0003_session_foreground_queue"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="TerminalRecording",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("terminal_name", models.CharField(max_length=40)),
                        ("file", models.FileField(max_length=300, upload_to="recordings/%Y/%m/")),
                        ("width", models.PositiveIntegerField(default=80)),
                        ("height", models.PositiveIntegerField(default=24)),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("ended_at", models.DateTimeField(blank=True, null=True)),
                        ("size_bytes", models.BigIntegerField(default=0)),
                        ("session", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                      related_name="recordings", to="sessions_app.session")),
                    ],
                    options={"db_table": "sessions_app_terminalrecording", "ordering": ["-started_at"]},
                ),
            ],
            database_operations=[],
        ),
    ]
