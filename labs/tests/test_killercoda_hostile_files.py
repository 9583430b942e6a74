"""Hostile Killercoda scenarios: refused with a clear problem (file, line where known, why), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labs.models import Image
from labs.tests.test_import_hostile_files import refused

SCENARIOS = Path(__file__).resolve().parent / "killercoda_scenarios"


@pytest.fixture
def scenario(db, tmp_path, settings) -> Path:
    """A copy of a valid scenario (with its image), so a test may spoil it."""
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    target = tmp_path / "web-basics"
    shutil.copytree(SCENARIOS / "web-basics", target)
    return target


def index_of(scenario: Path) -> dict:
    return json.loads((scenario / "index.json").read_text())


def write_index(scenario: Path, data: dict) -> None:
    (scenario / "index.json").write_text(json.dumps(data, indent=2))


def test_an_index_nested_thousands_of_levels_deep_is_refused(scenario):
    data = index_of(scenario)
    data["courseData"] = "@"  # placeholder, replaced by raw text below: json.dumps cannot nest this deep
    text = json.dumps(data).replace('"@"', "[" * 100_000 + "]" * 100_000)
    (scenario / "index.json").write_text(text)
    assert refused(scenario) == [f"{scenario / 'index.json'}: invalid JSON: nested more than 40 levels deep"]


def test_an_index_nested_deeper_than_the_limit_but_parseable_is_refused_too(scenario):
    data = index_of(scenario)
    nested: list = []
    for _ in range(60):
        nested = [nested]
    data["details"]["steps"][0]["extra"] = nested
    write_index(scenario, data)
    assert refused(scenario) == [f"{scenario / 'index.json'}: invalid JSON: nested more than 40 levels deep"]


def test_an_oversized_index_or_step_text_is_refused(scenario, settings):
    settings.LAB_IMPORT_MAX_FILE_BYTES = 4096
    (scenario / "step1" / "text.md").write_text("# Big\n" + "x" * 5000)
    step = scenario / "step1" / "text.md"
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: details.steps[0].text: {step} is 5006 bytes; lab files may be at most 4096 "
        f"bytes (LAB_IMPORT_MAX_FILE_BYTES)"
    ]
    data = index_of(scenario)
    data["description"] = "y" * 5000
    write_index(scenario, data)
    [problem] = refused(scenario)
    assert problem.startswith(f"{scenario / 'index.json'}: the file is ")
    assert problem.endswith("bytes; lab files may be at most 4096 bytes (LAB_IMPORT_MAX_FILE_BYTES)")


def test_an_index_that_is_not_utf8_is_refused_with_its_line(scenario):
    raw = (scenario / "index.json").read_bytes().replace(b"Serve a web page", b"Serve a caf\xe9 page")
    (scenario / "index.json").write_bytes(raw)
    assert refused(scenario) == [
        f"{scenario / 'index.json'}:2: the file is not UTF-8 text (invalid continuation byte at line 2)"
    ]


def test_nul_and_lone_surrogate_escapes_are_refused(scenario):
    raw = (scenario / "index.json").read_text()
    (scenario / "index.json").write_text(raw.replace("Serve a web page", "Serve a \\u0000 page")
                                         .replace("Look at it", "Look \\ud800 at it"))
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: title: contains a NUL character, which cannot be stored",
        f"{scenario / 'index.json'}: details.steps[1].title: contains a lone surrogate (an escape such as \\ud800), "
        f"which is not text",
    ]


def test_an_asset_glob_matching_a_link_out_of_the_scenario_is_refused_at_import(scenario, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("operator's key\n")
    (scenario / "assets" / "index.html").unlink()
    (scenario / "assets" / "index.html").symlink_to(secret)
    data = index_of(scenario)
    data["details"]["assets"]["host01"][1]["file"] = "*.html"  # a glob: the name itself resolves nowhere
    write_index(scenario, data)
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: details.assets.host01[1].file: {scenario / 'assets' / 'index.html'} leads "
        f"outside the scenario directory (through a symbolic link)"
    ]


def test_assets_over_the_per_file_and_total_limits_are_refused(scenario, settings):
    with (scenario / "assets" / "index.html").open("wb") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)  # sparse: no 10 MB written
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: details.assets.host01[1].file: {scenario / 'assets' / 'index.html'} is "
        f"10485761 bytes; an asset may be at most 10485760 bytes"
    ]
    (scenario / "assets" / "index.html").write_text("<p>hi</p>\n")
    settings.LAB_IMPORT_MAX_ASSETS_BYTES = 20
    total = sum(path.stat().st_size for path in (scenario / "assets").iterdir())
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: details.assets: the assets add up to {total} bytes; a scenario's may add up "
        f"to at most 20 bytes (LAB_IMPORT_MAX_ASSETS_BYTES)"
    ]


def test_an_index_linking_out_of_the_scenario_is_refused(scenario, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    shutil.move(scenario / "index.json", elsewhere)
    (scenario / "index.json").symlink_to(elsewhere)
    assert refused(scenario) == [
        f"{scenario / 'index.json'}: the file leads outside the lab directory (through a symbolic link)"
    ]
