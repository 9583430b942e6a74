"""Killercoda scenarios (index.json) imported with import_lab: mapping, actions, problems, warnings."""

from __future__ import annotations

import json
import logging
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from labs.killercoda import convert_markdown
from labs.labformat import LabImportError, import_labs
from labs.markdown import render_markdown
from labs.models import Image, Lab

SCENARIOS = Path(__file__).resolve().parent / "killercoda_scenarios"


@pytest.fixture
def base_image(db) -> Image:
    return Image.objects.create(name="labs-base", reference="labs/base:bookworm")


@pytest.fixture
def scenario(tmp_path) -> Path:
    """A copy of the full scenario, so a test may change it."""
    target = tmp_path / "web-basics"
    shutil.copytree(SCENARIOS / "web-basics", target)
    return target


def test_a_scenario_becomes_a_lab_with_steps_scripts_assets_and_finish(base_image, scenario, settings):
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    [outcome] = import_labs([scenario])
    assert outcome.created and outcome.steps == 2
    lab = Lab.objects.get(slug="web-basics")
    assert lab.title == "Serve a web page"
    assert lab.summary == "Start a tiny web server and look at it in the browser."
    assert lab.image == base_image
    assert lab.source_path == str(scenario.resolve())
    assert lab.description.startswith("# Serving a page")
    assert lab.finish_text == "Well done! You served `index.html`."
    assert lab.assets == [
        {"file": "assets/serve.sh", "target": "/root", "chmod": "+x", "host": "host01"},
        {"file": "assets/index.html", "target": "/root/site", "chmod": "", "host": "host01"},
    ]
    # As on Killercoda: the learner is root, and the intro's background script runs at the start.
    assert lab.shell_user == "root" and lab.hosts == []
    assert lab.intro_background_script == (scenario / "intro-background.sh").read_text()
    assert (Path(lab.source_path) / lab.assets[0]["file"]).is_file()  # the files stay in the lab directory
    assert lab.exposed_ports == [8080, 9000]
    assert lab.consoles == ["terminal", "editor"]
    assert lab.published
    assert lab.source_format == "killercoda"
    first, second = lab.steps.order_by("order")
    assert (first.order, first.title, second.title) == (1, "Start the server", "Look at it")
    assert first.verify == [{"kind": "script", "script": "#!/bin/bash\ncurl -sf http://localhost:8080/ > /dev/null\n",
                             "user": "root"}]
    assert first.background_script == "#!/bin/bash\nmkdir -p /root/site\n"
    assert first.foreground_script == "cd /root\n"
    assert second.verify == [{"kind": "script", "script": "test -f /root/site/index.html\n", "user": "root"}]
    assert second.background_script == second.foreground_script == ""


def test_importing_twice_changes_nothing_and_keeps_the_step_ids(base_image, scenario):
    import_labs([scenario])
    lab = Lab.objects.get(slug="web-basics")
    before = {
        "lab": {f.name: getattr(lab, f.name) for f in Lab._meta.fields if f.name not in ("updated_at",)},
        "steps": list(lab.steps.order_by("order").values()),
    }
    [outcome] = import_labs([scenario])
    assert not outcome.created
    lab.refresh_from_db()
    after = {
        "lab": {f.name: getattr(lab, f.name) for f in Lab._meta.fields if f.name not in ("updated_at",)},
        "steps": list(lab.steps.order_by("order").values()),
    }
    assert after == before
    assert Lab.objects.count() == 1


def test_a_changed_scenario_updates_the_lab_on_reimport(base_image, scenario):
    import_labs([scenario])
    (scenario / "step1" / "background.sh").write_text("echo changed\n")
    index = json.loads((scenario / "index.json").read_text())
    del index["details"]["steps"][1]
    (scenario / "index.json").write_text(json.dumps(index))
    [outcome] = import_labs([scenario])
    lab = Lab.objects.get(slug="web-basics")
    assert outcome.steps == 1 and lab.steps.count() == 1
    assert lab.steps.get().background_script == "echo changed\n"
    assert lab.exposed_ports == [8080]  # the port only the removed step linked to is gone


def test_markdown_actions_become_click_to_run_and_copy_blocks(base_image, scenario):
    import_labs([scenario])
    lab = Lab.objects.get(slug="web-basics")
    step1, step2 = lab.steps.order_by("order")
    assert "```exec\n./serve.sh &\n```" in step1.body
    assert "```exec-interrupt\nsleep 1000\n```" in step1.body
    assert "```exec\ncd /root\npython3 -m http.server 8080\n```" in step1.body
    assert "```bash\ncurl http://localhost:8080/index.html\n```" in step1.body  # inside code: the app itself
    assert "```copy\nAda Lovelace\n```" in lab.description
    assert "{{" not in step1.body + step2.body + lab.description
    html = render_markdown(step1.body)
    assert html.count('data-action="exec"') == 2 and html.count('data-action="exec-interrupt"') == 1
    assert 'data-language="bash"' in html
    assert 'data-action="copy"' in render_markdown(lab.description)
    links = render_markdown(step2.body)
    assert '<a href="preview/8080/index.html" data-preview-port="8080"' in links
    assert '<a href="preview/8080/" data-preview-port="8080"' in links


def test_inline_actions_in_running_text_split_the_paragraph():
    converted = convert_markdown("1. First run `make`{{exec}} and then `make test`{{exec}} to check.")
    assert converted.text == "1. First run\n\n```exec\nmake\n```\n\nand then\n\n```exec\nmake test\n```\n\nto check."
    assert convert_markdown("Run ``echo `date` ``{{exec}}").text == "Run\n\n```exec\necho `date`\n```"
    # A command holding a fence of its own gets a longer one.
    assert convert_markdown("`printf '```'`{{copy}}").text == "````copy\nprintf '```'\n````"


def test_an_unknown_image_id_is_refused_naming_it(base_image, settings):
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    with pytest.raises(LabImportError) as caught:
        import_labs([SCENARIOS / "unknown-image"])
    message = str(caught.value)
    assert "unknown-image/index.json: backend.imageid: no local image for the Killercoda image " \
           "'kubernetes-kubeadm-2nodes'; map it in LAB_KILLERCODA_IMAGES" in message
    assert not Lab.objects.exists()


def test_an_image_id_mapped_to_a_missing_image_is_refused(db, settings):
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    with pytest.raises(LabImportError, match=r"index.json: backend.imageid: no image named labs-base exists"):
        import_labs([SCENARIOS / "web-basics"])


def test_a_malformed_index_is_refused_with_file_and_field_for_every_problem(base_image):
    with pytest.raises(LabImportError) as caught:
        import_labs([SCENARIOS / "malformed"])
    problems = [str(problem) for problem in caught.value.problems]
    index = str(SCENARIOS / "malformed" / "index.json")
    assert f"{index}: title: must be a non-empty string (got 42)" in problems
    assert any(p.startswith(f"{index}: details.steps[0].text: file not found:") for p in problems)
    assert f"{index}: details.steps[1]: must be an object (got 'not a step')" in problems
    assert (f"{index}: details.steps[2].text: must be a path inside the scenario directory "
            f"(got '../../outside.md')") in problems
    assert any(p.startswith(f"{index}: details.steps[2].verify: file not found:") for p in problems)
    # A listed asset missing from the folder is only a warning (the other problems refuse the import).
    assert not any("details.assets.host01[0].file" in p for p in problems)
    assert f"{index}: backend.imageid: is required" in problems
    assert not Lab.objects.exists()


def test_broken_json_is_refused_with_its_line(db):
    with pytest.raises(LabImportError, match=r"broken-json/index.json:5: invalid JSON: Expecting value"):
        import_labs([SCENARIOS / "broken-json"])


def test_unsupported_features_are_printed_as_warnings_by_the_import_command(base_image, scenario, caplog):
    out = StringIO()
    with caplog.at_level(logging.WARNING, logger="labs.killercoda"):
        call_command("import_lab", str(scenario), stdout=out)
    assert "created web-basics (2 steps" in out.getvalue()
    warnings = [record.getMessage() for record in caplog.records if record.name == "labs.killercoda"]
    index = f"{scenario}/index.json"
    expected = [
        f"{index}: details.courseData: Katacoda's courseData script is not supported",
        f"{index}: details.assets.host02: the session has 1 host (backend.imageid); these assets are not copied",
        f"{index}: details.steps[1].text: TRAFFIC_HOST2_9000: only one host is supported",
        f"{index}: time: the estimated time is not imported",
    ]
    for start in expected:
        assert any(w.startswith(start) for w in warnings), (start, warnings)
    assert len(warnings) == len(expected)


def test_the_import_command_fails_with_the_problems(db, settings):
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    with pytest.raises(CommandError, match=r"backend.imageid"):
        call_command("import_lab", str(SCENARIOS / "unknown-image"), stdout=StringIO())


def test_the_renderer_marks_only_real_action_blocks_and_port_links():
    html = render_markdown(
        "```exec\nls\n```\n\n```shell\nls\n```\n\n"
        "[ok](preview:3000/a?b=1) [no port](preview:abc) [too big](preview:70000) [js](javascript:alert(1))\n\n"
        '```html\n<a href="preview:3000">shown as code</a>\n```'
    )
    assert html.count("data-action=") == 1 and 'data-language="shell"' in html
    assert '<a href="preview/3000/a?b=1" data-preview-port="3000"' in html
    assert html.count('href="#"') == 2 and "javascript" not in html.replace(">js<", "")
    assert '&lt;a href="preview:3000"&gt;shown as code&lt;/a&gt;' in html
