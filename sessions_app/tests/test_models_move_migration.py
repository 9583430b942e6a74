"""Share links, recordings and snapshots moved to the preview, consoles and vms apps
(sessions_app/migrations/0004): a database with rows in the old schema migrates forward with
every row, every link between them, the content types and their permissions, and back again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

# Apps made after the move whose models point at sessions stay at zero meanwhile: their first
# migration needs a later sessions_app.
LATER_APPS = [("watchdog", None)]
BEFORE = [
    ("sessions_app", "0003_session_foreground_queue"),
    ("consoles", None),
    ("preview", None),
    ("vms", None),
    *LATER_APPS,
]
AFTER = [
    ("sessions_app", "0004_models_move_to_their_apps"),
    ("consoles", "0001_initial"),
    ("preview", "0001_initial"),
    ("vms", "0001_initial"),
    *LATER_APPS,
]

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(targets: list[tuple[str, str | None]]):  # type: ignore[no-untyped-def]
    MigrationExecutor(connection).migrate(targets)
    # The state those targets describe, with every other app as it is now (an app taken back to
    # zero adds nothing to it).
    loader = MigrationExecutor(connection).loader
    others = [node for node in loader.graph.leaf_nodes() if node[0] not in {app for app, _ in targets}]
    return loader.project_state(others + [t for t in targets if t[1] is not None]).apps


@pytest.fixture
def old_schema():  # type: ignore[no-untyped-def]
    apps = migrate(BEFORE)
    yield apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # leave the test database current


def fill_old_schema(apps):  # type: ignore[no-untyped-def]
    # As in a database from before the move: no content types of the new apps yet.
    apps.get_model("contenttypes", "ContentType").objects.filter(app_label__in=["consoles", "preview", "vms"]).delete()
    User = apps.get_model("auth", "User")
    Image = apps.get_model("labs", "Image")
    Lab = apps.get_model("labs", "Lab")
    Session = apps.get_model("sessions_app", "Session")
    owner = User.objects.create(username="ada")
    image = Image.objects.create(name="vm-image", kind="vm")
    lab = Lab.objects.create(slug="vm-lab", title="VM lab", image=image)
    parent = Session.objects.create(user=owner, lab=lab, state="stopped", runner_name="qemu")
    snapshot = apps.get_model("sessions_app", "Snapshot").objects.create(
        owner=owner, lab=lab, source_session=parent, name="before exam", path="/snap/a.qcow2", size_bytes=1234,
        status="ready")
    child = Session.objects.create(user=owner, lab=lab, state="running", runner_name="qemu", boot_snapshot=snapshot)
    share = apps.get_model("sessions_app", "PreviewShare").objects.create(
        session=child, port=8080, created_by=owner, expires_at=timezone.now() + timedelta(hours=1))
    recording = apps.get_model("sessions_app", "TerminalRecording").objects.create(
        session=child, terminal_name="1", file="recordings/2026/12/a.cast", size_bytes=99)
    return {"owner": owner, "parent": parent, "child": child, "snapshot": snapshot.pk, "share": share.pk,
            "recording": recording.pk}


def test_rows_of_the_old_schema_are_found_through_the_new_apps(old_schema):  # type: ignore[no-untyped-def]
    rows = fill_old_schema(old_schema)
    ContentType = old_schema.get_model("contenttypes", "ContentType")
    old_type = ContentType.objects.get_or_create(app_label="sessions_app", model="snapshot")[0]
    Permission = old_schema.get_model("auth", "Permission")
    permission = Permission.objects.get_or_create(content_type=old_type, codename="view_snapshot",
                                                  defaults={"name": "Can view snapshot"})[0]

    apps = migrate(AFTER)

    Snapshot = apps.get_model("vms", "Snapshot")
    snapshot = Snapshot.objects.get(pk=rows["snapshot"])
    assert (snapshot.name, snapshot.size_bytes, snapshot.status) == ("before exam", 1234, "ready")
    assert snapshot.source_session_id == rows["parent"].pk
    child = apps.get_model("sessions_app", "Session").objects.get(pk=rows["child"].pk)
    assert child.boot_snapshot_id == snapshot.pk
    assert child.boot_snapshot._meta.label == "vms.Snapshot"

    share = apps.get_model("preview", "PreviewShare").objects.get(pk=rows["share"])
    assert (share.session_id, share.port, share.created_by_id) == (child.pk, 8080, rows["owner"].pk)
    recording = apps.get_model("consoles", "TerminalRecording").objects.get(pk=rows["recording"])
    assert (recording.session_id, recording.file.name, recording.size_bytes) == (
        child.pk, "recordings/2026/12/a.cast", 99)

    # The content type moved with its model, so staff permissions granted before still apply.
    moved = apps.get_model("contenttypes", "ContentType").objects.get(pk=old_type.pk)
    assert (moved.app_label, moved.model) == ("vms", "snapshot")
    assert apps.get_model("auth", "Permission").objects.get(pk=permission.pk).content_type_id == old_type.pk


def test_the_move_migrates_back_without_losing_rows(old_schema):  # type: ignore[no-untyped-def]
    rows = fill_old_schema(old_schema)
    migrate(AFTER)
    apps = migrate(BEFORE)
    assert apps.get_model("sessions_app", "Snapshot").objects.filter(pk=rows["snapshot"]).exists()
    assert apps.get_model("sessions_app", "PreviewShare").objects.filter(pk=rows["share"]).exists()
    assert apps.get_model("sessions_app", "TerminalRecording").objects.filter(pk=rows["recording"]).exists()


def test_a_fresh_database_gets_the_tables_once() -> None:
    tables = set(connection.introspection.table_names())
    assert {"sessions_app_snapshot", "sessions_app_previewshare", "sessions_app_terminalrecording"} <= tables
    assert not {"vms_snapshot", "preview_previewshare", "consoles_terminalrecording"} & tables
