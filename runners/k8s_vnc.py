"""A VM session's VNC console through the API server (the Kubernetes runner's endpoint_mode "proxy").

QEMU in a Kubernetes VM pod serves its screen twice (k8s_vm.py): plain RFB on `vnc_port` (5900),
which the platform reaches at the pod IP in pod-ip mode, and RFB inside WebSocket binary frames on
`vnc_websocket_port` (5700). From outside the cluster the only way in is the API server's pods/proxy,
which carries HTTP requests and upgraded connections but no raw TCP. The platform's VNC bridge
(consoles/vnc_bridge.py) speaks plain RFB to a TCP address, so in proxy mode it is handed a loopback
listener of this process: each connection to it becomes one WebSocket to QEMU's websocket port
through the runner's pod forwarder (k8s_forward.py, with the runner's credentials and TLS checks),
and the bytes are wrapped into binary frames on the way in and unwrapped on the way out.

One listener per pod (k8s_listeners.py: on a loop of its own, closed with the session or when idle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from runners.k8s_listeners import IDLE_SECONDS, Listener, PodListeners, until_one_ends

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0


class VncTunnels(PodListeners):
    """Loopback RFB listeners whose connections go to QEMU's WebSocket VNC through the pod proxy.

    `forward(namespace, pod, port)` is the pod forwarder's `address`: where a plain HTTP connection
    reaches that port of the pod. Public methods are thread-safe and blocking."""

    thread_name = "k8s-vnc-tunnels"

    def __init__(self, forward: Callable[[str, str, int], tuple[str, int]], idle_seconds: float = IDLE_SECONDS
                 ) -> None:
        super().__init__(idle_seconds)
        self._forward = forward

    def address(self, namespace: str, pod: str, websocket_port: int) -> tuple[str, int]:
        """The loopback address where plain RFB reaches the VM's screen (a listener made on first use)."""
        return self._address(namespace, pod, websocket_port)

    # on the tunnels' loop ------------------------------------------------------------------------------
    async def _serve(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._tunnel(listener, reader, writer)
        except (OSError, EOFError, TimeoutError, asyncio.CancelledError) as exc:
            log.info("VNC tunnel to %s/%s ended: %s", listener.namespace, listener.pod, exc or type(exc).__name__)
        except Exception:
            log.exception("VNC tunnel to %s/%s failed", listener.namespace, listener.pod)

    async def _tunnel(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException
        from websockets.typing import Subprotocol

        # The forwarder's listener is made (or found) in a thread: it blocks on its own loop.
        host, port = await asyncio.to_thread(self._forward, listener.namespace, listener.pod, listener.port)
        try:
            # QEMU accepts only the "binary" subprotocol; compression and pings it does not need.
            async with connect(f"ws://{host}:{port}/", subprotocols=[Subprotocol("binary")], compression=None,
                               max_size=None, ping_interval=None, open_timeout=OPEN_TIMEOUT,
                               user_agent_header=None, proxy=None) as ws:

                async def to_vm() -> None:
                    while data := await reader.read(65536):
                        await ws.send(data)

                async def to_client() -> None:
                    async for message in ws:
                        writer.write(message if isinstance(message, bytes) else message.encode())
                        await writer.drain()

                await until_one_ends(to_vm(), to_client())
        except WebSocketException as exc:
            raise OSError(f"QEMU's WebSocket VNC through the API server: {exc}") from exc
