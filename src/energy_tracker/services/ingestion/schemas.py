"""The reading as devices send it, validated field by field.

Readings are TypedDicts validated by a TypeAdapter, not BaseModels: the ingestion service
validates every reading the platform receives, and a model instance per reading made validation
about four times slower (it was the largest item of the pipeline's profile). The rules live here
once, for HTTP, MQTT and CSV imports alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NotRequired

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import with_config as config
from typing_extensions import TypedDict

from energy_tracker.core.events import Reading

MAX_BATCH = 10_000


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _finite(low: float, high: float) -> Any:
    return Field(strict=True, allow_inf_nan=False, ge=low, le=high)


@config(ConfigDict(extra="forbid"))
class ReadingIn(TypedDict):
    """One sample; `ts` is RFC 3339 with an offset or epoch milliseconds (always the latter
    once validated)."""

    device_id: NotRequired[
        Annotated[
            str | None,
            Field(max_length=64, description="Left out when sent with the device's key."),
        ]
    ]
    ts: (
        Annotated[int, Field(strict=True, ge=0)]
        | Annotated[AwareDatetime, AfterValidator(_epoch_ms)]
    )
    power_w: NotRequired[Annotated[float | None, _finite(-1e9, 1e12)]]
    energy_wh: NotRequired[Annotated[float | None, _finite(0, 1e15)]]
    voltage_v: NotRequired[Annotated[float | None, _finite(0, 1e6)]]
    current_a: NotRequired[Annotated[float | None, _finite(-1e6, 1e6)]]


@config(ConfigDict(extra="forbid"))
class ReadingBatchIn(TypedDict):
    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=MAX_BATCH)]


ONE_READING: TypeAdapter[ReadingIn] = TypeAdapter(ReadingIn)
READING_BATCH: TypeAdapter[ReadingBatchIn] = TypeAdapter(ReadingBatchIn)


class NoMeasurement(ValueError):
    """A reading with neither power nor energy: valid field by field, but it says nothing."""


def to_reading(item: ReadingIn, device_id: str) -> Reading:
    """A validated reading as it travels on the bus, for the device it was resolved to; raises
    NoMeasurement for a reading without power_w and energy_wh.

    The rule is checked here rather than by a validator on the TypedDict: every caller makes
    this call anyway, and a per-item validator cost as much as the rest of the validation.
    """
    power_w, energy_wh = item.get("power_w"), item.get("energy_wh")
    if power_w is None and energy_wh is None:
        raise NoMeasurement("a reading needs power_w or energy_wh")
    return Reading(
        device_id,
        item["ts"],  # type: ignore[arg-type]  # epoch ms once validated
        power_w,
        energy_wh,
        item.get("voltage_v"),
        item.get("current_a"),
    )


class AcceptedOut(BaseModel):
    accepted: int
