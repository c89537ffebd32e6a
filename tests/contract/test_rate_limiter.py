"""Contract suite of the gateway's rate limiter, run against each adapter: in-process and Redis.

Waits here only let a bucket refill; no test asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl
from energy_tracker.core.rate_limits import Rate
from energy_tracker.services.gateway.ratelimit import (
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    rate_limiter_for,
)
from tests.backends import IN_CI, reachable
from tests.processes import free_port

HOURLY = Rate(5, 3600)  # refills so slowly that no test sees a token come back


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "in-process":
        adapter: RateLimiter = InProcessRateLimiter()
    else:
        url = request.getfixturevalue("redis_url")
        adapter = RedisRateLimiter(url, request.getfixturevalue("redis_prefix"))
    await adapter.start()
    yield adapter
    await adapter.stop()


async def test_a_fresh_bucket_allows_its_limit_then_refuses(limiter: RateLimiter) -> None:
    seen = [await limiter.hit("user:a", HOURLY) for _ in range(HOURLY.limit)]
    assert all(d.allowed for d in seen)
    assert [d.remaining for d in seen] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after_s == 0 for d in seen)

    refused = await limiter.hit("user:a", HOURLY)
    assert not refused.allowed
    assert refused.remaining == 0
    # One token comes back every 720 s; the whole bucket after 3600 s.
    assert 700 < refused.retry_after_s <= 720
    assert 3500 < refused.reset_s <= 3600


async def test_buckets_are_independent(limiter: RateLimiter) -> None:
    for _ in range(HOURLY.limit):
        await limiter.hit("ip:10.0.0.1", HOURLY)
    assert not (await limiter.hit("ip:10.0.0.1", HOURLY)).allowed
    assert (await limiter.hit("ip:10.0.0.2", HOURLY)).allowed


async def test_tokens_come_back_with_time(limiter: RateLimiter) -> None:
    rate = Rate(2, 0.5)  # a token every 0.25 s
    assert (await limiter.hit("device:d", rate)).allowed
    assert (await limiter.hit("device:d", rate)).allowed
    await asyncio.sleep(0.6)
    again = await limiter.hit("device:d", rate)
    assert again.allowed
    assert again.remaining >= 1  # two tokens had come back (never more than the limit)


async def test_a_negative_cost_gives_tokens_back_up_to_the_limit(limiter: RateLimiter) -> None:
    for _ in range(HOURLY.limit):
        await limiter.hit("login-ip:x", HOURLY)
    refund = await limiter.hit("login-ip:x", HOURLY, cost=-1)
    assert refund.allowed and refund.remaining == 1
    assert (await limiter.hit("login-ip:x", HOURLY, cost=-100)).remaining == HOURLY.limit
    assert (await limiter.hit("login-ip:x", HOURLY)).remaining == HOURLY.limit - 1


async def test_concurrent_hits_never_overspend(limiter: RateLimiter) -> None:
    rate = Rate(20, 3600)
    decisions = await asyncio.gather(*(limiter.hit("user:busy", rate) for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 20


# -- Redis only --------------------------------------------------------------------------------


@pytest.mark.redis
async def test_gateways_on_one_redis_share_one_limit(redis_url: str, redis_prefix: str) -> None:
    first, second = (
        RedisRateLimiter(redis_url, redis_prefix),
        RedisRateLimiter(redis_url, redis_prefix),
    )
    other = RedisRateLimiter(redis_url, redis_prefix + "other:")
    for adapter in (first, second, other):
        await adapter.start()
    try:
        allowed = [
            (await (first if i % 2 else second).hit("user:shared", HOURLY)).allowed
            for i in range(HOURLY.limit + 2)
        ]
        assert allowed == [True] * HOURLY.limit + [False, False]
        assert (await other.hit("user:shared", HOURLY)).allowed  # another prefix, another bucket
    finally:
        for adapter in (first, second, other):
            await adapter.stop()


@pytest.mark.redis
async def test_a_burst_larger_than_the_pool_waits_for_connections(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisRateLimiter(redis_url, redis_prefix, connections=4)
    await limiter.start()
    try:
        with caplog.at_level(logging.WARNING):
            decisions = await asyncio.gather(
                *(limiter.hit("user:burst", Rate(100, 3600)) for _ in range(300))
            )
        assert sum(d.allowed for d in decisions) == 100
        assert not caplog.records, "the burst fell back to in-process buckets"
    finally:
        await limiter.stop()


@pytest.mark.redis
async def test_a_bucket_key_expires_once_it_would_be_full(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    limiter = RedisRateLimiter(redis_url, redis_prefix)
    await limiter.start()
    client = aioredis.from_url(redis_url)
    try:
        await limiter.hit("user:ttl", HOURLY)
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
        assert len(keys) == 1
        ttl_ms = await client.pttl(keys[0])
        assert 0 < ttl_ms <= 720_000 + 1000  # one token to refill, plus a second of slack
    finally:
        await client.aclose()
        await limiter.stop()


async def test_an_unreachable_redis_stops_the_start_naming_the_variable() -> None:
    limiter = RedisRateLimiter(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    with pytest.raises(BackendUnavailable) as caught:
        await limiter.start()
    assert "ET_REDIS_URL" in str(caught.value) and "hunter2" not in str(caught.value)


async def test_a_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(UnsupportedUrl, match="ET_REDIS_URL"):
        await rate_limiter_for("amqp://127.0.0.1:5672", "et:").start()


def test_no_redis_url_means_in_process_buckets() -> None:
    assert isinstance(rate_limiter_for(None, "et:"), InProcessRateLimiter)


class OwnRedis:
    """A redis-server of the test's own on a free port, which the test may stop and restart."""

    def __init__(self, binary: str, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self._command += ["--appendonly", "no", "--dir", str(tmp_path)]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not listen on {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis leg: no redis-server binary, and CI=true requires it")
        pytest.skip("redis leg skipped: no redis-server binary")
    server = OwnRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
async def test_losing_redis_mid_run_falls_back_to_this_gateways_buckets(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisRateLimiter(own_redis.url, "et:", retry_s=0.2)
    await limiter.start()
    try:
        for _ in range(3):
            assert (await limiter.hit("user:u", HOURLY)).remaining >= 2

        with caplog.at_level(logging.WARNING):
            own_redis.stop()
            # Redis is gone: still answered (in-process buckets, fresh), never an exception.
            fallback = [await limiter.hit("user:u", HOURLY) for _ in range(HOURLY.limit + 1)]
        assert [d.allowed for d in fallback] == [True] * HOURLY.limit + [False]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "ET_REDIS_URL" in warnings[0]

        # Redis is back (empty): after the retry delay its bucket rules again, not the spent
        # in-process one.
        own_redis.start()
        await asyncio.sleep(0.3)
        back = await limiter.hit("user:u", HOURLY)
        assert back.allowed and back.remaining == HOURLY.limit - 1
    finally:
        await limiter.stop()
