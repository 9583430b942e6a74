"""Session.log and Session.transition tell the session's live streams (sessions_app/live.py): through
the Redis channel layer (REDIS_URL, as between a worker and the web), or within the process when the
layer is in memory; only after the commit; and a notice that cannot be sent never fails the change."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from sessions_app import live
from sessions_app.models import EndReason, Session, State

pytestmark = pytest.mark.django_db(transaction=True)

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
UNREACHABLE_REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                 "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}


@pytest.fixture
def session(owner, lab) -> Session:
    return Session.objects.create(user=owner, lab=lab, state=State.REQUESTED, runner_name="fake")


@pytest.fixture
def other_session(owner, lab) -> Session:
    return Session.objects.create(user=owner, lab=lab, state=State.REQUESTED, runner_name="fake")


def test_the_tests_use_the_redis_layer(settings) -> None:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert live._shared_layer() is not None


async def test_a_transition_and_a_log_line_notify_the_sessions_group(session, other_session) -> None:
    async with live.listen(session.pk) as listener, live.listen(other_session.pk) as other:
        await sync_to_async(session.transition)(State.PROVISIONING)
        assert await listener.wait(3)
        await sync_to_async(session.log)("Creating container")
        assert await listener.wait(3)
        assert not await other.wait(0.3)  # a group per session
        await sync_to_async(other_session.log)("Queued.")
        assert await other.wait(3)
        assert not await listener.wait(0.3)


async def test_a_notice_waits_for_the_commit(session) -> None:
    logged, checked = threading.Event(), threading.Event()

    def log_in_a_transaction() -> None:
        try:
            with transaction.atomic():
                session.log("Extended by 15 minutes.")
                logged.set()
                checked.wait(10)
        finally:
            connections.close_all()

    async with live.listen(session.pk) as listener:
        writer = asyncio.ensure_future(sync_to_async(log_in_a_transaction, thread_sensitive=False)())
        await asyncio.get_running_loop().run_in_executor(None, logged.wait, 10)
        assert not await listener.wait(0.5), "notified before the line could be read"
        checked.set()
        await writer
        assert await listener.wait(3)


async def test_in_memory_notices_wake_a_stream_from_another_thread(session, settings) -> None:
    """Jobs run in threads when there is no Redis; a notice from one must wake the stream's loop."""
    settings.CHANNEL_LAYERS = IN_MEMORY
    assert live._shared_layer() is None
    async with live.listen(session.pk) as listener:
        assert live.local_listener_count() == 1
        def job_thread() -> None:
            try:
                Session.objects.get(pk=session.pk).transition(State.PROVISIONING)
            finally:
                connections.close_all()

        job = threading.Thread(target=job_thread)
        job.start()
        assert await listener.wait(3)
        job.join()
    assert live.local_listener_count() == 0


def test_a_notice_that_cannot_be_sent_does_not_stop_the_transition(session, settings, caplog) -> None:
    settings.CHANNEL_LAYERS = UNREACHABLE_REDIS
    with caplog.at_level(logging.WARNING, logger="sessions_app.live"):
        session.transition(State.STOPPING, end_reason=EndReason.LEARNER)
        session.log("Stopping (stopped by the learner).")
    assert Session.objects.get(pk=session.pk).state == State.STOPPING
    assert session.events.count() == 1
    warnings = [r for r in caplog.records if "could not tell the live streams" in r.getMessage()]
    assert len(warnings) == 2 and str(session.pk) in warnings[0].getMessage()


async def test_a_stream_that_cannot_subscribe_still_gets_a_listener(session, settings, caplog) -> None:
    settings.CHANNEL_LAYERS = UNREACHABLE_REDIS
    with caplog.at_level(logging.WARNING, logger="sessions_app.live"):
        async with live.listen(session.pk) as listener:
            assert not await listener.wait(0.1)  # never rung: the stream re-reads on its timer
    assert any("re-reads on a timer only" in r.getMessage() for r in caplog.records)
