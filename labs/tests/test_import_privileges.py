"""Lab files cannot grant what only staff may: refused without --allow-privileged, kept on re-import.

From issue 9: `network_mode: unrestricted` together with `docker_access: true` was accepted
from a file. labs/privileges.py holds the rules, labs/LAB_FORMAT.md ("Privileged settings")
documents them.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from labs.labformat import LabImportError, import_labs
from labs.models import Image, Lab
from labs.tests.test_import_lab import MINIMAL, write_lab

pytestmark = pytest.mark.django_db

SCENARIOS = Path(__file__).resolve().parent / "killercoda_scenarios"
LAB = MINIMAL.format(slug="open-lab")


def make_lab(root: Path, extra: str = "") -> Path:
    return write_lab(root, "open-lab", LAB + extra)


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(LabImportError) as caught:
        import_labs([directory])
    assert not Lab.objects.exists()
    return [str(problem) for problem in caught.value.problems]


def run_import(*args: str) -> str:
    out = StringIO()
    call_command("import_lab", *args, stdout=out)
    return out.getvalue()


def test_unrestricted_network_with_docker_is_refused_naming_the_key_and_its_line(tmp_path):
    lab = make_lab(tmp_path, "network_mode: unrestricted\ndocker_access: true\n")
    [problem] = problems_of(lab)
    assert problem.startswith(f"{lab / 'lab.yaml'}:10: network_mode: 'unrestricted' is for staff to grant: ")
    assert problem.endswith("Set it in the admin, or review the lab and import it with --allow-privileged")
    with pytest.raises(CommandError, match="network_mode: 'unrestricted' is for staff to grant"):
        run_import(str(lab))
    assert not Lab.objects.exists()


def test_the_operator_may_allow_it_after_review_and_the_output_says_what_was_granted(tmp_path):
    lab = make_lab(tmp_path, "network_mode: unrestricted\ndocker_access: true\n")
    output = run_import(str(lab), "--allow-privileged")
    assert output.splitlines() == [
        "created open-lab (1 step, new image tiny-test)",
        "  granted network_mode 'unrestricted' (--allow-privileged)",
    ]
    created = Lab.objects.get(slug="open-lab")
    assert (created.network_mode, created.docker_access) == ("unrestricted", True)


def test_a_runner_outside_the_allowed_list_is_refused_unless_the_operator_lists_it(tmp_path, settings):
    lab = make_lab(tmp_path, "runner: trusted-dind\n")
    [problem] = problems_of(lab)
    assert problem.startswith(f"{lab / 'lab.yaml'}:10: runner: 'trusted-dind' is for staff to grant: lab files may "
                              f"choose only the runners in LAB_IMPORT_RUNNERS (default, docker, local, qemu)")
    settings.LAB_IMPORT_RUNNERS = ["default", "trusted-dind"]
    [outcome] = import_labs([lab])
    assert Lab.objects.get(pk=outcome.lab_id).runner == "trusted-dind" and outcome.notes == ()


def test_resources_far_above_the_limits_are_refused_each_at_its_line(tmp_path, settings):
    lab = make_lab(tmp_path, "resources:\n  cpu: 32\n  memory_mb: 65536\n  pids_limit: 65536\n  disk_mb: 1000000\n")
    problems = problems_of(lab)
    assert [problem.split(" is for staff")[0] for problem in problems] == [
        f"{lab / 'lab.yaml'}:11: resources.cpu: 32",
        f"{lab / 'lab.yaml'}:12: resources.memory_mb: 65536",
        f"{lab / 'lab.yaml'}:13: resources.pids_limit: 65536",
        f"{lab / 'lab.yaml'}:14: resources.disk_mb: 1000000",
    ]
    assert "more than the 8192 a lab file may ask for (LAB_IMPORT_RESOURCE_LIMITS)" in problems[1]
    settings.LAB_IMPORT_RESOURCE_LIMITS = {"cpu": 32, "memory_mb": 65536, "pids_limit": 65536, "disk_mb": 1000000}
    [outcome] = import_labs([lab])
    assert Lab.objects.get(pk=outcome.lab_id).cpu == Decimal("32")


def test_resources_at_the_limits_need_no_flag(tmp_path):
    lab = make_lab(tmp_path, "resources:\n  cpu: 4\n  memory_mb: 8192\n  pids_limit: 4096\n  disk_mb: 20480\n")
    [outcome] = import_labs([lab])
    assert outcome.notes == ()


def test_a_vm_image_naming_a_disk_on_the_server_is_refused(tmp_path):
    lab = make_lab(tmp_path)
    (lab / "lab.yaml").write_text(LAB.replace("kind: container\n  reference: labs/tiny:test",
                                              "kind: vm\n  reference: /dev/sda") + "runner: qemu\n")
    [problem] = problems_of(lab)
    assert problem.startswith(f"{lab / 'lab.yaml'}:6: image.reference: '/dev/sda' is for staff to grant: a VM image's "
                              f"reference is a disk file on the server")
    assert not Image.objects.exists()
    output = run_import(str(lab), "--allow-privileged")
    assert "  granted image.reference '/dev/sda' (--allow-privileged)" in output.splitlines()


def test_a_re_import_keeps_privileges_staff_granted_when_the_file_is_silent_and_says_so(tmp_path):
    lab = make_lab(tmp_path, "resources:\n  cpu: 2\n")
    import_labs([lab])
    Lab.objects.filter(slug="open-lab").update(network_mode="unrestricted", memory_mb=65536, cpu=Decimal("16"),
                                               runner="trusted-dind")
    output = run_import(str(lab))
    assert output.splitlines() == [
        "updated open-lab (1 step)",
        "  kept network_mode 'unrestricted' set in the admin (the file does not set network_mode)",
        "  kept runner 'trusted-dind' set in the admin (the file does not set runner)",
        "  replaced cpu 16.00 set in the admin by 2 from the file",
        "  kept memory_mb 65536 set in the admin (the file does not set memory_mb)",
    ]
    kept = Lab.objects.get(slug="open-lab")
    assert (kept.network_mode, kept.runner, kept.memory_mb, kept.cpu) == ("unrestricted", "trusted-dind", 65536,
                                                                          Decimal("2"))


def test_a_file_that_sets_the_key_replaces_the_privilege_and_the_output_says_so(tmp_path):
    lab = make_lab(tmp_path)
    import_labs([lab])
    Lab.objects.filter(slug="open-lab").update(network_mode="unrestricted")
    (lab / "lab.yaml").write_text(LAB + "network_mode: isolated\n")
    output = run_import(str(lab))
    assert output.splitlines() == [
        "updated open-lab (1 step)",
        "  replaced network_mode 'unrestricted' set in the admin by 'isolated' from the file",
    ]
    assert Lab.objects.get(slug="open-lab").network_mode == "isolated"


def test_a_killercoda_scenario_never_drops_what_staff_granted(tmp_path, settings):
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    scenario = tmp_path / "web-basics"
    shutil.copytree(SCENARIOS / "web-basics", scenario)
    import_labs([scenario])
    Lab.objects.filter(slug="web-basics").update(network_mode="unrestricted", disk_mb=100_000)
    output = run_import(str(scenario))
    assert output.splitlines()[1:] == [
        "  kept network_mode 'unrestricted' set in the admin (the file does not set network_mode)",
        "  kept disk_mb 100000 set in the admin (the file does not set disk_mb)",
    ]
    kept = Lab.objects.get(slug="web-basics")
    assert (kept.network_mode, kept.disk_mb) == ("unrestricted", 100_000)


def test_docker_access_is_for_staff_to_grant_while_unsafe_docker_in_docker_is_allowed(tmp_path, settings):
    lab = make_lab(tmp_path, "docker_access: true\n")
    settings.LAB_ALLOW_UNSAFE_DIND = True
    [problem] = problems_of(lab)
    assert "docker_access: True is for staff to grant" in problem and "root on the host" in problem
    settings.LAB_ALLOW_UNSAFE_DIND = False  # rootless engines only: anyone may ask for one
    import_labs([lab])
    assert Lab.objects.get(slug="open-lab").docker_access is True
