"""Every step of the demo catalog gives the learner a verdict, or says in its text why it cannot.

The slow proof that the checks fail before and pass after following the text is
tests/e2e/test_demo_labs_solvable.py; these read the lab files only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from django.conf import settings

DEMO = Path(settings.BASE_DIR) / "labs" / "demo_catalog"
NO_CHECK = "This step has no check"
LABS = sorted(path.name for path in DEMO.iterdir() if (path / "lab.yaml").is_file())


def steps_of(slug: str) -> list[dict]:
    return yaml.safe_load((DEMO / slug / "lab.yaml").read_text())["steps"]


@pytest.mark.parametrize("slug", LABS)
def test_every_step_has_a_check_or_says_in_its_text_that_it_has_none(slug):
    for number, step in enumerate(steps_of(slug), start=1):
        text = (DEMO / slug / step["file"]).read_text()
        if step.get("verify"):
            assert NO_CHECK not in text, f"{slug} step {number} has checks but says it has none"
            assert "Check this step" in text, f"{slug} step {number} does not tell the learner to press Check"
        else:
            assert NO_CHECK in text, f"{slug} step {number} has no check and does not say so"


def test_only_the_vm_lab_has_steps_without_checks():
    unchecked = {(slug, number) for slug in LABS for number, step in enumerate(steps_of(slug), start=1)
                 if not step.get("verify")}
    assert {slug for slug, _ in unchecked} == {"tiny-linux-vm"}


def test_the_cache_miss_check_knows_the_starter_app_it_compares_with():
    """Step 1 of "Dockerfile 2" tells an edited app.py by the starter's hash, which must be current."""
    lab = DEMO / "dockerfile-2-layers"
    digest = hashlib.sha256((lab / "files" / "app.py").read_bytes()).hexdigest()
    assert f"STARTER_APP_SHA256={digest}\n" in (lab / "checks" / "rebuilt-after-change.sh").read_text()
