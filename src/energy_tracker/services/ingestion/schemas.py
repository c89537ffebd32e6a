"""The reading as devices send it, validated field by field."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from energy_tracker.core.events import Reading

Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-1e9, le=1e12)]
MAX_BATCH = 10_000


class ReadingIn(BaseModel):
    """One sample; `ts` is RFC 3339 with an offset or epoch milliseconds."""

    model_config = ConfigDict(extra="forbid")

    device_id: str | None = Field(
        default=None, max_length=64, description="May be left out when sent with the device's key."
    )
    ts: Annotated[int, Field(strict=True, ge=0)] | AwareDatetime
    power_w: Number | None = None
    energy_wh: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e15)] | None = (
        None
    )
    voltage_v: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e6)] | None = None
    current_a: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-1e6, le=1e6)] | None = (
        None
    )

    @model_validator(mode="after")
    def has_a_measurement(self) -> ReadingIn:
        if self.power_w is None and self.energy_wh is None:
            raise ValueError("a reading needs power_w or energy_wh")
        return self

    @property
    def ts_ms(self) -> int:
        if isinstance(self.ts, int):
            return self.ts
        return int(self.ts.timestamp() * 1000)

    def to_reading(self, device_id: str) -> Reading:
        """The reading as it travels on the bus, for the device it was resolved to."""
        return Reading(
            device_id, self.ts_ms, self.power_w, self.energy_wh, self.voltage_v, self.current_a
        )


class ReadingBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    readings: list[ReadingIn] = Field(min_length=1, max_length=MAX_BATCH)


class AcceptedOut(BaseModel):
    accepted: int
