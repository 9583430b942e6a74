"""Django for responses that stay open (Server-Sent Events), without a thread per open response.

Django's ASGI handler gives every request a thread of its own for thread-sensitive sync code
(middleware, signal receivers, sync_to_async calls; asgiref's ThreadSensitiveContext) and keeps it,
idle, together with any database connection opened in it, until the response has ended. For a
stream a page keeps open for hours that is a thread and a connection per open page (measured:
30 streams, +30 threads and +30 PostgreSQL connections). This handler runs that work on one thread
shared by every request it serves instead. Their thread-sensitive work is short (loading the
session and the user, an access check), so sharing costs little; a view that streams must close
that thread's connections before it starts (the streams in sessions_app/streams.py do) and do its
later work in threads that keep nothing.

labsite/asgi.py routes only the stream URLs here: ordinary pages keep Django's own handler.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

# One thread, as asgiref requires of a thread-sensitive executor: calls run one at a time, in order.
_shared_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="long-lived-requests")


class LongLivedASGIHandler(ASGIHandler):
    """Django's handler with thread-sensitive work on one shared thread (see the module's docstring)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async with ThreadSensitiveContext(executor=_shared_thread):
            await super().__call__(scope, receive, send)


def get_long_lived_application() -> LongLivedASGIHandler:
    """Like django.core.asgi.get_asgi_application(), for long-lived responses (after django.setup())."""
    return LongLivedASGIHandler()
