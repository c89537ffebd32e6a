"""Reading buckets back for an API: query parameters checked, and a device's buckets in any time
zone. The usage and insights services both serve buckets this way, so it lives here once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from energy_tracker.core.consumption import (
    Group,
    HouseholdBucket,
    Layout,
    exchange_costs,
    household_buckets,
)
from energy_tracker.core.directory import DeviceContext
from energy_tracker.core.energy import period_end, period_starts, rollup
from energy_tracker.core.errors import ApiError
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore


def zone(name: str, field: str = "tz") -> ZoneInfo:
    """The IANA zone `name`; a 422 naming `field` when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(
            422,
            "invalid",
            f"unknown time zone {name!r}",
            [{"field": field, "message": "not an IANA time zone"}],
        ) from None


LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant datetime holds


def instant(value: str | None, field: str, tz: ZoneInfo) -> int | None:
    """Epoch ms from RFC 3339 (with offset), a date (local midnight in `tz`), `today` (this
    day's local midnight in `tz`: a fixed URL that always asks for today, as a Home Assistant
    sensor needs) or epoch ms, from 1970 to the year 9999 (any other instant would overflow a
    store's or a clock's integer)."""
    if value is None:
        return None
    at: int | None = None
    try:
        if value == "today":
            value = datetime.now(tz).date().isoformat()
        if value.isdigit():
            at = int(value)
        elif len(value) == 10:
            d = date.fromisoformat(value)
            at = int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                at = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        pass
    if at is None or not 0 <= at <= LATEST_MS:
        raise ApiError(
            422,
            "invalid",
            f"{field} must be RFC 3339 with an offset, a date, today or epoch milliseconds, "
            "from 1970 to 9999",
            [{"field": field, "message": "bad timestamp"}],
        )
    return at


async def device_buckets(
    store: SeriesStore,
    device_id: str,
    device_zone: str,
    granularity: Granularity,
    lo: int,
    hi: int,
    tz: ZoneInfo,
) -> list[Bucket]:
    """Stored buckets, or for days/months in another zone than the device's, sums of quarters."""
    if _stored_as_asked(granularity, device_zone, tz):
        return await store.buckets([device_id], granularity, lo, hi)
    starts = period_starts(lo, hi, granularity, tz)
    if not starts:
        return []
    quarters = await store.buckets(
        [device_id], Granularity.QUARTER, starts[0], period_end(starts[-1], granularity, tz)
    )
    # One device's quarters come back in time order: each period is a slice found by bisection.
    quarter_starts = [q.start for q in quarters]
    out = []
    for s in starts:
        first = bisect_left(quarter_starts, s)
        last = bisect_left(quarter_starts, period_end(s, granularity, tz), first)
        if last > first:
            out.append(rollup(device_id, granularity, s, quarters[first:last]))
    return out


async def summed_buckets(
    store: SeriesStore,
    devices: Iterable[tuple[str, str]],
    granularity: Granularity,
    lo: int,
    hi: int,
    tz: ZoneInfo,
) -> list[Bucket]:
    """Several (device id, device zone) added period by period (device "*"). The devices whose
    stored buckets are the asked periods are summed by the store in one query; only a device
    whose day or month is another zone's adds its own periods (from its quarters)."""
    stored: list[str] = []
    others: list[Bucket] = []
    for device_id, device_zone in devices:
        if _stored_as_asked(granularity, device_zone, tz):
            stored.append(device_id)
        else:
            others += await device_buckets(store, device_id, device_zone, granularity, lo, hi, tz)
    totals = await store.summed_buckets(stored, granularity, lo, hi)
    return summed(granularity, totals + others) if others else totals


async def energy_totals(
    store: SeriesStore,
    devices: Iterable[tuple[str, str]],
    granularity: Granularity,
    lo: int,
    hi: int,
    tz: ZoneInfo,
) -> dict[str, float]:
    """Wh of each (device id, device zone) over the periods of [lo, hi) (0.0 for a device with
    none): the devices whose stored buckets are the asked periods added up by the store in one
    query (`device_totals`), only a device whose day or month is another zone's from its own
    periods, as `device_buckets` gives them, so the sum is the one its periods show."""
    out: dict[str, float] = {}
    stored: list[str] = []
    for device_id, device_zone in devices:
        out[device_id] = 0.0
        if _stored_as_asked(granularity, device_zone, tz):
            stored.append(device_id)
        else:
            buckets = await device_buckets(store, device_id, device_zone, granularity, lo, hi, tz)
            out[device_id] = sum(b.energy_wh for b in buckets)
    for total in await store.device_totals(stored, granularity, lo, hi):
        out[total.device_id] = total.energy_wh
    return out


def _stored_as_asked(granularity: Granularity, device_zone: str, tz: ZoneInfo) -> bool:
    return granularity in (Granularity.QUARTER, Granularity.HOUR) or ZoneInfo(device_zone) == tz


def summed(granularity: Granularity, buckets: Iterable[Bucket]) -> list[Bucket]:
    """Buckets of several devices added period by period (device "*"), in time order."""
    by_start: dict[int, list[Bucket]] = defaultdict(list)
    for b in buckets:
        by_start[b.start].append(b)
    return [rollup("*", granularity, s, parts) for s, parts in sorted(by_start.items())]


def combined(
    layout: Layout, granularity: Granularity, buckets: Iterable[Bucket]
) -> list[HouseholdBucket]:
    """A household's periods from its devices' buckets (each device's, any order): each term
    of the consumption formula summed, then combined (`consumption.household_buckets`)."""
    term_of = {d: g for g, members in layout.groups().items() for d in members}
    per_term: dict[Group, list[Bucket]] = defaultdict(list)
    for b in buckets:
        if b.device_id in term_of:
            per_term[term_of[b.device_id]].append(b)
    return household_buckets(
        layout, granularity, {g: summed(granularity, bs) for g, bs in per_term.items()}
    )


async def household(
    store: SeriesStore,
    devices: Sequence[DeviceContext],
    granularity: Granularity,
    lo: int,
    hi: int,
    tz: ZoneInfo,
    tariff: dict[str, Any] | None = None,
    price_zone: ZoneInfo | None = None,
) -> list[HouseholdBucket]:
    """A household's consumption period by period, each kWh once (core.consumption): each term
    of the formula summed by the store (`summed_buckets`: a row a period per term, so a month by
    day is a few dozen rows whatever the number of devices), priced as `price_exchange` does."""
    layout = Layout.of(d.placement for d in devices)
    zones = {d.device_id: d.timezone for d in devices}
    out = household_buckets(
        layout, granularity, await _terms(store, layout, zones, granularity, lo, hi, tz)
    )
    await price_exchange(store, layout, zones, out, granularity, tz, tariff, price_zone)
    return out


async def _terms(
    store: SeriesStore,
    layout: Layout,
    zones: Mapping[str, str],
    granularity: Granularity,
    lo: int,
    hi: int,
    tz: ZoneInfo,
) -> dict[Group, list[Bucket]]:
    """Each term of the formula, its devices summed period by period."""
    return {
        g: await summed_buckets(store, [(d, zones[d]) for d in members], granularity, lo, hi, tz)
        for g, members in layout.groups().items()
    }


async def price_exchange(
    store: SeriesStore,
    layout: Layout,
    zones: Mapping[str, str],
    periods: Sequence[HouseholdBucket],
    granularity: Granularity,
    tz: ZoneInfo,
    tariff: dict[str, Any] | None,
    price_zone: ZoneInfo | None = None,
) -> None:
    """Replace the cost of each of `periods` (in time order, in `tz`) by what the home
    exchanged priced quarter by quarter, when the layout needs it (`priced_per_quarter`: no
    meter, but production or a battery offsets the loads): imports at the import price,
    exports at the export price, under `tariff` at the hours of `price_zone` (default `tz`).
    Every other home's cost is already its bucket's. `zones`: each device's zone. The one
    pricing `GET /usage`, the insights and summed cost alert rules share."""
    if not layout.priced_per_quarter or not periods:
        return
    first, last = periods[0].bucket.start, periods[-1].bucket.start
    end = period_end(last, granularity, tz)
    quarters = household_buckets(
        layout,
        Granularity.QUARTER,
        await _terms(store, layout, zones, Granularity.QUARTER, first, end, tz),
    )
    costs = exchange_costs(quarters, granularity, tz, price_zone or tz, tariff)
    for period in periods:
        period.bucket.cost = costs.get(period.bucket.start, 0.0)
