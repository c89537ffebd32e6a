"""Routes of the insights service: a summary, forecasts and anomalies of each household the
caller may read (what it consumed, each kWh once: core.consumption; each report made once per
household, the first repeated at the top level), of the one `household_id` names, or of one
device with `device_id` (theirs; an admin's: any)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from energy_tracker.core import bucket_queries as queries
from energy_tracker.core.authz import Caller, not_found
from energy_tracker.core.consumption import Layout
from energy_tracker.core.directory import DeviceContext, DeviceDirectory, HouseholdProfile
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import authorized, device_directory, visible_device
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.services.insights import reports
from energy_tracker.services.insights.reports import DeviceRef, Subject
from energy_tracker.services.insights.schemas import AnomaliesListOut, ForecastsOut, SummariesOut

router = APIRouter(prefix="/insights", tags=["insights"])

# An `at` beyond these years is a typo, and past them date arithmetic would overflow.
YEARS = range(1971, 9000)


async def series(request: Request) -> SeriesStore:
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


@dataclass(frozen=True, slots=True)
class Subjects:
    """What one request reports on: a report per household (the first repeated at the top
    level), and how many readable households were left past the cap."""

    each: list[Subject]
    left_off: int


async def subjects(
    device_id: Annotated[
        str | None,
        Query(
            max_length=64,
            description="One of your devices; default: every device of each household, summed "
            "each kWh once.",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        Query(
            max_length=64,
            description="IANA zone to count days in; default: the device's with device_id "
            "(its own, else its household's), else each household's.",
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
            description="One of your households; default: every household you may read, each "
            f"reported on its own, your own first (at most {reports.MAX_HOUSEHOLDS}).",
        ),
    ] = None,
    caller: Caller = Depends(authorized),
    directory: DeviceDirectory = Depends(device_directory),
) -> Subjects:
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
        profile = (await directory.household_profiles([ctx.household_id])).get(ctx.household_id)
        device = DeviceRef(device_id, ctx.name, ctx.timezone)
        return Subjects(
            [_subject(device_id, [device], ctx.timezone, ctx.currency, profile, tz, at, None)], 0
        )
    # An admin asking for no household (None): their own, as a caller in none is told (422).
    scope = caller.scope(household_id) or [caller.home(None)]
    shown = scope[: reports.MAX_HOUSEHOLDS]
    profiles = await directory.household_profiles(shown)
    contexts = await directory.in_households(shown)
    each = []
    for home in (h for h in shown if h in profiles):
        own = [c for c in contexts if c.household_id == home]
        profile = profiles[home]
        each.append(
            _subject(
                None,
                [DeviceRef(c.device_id, c.name, c.timezone) for c in own],
                profile.timezone,
                profile.currency,
                profile,
                tz,
                at,
                own,
            )
        )
    if not each:  # deleted meanwhile
        raise not_found("household")
    return Subjects(each, len(scope) - len(shown))


def _subject(
    device_id: str | None,
    devices: list[DeviceRef],
    home_zone: str,
    currency: str,
    profile: HouseholdProfile | None,
    tz: str | None,
    at: str | None,
    household: list[DeviceContext] | None,
) -> Subject:
    """One report's subject: a device (`household` None) or a household's devices, in `tz` or
    its own zone. The household's country gives its public holidays (days off, like weekends);
    none set: weekends only."""
    zone = queries.zone(tz or home_zone)
    return Subject(
        device_id,
        devices,
        zone,
        currency,
        _as_of(at, zone),
        profile.country if profile else None,
        None if household is None else Layout.of(c.placement for c in household),
        household_id=profile.household_id if profile else None,
        tariff=household[0].tariff if household else None,
        price_zone=queries.zone(profile.timezone) if profile else None,
    )


Report = TypeVar("Report", bound=reports.Report)
Out = TypeVar("Out", bound=BaseModel)


async def _each(
    of: Subjects, report: Callable[[Subject], Awaitable[Report]], out: type[Out]
) -> Out:
    """The report of each household (once each), the first repeated at the top level."""
    made = [await report(s) for s in of.each]
    first = {f.name: getattr(made[0], f.name) for f in fields(made[0])}
    return out.model_validate({**first, "households": made, "households_left_off": of.left_off})


@router.get("/summary", response_model=SummariesOut)
async def summary(
    request: Request, of: Subjects = Depends(subjects), store: SeriesStore = Depends(series)
) -> SummariesOut:
    """Baseload (always-on power, its yearly kWh and cost), this month so far against last
    month, the devices that used the most this month, recommendations with their savings, and
    with ET_LLM_URL a short narrative of these facts."""
    narrator = getattr(request.app.state, "narrator", None)
    return await _each(of, lambda s: reports.summary(store, s, narrator), SummariesOut)


@router.get("/forecast", response_model=ForecastsOut)
async def forecast(
    request: Request, of: Subjects = Depends(subjects), store: SeriesStore = Depends(series)
) -> ForecastsOut:
    """This month's expected kWh and cost with a range, and each of the next seven days."""
    cache = getattr(request.app.state, "hour_cache", None)
    return await _each(of, lambda s: reports.forecast(store, s, cache), ForecastsOut)


@router.get("/anomalies", response_model=AnomaliesListOut)
async def anomalies(
    request: Request,
    of: Subjects = Depends(subjects),
    store: SeriesStore = Depends(series),
    days: Annotated[int, Query(ge=1, le=90, description="How many full days back to look.")] = 14,
) -> AnomaliesListOut:
    """Days far above or below the median of the 28 days before each, and hours far above the
    median of the same hour of the day."""
    cache = getattr(request.app.state, "hour_cache", None)
    return await _each(of, lambda s: reports.anomalies(store, s, days, cache), AnomaliesListOut)
