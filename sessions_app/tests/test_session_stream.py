"""The session page's live stream (sessions_app/streams.py), driven through Django's AsyncClient: the
newest lines, then new ones as they are logged and the state as it changes, resuming after
Last-Event-ID, heartbeats, and who may open it. Notices travel through the real Redis channel layer
(REDIS_URL), as between a worker and the web."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse
from django.utils import timezone

from runners import get_runner
from runners.base import SessionSpec
from runners.fake import FakeRunner
from sessions_app.models import EndReason, Session, SessionEvent, State

pytestmark = pytest.mark.django_db(transaction=True)  # the stream reads in other threads


class Events:
    """The events of a streamed response, one at a time."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self._chunks = response.streaming_content.__aiter__()
        self._text = ""

    async def next(self, timeout: float = 5.0, comments: bool = False) -> dict[str, Any]:
        while True:
            while "\n\n" in self._text:
                block, self._text = self._text.split("\n\n", 1)
                event = _parse(block)
                if event["kind"] == "retry" or (event["kind"] == "comment" and not comments):
                    continue
                return event
            chunk = await asyncio.wait_for(anext(self._chunks), timeout)
            self._text += chunk.decode() if isinstance(chunk, bytes) else chunk

    async def until(self, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["kind"] != kind:
            seen.append(await self.next(timeout))
        return seen

    async def finished(self, timeout: float = 5.0) -> bool:
        """Whether the stream ends (with nothing but comments before the end)."""
        try:
            while True:
                event = await self.next(timeout)
                assert event["kind"] == "comment", event
        except StopAsyncIteration:
            return True

    async def close(self) -> None:
        # The view's own generator first: Django's wrappers around it do not close what they wrap.
        await self.response._iterator.aclose()
        await self._chunks.aclose()


def _parse(block: str) -> dict[str, Any]:
    event: dict[str, Any] = {"kind": "message", "id": None, "data": None}
    for line in block.split("\n"):
        if line.startswith(":"):
            return {"kind": "comment", "text": line[1:].strip()}
        name, _, value = line.partition(": ")
        if name == "event":
            event["kind"] = value
        elif name == "id":
            event["id"] = value
        elif name == "data":
            event["data"] = json.loads(value)
        elif name == "retry":
            return {"kind": "retry", "value": value}
    return event


@pytest.fixture(autouse=True)
def _quick_streams(settings) -> None:
    # Only push notices can deliver within a test's waits; heartbeats stay out of the way.
    settings.LAB_STREAM_RECHECK_SECONDS = 600
    settings.LAB_STREAM_HEARTBEAT_SECONDS = 600


@pytest.fixture
def session(owner, lab) -> Session:
    session = Session.objects.create(user=owner, lab=lab, state=State.PROVISIONING, runner_name="fake")
    for message in ("Queued.", "Provisioning on the fake runner.", "Pulling image labs/tiny:test"):
        session.log(message)
    return session


def stream_url(session: Session) -> str:
    return reverse("sessions:stream", args=[session.pk])


async def open_stream(async_client, user, session: Session, **headers: str) -> Events:
    await async_client.aforce_login(user)
    response = await async_client.get(stream_url(session), headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache, no-store"
    return Events(response)


async def test_the_stream_sends_the_newest_lines_then_the_state(async_client, owner, session) -> None:
    events = await open_stream(async_client, owner, session)
    try:
        first = await events.until("state")
    finally:
        await events.close()
    lines = [e for e in first if e["kind"] == "progress"]
    ids = await sync_to_async(lambda: list(session.events.order_by("pk").values_list("pk", flat=True)))()
    assert [e["data"]["message"] for e in lines] == ["Queued.", "Provisioning on the fake runner.",
                                                     "Pulling image labs/tiny:test"]
    assert [int(e["id"]) for e in lines] == [e["data"]["id"] for e in lines] == ids  # id: the SessionEvent's pk
    assert lines[0]["data"]["level"] == "info" and len(lines[0]["data"]["time"]) == 8
    state = first[-1]["data"]
    assert state["state"] == "provisioning"
    assert state["html"].startswith('<section id="session-status"') and 'data-state="provisioning"' in state["html"]
    assert "every 2s" not in state["html"]


async def test_lines_and_state_follow_as_they_happen(async_client, owner, session) -> None:
    events = await open_stream(async_client, owner, session)
    try:
        await events.until("state")
        await sync_to_async(session.log)("Creating container", "warning")
        line = await events.next(timeout=3)
        assert line["kind"] == "progress" and line["data"]["message"] == "Creating container"
        assert line["data"]["level"] == "warning"

        fresh = await Session.objects.aget(pk=session.pk)
        now = timezone.now()
        await sync_to_async(fresh.transition)(State.RUNNING, started_at=now, expires_at=now + timedelta(minutes=30),
                                              last_active_at=now)
        state = await events.next(timeout=3)
        assert state["kind"] == "state" and state["data"]["state"] == "running"
        assert 'data-state="running"' in state["data"]["html"] and "Time left" in state["data"]["html"]

        await sync_to_async(fresh.transition)(State.STOPPING, end_reason=EndReason.LEARNER)
        assert (await events.next(timeout=3))["data"]["state"] == "stopping"
        await sync_to_async(fresh.transition)(State.STOPPED)
        await sync_to_async(fresh.log)("Environment removed.")
        ended = [e for e in await events.until("end", timeout=3) if e["kind"] != "progress"]
        assert [e["kind"] for e in ended] == ["state", "end"]
        assert ended[0]["data"]["state"] == ended[1]["data"]["state"] == "stopped"
        assert await events.finished()  # the page closes its EventSource on "end"; the server ends too
    finally:
        await events.close()


async def test_last_event_id_resumes_without_duplicates(async_client, owner, session) -> None:
    ids = await sync_to_async(lambda: list(session.events.order_by("pk").values_list("pk", flat=True)))()
    events = await open_stream(async_client, owner, session, last_event_id=str(ids[0]))
    try:
        first = await events.until("state")
        assert [int(e["id"]) for e in first if e["kind"] == "progress"] == ids[1:]
        await sync_to_async(session.log)("One more")
        assert (await events.next())["data"]["message"] == "One more"
    finally:
        await events.close()

    # The page's own newest line (?after=) works the same; Last-Event-ID (a reconnect) wins over it.
    for query, headers in ((f"?after={ids[2]}", {}), ("?after=0", {"last-event-id": str(ids[2])})):
        events = Events(await async_client.get(f"{stream_url(session)}{query}", headers=headers))
        try:
            lines = [e for e in await events.until("state") if e["kind"] == "progress"]
            assert [e["data"]["message"] for e in lines] == ["One more"], query
        finally:
            await events.close()


async def test_a_malformed_resume_point_is_refused(async_client, owner, session) -> None:
    await async_client.aforce_login(owner)
    response = await async_client.get(stream_url(session), headers={"last-event-id": "abc"})
    assert response.status_code == 400
    assert b"progress line" in response.content
    assert (await async_client.get(f"{stream_url(session)}?after=-4")).status_code == 400


async def test_an_idle_stream_sends_heartbeats(async_client, owner, session, settings) -> None:
    settings.LAB_STREAM_HEARTBEAT_SECONDS = 0.2
    events = await open_stream(async_client, owner, session)
    try:
        await events.until("state")
        loop = asyncio.get_running_loop()
        started = loop.time()
        beats = [await events.next(timeout=2, comments=True) for _ in range(3)]
        assert [b["kind"] for b in beats] == ["comment"] * 3 and beats[0]["text"] == "heartbeat"
        assert 0.4 <= loop.time() - started < 2.5
    finally:
        await events.close()


async def test_the_stream_re_reads_on_its_timer_when_no_notice_comes(async_client, owner, session, settings) -> None:
    settings.LAB_STREAM_RECHECK_SECONDS = 0.3
    events = await open_stream(async_client, owner, session)
    try:
        await events.until("state")
        # Written behind the model's back: no notice, only the re-read finds it.
        await SessionEvent.objects.acreate(session_id=session.pk, message="Written without a notice")
        line = await events.next(timeout=3)
        assert line["data"]["message"] == "Written without a notice"
    finally:
        await events.close()


async def test_an_ended_session_sends_its_state_and_ends(async_client, owner, session) -> None:
    await Session.objects.filter(pk=session.pk).aupdate(state=State.FAILED, error="image not found",
                                                        ended_at=timezone.now())
    events = await open_stream(async_client, owner, session)
    try:
        seen = await events.until("end")
        assert seen[-2]["kind"] == "state" and seen[-2]["data"]["state"] == "failed"
        assert "image not found" in seen[-2]["data"]["html"]
        assert await events.finished()
    finally:
        await events.close()


# ---- who may open it ------------------------------------------------------------------------


async def test_other_learners_get_404(async_client, other_learner, session) -> None:
    await async_client.aforce_login(other_learner)
    assert (await async_client.get(stream_url(session))).status_code == 404
    output = reverse("sessions:output_stream", args=[session.pk])
    assert (await async_client.get(output)).status_code == 404


async def test_staff_may_follow_any_session(async_client, staff_user, session) -> None:
    events = await open_stream(async_client, staff_user, session)
    try:
        assert (await events.until("state"))[-1]["data"]["state"] == "provisioning"
    finally:
        await events.close()


async def test_anonymous_visitors_are_sent_to_sign_in(async_client, session) -> None:
    for url in (stream_url(session), reverse("sessions:output_stream", args=[session.pk])):
        response = await async_client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login") + "?next=")


async def test_an_unknown_session_is_404(async_client, owner) -> None:
    await async_client.aforce_login(owner)
    url = reverse("sessions:stream", args=["00000000-0000-0000-0000-000000000000"])
    assert (await async_client.get(url)).status_code == 404


async def test_the_stream_answers_only_get(async_client, owner, session) -> None:
    await async_client.aforce_login(owner)
    assert (await async_client.post(stream_url(session))).status_code == 405


# ---- staff: the environment's output --------------------------------------------------------------


def output_url(session: Session) -> str:
    return reverse("sessions:output_stream", args=[session.pk])


@pytest.fixture
def running_on_fake(session) -> Iterator[tuple[Session, dict]]:
    runner = get_runner("fake")
    state = runner.start(SessionSpec(session_id=str(session.pk), user_id=session.user_id, username="olivia",
                                     lab_slug="hello-shell", image="labs/tiny:test")).state
    Session.objects.filter(pk=session.pk).update(state=State.RUNNING, runner_state=state)
    session.refresh_from_db()
    yield session, state
    runner.stop(state)


async def test_staff_follow_what_the_environment_prints(async_client, staff_user, running_on_fake, settings) -> None:
    settings.LAB_OUTPUT_POLL_SECONDS = 0.1
    session, state = running_on_fake
    await async_client.aforce_login(staff_user)
    response = await async_client.get(output_url(session))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    events = Events(response)
    try:
        first = await events.next()
        assert first == {"kind": "output", "id": None, "data": {"text": "fake environment: started\n"}}
        runner = get_runner("fake")
        assert isinstance(runner, FakeRunner)
        runner.emit(state, b"caf\xc3")  # a character split between two reads
        runner.emit(state, b"\xa9 ready\n")
        text = ""
        while "ready" not in text:
            text += (await events.next(timeout=3))["data"]["text"]
        assert text == "caf\u00e9 ready\n"

        await sync_to_async(session.transition)(State.STOPPING, end_reason=EndReason.STAFF)
        await sync_to_async(session.transition)(State.STOPPED)
        assert (await events.until("end", timeout=3))[-1]["kind"] == "end"
        assert await events.finished()
    finally:
        await events.close()


async def test_the_learner_cannot_follow_the_output(async_client, owner, running_on_fake) -> None:
    session, _ = running_on_fake
    await async_client.aforce_login(owner)
    assert (await async_client.get(output_url(session))).status_code == 404


async def test_a_runner_without_output_says_so_and_the_stream_ends(async_client, staff_user, session,
                                                                  settings) -> None:
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "plain": {"BACKEND": "runners.base.Runner", "OPTIONS": {}}}
    await Session.objects.filter(pk=session.pk).aupdate(state=State.RUNNING, runner_name="plain",
                                                        runner_state={"anything": 1})
    await async_client.aforce_login(staff_user)
    events = Events(await async_client.get(output_url(session)))
    try:
        problem = await events.next()
        assert problem["kind"] == "runner-error"
        assert problem["data"] == {"message": "output is not available for the plain runner", "permanent": True}
        assert await events.finished()
    finally:
        await events.close()
