"""webserver/request_body.py: a request body handed to the application as it arrives, bounded.

Reading from the client pauses once `high_water` bytes wait and resumes when the application
has taken the backlog down to `low_water`; the application gets the chunks in order, then the
end, then (only) a disconnect."""

from __future__ import annotations

import asyncio

from webserver.request_body import RequestBody


class Reading:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False


def body_with(reading: Reading) -> RequestBody:
    return RequestBody(reading.pause, reading.resume, high_water=100, low_water=40)


async def test_reading_pauses_past_the_high_water_mark_and_resumes_below_the_low_one():
    reading = Reading()
    body = body_with(reading)
    for _ in range(3):
        body.feed(b"x" * 30)
    assert not reading.paused and body.held == 90
    body.feed(b"x" * 30)
    assert reading.paused and body.held == 120
    body.feed(b"x" * 30)  # still arriving (one socket read's worth): paused again, in case something resumed it
    assert reading.pauses == 2

    taken = [await body.receive() for _ in range(3)]
    assert all(message["body"] == b"x" * 30 and message["more_body"] for message in taken)
    assert reading.paused and body.held == 60
    await body.receive()
    assert not reading.paused and body.held == 30


async def test_the_application_gets_the_chunks_in_order_then_the_end_then_a_disconnect():
    reading = Reading()
    body = body_with(reading)
    body.feed(b"one")
    assert await body.receive() == {"type": "http.request", "body": b"one", "more_body": True}

    waiting = asyncio.create_task(body.receive())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    body.feed(b"two")
    assert await waiting == {"type": "http.request", "body": b"two", "more_body": True}
    body.feed(b"three")
    body.end()
    assert await body.receive() == {"type": "http.request", "body": b"three", "more_body": False}

    after = asyncio.create_task(body.receive())
    await asyncio.sleep(0.05)
    assert not after.done()  # nothing more until the client leaves or the response is done
    body.disconnect()
    assert await after == {"type": "http.disconnect"}


async def test_an_empty_remainder_still_ends_the_body():
    body = body_with(Reading())
    body.feed(b"all of it")
    assert (await body.receive())["more_body"] is True
    body.end()
    assert await body.receive() == {"type": "http.request", "body": b"", "more_body": False}


async def test_a_disconnect_mid_body_drops_what_waits_and_is_all_the_application_gets():
    body = body_with(Reading())
    body.feed(b"x" * 50)
    body.disconnect()
    body.feed(b"late")
    assert body.held == 0
    assert await body.receive() == {"type": "http.disconnect"}
    assert await body.receive() == {"type": "http.disconnect"}
