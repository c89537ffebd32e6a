"""Rate limits of the gateway: token buckets, held in this process or shared in Redis.

A bucket holds up to `limit` tokens and refills evenly, `limit` tokens per `period`; a request
takes one. So `600/60s` allows a burst of 600 and then 10 a second. ET_REDIS_URL picks the
adapter: unset, each gateway keeps its own buckets; set, every gateway replica shares them, and
one atomic Lua script per request reads, refills and takes, on the Redis server's own clock.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl, redact_url
from energy_tracker.core.rate_limits import Rate

log = logging.getLogger(__name__)

REDIS_VARIABLE = "ET_REDIS_URL"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one hit, with what the X-RateLimit-* and Retry-After headers report."""

    allowed: bool
    limit: int
    remaining: int  # whole tokens left
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the refused cost would be allowed; 0 when allowed


def _decision(allowed: bool, tokens: float, rate: Rate, cost: int) -> Decision:
    return Decision(
        allowed=allowed,
        limit=rate.limit,
        remaining=max(0, math.floor(tokens)),
        reset_s=max(0.0, (rate.limit - tokens) / rate.per_s),
        retry_after_s=0.0 if allowed else (cost - tokens) / rate.per_s,
    )


class RateLimiter(ABC):
    """The port: named token buckets, each hit refilling by elapsed time, then taking."""

    @abstractmethod
    async def start(self) -> None:
        """Connect to the backend, if there is one; BackendUnavailable if it does not answer."""

    @abstractmethod
    async def stop(self) -> None:
        """Release the backend connection; safe to call twice."""

    @abstractmethod
    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take `cost` tokens from bucket `key` if it holds them; a negative cost gives tokens
        back (never above the limit) and is always allowed."""


class InProcessRateLimiter(RateLimiter):
    """Buckets in a dict: exact within one process, and free of I/O on the hot path."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, updated at, full again at); kept in least-recently-hit order.
        self._buckets: dict[str, tuple[float, float, float]] = {}

    async def start(self) -> None:
        pass  # nothing to connect to

    async def stop(self) -> None:
        self._buckets.clear()

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return self.take(key, rate, cost)

    def take(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """`hit` without the coroutine, for callers that are already in a hot loop."""
        now = self._clock()
        tokens, at, _ = self._buckets.pop(key, (float(rate.limit), now, now))
        tokens = min(float(rate.limit), tokens + max(0.0, now - at) * rate.per_s)
        allowed = tokens >= cost
        if allowed:
            tokens = min(float(rate.limit), tokens - cost)
        self._buckets[key] = (tokens, now, now + (rate.limit - tokens) / rate.per_s)
        if len(self._buckets) > self._max_keys:
            self._prune(now)
        return _decision(allowed, tokens, rate, cost)

    def _prune(self, now: float) -> None:
        """Forget full buckets (absent means full); if callers still overflow the table (many
        spoofed principals), forget the least recently hit, which only makes them lenient."""
        self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        excess = len(self._buckets) - self._max_keys * 9 // 10
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]


# KEYS[1]: the bucket; ARGV: limit, tokens per millisecond, cost. Returns {allowed, tokens}.
# TIME is the server's clock, so replicas whose clocks disagree still share one bucket. The key
# expires when the bucket would be full again, as a missing key means a full bucket.
_TOKEN_BUCKET_LUA = """
local limit = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or limit
local at = tonumber(state[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - at) * per_ms)
local allowed = 0
if tokens >= cost then
  tokens = math.min(limit, tokens - cost)
  allowed = 1
end
local left = string.format('%.6f', tokens)
redis.call('HSET', KEYS[1], 'tokens', left, 'at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((limit - tokens) / per_ms) + 1000)
return {allowed, left}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every gateway replica pointed at the same server and prefix.

    If Redis stops answering mid-run, each gateway falls back to its own in-process buckets (the
    limit then holds per replica rather than overall) and logs a warning; it tries Redis again
    after `retry_s`. Failing closed would turn a cache outage into a full API outage, and
    failing wide open would drop the brute-force protection of logins: this does neither.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "et:",
        *,
        timeout_s: float = 0.5,
        retry_s: float = 5.0,
        connections: int = 64,
        queue_s: float = 2.0,
    ) -> None:
        self.url = url
        self._prefix = prefix + "rl:"
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._connections = connections
        self._queue_s = queue_s
        self._fallback = InProcessRateLimiter()
        self._down_until: float | None = None  # monotonic time to try Redis again, while down
        self._redis: Any = None  # redis.asyncio.Redis, imported only when Redis is used
        self._script: Any = None

    async def start(self) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        try:
            # A blocking pool: a burst of requests queues for a connection (for up to
            # `queue_s`) instead of failing with "too many connections" and tripping the fallback.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._connections,
                timeout=self._queue_s,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
            )
            client = aioredis.Redis(connection_pool=pool)
        except ValueError:
            raise UnsupportedUrl(
                REDIS_VARIABLE, self.url, "redis://host:6379/0 or rediss://…"
            ) from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise BackendUnavailable(REDIS_VARIABLE, self.url, _reason(exc)) from None
        self._redis = client
        self._script = client.register_script(_TOKEN_BUCKET_LUA)

    async def stop(self) -> None:
        client, self._redis, self._script = self._redis, None, None
        if client is not None:
            await client.aclose()

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        from redis.exceptions import RedisError

        if self._script is None:
            raise RuntimeError("RedisRateLimiter.start() has not been called")
        if self._down_until is None or time.monotonic() >= self._down_until:
            try:
                allowed, tokens = await self._script(
                    keys=[self._prefix + key], args=[rate.limit, repr(rate.per_s / 1000), cost]
                )
            except (RedisError, OSError) as exc:
                if self._down_until is None:
                    log.warning(
                        "%s=%s stopped answering (%s): rate limits now hold per gateway, "
                        "in this process, until it is back",
                        REDIS_VARIABLE,
                        redact_url(self.url),
                        _reason(exc),
                    )
                self._down_until = time.monotonic() + self._retry_s
            else:
                if self._down_until is not None:
                    log.warning("%s answers again: rate limits are shared again", REDIS_VARIABLE)
                    self._down_until = None
                return _decision(bool(allowed), float(tokens), rate, cost)
        return self._fallback.take(key, rate, cost)


def rate_limiter_for(redis_url: str | None, prefix: str) -> RateLimiter:
    """The adapter ET_REDIS_URL names: shared buckets in Redis, or this process's own."""
    return RedisRateLimiter(redis_url, prefix) if redis_url else InProcessRateLimiter()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
