# PreviewShare, TerminalRecording and Snapshot now belong to the preview, consoles and vms apps.
# Their tables stay; only Django's state moves, and the content types follow so that
# permissions and admin history keep pointing at the same rows.

import django.db.models.deletion
from django.db import migrations, models

MOVED = {"previewshare": "preview", "terminalrecording": "consoles", "snapshot": "vms"}


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if not ContentType.objects.filter(app_label=app_label, model=model).exists():
            ContentType.objects.filter(app_label="sessions_app", model=model).update(app_label=app_label)


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if not ContentType.objects.filter(app_label="sessions_app", model=model).exists():
            ContentType.objects.filter(app_label=app_label, model=model).update(app_label="sessions_app")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("sessions_app", "0003_session_foreground_queue"),
        ("consoles", "0001_initial"),
        ("preview", "0001_initial"),
        ("vms", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="session",
                    name="boot_snapshot",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                            related_name="booted_sessions", to="vms.snapshot"),
                ),
                migrations.DeleteModel(name="PreviewShare"),
                migrations.DeleteModel(name="TerminalRecording"),
                migrations.DeleteModel(name="Snapshot"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
