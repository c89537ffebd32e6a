"""The insights' memory of each device's recent hours (`HourCache`): the forecasts and the
anomaly detector read months of whole hours per request, so each device's are read from the
series store once and then kept up to date hour by hour as `usage-events` announce a changed
hour bucket (`consumer.py`): a new reading costs one bucket read, not a read of the months.

The estimators themselves (`forecasting`, `core.anomalies`) are robust profiles over these
hours, fitted in milliseconds at each request, so the hours are what is worth keeping: a
refreshed hour is the refreshed model. (Gradient-boosted trees were measured and did no better:
README, "Insights, measured".)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from energy_tracker.core.hours import HOUR_S, Floats, hour_series
from energy_tracker.core.stores.timeseries.base import SeriesStore


@dataclass(slots=True)
class _DeviceHours:
    start: int  # epoch s of the first hour held
    kwh: Floats
    cost: Floats

    @property
    def end(self) -> int:
        return self.start + self.kwh.size * HOUR_S


class HourCache:
    """Each device's whole hours (kWh and cost; NaN: no data) over at most `keep_hours` up to
    the latest asked for. `full_reads` and `hour_reads` count the store reads of each kind."""

    def __init__(self, series: SeriesStore, keep_hours: int) -> None:
        self.series = series
        self.keep_hours = keep_hours
        self._devices: dict[str, _DeviceHours] = {}
        self.full_reads = 0
        self.hour_reads = 0

    async def _read(self, device_id: str, start: int, end: int) -> tuple[Floats, Floats]:
        return await hour_series(self.series, {device_id: 1.0}, start, end)

    async def _device(self, device_id: str, start: int, end: int) -> _DeviceHours:
        """The device's hours covering start..end: those held, extended by the hours after them
        when `end` is later (only those are read), or read anew when `start` is earlier."""
        held = self._devices.get(device_id)
        if held is None or start < held.start or end - held.start > 2 * self.keep_hours * HOUR_S:
            self.full_reads += 1
            first = min(start, end - self.keep_hours * HOUR_S)
            held = _DeviceHours(first, *await self._read(device_id, first, end))
        elif end > held.end:
            self.hour_reads += (end - held.end) // HOUR_S
            kwh, cost = await self._read(device_id, held.end, end)
            held = _DeviceHours(
                held.start, np.concatenate([held.kwh, kwh]), np.concatenate([held.cost, cost])
            )
        # Beyond twice what is kept, drop the oldest hours (a request for them reads anew).
        extra = held.kwh.size - 2 * self.keep_hours
        if extra > 0:
            held = _DeviceHours(held.start + extra * HOUR_S, held.kwh[extra:], held.cost[extra:])
        self._devices[device_id] = held
        return held

    async def hours(self, device_ids: Sequence[str], start: int, end: int) -> tuple[Floats, Floats]:
        """kWh and cost of the whole hours start..end (epoch s, whole UTC hours) summed over the
        devices; NaN for an hour none of them has data for."""
        n = (end - start) // HOUR_S
        kwh, cost = np.full(n, np.nan), np.full(n, np.nan)
        for device_id in device_ids:
            held = await self._device(device_id, start, end)
            lo = (start - held.start) // HOUR_S
            part_kwh, part_cost = held.kwh[lo : lo + n], held.cost[lo : lo + n]
            seen = ~np.isnan(part_kwh)
            kwh[seen] = np.nan_to_num(kwh[seen]) + part_kwh[seen]
            cost[seen] = np.nan_to_num(cost[seen]) + part_cost[seen]
        return kwh, cost

    async def refresh(self, device_id: str, hour_start_ms: int) -> None:
        """Read one hour bucket of a device again (a usage event said it changed), if held."""
        held = self._devices.get(device_id)
        hour = hour_start_ms // 1000
        if held is None or not held.start <= hour < held.end:
            return  # not held, or later than held: read when next asked for
        self.hour_reads += 1
        kwh, cost = await self._read(device_id, hour, hour + HOUR_S)
        i = (hour - held.start) // HOUR_S
        held.kwh[i], held.cost[i] = kwh[0], cost[0]
