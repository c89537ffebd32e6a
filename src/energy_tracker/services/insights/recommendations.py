"""What a household could do, each with the saving it would bring: move a regular load to a
cheaper time-of-use hour, find an always-on load above the home's usual level, look at a device
that started using more. Pure functions over hours and days of energy and cost (an hour's
price is its cost / kWh, so a time-of-use tariff shows in the hours themselves); unit-tested
with numbers worked out by hand.

Why these three and these estimates: each names one thing to do and prices only what that
thing changes, from the home's own recent history (medians, so that one odd evening does not
make a recommendation), and a saving too small to act on is no recommendation at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, median
from typing import Literal

from energy_tracker.services.insights.analysis import BASELOAD_PERCENTILE, Day, Hour, percentile

Kind = Literal["shift_load", "always_on", "device_increase"]

# Savings are per month of 30 days.
MONTH_DAYS = 30
# A recommendation saves at least this much energy a month (kWh), or money when it only moves
# energy (in the household's currency, for a shift).
MIN_SAVING_KWH = 3.0
MIN_SAVING_MONEY = 0.5
# An always-on level counts as raised when at least this many watts and this share above usual.
ALWAYS_ON_MIN_W = 30.0
ALWAYS_ON_MIN_SHARE = 0.1
# A device uses more when its recent days average at least this share above the days before.
DEVICE_MIN_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: Kind
    device_id: str | None  # the device it is about; None: the whole household
    # shift_load: the local hour the load usually runs at and the cheapest hour to move it to.
    from_hour: int | None
    to_hour: int | None
    # The usage it is about: the load moved (kWh a day), the always-on power above usual (W) or
    # the device's rise (kWh a day).
    amount: float
    saving_kwh_per_month: float  # energy no longer used; 0 for a shift
    saving_per_month: float  # in the household's currency


def _price(hours: Sequence[Hour]) -> float | None:
    """The plain mean price of the hours that used energy: an always-on load draws at every
    hour alike."""
    prices = [h.cost / h.energy_kwh for h in hours if h.energy_kwh > 0]
    return fmean(prices) if prices else None


def shift_load(hours: Sequence[Hour]) -> Recommendation | None:
    """The regular load worth moving most: at each local hour of the day, the median use above
    the always-on level (the 10th percentile of all the hours) and the median price; the hour
    whose load × (its price - the cheapest hour's price) is largest, moved to the cheapest hour
    (the earliest of equals). None under a flat tariff or when it would save too little."""
    by_hour: dict[int, list[Hour]] = defaultdict(list)
    for h in hours:
        by_hour[h.start.hour].append(h)
    priced = {
        hour: median(h.cost / h.energy_kwh for h in items if h.energy_kwh > 0)
        for hour, items in by_hour.items()
        if any(h.energy_kwh > 0 for h in items)
    }
    if len(priced) < 2:
        return None
    base = percentile([h.energy_kwh for h in hours], BASELOAD_PERCENTILE)
    cheapest = min(priced, key=lambda hour: (priced[hour], hour))
    best: tuple[float, int, float] | None = None
    for hour, price in sorted(priced.items()):
        load = max(median(h.energy_kwh for h in by_hour[hour]) - base, 0.0)
        saving = load * (price - priced[cheapest]) * MONTH_DAYS
        if best is None or saving > best[0]:
            best = (saving, hour, load)
    if best is None or best[0] < MIN_SAVING_MONEY:
        return None
    saving, hour, load = best
    return Recommendation("shift_load", None, hour, cheapest, load, 0.0, saving)


def always_on(recent: Sequence[Hour], earlier: Sequence[Hour]) -> Recommendation | None:
    """The always-on power (10th percentile of the hours) of the `recent` hours against that of
    the `earlier` ones: when it rose by at least ALWAYS_ON_MIN_W and ALWAYS_ON_MIN_SHARE, the
    rise is a load left on that was not before; switching it off saves it at every hour."""
    if not recent or not earlier:
        return None
    now = percentile([h.energy_kwh for h in recent], BASELOAD_PERCENTILE) * 1000.0
    usual = percentile([h.energy_kwh for h in earlier], BASELOAD_PERCENTILE) * 1000.0
    rise = now - usual
    if rise < ALWAYS_ON_MIN_W or rise < ALWAYS_ON_MIN_SHARE * usual:
        return None
    kwh = rise / 1000.0 * 24 * MONTH_DAYS
    price = _price(recent) or 0.0
    if kwh < MIN_SAVING_KWH:
        return None
    return Recommendation("always_on", None, None, None, rise, kwh, kwh * price)


def device_increase(
    device_id: str, recent: Sequence[Day], earlier: Sequence[Day]
) -> Recommendation | None:
    """A device whose `recent` days used on average at least DEVICE_MIN_SHARE more than its
    `earlier` days: back to its earlier use saves the difference, at its recent mean price."""
    if not recent or not earlier:
        return None
    now = fmean(d.energy_kwh for d in recent)
    before = fmean(d.energy_kwh for d in earlier)
    rise = now - before
    if before <= 0 or rise < DEVICE_MIN_SHARE * before:
        return None
    kwh = rise * MONTH_DAYS
    used = sum(d.energy_kwh for d in recent)
    price = sum(d.cost for d in recent) / used if used > 0 else 0.0
    if kwh < MIN_SAVING_KWH:
        return None
    return Recommendation("device_increase", device_id, None, None, rise, kwh, kwh * price)
