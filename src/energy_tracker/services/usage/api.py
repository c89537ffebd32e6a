"""Routes of the usage service: buckets per device or per user, and the raw readings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from energy_tracker.core import bucket_queries as queries
from energy_tracker.core.authz import Caller
from energy_tracker.core.bucket_queries import LATEST_MS
from energy_tracker.core.consumption import HouseholdBucket, Layout
from energy_tracker.core.directory import DeviceContext, DeviceDirectory, HouseholdProfile
from energy_tracker.core.energy import period_start
from energy_tracker.core.errors import ApiError
from energy_tracker.core.events import Reading
from energy_tracker.core.http import (
    authorized,
    caller_gone,
    json_response,
    read_directory,
    shutting_down,
    visible_device,
)
from energy_tracker.core.sse import sse_response
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore
from energy_tracker.services.usage.live import reading_events

router = APIRouter(tags=["usage"])

DeviceId = Annotated[str, Path(max_length=64)]
DEFAULT_SPAN_MS = {
    Granularity.QUARTER: 86_400_000,
    Granularity.HOUR: 86_400_000,
    Granularity.DAY: 31 * 86_400_000,
    Granularity.MONTH: 366 * 86_400_000,
}
DAY_MS = 86_400_000
MAX_SPAN_MS = {
    Granularity.QUARTER: 400 * DAY_MS,
    Granularity.HOUR: 5 * 366 * DAY_MS,
    Granularity.DAY: 10 * 366 * DAY_MS,
    Granularity.MONTH: 100 * 366 * DAY_MS,
}
"""The longest `to - from` each granularity answers (422 beyond): about 38,000 quarters, 44,000
hours, 3,660 days or 1,200 months, so one query is a bounded amount of work for the loop."""


async def series(request: Request) -> SeriesStore:
    """FastAPI dependency: the time-series store (async, as every dependency:
    tests/unit/test_no_thread_per_request.py). Measured on the 10M store, the usage routes'
    dependencies made async cut a day by hour's p50 (2.7 against 4.7 ms) but a year by day
    took 4-5 times as long at p50 (21-38 ms against 4-6, back to back): not understood yet."""
    return request.app.state.series


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """The query both usage routes take: which buckets, over what span, in which zone."""

    granularity: Granularity
    start: str | None
    end: str | None
    tz: str | None

    def span(self, zone: ZoneInfo) -> tuple[int, int]:
        """[from, to) in epoch ms, the start aligned to a bucket in `zone`; 422 when invalid."""
        return _range(self.granularity, self.start, self.end, zone)


async def usage_query(
    granularity: Granularity = Granularity.HOUR,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    tz: Annotated[str | None, Query(max_length=64)] = None,
) -> UsageQuery:
    """FastAPI dependency: the query string of the usage routes (default zone: the owner's)."""
    return UsageQuery(granularity, start, end, tz)


def _range(
    granularity: Granularity, start: str | None, end: str | None, tz: ZoneInfo
) -> tuple[int, int]:
    hi = queries.instant(end, "to", tz) or int(time.time() * 1000)
    lo = queries.instant(start, "from", tz)
    lo = hi - DEFAULT_SPAN_MS[granularity] if lo is None else lo
    if lo >= hi:
        raise ApiError(
            422,
            "invalid",
            "from must be before to",
            [{"field": "from", "message": "not before to"}],
        )
    if hi - lo > MAX_SPAN_MS[granularity]:
        days = MAX_SPAN_MS[granularity] // DAY_MS
        raise ApiError(
            422,
            "invalid",
            f"range too long: at most {days} days at granularity {granularity}",
            [{"field": "from", "message": f"more than {days} days before to"}],
        )
    return period_start(lo, granularity, tz), hi


@lru_cache(maxsize=16_384)
def _local_iso(start_ms: int, tz: ZoneInfo) -> str:
    """A period start as local RFC 3339: the same few thousand starts (a year of days, a day of
    hours) come back request after request, and formatting 365 of them again took several
    times as long as encoding the whole answer."""
    return datetime.fromtimestamp(start_ms / 1000, tz).isoformat()


def _item(bucket: Bucket, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "period_start": _local_iso(bucket.start, tz),
        "energy_kwh": round(bucket.energy_wh / 1000.0, 6),
        "cost": round(bucket.cost, 6),
        "avg_power_w": None if bucket.avg_power_w is None else round(bucket.avg_power_w, 3),
        "min_power_w": bucket.min_power_w,
        "max_power_w": bucket.max_power_w,
        "samples": bucket.samples,
    }


@router.get("/devices/{device_id}/usage", response_model=dict[str, Any])
async def device_usage(
    device_id: DeviceId,
    query: UsageQuery = Depends(usage_query),
    caller: Caller = Depends(authorized),
    store: SeriesStore = Depends(series),
    directory: DeviceDirectory = Depends(read_directory),
) -> Response:
    """One of your devices' buckets, period by period (default zone: the device's)."""
    ctx = await visible_device(caller, directory, device_id)
    zone = queries.zone(query.tz or ctx.timezone)
    lo, hi = query.span(zone)
    buckets = await queries.device_buckets(
        store, device_id, ctx.timezone, query.granularity, lo, hi, zone
    )
    return json_response(
        {
            "device_id": device_id,
            "granularity": query.granularity,
            "timezone": zone.key,
            "items": [_item(b, zone) for b in buckets],
        }
    )


@router.get("/usage", response_model=dict[str, Any])
async def household_usage(
    household_id: Annotated[
        str | None,
        Query(max_length=64, description="One of your households; default: all of them."),
    ] = None,
    query: UsageQuery = Depends(usage_query),
    caller: Caller = Depends(authorized),
    store: SeriesStore = Depends(series),
    directory: DeviceDirectory = Depends(read_directory),
) -> Response:
    """Each household's consumption, period by period, each kWh once, each household on its own
    (never added together: they are different homes). `energy_kwh` is what the home consumed
    (grid import - export + production - battery with a grid meter, else the sum of its top-level
    loads), `cost` what crossed the meter; each item adds the terms and `other_kwh` (what no
    top-level load explains), and `breakdown` gives each top-level load's share of the whole
    span. `households` lists them, your own first, each in its own zone unless `tz` is given;
    `household_id`, `timezone`, `items`, `metered`, `consumption_kwh` and `breakdown` repeat the
    first of them, as this route answered before there were households."""
    scope = caller.scope(household_id)
    if scope is None:  # an admin asking for no household: their own
        scope = [h for h, _ in caller.identity.households[:1]]
    profiles = await directory.household_profiles(scope)
    contexts = await directory.in_households(scope)
    answers = [
        await _household_usage(store, profiles[h], contexts, query) for h in scope if h in profiles
    ]
    first = answers[0] if answers else None
    return json_response(
        {
            "granularity": query.granularity,
            "household_id": first["household_id"] if first else None,
            "timezone": first["timezone"] if first else (query.tz or "UTC"),
            "items": first["items"] if first else [],
            "metered": first["metered"] if first else False,
            "consumption_kwh": first["consumption_kwh"] if first else 0.0,
            "breakdown": first["breakdown"] if first else [],
            "households": answers,
        }
    )


async def _household_usage(
    store: SeriesStore,
    household: HouseholdProfile,
    contexts: list[DeviceContext],
    query: UsageQuery,
) -> dict[str, Any]:
    """One household's consumption, each kWh once, in its zone (or the query's)."""
    home_zone = queries.zone(household.timezone)
    zone = queries.zone(query.tz) if query.tz else home_zone
    lo, hi = query.span(zone)
    mine = [ctx for ctx in contexts if ctx.household_id == household.household_id]
    tariff = mine[0].tariff if mine else None
    periods = await queries.household(
        store, mine, query.granularity, lo, hi, zone, tariff, home_zone
    )
    layout = Layout.of(ctx.placement for ctx in mine)
    consumed = sum(p.bucket.energy_wh for p in periods)
    loads = [ctx for ctx in mine if ctx.device_id in layout.loads]
    energy = await queries.energy_totals(
        store, [(ctx.device_id, ctx.timezone) for ctx in loads], query.granularity, lo, hi, zone
    )
    breakdown, explained = [], 0.0
    for ctx in loads:
        explained += energy[ctx.device_id]
        breakdown.append(_share(ctx.device_id, ctx.name, ctx.role, energy[ctx.device_id], consumed))
    if layout.metered:
        breakdown.append(_share(None, "other", None, consumed - explained, consumed))
    return {
        "household_id": household.household_id,
        "name": household.name,
        "timezone": zone.key,
        "currency": household.currency,
        "items": [_household_item(p, layout, zone) for p in periods],
        "metered": layout.metered,
        "consumption_kwh": _kwh(consumed),
        "breakdown": breakdown,
    }


def _kwh(energy_wh: float) -> float:
    return round(energy_wh / 1000.0, 6)


def _household_item(period: HouseholdBucket, layout: Layout, tz: ZoneInfo) -> dict[str, Any]:
    flows = period.flows
    return {
        **_item(period.bucket, tz),
        "grid_kwh": _kwh(flows.grid) if layout.grid else None,
        "production_kwh": _kwh(flows.production) if layout.production else None,
        "battery_kwh": _kwh(flows.battery) if layout.battery else None,
        "loads_kwh": _kwh(flows.loads) if layout.loads else None,
        "other_kwh": None if period.other_wh is None else _kwh(period.other_wh),
    }


def _share(
    device_id: str | None, name: str, role: str | None, energy_wh: float, consumed_wh: float
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "name": name,
        "role": role,
        "energy_kwh": _kwh(energy_wh),
        "share_pct": round(energy_wh / consumed_wh * 100.0, 3) if consumed_wh > 0 else None,
    }


@router.get("/devices/{device_id}/readings")
async def device_readings(
    device_id: DeviceId,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    cursor: Annotated[int | None, Query(ge=0, le=LATEST_MS)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    caller: Caller = Depends(authorized),
    store: SeriesStore = Depends(series),
    directory: DeviceDirectory = Depends(read_directory),
) -> dict[str, Any]:
    """Raw readings in time order; pass `next_cursor` back as `cursor` for the next page."""
    await visible_device(caller, directory, device_id)
    utc = ZoneInfo("UTC")
    hi = queries.instant(end, "to", utc) or int(time.time() * 1000) + 300_000
    lo = queries.instant(start, "from", utc) or 0
    rows = await store.readings_page(device_id, lo, hi, cursor, limit)
    items = [_reading_item(r) for r in rows]
    return {"items": items, "next_cursor": rows[-1].ts if len(rows) == limit else None}


@router.get(
    "/devices/{device_id}/live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def device_live(
    request: Request,
    device_id: DeviceId,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    caller: Caller = Depends(authorized),
    store: SeriesStore = Depends(series),
    directory: DeviceDirectory = Depends(read_directory),
) -> StreamingResponse:
    """Server-Sent Events: the device's latest reading, then each new one as it is stored
    (`event: reading`, `id`: its ts in epoch ms; send it back as Last-Event-ID to resume)."""
    await visible_device(caller, directory, device_id)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    events = reading_events(
        store,
        request.app.state.stored_readings,
        device_id,
        after,
        _reading_item,
        shutting_down(request),
        caller_gone(request, caller.identity),
    )
    return sse_response(events)


def _reading_item(r: Reading) -> dict[str, Any]:
    return {
        "ts": datetime.fromtimestamp(r.ts / 1000, UTC).isoformat(),
        "ts_ms": r.ts,
        "power_w": r.power_w,
        "energy_wh": r.energy_wh,
        "voltage_v": r.voltage_v,
        "current_a": r.current_a,
    }
