"""ET_RATE_LIMITS parsing and the in-process token bucket's arithmetic (a clock of our own)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from energy_tracker.config import Settings
from energy_tracker.core.rate_limits import (
    DEFAULT_RATE_LIMITS,
    Rate,
    RateLimits,
    parse_rate_limits,
)
from energy_tracker.services.gateway.ratelimit import InProcessRateLimiter


def test_the_documented_format_overrides_only_what_it_names() -> None:
    limits = parse_rate_limits("user=600/60s, login=10/5m,device=1000/1h")
    assert limits == RateLimits(
        user=Rate(600, 60),
        device=Rate(1000, 3600),
        anonymous=DEFAULT_RATE_LIMITS.anonymous,
        login=Rate(10, 300),
    )
    assert parse_rate_limits("anonymous=5/s").anonymous == Rate(5, 1)  # type: ignore[union-attr]
    assert parse_rate_limits("") == DEFAULT_RATE_LIMITS
    assert str(parse_rate_limits(str(DEFAULT_RATE_LIMITS))) == str(DEFAULT_RATE_LIMITS)


@pytest.mark.parametrize("off", ["off", "OFF", " none ", "0"])
def test_off_turns_rate_limiting_off(off: str) -> None:
    assert parse_rate_limits(off) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("users=5/60s", "kind one of anonymous, device, login, user"),
        ("user", "expected kind=N/period"),
        ("user=5", "expected N/period"),
        ("user=5/60", "expected N/period"),
        ("user=5/60d", "expected N/period"),
        ("user=-5/60s", "expected N/period"),
        ("user=0/60s", "above zero"),
        ("user=5/0s", "above zero"),
        ("user=5/60s,user=6/60s", "given twice"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_part(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_rate_limits(text)


def test_settings_read_rate_limits_and_cors_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ET_RATE_LIMITS", "user=5/1m")
    monkeypatch.setenv("ET_CORS_ORIGINS", "https://app.example.com/, http://localhost:5173")
    settings = Settings()
    assert settings.rate_limits is not None and settings.rate_limits.user == Rate(5, 60)
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:5173")
    monkeypatch.setenv("ET_RATE_LIMITS", "user=lots")
    with pytest.raises(ValidationError, match="rate_limits"):
        Settings()


def test_defaults_leave_room_for_batching_devices_and_stop_password_guessing() -> None:
    limits = DEFAULT_RATE_LIMITS
    assert limits.device.per_s >= 10  # a home gateway posting batches several times a second
    assert limits.user.per_s >= 5
    assert limits.login.limit <= 10 and limits.login.period_s >= 60


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refill_is_linear_and_capped() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rate = Rate(10, 10)  # one token a second
    for _ in range(10):
        assert limiter.take("k", rate).allowed
    refused = limiter.take("k", rate)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.0)
    assert refused.reset_s == pytest.approx(10.0)
    clock.now += 2.5
    assert limiter.take("k", rate).remaining == 1  # 2.5 back, one taken
    clock.now += 1000
    assert limiter.take("k", rate).remaining == 9  # never more than the limit


def test_the_table_forgets_full_buckets_first_and_stays_bounded() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock, max_keys=100)
    slow = Rate(2, 3600)
    limiter.take("busy", slow)
    limiter.take("busy", slow)
    clock.now += 1
    for i in range(150):  # spoofed principals, each bucket full again one second later
        limiter.take(f"ip:{i}", Rate(1, 0.5))
        clock.now += 1
    assert len(limiter._buckets) <= 100
    assert not limiter.take("busy", slow).allowed  # a spent bucket is never forgotten early
