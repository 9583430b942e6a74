"""How many requests a personal API token may make: LAB_API_RATE_LIMIT, e.g. 120 a minute.

A fixed window per token: the count for the current window (its key names the token's prefix and
the window's start) is incremented, and a request past the limit is refused with 429 and the
seconds until the window ends (Retry-After). Fixed windows let a burst of twice the limit through
across a window's edge; in exchange a request costs one round trip, and the count is one atomic
INCR that every process and replica shares.

- With REDIS_URL, the counts are in Redis (INCR and EXPIRE in one MULTI), so the limit holds
  across the web processes. If Redis does not answer, requests are let through (the API keeps
  working through a Redis outage, as the pages do) and the outage is logged once.
- Without it (the embedded install: one process), they are in Django's default cache.

Only token requests count: the browser's own session cookie is the pages' traffic.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import redis
from django.conf import settings
from django.core.cache import cache
from ninja.errors import HttpError

from api.models import ApiToken
from jobqueue.queueing import REDIS_DOWN

log = logging.getLogger(__name__)

KEY_PREFIX = "labs:api-rate"
REDIS_TIMEOUT_SECONDS = 1.0
PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_redis_down = False  # whether the last count found Redis down (logged once per change)


class RateLimited(HttpError):
    """429: the token made its LAB_API_RATE_LIMIT requests in this window; `retry_after` seconds left."""

    def __init__(self, limit: int, period: int, retry_after: int) -> None:
        self.retry_after = retry_after
        per = PERIOD_NAMES.get(period, f"{period} seconds")
        super().__init__(429, f"Too many requests with this token: at most {limit} per {per}. "
                              f"Try again in {retry_after} second{'s' if retry_after != 1 else ''}.")


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # One client (and its connection pool) per URL for the process's life: a pool per request
    # would cost a connection per request.
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_timeout=REDIS_TIMEOUT_SECONDS)


def _count_in_redis(url: str, key: str, ttl: int) -> int | None:
    """The window's count after this request, or None when Redis does not answer."""
    global _redis_down
    try:
        with _client(url).pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl)
            count, _ = pipe.execute()
    except REDIS_DOWN as exc:
        if not _redis_down:
            log.warning("API rate limits are not enforced: Redis does not answer (%s)", exc)
        _redis_down = True
        return None
    if _redis_down:
        log.info("API rate limits are enforced again: Redis answers")
    _redis_down = False
    return int(count)


def _count_in_cache(key: str, ttl: int) -> int:
    if cache.add(key, 1, timeout=ttl):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr(): this request opens the window again
        cache.set(key, 1, timeout=ttl)
        return 1


def check(token: ApiToken) -> None:
    """Count one request of `token`; RateLimited when it is past the limit."""
    rate: tuple[int, int] | None = settings.LAB_API_RATE_LIMIT
    if rate is None:
        return
    limit, period = rate
    now = time.time()
    window = int(now // period) * period
    key = f"{KEY_PREFIX}:{token.prefix}:{period}:{window}"
    ttl = period + 1  # outlives the window a little, so a clock a moment behind still finds it
    if settings.REDIS_URL:
        count = _count_in_redis(settings.REDIS_URL, key, ttl)
        if count is None:
            return
    else:
        count = _count_in_cache(key, ttl)
    if count > limit:
        raise RateLimited(limit, period, retry_after=max(1, math.ceil(window + period - now)))
