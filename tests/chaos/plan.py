"""The known readings a chaos trial streams, and what the buckets must hold afterwards, worked
out by hand (not by the code under test).

Counter meters: meter k (k = 1..METERS) reports `energy_wh` once a minute, from 00:00 UTC of
a day some days back to 00:00 of the day after its last, and its counter gains 5·k Wh every
minute. So, the owner's time zone being UTC:
- every whole UTC hour holds 60 samples (minutes :00 to :59) and 60 × 5·k = 300·k Wh
  = 0.3·k kWh;
- every UTC day holds 24 × 0.3·k = 7.2·k kWh;
- the closing reading, at 00:00 of the day after, is 1 sample and 0 kWh in its own hour.

A pulse plug reports `power_w` at the driver's clock (alerts judge instant power only when it is
fresh), PULSE_RUN readings above the alert threshold then PULSE_RUN below, over and over, ending
low: each run above is one alert, firing once and resolving once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WH_PER_MINUTE = 5  # times the meter's number k
PULSE_RUN = 3
PULSE_HIGH_W = 1500.0
PULSE_LOW_W = 500.0
ALERT_THRESHOLD_W = 1000.0


@dataclass(frozen=True)
class Plan:
    """METERS meters over DAYS whole UTC days ending DAYS_BACK days before today."""

    meters: int
    days: int
    first_day_ms: int

    @classmethod
    def ending_days_ago(cls, meters: int, days: int, days_back: int = 2) -> Plan:
        today = int(time.time() * 1000) // DAY_MS * DAY_MS
        return cls(meters, days, today - (days_back + days - 1) * DAY_MS)

    @property
    def hours(self) -> int:
        return self.days * 24

    def meter_batches(self, k: int) -> Iterator[list[dict[str, float | int]]]:
        """Meter k's readings, one POST per hour (the last one also carries the closing
        reading at the end of the last day)."""
        for h in range(self.hours):
            minutes = range(h * 60, h * 60 + (61 if h == self.hours - 1 else 60))
            yield [
                {"ts": self.first_day_ms + m * MIN_MS, "energy_wh": float(WH_PER_MINUTE * k * m)}
                for m in minutes
            ]

    def readings_per_meter(self) -> int:
        return self.hours * 60 + 1

    def expected_hours(self, k: int) -> dict[int, tuple[float, int]]:
        """Meter k's hour buckets: {period start: (kWh, samples)} (see the module docstring)."""
        expected = {self.first_day_ms + h * HOUR_MS: (0.3 * k, 60) for h in range(self.hours)}
        expected[self.first_day_ms + self.hours * HOUR_MS] = (0.0, 1)
        return expected

    def expected_days(self, k: int) -> dict[int, float]:
        """Meter k's day buckets with energy: 7.2·k kWh each."""
        return {self.first_day_ms + d * DAY_MS: 7.2 * k for d in range(self.days)}


def pulse_power(i: int) -> float:
    """The pulse plug's i-th reading: PULSE_RUN high, PULSE_RUN low, and so on."""
    return PULSE_HIGH_W if (i // PULSE_RUN) % 2 == 0 else PULSE_LOW_W
