"""The platform's web server: daphne, with request bodies limited per route and streamed.

    python -m webserver.serve -b 127.0.0.1 -p 8000 labsite.asgi:application

takes daphne's own command-line arguments and runs daphne with LimitedRequest
(webserver/limited_http.py) as its HTTP request: a body larger than its route allows is refused
with 413 before it is read, and an accepted one reaches the application chunk by chunk, with
at most about a megabyte of it in memory. WebSockets and body-less requests are daphne's own.
"""

from __future__ import annotations

from typing import Any

import daphne.server  # noqa: F401  # first: it installs Twisted's asyncio reactor
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from twisted.web.http import _GenericHTTPChannelProtocol

from webserver.descriptors import raise_descriptor_limit
from webserver.limited_http import DroppingChannel, LimitedRequest

# Where the server puts a request's RequestBody in the scope, for StreamedBodies to take it out.
BODY_SCOPE_KEY = "webserver.request_body"


class StreamedBodies:
    """ASGI middleware: a request whose body streams reads it through the RequestBody's `receive`
    (daphne's own queue, given to every application, only ever gets an empty body for it)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = scope.pop(BODY_SCOPE_KEY, None)
        await self.application(scope, receive if body is None else body.receive, send)


class LimitedHTTPFactory(HTTPFactory):
    def protocol(self) -> _GenericHTTPChannelProtocol:  # type: ignore[override]  # Twisted calls self.protocol()
        return _GenericHTTPChannelProtocol(DroppingChannel())

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = LimitedRequest  # daphne's factory has just set its WebRequest
        return protocol


class LimitedServer(Server):
    """daphne's Server serving HTTP with LimitedRequest."""

    def __init__(self, application: Any, **kwargs: Any) -> None:
        super().__init__(StreamedBodies(application), **kwargs)

    # Server.run() makes daphne's HTTP factory and listens with it at once: ours is used instead.
    @property
    def http_factory(self) -> LimitedHTTPFactory:
        return self._limited_http_factory

    @http_factory.setter
    def http_factory(self, daphnes_factory: Any) -> None:
        self._limited_http_factory = LimitedHTTPFactory(self)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        body = getattr(protocol, "streamed_body", None)
        if body is not None:
            scope[BODY_SCOPE_KEY] = body
        return super().create_application(protocol, scope)


class CommandLine(CommandLineInterface):
    server_class = LimitedServer


def main() -> None:
    raise_descriptor_limit()  # two descriptors per terminal: 1,024 would stop it at a few hundred
    CommandLine.entrypoint()


if __name__ == "__main__":
    main()
