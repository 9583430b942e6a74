"""A hint from Gemini: the official SDK talks to the Gemini double through the base URL option."""

from __future__ import annotations

from django.urls import reverse

from judge.models import HintRequest
from judge.tests.hint_fixtures import ask, fail_check, latest, record_terminal, session  # noqa: F401
from tests.gemini_double import gemini  # noqa: F401


def test_the_answer_comes_from_gemini_and_appears_in_the_page(owner_client, session, gemini,  # noqa: F811
                                                              django_capture_on_commit_callbacks):
    gemini.reply("Look at **which port** the app listens on.")
    status, _html = ask(owner_client, session, django_capture_on_commit_callbacks)
    assert status == 200
    hint = latest(session)
    assert hint.source == HintRequest.Source.GEMINI
    assert hint.answer == "Look at **which port** the app listens on."
    assert hint.answered_at is not None and hint.error == ""
    # The list the page polls shows the answer, rendered, and stops polling.
    page = owner_client.get(reverse("hints:list", args=[session.pk])).content.decode()
    assert "Look at <strong>which port</strong> the app listens on." in page
    assert "every 2s" not in page
    assert "fallback" not in page


def test_the_request_carries_the_lab_context_in_the_real_wire_format(owner_client, session, gemini, settings,  # noqa: F811
                                                                     tmp_path, django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_MODEL = "gemini-2.5-flash"
    settings.LAB_GEMINI_TEMPERATURE = 0.3
    settings.LAB_GEMINI_MAX_OUTPUT_TOKENS = 512
    fail_check(session, {"code": "greet-failed", "message": "hello was not printed", "hint": ""})
    record_terminal(session, [[0.1, "i", "ech hello\r"], [0.2, "o", "sh: ech: not found\r\n"]], settings, tmp_path)
    ask(owner_client, session, django_capture_on_commit_callbacks,
        file_path="notes/todo.sh", file_content="#!/bin/sh\necho helo\n")
    [sent] = gemini.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.api_key == gemini.api_key
    config = sent.body["generationConfig"]
    assert config["temperature"] == 0.3 and config["maxOutputTokens"] == 512
    # Thinking is off for 2.5 Flash (the SDK writes the field in proto's snake case; the API takes both).
    assert list(config["thinkingConfig"].values()) == [0]
    assert "teaching assistant" in sent.system
    prompt = sent.prompt
    assert "Lab: Hello shell" in prompt
    assert "Current step 1: Greet" in prompt and "Type `echo hello`." in prompt
    assert "[greet-failed] hello was not printed" in prompt
    assert "notes/todo.sh" in prompt and "echo helo" in prompt
    assert "Recent commands typed in the terminal" in prompt and "ech hello" in prompt
    # What was sent is kept with the request.
    context = latest(session).context
    assert context["file"] == {"path": "notes/todo.sh", "content": "#!/bin/sh\necho helo\n", "truncated": False}
    assert context["terminal"] == {"kind": "commands", "text": "ech hello"}
    assert context["failures"][0]["code"] == "greet-failed"


def test_a_long_file_is_truncated_before_it_is_sent(owner_client, session, gemini,  # noqa: F811
                                                    django_capture_on_commit_callbacks):
    ask(owner_client, session, django_capture_on_commit_callbacks, file_path="big.py", file_content="x" * 50_000)
    context = latest(session).context
    assert len(context["file"]["content"]) == 8000 and context["file"]["truncated"] is True
    assert "x" * 8001 not in gemini.requests[0].prompt
