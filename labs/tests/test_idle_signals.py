"""Staff choose per lab what counts as activity for the idle timeout (Lab.idle_signals, with a CPU
threshold): in the admin as checkboxes, in lab.yaml as a list; bad choices are refused clearly."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labs.labformat import import_labs
from labs.models import DEFAULT_IDLE_SIGNALS, IdleSignal, Lab
from labs.tests.test_import_lab import MINIMAL, problems_of, write_lab

pytestmark = pytest.mark.django_db


def test_a_new_lab_counts_work_and_input_but_not_a_tab_left_open(lab) -> None:
    assert lab.idle_signals == ["terminal", "editor", "preview", "cpu"] == list(DEFAULT_IDLE_SIGNALS)
    assert IdleSignal.PAGE not in lab.idle_signals
    assert lab.idle_cpu_percent == 10


@pytest.mark.parametrize(("signals", "message"), [
    (["terminal", "keyboard"], "Idle signals must be a list drawn from terminal, editor, preview, cpu, page."),
    ("terminal", "Idle signals must be a list drawn from terminal, editor, preview, cpu, page."),
    (["cpu", "cpu"], "Idle signals must not repeat."),
    ([], "Choose at least one idle signal, or set the idle timeout to 0."),
])
def test_bad_choices_are_refused(lab, signals, message) -> None:
    lab.idle_signals = signals
    with pytest.raises(ValidationError) as caught:
        lab.full_clean()
    assert caught.value.message_dict["idle_signals"] == [message]


def test_no_signal_is_fine_when_the_idle_timeout_is_off(lab) -> None:
    lab.idle_signals, lab.idle_timeout_minutes = [], 0
    lab.full_clean()


@pytest.mark.parametrize("percent", [0, 101])
def test_the_cpu_threshold_is_a_percentage(lab, percent) -> None:
    lab.idle_cpu_percent = percent
    with pytest.raises(ValidationError) as caught:
        lab.full_clean()
    assert "idle_cpu_percent" in caught.value.message_dict


def test_the_admin_offers_the_signals_as_checkboxes_and_saves_the_choice(admin_client, lab) -> None:
    url = reverse("admin:labs_lab_change", args=[lab.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    html = page.content.decode()
    for value in IdleSignal.values:
        assert f'type="checkbox" name="idle_signals" value="{value}"' in html
    assert 'name="idle_cpu_percent"' in html

    data = {name: value for name, value in form.initial.items() if value is not None and name != "idle_signals"}
    data.update({
        "tags": [], "consoles": '["terminal"]', "exposed_ports": "[]", "dind_images": "[]", "judge": "[]",
        "assets": "[]", "hosts": "[]", "idle_signals": ["cpu", "page"], "idle_cpu_percent": "25",
        "steps-TOTAL_FORMS": "0", "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    })
    data.pop("image")
    data["image"] = lab.image_id
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    lab.refresh_from_db()
    assert (lab.idle_signals, lab.idle_cpu_percent) == (["cpu", "page"], 25)

    data["idle_signals"] = []
    refused = admin_client.post(url, data)
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["idle_signals"] == [
        "Choose at least one idle signal, or set the idle timeout to 0."]


def test_lab_yaml_sets_the_signals_and_the_threshold(tmp_path) -> None:
    extra = "idle_signals: [terminal, cpu]\nidle_cpu_percent: 30\n"
    import_labs([write_lab(tmp_path, "busy", MINIMAL.format(slug="busy") + extra)])
    lab = Lab.objects.get(slug="busy")
    assert (lab.idle_signals, lab.idle_cpu_percent) == (["terminal", "cpu"], 30)


def test_lab_yaml_without_them_gets_the_defaults_back_on_reimport(tmp_path) -> None:
    directory = write_lab(tmp_path, "plain", MINIMAL.format(slug="plain") + "idle_signals: [page]\n")
    import_labs([directory])
    (directory / "lab.yaml").write_text(MINIMAL.format(slug="plain"))
    import_labs([directory])
    lab = Lab.objects.get(slug="plain")
    assert (lab.idle_signals, lab.idle_cpu_percent) == (list(DEFAULT_IDLE_SIGNALS), 10)


def test_lab_yaml_with_bad_signals_is_refused_naming_the_line(tmp_path) -> None:
    extra = "idle_signals: [terminal, mouse, terminal]\nidle_cpu_percent: 0\n"
    directory = write_lab(tmp_path, "bad", MINIMAL.format(slug="bad") + extra)
    problems = problems_of([directory])
    where = directory / "lab.yaml"
    assert any(p.startswith(f"{where}:10: idle_signals[1]: must be one of terminal, editor, preview, cpu, page")
               for p in problems), problems
    assert f"{where}:10: idle_signals[2]: 'terminal' is listed twice" in problems
    assert f"{where}:11: idle_cpu_percent: must be an integer from 1 to 100 (got 0)" in problems


def test_lab_yaml_with_no_signal_but_an_idle_timeout_is_refused(tmp_path) -> None:
    directory = write_lab(tmp_path, "none", MINIMAL.format(slug="none") + "idle_signals: []\n")
    [problem] = problems_of([directory])
    assert problem.endswith("idle_signals: Choose at least one idle signal, or set the idle timeout to 0."), problem
