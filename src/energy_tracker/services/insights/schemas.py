"""Response bodies of the insights service, so /docs shows every field and what it means.

The models read the report dataclasses of `reports` and `analysis` attribute by attribute, and
round on the way out: the analysis keeps full precision, a client needs no 15 decimals.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from energy_tracker.services.insights.reports import MAX_HOUSEHOLDS


def _rounder(digits: int, *, nullable: bool = False) -> PlainSerializer:
    """Rounds on the way out; `return_type` keeps the documented schema a number (or null)."""
    return PlainSerializer(
        lambda v: None if v is None else round(v, digits),
        return_type=float | None if nullable else float,
    )


Kwh = Annotated[float, _rounder(6)]
Money = Annotated[float, _rounder(6)]
Watts = Annotated[float, _rounder(3)]
Ratio = Annotated[float, _rounder(3)]
# With its offset as `isoformat` writes it (+00:00, not Z), as the usage service's period starts.
Instant = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReportOut(Out):
    device_id: str | None = Field(
        description="The device asked for; null: all of the household's, each kWh once."
    )
    household_id: str | None = Field(description="The household reported on (the device's).")
    timezone: str = Field(description="The zone days and hours of the day are counted in.")
    currency: str = Field(description="Of every cost (the household's).")
    at: Instant = Field(description="The instant the report is made as of.")


class BaseloadOut(Out):
    power_w: Watts = Field(
        description="Always-on power: the 10th percentile of the hourly average power over the "
        "last 14 full days."
    )
    yearly_kwh: Kwh = Field(description="That power for a year (8,760 h).")
    yearly_cost: Annotated[float | None, _rounder(6, nullable=True)] = Field(
        description="At the mean price of those hours; null when none had a price."
    )
    share_pct: Annotated[float | None, _rounder(3, nullable=True)] = Field(
        description="Of all the energy used over those hours."
    )
    hours: int = Field(description="Hours with data it was judged from.")


class TotalOut(Out):
    period_start: date
    energy_kwh: Kwh
    cost: Money
    days: int = Field(description="Days of the period with data.")


class DeviceShareOut(Out):
    device_id: str | None = Field(
        description='Null for "other": what the home\'s meter saw that no device of its own '
        "explains."
    )
    name: str
    energy_kwh: Kwh
    cost: Money
    share_pct: Ratio = Field(
        description="Of the energy the home consumed this month (each kWh once: a meter's "
        "sub-meters share it, solar and batteries are no users)."
    )


class RecommendationOut(Out):
    kind: Literal["shift_load", "always_on", "device_increase"] = Field(
        description="shift_load: the load usually running at `from_hour` (its median above the "
        "always-on level over the last 14 days) moved to the cheapest hour `to_hour`; always_on: "
        "the always-on power of the last 7 days above that of the 28 before (at least 30 W and "
        "10 %); device_increase: a device whose last 14 days averaged at least 20 % more than "
        "the 28 before."
    )
    device_id: str | None = Field(description="The device it is about; null: the household.")
    from_hour: int | None = Field(description="shift_load: local hour of the day it runs at.")
    to_hour: int | None = Field(description="shift_load: the cheapest local hour.")
    amount: Ratio = Field(
        description="shift_load: kWh a day moved; always_on: W above usual; device_increase: "
        "kWh a day more."
    )
    saving_kwh_per_month: Kwh = Field(description="Energy saved in 30 days (0 for a shift).")
    saving_per_month: Money = Field(
        description="Money saved in 30 days at the prices of the hours (days) it is about."
    )


class SummaryOut(ReportOut):
    baseload: BaseloadOut | None = Field(description="Null without any hour of the last 14 days.")
    month_to_date: TotalOut | None = Field(description="This month so far, today included.")
    last_month: TotalOut | None = Field(description="The whole of last month.")
    change_pct: Annotated[float | None, _rounder(3, nullable=True)] = Field(
        description="This month's full days against the same days of last month (day numbers "
        "both have data for); null when there are none."
    )
    top_devices: list[DeviceShareOut] = Field(description="Biggest users this month, at most 5.")
    recommendations: list[RecommendationOut] = Field(
        description="What could be done, biggest saving first."
    )
    narrative: str | None = Field(
        default=None,
        description="With ET_LLM_URL set: a few sentences of these facts, whose every number is "
        "one of them (checked); null without the URL, or when the endpoint failed or was slow.",
    )


Method = Literal["profile", "recent-days", "none"]


class MonthForecastOut(Out):
    period_start: date = Field(description="First day of the month forecast.")
    energy_kwh: Kwh = Field(
        description="Month to date + the rest: half the recent level of days of the same kind, "
        "half the month's own rate so far."
    )
    energy_kwh_low: Kwh = Field(description="Low end of an 80 % range.")
    energy_kwh_high: Kwh = Field(description="High end of an 80 % range.")
    cost: Money = Field(description="Month to date + the rest at the last 4 weeks' mean price.")
    cost_low: Money
    cost_high: Money
    month_to_date_kwh: Kwh = Field(description="The whole hours of this month before `at`.")
    month_to_date_cost: Money
    remaining_days: Ratio = Field(description="Days left in the month, today's rest included.")
    method: Method = Field(description="profile: two weeks of history or more; recent-days: less.")


class DayForecastOut(Out):
    day: date
    energy_kwh: Kwh = Field(
        description="Blend of the recent level, the median of recent days of its kind and the "
        "median of its weekday, each weighed by its errors over the last 8 weeks."
    )
    low: Kwh = Field(description="Low end of an 80 % interval (from the blend's own errors).")
    high: Kwh = Field(description="High end of an 80 % interval.")
    cost: Money = Field(description="energy_kwh at the last 4 weeks' mean price.")


class HourForecastOut(Out):
    period_start: Instant
    energy_kwh: Kwh = Field(
        description="Blend of medians of that local hour (of the week over 8 weeks, over the "
        "last 7 days, over recent days of its kind), each weighed by its errors over the last week."
    )
    low: Kwh = Field(description="Low end of an 80 % interval.")
    high: Kwh = Field(description="High end of an 80 % interval.")


class ForecastOut(ReportOut):
    method: Method = Field(
        description="Which estimator answered: profile (two weeks of history or more), "
        "recent-days (less: the recent days' hours only), none (no history)."
    )
    estimators: dict[str, dict[str, float]] = Field(
        description="Which estimators answered: for `hours` and `days`, each estimator's weight "
        "in the blend (by its recent errors; empty without history). Hours: pooled, "
        "last-7-days, day-kind, hour-of-week; days: level, day-kind, weekday."
    )
    month: MonthForecastOut | None = Field(description="Null without any full day before today.")
    days: list[DayForecastOut] = Field(description="The next 7 local days; empty without history.")
    hours: list[HourForecastOut] = Field(
        description="The 48 whole hours after `at`; empty without history."
    )


class DayAnomalyOut(Out):
    day: date
    energy_kwh: Kwh
    expected_kwh: Kwh = Field(description="Median of the 28 days before.")
    score: Ratio = Field(
        description="(energy - expected) / scaled MAD of those days (at least 5% of the median "
        "and 0.1 kWh); an anomaly beyond ±3."
    )
    direction: Literal["high", "low"]


class AnomalyEventOut(Out):
    kind: Literal["stuck_on", "baseload_step", "spike", "unusual_hour", "silence"] = Field(
        description="stuck_on: 6 h or more each at least 1.7 kWh above the 10th percentile of "
        "its hour of the day; baseload_step: 2 days or more whose always-on level (their 10th "
        "percentile hour) rose at least 0.15 kWh and 3 spreads above the 4 weeks before; spike: "
        "an hour at least 1 kWh above the highest of its hour of the day over 4 weeks; "
        "unusual_hour: the same at an hour that is usually quiet; silence: 3 h or more without "
        "data after a week mostly recorded."
    )
    start: Instant
    end: Instant = Field(description="End of its last hour (silence: up to `at` if ongoing).")
    hours: int
    energy_kwh: Kwh = Field(
        description="Used over its hours (silence: 0 recorded; baseload_step: the always-on "
        "level of its days x its hours)."
    )
    expected_kwh: Kwh = Field(
        description="Median of the same hours of the day over the 4 weeks before (silence: the "
        "week before's mean rate; baseload_step: the always-on level of the 4 weeks before)."
    )
    score: Ratio = Field(
        description="Mean excess over expected in spreads of its hours (10th-90th percentile "
        "range / 2.563); baseload_step: in MADs of the daily levels; silence: hours / 3."
    )


class AnomaliesOut(ReportOut):
    since: date = Field(description="First day looked at.")
    days: list[DayAnomalyOut] = Field(description="Odd full days, oldest first.")
    events: list[AnomalyEventOut] = Field(
        description="Loads stuck on, baseload steps, spikes, unusual hours and silences since "
        "`since`, each from the hours before it, oldest first."
    )


# Every household the caller may read, each reported on its own (never added together: they are
# different homes); the top-level fields repeat the first, as the routes answered before there
# were households.
HOUSEHOLDS = (
    "One report per household asked for (household_id; with device_id: the device's), else per "
    "household you may read, your own first, each summed on its own in its own zone (unless "
    f"tz); at most {MAX_HOUSEHOLDS}, the rest counted in households_left_off. The top-level "
    "fields repeat the first."
)
LEFT_OFF = "Readable households not reported past the cap: ask for each with household_id."


class SummariesOut(SummaryOut):
    households: list[SummaryOut] = Field(description=HOUSEHOLDS)
    households_left_off: int = Field(description=LEFT_OFF)


class ForecastsOut(ForecastOut):
    households: list[ForecastOut] = Field(description=HOUSEHOLDS)
    households_left_off: int = Field(description=LEFT_OFF)


class AnomaliesListOut(AnomaliesOut):
    households: list[AnomaliesOut] = Field(description=HOUSEHOLDS)
    households_left_off: int = Field(description=LEFT_OFF)
