"""A household's consumption from its devices' buckets, counting each kWh once. Pure; no I/O.

Every device has a role (shared/DESIGN.md, "Households"):
- `grid`: the main meter. Its power and energy are net: > 0 imports, < 0 exports.
- `production`: solar (any generator). It reports what it produces as positive power, as
  inverters do.
- `battery`: a home battery, read as a meter of the battery's side: > 0 charging (the battery
  takes energy from the home, like a load), < 0 discharging (it exports into the home). This is
  the DESIGN's "negative = export, for meters and batteries".
- `consumer` (the default): a load measured on its own, such as a plug.
- `ev_charger`: a load, like `consumer`.
- `sub`: a circuit or appliance inside the device `parent_id` names.

With a grid meter, the home's consumption is measured at its boundary:

    consumption = grid (imports - exports) + production - battery

and the loads (consumers, chargers, sub-meters) only break it down: the top-level loads (those
not inside another load) are the breakdown, and what none of them explains is "other"
(negative when the plugs measured more than the meter, timing and calibration apart). Without a
grid meter nothing measures the boundary: consumption is the sum of the top-level loads (a home
with plugs only sums its plugs, as before roles existed), and "other" is unknown (None).

Energy and power combine the same way (the formula is linear), so one function serves the
buckets of `GET /usage`, the insights' days and hours, and the summed power of alert rules.

Cost is what crosses the meter: with a grid meter, the grid meter's own bucket cost, which the
usage service prices quarter by quarter (imports at the import price, exports at the export
price, `energy.quarter_cost`); without one, the loads' cost, or with production or a battery
the derived exchange priced per quarter (`exchange_costs`, applied by
`bucket_queries.price_exchange`, the one place every caller prices it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from energy_tracker.core.energy import period_start, quarter_cost
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity


class Role(StrEnum):
    """What a device measures within its household."""

    GRID = "grid"
    PRODUCTION = "production"
    BATTERY = "battery"
    EV_CHARGER = "ev_charger"
    SUB = "sub"
    CONSUMER = "consumer"


DEFAULT_ROLE = Role.CONSUMER
"""A device nobody placed is a load measured on its own: existing homes sum as they did."""

LOADS = frozenset({Role.CONSUMER, Role.EV_CHARGER, Role.SUB})
"""Roles that measure something the home consumes (and so may sit inside another device)."""

PARENT_ROLES = frozenset({Role.GRID}) | LOADS
"""Roles a device may sit inside: a grid meter (the plugs behind it) or another load."""


class Group(StrEnum):
    """The terms of the consumption formula; a device belongs to at most one."""

    GRID = "grid"
    PRODUCTION = "production"
    BATTERY = "battery"
    LOADS = "loads"  # the top-level loads: the breakdown


@dataclass(frozen=True, slots=True)
class Placement:
    """A device's role and, for one inside another, its parent."""

    device_id: str
    role: Role
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """How a household's devices add up: which devices each term of the formula sums."""

    grid: tuple[str, ...] = ()
    production: tuple[str, ...] = ()
    battery: tuple[str, ...] = ()
    loads: tuple[str, ...] = ()  # top-level loads, in the order given
    nested: tuple[str, ...] = field(default=())  # loads inside another load: never summed

    @classmethod
    def of(cls, placements: Iterable[Placement]) -> Layout:
        """The layout of these devices. A load whose parent is not among them (deleted, or in
        another household) or is not a load counts as top level."""
        placed = list(placements)
        roles = {p.device_id: p.role for p in placed}
        terms: dict[Group, list[str]] = defaultdict(list)
        nested = []
        for p in placed:
            if p.role in LOADS:
                if p.parent_id is not None and roles.get(p.parent_id) in LOADS:
                    nested.append(p.device_id)
                else:
                    terms[Group.LOADS].append(p.device_id)
            else:
                terms[Group(p.role.value)].append(p.device_id)
        return cls(
            grid=tuple(terms[Group.GRID]),
            production=tuple(terms[Group.PRODUCTION]),
            battery=tuple(terms[Group.BATTERY]),
            loads=tuple(terms[Group.LOADS]),
            nested=tuple(nested),
        )

    @property
    def metered(self) -> bool:
        """Whether a grid meter measures the home's boundary."""
        return bool(self.grid)

    @property
    def priced_per_quarter(self) -> bool:
        """Whether cost needs the quarters: no meter, but production or a battery offsets the
        loads, so what crossed the (unmeasured) boundary must be priced quarter by quarter."""
        return not self.metered and bool(self.production or self.battery)

    def members(self, group: Group) -> tuple[str, ...]:
        """The devices one term sums."""
        return getattr(self, group.value)  # type: ignore[no-any-return]

    def groups(self) -> dict[Group, tuple[str, ...]]:
        """Each term with devices, and its devices."""
        return {g: self.members(g) for g in Group if self.members(g)}

    def weights(self) -> dict[str, float]:
        """Each summed device's factor in the consumption (+1, or -1 for a battery)."""
        if not self.metered:
            return dict.fromkeys(self.loads, 1.0)
        return (
            dict.fromkeys(self.grid, 1.0)
            | dict.fromkeys(self.production, 1.0)
            | dict.fromkeys(self.battery, -1.0)
        )


@dataclass(frozen=True, slots=True)
class Flows:
    """One period's energy (or power) of each term, summed over its devices."""

    grid: float = 0.0
    production: float = 0.0
    battery: float = 0.0
    loads: float = 0.0

    @classmethod
    def of(cls, layout: Layout, values: Mapping[str, float]) -> Flows:
        """The terms from each device's value (absent devices: 0)."""
        return cls(
            *(sum(values.get(d, 0.0) for d in layout.members(g)) for g in Group),
        )


def consumption(flows: Flows, metered: bool) -> float:
    """What the home consumed: grid + production - battery with a grid meter, else the loads."""
    if metered:
        return flows.grid + flows.production - flows.battery
    return flows.loads


def other(flows: Flows, metered: bool) -> float | None:
    """What no top-level load explains (None without a grid meter: nothing measured it)."""
    return consumption(flows, metered) - flows.loads if metered else None


def billed(costs: Flows, metered: bool) -> float:
    """The cost of the home from its terms' costs: the grid meter's (priced import and export,
    quarter by quarter), else its top-level loads'. (An unmetered home with production or a
    battery is priced better from its quarters: `exchange_costs`.)"""
    return costs.grid if metered else costs.loads


def household_total(
    layout: Layout, energy_wh: Mapping[str, float], cost: Mapping[str, float]
) -> tuple[float, float]:
    """(consumption, cost) of one period from each device's energy and cost in it."""
    return (
        consumption(Flows.of(layout, energy_wh), layout.metered),
        billed(Flows.of(layout, cost), layout.metered),
    )


def exchange(flows: Flows, metered: bool) -> float:
    """What crossed the boundary (> 0 imported): the meter's, else the loads less production,
    plus what the battery took."""
    if metered:
        return flows.grid
    return flows.loads - flows.production + flows.battery


@dataclass(slots=True)
class HouseholdBucket:
    """One period of a household: its consumption as a bucket (device "*"), and the terms."""

    bucket: Bucket
    flows: Flows  # energy, Wh
    other_wh: float | None


def household_buckets(
    layout: Layout,
    granularity: Granularity,
    terms: Mapping[Group, Iterable[Bucket]],
) -> list[HouseholdBucket]:
    """Each period's consumption, in time order, from each term's buckets (one per period: the
    term's devices already summed, device ids ignored).

    energy_wh is the consumption; cost the exchange's (the grid meter's, else the loads'; a
    caller with `priced_per_quarter` replaces it from the quarters); samples add up; the mean
    power combines the terms' means as the energy does (exact with one device per term); the
    lowest and highest power are kept only when one term makes the consumption (they do not
    add across devices).
    """
    by_start: dict[int, dict[Group, Bucket]] = defaultdict(dict)
    for group, buckets in terms.items():
        for b in buckets:
            by_start[b.start][group] = b
    formula = [g for g in _formula(layout.metered) if layout.members(g)]
    out = []
    for start, parts in sorted(by_start.items()):
        energy = Flows(*(parts[g].energy_wh if g in parts else 0.0 for g in Group))
        power = Flows(*(_mean(parts.get(g)) for g in Group))
        total = Bucket("*", granularity, start)
        total.energy_wh = consumption(energy, layout.metered)
        total.cost = billed(
            Flows(*(parts[g].cost if g in parts else 0.0 for g in Group)), layout.metered
        )
        total.samples = sum(b.samples for b in parts.values())
        total.power_samples = sum(parts[g].power_samples for g in formula if g in parts)
        if total.power_samples:
            # power_sum_w / power_samples is the combined mean power.
            total.power_sum_w = consumption(power, layout.metered) * total.power_samples
        if len(formula) == 1 and formula[0] in parts:
            total.min_power_w = parts[formula[0]].min_power_w
            total.max_power_w = parts[formula[0]].max_power_w
        out.append(HouseholdBucket(total, energy, other(energy, layout.metered)))
    return out


def _formula(metered: bool) -> tuple[Group, ...]:
    return (Group.GRID, Group.PRODUCTION, Group.BATTERY) if metered else (Group.LOADS,)


def _mean(bucket: Bucket | None) -> float:
    if bucket is None or bucket.avg_power_w is None:
        return 0.0
    return bucket.avg_power_w


def exchange_costs(
    quarters: Iterable[HouseholdBucket],
    granularity: Granularity,
    tz: ZoneInfo,
    price_zone: ZoneInfo,
    tariff: dict[str, Any] | None,
) -> dict[int, float]:
    """The cost of each period (in `tz`) of what an unmetered home exchanged, priced quarter by
    quarter from quarter `HouseholdBucket`s: imports at the import price, exports at the export
    price, each at its hour in `price_zone` (the tariff's)."""
    out: dict[int, float] = defaultdict(float)
    for q in quarters:
        cost = quarter_cost(exchange(q.flows, metered=False), q.bucket.start, price_zone, tariff)
        out[period_start(q.bucket.start, granularity, tz)] += cost
    return dict(out)
