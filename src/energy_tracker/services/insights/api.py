"""Routes of the insights service: a summary, forecasts and anomalies of the caller's home (what
it consumed, each kWh once: core.consumption), or of one device with `device_id` (theirs; an
admin's: any)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request

from energy_tracker.core import bucket_queries as queries
from energy_tracker.core.authz import Caller
from energy_tracker.core.consumption import Layout
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import authorized, device_directory, visible_device
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.services.insights import reports
from energy_tracker.services.insights.reports import DeviceRef, Subject
from energy_tracker.services.insights.schemas import AnomaliesOut, ForecastOut, SummaryOut

router = APIRouter(prefix="/insights", tags=["insights"])

# An `at` beyond these years is a typo, and past them date arithmetic would overflow.
YEARS = range(1971, 9000)


def series(request: Request) -> SeriesStore:
    """FastAPI dependency: the time-series store."""
    return request.app.state.series


def _as_of(at: str | None, zone: ZoneInfo) -> datetime:
    """The instant `at` names (default: now) in `zone`; a 422 naming `at` when out of range."""
    at_ms = queries.instant(at, "at", zone)
    try:
        now = datetime.fromtimestamp((time.time() * 1000 if at_ms is None else at_ms) / 1000, zone)
        if now.year in YEARS:
            return now
    except (OverflowError, OSError, ValueError):
        pass
    raise ApiError(
        422,
        "invalid",
        f"at must lie in the years {YEARS.start} to {YEARS.stop - 1}",
        [{"field": "at", "message": "out of range"}],
    )


async def subject(
    device_id: Annotated[
        str | None,
        Query(max_length=64, description="One of your devices; default: all of them, summed."),
    ] = None,
    tz: Annotated[
        str | None,
        Query(
            max_length=64,
            description="IANA zone to count days in; default: the device's with device_id "
            "(its own, else its household's), else the household's.",
        ),
    ] = None,
    at: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Make the report as of this instant (RFC 3339, a date or epoch ms); "
            "default: now. Usage is read in whole days, so that day counts as recorded.",
        ),
    ] = None,
    household_id: Annotated[
        str | None,
        Query(
            max_length=64,
            description="One of your households; default: your own (the first of GET /households).",
        ),
    ] = None,
    caller: Caller = Depends(authorized),
    directory: DeviceDirectory = Depends(device_directory),
) -> Subject:
    """FastAPI dependency: whose usage, in which zone, as of when, from the query."""
    if device_id is not None:
        ctx = await visible_device(caller, directory, device_id, field="device_id")
        if household_id is not None and household_id != ctx.household_id:
            raise ApiError(
                422,
                "invalid",
                "the device is not in that household",
                [{"field": "device_id", "message": "not in household_id"}],
            )
        devices = [DeviceRef(device_id, ctx.name, ctx.timezone)]
        home_zone, currency = ctx.timezone, ctx.currency
        profile = (await directory.household_profiles([ctx.household_id])).get(ctx.household_id)
        layout = None
    else:
        home = caller.home(household_id)
        own = await directory.in_households([home])
        devices = [DeviceRef(c.device_id, c.name, c.timezone) for c in own]
        layout = Layout.of(c.placement for c in own)
        profile = (await directory.household_profiles([home])).get(home)
        home_zone, currency = (profile.timezone, profile.currency) if profile else ("UTC", "EUR")
    zone = queries.zone(tz or home_zone)
    now = _as_of(at, zone)
    # The household's country gives its public holidays (days off, like weekends); none set:
    # weekends only.
    country = profile.country if profile else None
    return Subject(device_id, devices, zone, currency, now, country, layout)


@router.get("/summary", response_model=SummaryOut)
async def summary(
    request: Request, of: Subject = Depends(subject), store: SeriesStore = Depends(series)
) -> SummaryOut:
    """Baseload (always-on power, its yearly kWh and cost), this month so far against last
    month, the devices that used the most this month, recommendations with their savings, and
    with ET_LLM_URL a short narrative of these facts."""
    narrator = getattr(request.app.state, "narrator", None)
    return SummaryOut.model_validate(await reports.summary(store, of, narrator))


@router.get("/forecast", response_model=ForecastOut)
async def forecast(
    request: Request, of: Subject = Depends(subject), store: SeriesStore = Depends(series)
) -> ForecastOut:
    """This month's expected kWh and cost with a range, and each of the next seven days."""
    cache = getattr(request.app.state, "hour_cache", None)
    return ForecastOut.model_validate(await reports.forecast(store, of, cache))


@router.get("/anomalies", response_model=AnomaliesOut)
async def anomalies(
    request: Request,
    of: Subject = Depends(subject),
    store: SeriesStore = Depends(series),
    days: Annotated[int, Query(ge=1, le=90, description="How many full days back to look.")] = 14,
) -> AnomaliesOut:
    """Days far above or below the median of the 28 days before each, and hours far above the
    median of the same hour of the day."""
    cache = getattr(request.app.state, "hour_cache", None)
    return AnomaliesOut.model_validate(await reports.anomalies(store, of, days, cache))
