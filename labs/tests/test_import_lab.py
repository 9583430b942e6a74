"""Labs as code: labs/labformat.py and `manage.py import_lab`."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from labs.labformat import LOADERS, LabImportError, YamlLabLoader, detect_loader, discover_labs, import_labs
from labs.models import Image, Lab, LabStep, Tag

pytestmark = pytest.mark.django_db

DEMO = Path(settings.LAB_DEMO_CATALOG)
DEMO_SLUGS = {
    "dockerfile-1-health",
    "dockerfile-2-layers",
    "dockerfile-3-multistage",
    "linux-shell-basics",
    "tiny-linux-vm",
}

MINIMAL = """\
slug: {slug}
title: A small lab
image:
  name: tiny-test
  kind: container
  reference: labs/tiny:test
steps:
  - title: First step
    file: step1.md
"""


def write_lab(root: Path, slug: str, yaml_text: str | None = None, files: dict[str, str] | None = None) -> Path:
    """A lab directory under root; by default a minimal valid lab with one step."""
    directory = root / slug
    directory.mkdir(parents=True)
    text = MINIMAL.format(slug=slug) if yaml_text is None else textwrap.dedent(yaml_text)
    (directory / "lab.yaml").write_text(text)
    for name, content in ({"step1.md": "# Step one\n\nRun `true`.\n"} | (files or {})).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


def problems_of(paths: list[Path]) -> list[str]:
    with pytest.raises(LabImportError) as caught:
        import_labs(paths)
    return [str(problem) for problem in caught.value.problems]


# --- the demo catalog ------------------------------------------------------------------


def test_importing_the_demo_catalog_creates_five_labs_with_their_steps():
    outcomes = import_labs([DEMO])

    assert {o.slug for o in outcomes} == DEMO_SLUGS
    assert all(o.created for o in outcomes)
    assert Lab.objects.count() == 5
    for lab in Lab.objects.all():
        steps = list(lab.steps.all())
        assert len(steps) >= 3, lab.slug
        assert [s.order for s in steps] == list(range(1, len(steps) + 1))
        assert all(s.body.startswith("# ") and s.hints for s in steps), lab.slug
        assert lab.published
        assert lab.source_path == str((DEMO / lab.slug).resolve())


def test_demo_labs_carry_their_settings_and_share_the_dind_image():
    import_labs([DEMO])

    health = Lab.objects.get(slug="dockerfile-1-health")
    assert health.image.name == "labs-dind"
    assert health.image.reference == "labs/dind:bookworm"
    assert health.docker_access is True
    assert health.consoles == ["terminal", "editor"]
    assert health.exposed_ports == [8080]
    assert health.network_mode == Lab.NetworkMode.BRIDGE
    assert set(health.tags.values_list("name", flat=True)) == {"docker", "dockerfile", "python"}
    assert "Containerize" in health.description
    assert Lab.objects.filter(image__name="labs-dind").count() == 3

    shell = Lab.objects.get(slug="linux-shell-basics")
    assert shell.image.name == "labs-base"
    assert shell.network_mode == Lab.NetworkMode.ISOLATED
    assert shell.docker_access is False
    assert shell.cpu == Decimal("0.5")


def test_a_vm_image_without_a_disk_is_created_inactive():
    import_labs([DEMO])

    vm = Lab.objects.get(slug="tiny-linux-vm")
    assert vm.runner == "qemu"
    assert vm.consoles == ["vnc", "terminal"]
    assert vm.network_mode == Lab.NetworkMode.NONE
    assert (vm.cpu, vm.memory_mb) == (Decimal("1"), 256)
    assert vm.image.kind == Image.Kind.VM
    assert vm.image.active is False


def test_importing_the_demo_catalog_twice_is_idempotent():
    import_labs([DEMO])
    before = {
        lab.slug: (lab.pk, list(lab.steps.values_list("pk", "order", "title")), lab.image_id)
        for lab in Lab.objects.all()
    }
    counts = (Lab.objects.count(), LabStep.objects.count(), Image.objects.count(), Tag.objects.count())

    outcomes = import_labs([DEMO])

    assert not any(o.created for o in outcomes)
    assert (Lab.objects.count(), LabStep.objects.count(), Image.objects.count(), Tag.objects.count()) == counts
    after = {
        lab.slug: (lab.pk, list(lab.steps.values_list("pk", "order", "title")), lab.image_id)
        for lab in Lab.objects.all()
    }
    assert after == before


def test_an_existing_image_is_used_as_it_is():
    Image.objects.create(name="labs-dind", kind=Image.Kind.CONTAINER, reference="labs/dind:edited-by-staff")

    import_labs([DEMO])

    assert Image.objects.get(name="labs-dind").reference == "labs/dind:edited-by-staff"


# --- updates ---------------------------------------------------------------------------


def test_reimporting_applies_a_changed_title_and_resyncs_steps_and_tags(tmp_path):
    lab_dir = write_lab(
        tmp_path, "evolving",
        """\
        slug: evolving
        title: First title
        tags: [alpha, beta]
        image: {name: tiny-test, kind: container, reference: "labs/tiny:test"}
        steps:
          - {title: One, file: step1.md}
          - {title: Two, file: step2.md}
          - {title: Three, file: step3.md}
        """,
        {"step2.md": "Two\n", "step3.md": "Three\n"},
    )
    [first] = import_labs([lab_dir])
    lab = Lab.objects.get(slug="evolving")
    step_one_id = lab.steps.get(order=1).pk

    (lab_dir / "lab.yaml").write_text(textwrap.dedent("""\
        slug: evolving
        title: Second title
        tags: [beta, gamma]
        image: {name: tiny-test, kind: container, reference: "labs/tiny:test"}
        steps:
          - {title: One again, file: step1.md}
          - {title: Three, file: step3.md}
        """))
    [second] = import_labs([lab_dir])

    lab.refresh_from_db()
    assert first.created and not second.created
    assert second.action == "updated"
    assert lab.title == "Second title"
    assert list(lab.steps.values_list("order", "title")) == [(1, "One again"), (2, "Three")]
    assert lab.steps.get(order=1).pk == step_one_id
    assert set(lab.tags.values_list("name", flat=True)) == {"beta", "gamma"}


def test_omitted_keys_go_back_to_their_defaults_on_reimport(tmp_path):
    lab_dir = write_lab(tmp_path, "defaults", MINIMAL.format(slug="defaults") + "ttl_minutes: 90\npublished: false\n")
    import_labs([lab_dir])
    assert Lab.objects.get(slug="defaults").ttl_minutes == 90

    (lab_dir / "lab.yaml").write_text(MINIMAL.format(slug="defaults"))
    import_labs([lab_dir])

    lab = Lab.objects.get(slug="defaults")
    assert lab.ttl_minutes == Lab._meta.get_field("ttl_minutes").default
    assert lab.published is True


# --- refusals --------------------------------------------------------------------------


def test_malformed_yaml_is_refused_with_file_and_line(tmp_path):
    lab_dir = write_lab(tmp_path, "broken", "slug: broken\ntitle: [unclosed\nsteps: []\n")

    [problem] = problems_of([lab_dir])

    assert problem.startswith(f"{lab_dir / 'lab.yaml'}:")
    assert "invalid YAML" in problem
    line = int(problem.split(":")[1])
    assert line in (2, 3, 4)


def test_unknown_key_is_refused_with_file_line_and_field(tmp_path):
    lab_dir = write_lab(tmp_path, "extra", MINIMAL.format(slug="extra") + "colour: blue\n")

    [problem] = problems_of([lab_dir])

    assert problem.startswith(f"{lab_dir / 'lab.yaml'}:10: colour: unknown key")


def test_unknown_nested_key_names_its_full_path(tmp_path):
    lab_dir = write_lab(tmp_path, "nested", MINIMAL.format(slug="nested") + "resources:\n  cpu: 1\n  gpus: 2\n")

    [problem] = problems_of([lab_dir])

    assert problem.startswith(f"{lab_dir / 'lab.yaml'}:12: resources.gpus: unknown key")


def test_missing_step_file_is_refused_naming_the_file(tmp_path):
    lab_dir = write_lab(tmp_path, "nofile", MINIMAL.format(slug="nofile").replace("step1.md", "steps/01-missing.md"))

    [problem] = problems_of([lab_dir])

    assert f"{lab_dir / 'lab.yaml'}:9: steps[0].file: file not found" in problem
    assert str(lab_dir / "steps" / "01-missing.md") in problem


def test_a_step_file_outside_the_lab_directory_is_refused(tmp_path):
    (tmp_path / "secret.md").write_text("outside")
    lab_dir = write_lab(tmp_path, "escape", MINIMAL.format(slug="escape").replace("step1.md", "../secret.md"))

    [problem] = problems_of([lab_dir])

    assert "steps[0].file: must be a path inside the lab directory" in problem


def test_out_of_range_value_is_refused_naming_the_field(tmp_path):
    lab_dir = write_lab(tmp_path, "tiny", MINIMAL.format(slug="tiny") + "resources:\n  memory_mb: 8\n")

    [problem] = problems_of([lab_dir])

    assert problem == f"{lab_dir / 'lab.yaml'}:11: resources.memory_mb: must be an integer from 16 to 262144 (got 8)"


def test_wrong_type_is_refused_naming_the_field(tmp_path):
    lab_dir = write_lab(tmp_path, "typed", MINIMAL.format(slug="typed") + 'ttl_minutes: "thirty"\ndocker_access: 1\n')

    problems = problems_of([lab_dir])

    assert f"{lab_dir / 'lab.yaml'}:10: ttl_minutes: must be an integer from 1 to 1440 (got 'thirty')" in problems
    assert f"{lab_dir / 'lab.yaml'}:11: docker_access: must be true or false (got 1)" in problems


def test_unknown_enum_value_is_refused_naming_the_field(tmp_path):
    extra = "difficulty: expert\nconsoles: [terminal, gui]\n"
    lab_dir = write_lab(tmp_path, "enums", MINIMAL.format(slug="enums") + extra)

    problems = problems_of([lab_dir])

    assert any(
        p.startswith(f"{lab_dir / 'lab.yaml'}:10: difficulty: must be one of beginner, intermediate, advanced")
        for p in problems
    )
    assert any(
        p.startswith(f"{lab_dir / 'lab.yaml'}:11: consoles[1]: must be one of terminal, vnc, editor") for p in problems
    )


def test_duplicate_ports_are_refused(tmp_path):
    lab_dir = write_lab(tmp_path, "ports", MINIMAL.format(slug="ports") + "exposed_ports:\n  - 8080\n  - 8080\n")

    [problem] = problems_of([lab_dir])

    assert problem == f"{lab_dir / 'lab.yaml'}:12: exposed_ports[1]: port 8080 is listed twice"


def test_a_cpu_with_too_many_decimals_is_refused(tmp_path):
    lab_dir = write_lab(tmp_path, "cpu", MINIMAL.format(slug="cpu") + "resources: {cpu: 0.125}\n")

    [problem] = problems_of([lab_dir])

    assert "resources.cpu: must be a number of CPUs from 0.05 to 64 with at most 2 decimal places" in problem


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    lab_dir = write_lab(tmp_path, "twice", MINIMAL.format(slug="twice") + "title: Again\n")

    [problem] = problems_of([lab_dir])

    assert problem == f"{lab_dir / 'lab.yaml'}:10: title: duplicate key (first given on line 2)"


def test_every_problem_of_a_lab_is_reported_not_just_the_first(tmp_path):
    lab_dir = write_lab(
        tmp_path, "many",
        """\
        slug: Not A Slug!
        image: nope-does-not-exist
        network_mode: internet
        judge:
          - {command: "true"}
        steps:
          - title: Only
            file: missing.md
            hints: hint as a string
        """,
    )

    problems = "\n".join(problems_of([lab_dir]))

    for expected in (
        ":1: slug: must be a slug",
        ":1: title: is required",
        ":3: network_mode: must be one of bridge, isolated, none, unrestricted (got 'internet')",
        ":5: judge[0].kind: is required",
        ":8: steps[0].file: file not found",
        ":9: steps[0].hints: must be a list",
    ):
        assert expected in problems


def test_judge_and_verify_checks_need_a_string_kind_and_are_stored_verbatim(tmp_path):
    checks = '[{kind: command, run: "test -f /workspace/Dockerfile", exit_code: 0}]'
    good = write_lab(
        tmp_path, "checks", MINIMAL.format(slug="checks") + f"    verify: {checks}\njudge: {checks}\n"
    )
    bad = write_lab(tmp_path, "badchecks", MINIMAL.format(slug="badchecks") + "judge: [{kind: 3}, just-a-string]\n")

    problems = problems_of([bad])
    import_labs([good])

    assert any("judge[0].kind: must be a non-empty string (got 3)" in p for p in problems)
    assert any("judge[1]: must be a mapping with a string `kind`" in p for p in problems)
    expected = [{"kind": "command", "run": "test -f /workspace/Dockerfile", "exit_code": 0}]
    lab = Lab.objects.get(slug="checks")
    assert lab.judge == expected
    assert lab.steps.get().verify == expected


def test_an_image_named_by_string_must_already_exist(tmp_path, container_image):
    mapping = "image:\n  name: tiny-test\n  kind: container\n  reference: labs/tiny:test\n"
    missing = write_lab(tmp_path, "ghost", MINIMAL.format(slug="ghost").replace(mapping, "image: ghost-image\n"))
    existing = write_lab(
        tmp_path, "real", MINIMAL.format(slug="real").replace(mapping, f"image: {container_image.name}\n")
    )

    [problem] = problems_of([missing])
    import_labs([existing])

    assert problem.startswith(f"{missing / 'lab.yaml'}:3: image: no image named ghost-image exists")
    assert Lab.objects.get(slug="real").image == container_image


def test_an_image_of_another_kind_with_the_same_name_is_refused(tmp_path):
    Image.objects.create(name="tiny-test", kind=Image.Kind.VM, reference="disk.qcow2")
    lab_dir = write_lab(tmp_path, "kinds")

    [problem] = problems_of([lab_dir])

    assert "image.kind: an image named tiny-test already exists with kind vm" in problem


def test_model_validation_errors_are_reported_in_the_same_format(tmp_path, monkeypatch):
    lab_dir = write_lab(tmp_path, "modelcheck", MINIMAL.format(slug="modelcheck") + "resources:\n  memory_mb: 512\n")

    def refuse(self):
        raise ValidationError({"memory_mb": "Too much for this host.", "__all__": "Not today."})

    monkeypatch.setattr(Lab, "clean", refuse)

    problems = problems_of([lab_dir])

    assert f"{lab_dir / 'lab.yaml'}:11: resources.memory_mb: Too much for this host." in problems
    assert f"{lab_dir / 'lab.yaml'}:1: Not today." in problems


# --- batches ---------------------------------------------------------------------------


def test_a_bad_second_lab_means_nothing_from_either_is_imported(tmp_path):
    good = write_lab(tmp_path, "good")
    bad = write_lab(tmp_path, "bad", MINIMAL.format(slug="bad") + "max_extensions: -1\n")

    problems = problems_of([good, bad])

    assert len(problems) == 1
    assert "max_extensions: must be an integer ≥ 0 (got -1)" in problems[0]
    assert not Lab.objects.exists()
    assert not Image.objects.exists()


@pytest.mark.django_db(transaction=True)  # the import's own transaction is the outermost one, as in production
def test_a_write_failing_on_the_second_lab_leaves_nothing_from_either(tmp_path, monkeypatch):
    import labs.labformat

    first = write_lab(tmp_path, "first", MINIMAL.format(slug="first") + "tags: [alpha, beta]\n")
    # Each lab brings its own new image, so images written before the failure are covered too.
    second = write_lab(tmp_path, "second", MINIMAL.format(slug="second").replace("tiny-test", "other-image")
                       .replace("labs/tiny:test", "labs/other:test") + "tags: [gamma]\n")
    real_write = labs.labformat._write
    written: list[str] = []

    def write_then_fail(plan: labs.labformat._Plan) -> labs.labformat.ImportOutcome:
        if written:
            # The first lab really is in the database when the second one fails: its rows,
            # image, tag links and steps must all go with the rollback.
            assert Lab.objects.filter(slug=written[0]).exists()
            assert LabStep.objects.filter(lab__slug=written[0]).exists()
            assert Tag.objects.filter(name="alpha").exists()
            raise OSError("disk full while writing the second lab")
        written.append(plan.spec.slug)
        return real_write(plan)

    monkeypatch.setattr(labs.labformat, "_write", write_then_fail)

    with pytest.raises(OSError, match="disk full"):
        import_labs([first, second])

    assert written == ["first"]
    assert not Lab.objects.exists()
    assert not LabStep.objects.exists()
    assert not Image.objects.exists()
    assert not Tag.objects.exists()


def test_a_write_failing_part_way_keeps_an_earlier_import_as_it_was(tmp_path, monkeypatch):
    import labs.labformat

    first = write_lab(tmp_path, "kept", MINIMAL.format(slug="kept").replace("title: A small lab", "title: Before"))
    second = write_lab(tmp_path, "never")
    import_labs([first])
    before = list(Lab.objects.values_list("slug", "title", "updated_at"))
    (first / "lab.yaml").write_text(MINIMAL.format(slug="kept").replace("title: A small lab", "title: After"))
    real_write = labs.labformat._write
    calls: list[str] = []

    def write_then_fail(plan: labs.labformat._Plan) -> labs.labformat.ImportOutcome:
        calls.append(plan.spec.slug)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real_write(plan)

    monkeypatch.setattr(labs.labformat, "_write", write_then_fail)

    with pytest.raises(RuntimeError):
        import_labs([first, second])

    assert calls == ["kept", "never"]
    assert list(Lab.objects.values_list("slug", "title", "updated_at")) == before
    assert list(LabStep.objects.values_list("lab__slug", "order")) == [("kept", 1)]


def test_two_labs_with_the_same_slug_are_refused(tmp_path):
    first = write_lab(tmp_path, "one", MINIMAL.format(slug="same"))
    second = write_lab(tmp_path, "two", MINIMAL.format(slug="same"))

    [problem] = problems_of([first, second])

    assert problem.startswith(f"{second / 'lab.yaml'}:1: slug: same is also the slug of {first}")


def test_a_catalog_directory_imports_every_lab_below_it_once(tmp_path):
    write_lab(tmp_path, "b-lab")
    write_lab(tmp_path, "a-lab")
    (tmp_path / "not-a-lab").mkdir()

    found = discover_labs([tmp_path, tmp_path / "a-lab", tmp_path / "a-lab" / "lab.yaml"])

    assert [d.name for d in found] == ["a-lab", "b-lab"]


def test_a_directory_without_labs_is_refused(tmp_path):
    [problem] = problems_of([tmp_path])

    assert problem == f"{tmp_path}: no index.json or lab.yaml here or in its immediate subdirectories"


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    outcomes = import_labs([write_lab(tmp_path, "dry")], dry_run=True)

    assert [(o.slug, o.action) for o in outcomes] == [("dry", "created")]
    assert not Lab.objects.exists()


def test_the_loader_is_chosen_per_directory(tmp_path):
    lab_dir = write_lab(tmp_path, "native")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "index.json").write_text("{}")

    assert isinstance(detect_loader(lab_dir), YamlLabLoader)
    assert detect_loader(tmp_path / "other") is None  # an index.json that is not a Killercoda scenario
    assert [loader.marker for loader in LOADERS] == ["lab.yaml", "index.json"]


# --- the management command ------------------------------------------------------------


def test_the_command_prints_one_line_per_lab():
    out = StringIO()

    call_command("import_lab", str(DEMO), stdout=out)
    call_command("import_lab", str(DEMO / "linux-shell-basics"), stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("created dockerfile-1-health (5 steps, new image labs-dind)")
    assert any(line.startswith("created tiny-linux-vm") and "inactive" in line for line in lines)
    assert lines[-1].startswith("updated linux-shell-basics")


def test_the_command_refuses_bad_labs_with_a_command_error_and_changes_nothing(tmp_path):
    good = write_lab(tmp_path, "fine")
    bad = write_lab(tmp_path, "wrong", MINIMAL.format(slug="wrong") + "network_mode: everywhere\n")

    with pytest.raises(CommandError) as caught:
        call_command("import_lab", str(good), str(bad), stdout=StringIO())

    message = str(caught.value)
    assert "1 problem found, nothing was imported" in message
    assert f"{bad / 'lab.yaml'}:10: network_mode: must be one of bridge, isolated, none, unrestricted" in message
    assert not Lab.objects.exists()


def test_the_command_refuses_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(CommandError, match="no such file or directory"):
        call_command("import_lab", str(tmp_path / "nowhere"))


def test_a_lab_may_name_an_image_another_lab_of_the_same_import_describes(tmp_path):
    describes = write_lab(tmp_path, "describes")
    names = write_lab(
        tmp_path, "names",
        MINIMAL.format(slug="names").replace(
            "image:\n  name: tiny-test\n  kind: container\n  reference: labs/tiny:test\n", "image: tiny-test\n"
        ) + "network_mode: isolated\n",
    )

    import_labs([names, describes])

    assert Image.objects.filter(name="tiny-test").count() == 1
    assert set(Lab.objects.values_list("image__name", flat=True)) == {"tiny-test"}
    assert Lab.objects.get(slug="names").network_mode == Lab.NetworkMode.ISOLATED
