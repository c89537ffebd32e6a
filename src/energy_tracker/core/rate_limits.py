"""The gateway's rate limits as settings: each principal's rate, parsed from ET_RATE_LIMITS.

In the core because the settings read them at start; the gateway enforces them
(services/gateway/ratelimit.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period_s` seconds, with bursts of up to `limit`."""

    limit: int
    period_s: float

    @property
    def per_s(self) -> float:
        return self.limit / self.period_s

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_s:g}s"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The rate of each kind of principal, and of failed logins per account and per IP."""

    user: Rate
    device: Rate
    anonymous: Rate
    login: Rate

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


# Sized for a household and for a provider's ingestion alike: a device (or a home gateway with
# one key) may post a batch several times a second, a signed-in app polls and pages, and
# anonymous callers only register, log in and refresh. Failed logins: 10 per 5 minutes.
DEFAULT_RATE_LIMITS = RateLimits(
    user=Rate(1200, 60),
    device=Rate(6000, 60),
    anonymous=Rate(120, 60),
    login=Rate(10, 300),
)

_RATE = re.compile(r"^(\d+)/(\d+(?:\.\d+)?)?([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
RATE_LIMITS_SYNTAX = "'off', or kind=N/period pairs such as user=600/60s,login=10/5m (s, m or h)"


def parse_rate_limits(text: str) -> RateLimits | None:
    """ET_RATE_LIMITS: `off` (None), or comma-separated `kind=N/period` overriding the defaults.

    Raises ValueError naming the part that is wrong, so a typo stops the start instead of
    silently leaving a limit at its default.
    """
    text = text.strip()
    if text.lower() in ("off", "none", "0"):
        return None
    kinds = {f.name for f in fields(RateLimits)}
    chosen: dict[str, Rate] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, eq, spec = (s.strip() for s in part.partition("="))
        if not eq or kind not in kinds:
            raise ValueError(
                f"{part!r}: expected kind=N/period with kind one of {', '.join(sorted(kinds))}"
            )
        match = _RATE.match(spec.replace(" ", ""))
        if match is None:
            raise ValueError(f"{part!r}: expected N/period like 600/60s, 10/5m or 1000/1h")
        limit, count, unit = int(match[1]), float(match[2] or 1), match[3]
        period_s = count * _UNIT_S[unit]
        if limit < 1 or period_s <= 0:
            raise ValueError(f"{part!r}: the limit and the period must be above zero")
        if kind in chosen:
            raise ValueError(f"{part!r}: {kind} is given twice")
        chosen[kind] = Rate(limit, period_s)
    return replace(DEFAULT_RATE_LIMITS, **chosen)
