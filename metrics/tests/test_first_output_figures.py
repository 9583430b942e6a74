"""Request → first shell byte: a gauge histogram over the sessions whose learner first saw their
shell's output in the window, by runner; from rows at known times, and after a real terminal."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from metrics.tests.conftest import scrape
from sessions_app.models import Session

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import attach, hang_up, make_lab, read_until, start_session  # noqa: E402

pytest_plugins = ["consoles.tests.terminal_harness"]

FAMILY = "labs_session_first_output_seconds_15m"


def buckets(result, runner: str) -> dict[str, float]:
    return {dict(key)["le"]: value for key, value in result.series(f"{FAMILY}_bucket").items()
            if dict(key)["runner"] == runner}


@pytest.mark.django_db
def test_first_output_times_fill_histogram_buckets(sessions):
    result = scrape()
    # "quick" 4 s and "slow" 50 s on fake; "old-idle" printed before the window; "stopped" never did
    assert buckets(result, "fake") == {"1.0": 0, "2.0": 0, "5.0": 1, "10.0": 1, "20.0": 1, "30.0": 1, "60.0": 2,
                                       "120.0": 2, "300.0": 2, "+Inf": 2}
    assert buckets(result, "docker")["2.0"] == 0 and buckets(result, "docker")["5.0"] == 1
    assert result.value(f"{FAMILY}_gcount", runner="fake") == 2
    assert result.value(f"{FAMILY}_gsum", runner="fake") == pytest.approx(54.0)
    assert result.value(f"{FAMILY}_gsum", runner="docker") == pytest.approx(2.5)


@pytest.mark.django_db
def test_no_first_output_yet_gives_no_series(db):
    result = scrape()
    assert result.status == 200
    assert result.series(f"{FAMILY}_bucket") == {}


def session_row(session: Session) -> Session:
    return Session.objects.get(pk=session.pk)


@pytest.mark.django_db(transaction=True)
async def test_a_real_terminals_first_output_shows_in_the_histogram(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    assert await database_sync_to_async(lambda: scrape().series(f"{FAMILY}_gcount"))() == {}
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=b"echo first-$((1+1))\n")
    await read_until(communicator, b"first-2")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (row := await database_sync_to_async(session_row)(session)).first_output_at is None:
        assert loop.time() < deadline, "the terminal did not record its first output"
        await asyncio.sleep(0.05)
    await hang_up(communicator)

    result = await database_sync_to_async(scrape)()
    assert row.first_output_at is not None
    took = (row.first_output_at - row.created_at).total_seconds()
    assert result.value(f"{FAMILY}_gcount", runner="local") == 1
    assert result.value(f"{FAMILY}_gsum", runner="local") == pytest.approx(took, abs=1e-3)
    assert buckets(result, "local")["+Inf"] == 1
