"""The terminal does not trust acks alone: a client that acknowledges every byte but never reads
its socket must not make daphne buffer the shell's output without bound.

Runs the real platform (labsite.asgi.application under daphne, in a thread of this process) and
the real sandboxed local runner, with a raw-socket client that decides when it reads.
"""

from __future__ import annotations

import json
import time

import pytest

from consoles.flow import DEFAULT_HIGH_WATER
from consoles.terminals import FRAME_BYTES

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import make_lab, start_session  # noqa: E402
from preview.tests.test_preview_streaming import PeakRss  # noqa: E402
from preview.tests.test_preview_support import session_cookie  # noqa: E402
from tests.raw_websocket import OP_BINARY, OP_TEXT, RawWebSocket, daphne_buffered  # noqa: E402

pytest_plugins = ["preview.tests.test_preview_support", "consoles.tests.terminal_harness"]

MB = 1024 * 1024
FLOOD = b"yes\n"
# Everything the acks allow is acked at once: acks are capped at what was sent, never beyond.
ACK_ALL = json.dumps({"type": "ack", "bytes": 1 << 40})
FLOOD_SECONDS = 6.0


def test_a_client_that_acks_everything_but_never_reads_stops_the_shell_being_read(daphne, local_runner,
                                                                                  owner) -> None:
    session = start_session(owner, make_lab(local_runner))
    path = f"/ws/sessions/{session.pk}/terminal/"
    client = RawWebSocket(daphne.port, f"{path}?name=1&cols=80&rows=24", f"sessionid={session_cookie(owner)}",
                          daphne.url, receive_buffer=64 * 1024)
    try:
        opcode, payload = client.read_frame()
        assert opcode == OP_TEXT and json.loads(payload)["type"] == "ready", payload
        client.send_binary(FLOOD)
        peak = 0
        with PeakRss() as memory:
            deadline = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < deadline:
                client.send_text(ACK_ALL)  # "rendered it all": the ack window never closes
                peak = max(peak, daphne_buffered(daphne.server, path))
                time.sleep(0.02)
        # The flood did reach the server's buffer for this client, and stopped there: past the bound by
        # at most the one frame whose write crossed it (plus frame headers).
        assert peak > 64 * 1024, f"the flood never filled daphne's buffer ({peak} bytes)"
        assert peak <= DEFAULT_HIGH_WATER + FRAME_BYTES + 4096, f"daphne buffered {peak / MB:.1f} MiB for the client"
        assert memory.growth < 32 * MB, f"resident memory grew by {memory.growth / MB:.1f} MiB"

        # Once the client reads again, the shell is read again: the output was paused, not lost.
        received = 0
        deadline = time.monotonic() + 30
        while received < 8 * MB:
            assert time.monotonic() < deadline, f"only {received} bytes arrived after the client read again"
            opcode, payload = client.read_frame()
            if opcode == OP_BINARY:
                received += len(payload)
                client.send_text(json.dumps({"type": "ack", "bytes": len(payload)}))
        client.send_binary(b"\x03")
    finally:
        client.close()
