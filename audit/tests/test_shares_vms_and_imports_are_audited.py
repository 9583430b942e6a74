"""Share links, a learner's snapshots and ISOs, lab imports and staff's lab and image actions
each leave one audit entry per thing changed, with who and from where."""

from __future__ import annotations

import shutil
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from audit.tests.helpers import ADDRESS, actions_logged, client_for, only_entry, running_session
from labs.models import Image, Lab
from labs.tests.test_import_lab import write_lab
from labs.tests.test_killercoda_import import SCENARIOS
from preview import actions
from preview.models import PreviewShare
from sessions_app.models import Session
from vms import snapshots
from vms.models import Snapshot

# The ISO and snapshot tests' autouse fixtures keep media and snapshots in tmp_path here too.
from vms.tests.test_isos import iso_bytes, iso_settings, post_iso  # noqa: F401 - fixture
from vms.tests.test_snapshots_access import ready_snapshot, snapshot_dir, vm_lab  # noqa: F401 - fixtures


@pytest.fixture
def shared_session(owner, lab) -> Session:
    lab.exposed_ports = [8080]
    lab.save(update_fields=["exposed_ports"])
    return running_session(owner, lab)


def test_making_and_revoking_a_share_link_is_recorded_without_the_link(owner, shared_session):
    client = client_for(owner)
    client.post(reverse("sessions:shares:create", args=[shared_session.pk]), {"port": "8080", "minutes": "30"})
    share = PreviewShare.objects.get()
    client.post(reverse("sessions:shares:revoke", args=[shared_session.pk, share.pk]))
    client.post(reverse("sessions:shares:revoke", args=[shared_session.pk, share.pk]))  # twice: harmless

    made, revoked = only_entry("share.create"), only_entry("share.revoke")
    for entry in (made, revoked):
        assert (entry.actor, entry.address, entry.target_type, entry.target_id) == (
            owner, ADDRESS, "preview.previewshare", str(share.pk))
        assert entry.target_label.startswith("port 8080 of hello-shell for olivia")
    assert made.extra == {"session": str(shared_session.pk), "port": 8080, "minutes": 30}
    assert revoked.extra == {"session": str(shared_session.pk), "port": 8080}


def test_staff_revoking_share_links_in_the_admin_is_recorded_per_link(owner, staff_user, shared_session):
    shares = [actions.create_share(shared_session, 8080, 10, owner) for _ in range(2)]
    client_for(staff_user).post(reverse("admin:preview_previewshare_changelist"),
                                {"action": "revoke", "_selected_action": [s.pk for s in shares]})
    revoked = AuditEntry.objects.filter(action="share.revoke")
    assert sorted(e.target_id for e in revoked) == sorted(str(s.pk) for s in shares)
    assert {(e.actor, e.address) for e in revoked} == {(staff_user, ADDRESS)}


def test_booting_and_deleting_a_snapshot_are_recorded(owner, ready_snapshot,  # noqa: F811 - the fixture
                                                       django_capture_on_commit_callbacks):
    client = client_for(owner)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sessions:snapshots:boot", args=[ready_snapshot.pk]))
    session = Session.objects.get(boot_snapshot=ready_snapshot)
    started = only_entry("session.start")
    assert (started.actor, started.address, started.target_id) == (owner, ADDRESS, str(session.pk))

    client.post(reverse("sessions:stop", args=[session.pk]))
    Session.objects.filter(pk=session.pk).update(state="stopped")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sessions:snapshots:delete", args=[ready_snapshot.pk]))
    assert not Snapshot.objects.exists()
    deleted = only_entry("snapshot.delete")
    assert (deleted.actor, deleted.address, deleted.target_type, deleted.target_id, deleted.target_label) == (
        owner, ADDRESS, "vms.snapshot", str(ready_snapshot.pk), "before the exam")


def test_uploading_and_deleting_an_iso_are_recorded(owner, tmp_path, django_capture_on_commit_callbacks):
    client = client_for(owner)
    post_iso(client, tmp_path, iso_bytes(label=b"LIVE"), "live.iso")
    iso = Image.objects.get(owner=owner)
    uploaded = only_entry("iso.upload")
    assert (uploaded.actor, uploaded.address, uploaded.target_id, uploaded.target_label) == (
        owner, ADDRESS, str(iso.pk), "live.iso")
    assert uploaded.extra == {"sha256": iso.sha256, "size_bytes": iso.size_bytes}

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sessions:isos:delete", args=[iso.pk]))
    assert not Image.objects.filter(pk=iso.pk).exists()
    deleted = only_entry("iso.delete")
    assert (deleted.actor, deleted.address, deleted.target_id) == (owner, ADDRESS, str(iso.pk))


def test_import_lab_records_each_lab_as_the_system_and_a_dry_run_records_nothing(db, tmp_path):
    first, second = write_lab(tmp_path, "first-lab"), write_lab(tmp_path, "second-lab")
    call_command("import_lab", str(first), str(second), "--dry-run", stdout=StringIO())
    assert not AuditEntry.objects.exists()

    call_command("import_lab", str(first), str(second), stdout=StringIO())
    call_command("import_lab", str(first), stdout=StringIO())  # an update is an import too

    entries = AuditEntry.objects.filter(action="lab.import").order_by("pk")
    labs = {lab.slug: str(lab.pk) for lab in Lab.objects.all()}
    assert [(e.target_id, e.extra["created"]) for e in entries] == [
        (labs["first-lab"], True), (labs["second-lab"], True), (labs["first-lab"], False)]
    assert {(e.who, e.address, e.extra["source"]) for e in entries} >= {("system", None, str(first))}


def test_a_killercoda_scenario_import_is_recorded(db, settings, tmp_path):
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    scenario = shutil.copytree(SCENARIOS / "web-basics", tmp_path / "web-basics")
    call_command("import_lab", str(scenario), stdout=StringIO())
    entry = only_entry("lab.import")
    assert (entry.target_label, entry.extra["source"]) == (Lab.objects.get().title, str(Path(scenario)))


def test_staff_publishing_labs_and_disabling_images_is_recorded(staff_user, lab):
    client = client_for(staff_user)
    client.post(reverse("admin:labs_lab_changelist"), {"action": "unpublish", "_selected_action": [lab.pk]})
    client.post(reverse("admin:labs_image_changelist"), {"action": "deactivate",
                                                         "_selected_action": [lab.image.pk]})
    assert actions_logged() == ["image.disable", "lab.unpublish"]
    unpublished, disabled = only_entry("lab.unpublish"), only_entry("image.disable")
    assert (unpublished.actor, unpublished.address, unpublished.target_id) == (staff_user, ADDRESS, str(lab.pk))
    assert (disabled.actor, disabled.target_type, disabled.target_label) == (staff_user, "labs.image", "tiny")


def test_the_collector_deleting_an_expired_snapshot_is_the_systems_action(
        owner, ready_snapshot, settings, django_capture_on_commit_callbacks):  # noqa: F811 - the fixture
    Snapshot.objects.filter(pk=ready_snapshot.pk).update(
        created_at=timezone.now() - timedelta(days=settings.LAB_SNAPSHOT_MAX_AGE_DAYS + 1))
    with django_capture_on_commit_callbacks(execute=True):
        assert snapshots.collect_garbage().expired == 1
    entry = only_entry("snapshot.delete")
    assert (entry.who, entry.address, entry.target_id) == ("system", None, str(ready_snapshot.pk))
    assert entry.extra == {"why": "expired", "owner": owner.pk}
