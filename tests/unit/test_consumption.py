"""A household's consumption counts each kWh once: the formula of core.consumption and the
placement checks of the devices service, every expected number worked out by hand."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from energy_tracker.core.bucket_queries import combined
from energy_tracker.core.consumption import (
    Flows,
    Layout,
    Placement,
    Role,
    consumption,
    exchange_costs,
    other,
)
from energy_tracker.core.directory import DeviceContext
from energy_tracker.core.errors import ApiError
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity
from energy_tracker.services.devices.placement import check_placement

UTC = ZoneInfo("UTC")
QUARTER_MS = 900_000


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


H = ms("2026-06-01T12:00:00+00:00")

# A home with everything: the main meter; solar; a battery; the fridge and the kettle on plugs
# behind the meter; a living-room circuit behind the meter with the TV's plug inside it.
FULL = [
    Placement("meter", Role.GRID),
    Placement("solar", Role.PRODUCTION),
    Placement("battery", Role.BATTERY),
    Placement("fridge", Role.SUB, "meter"),
    Placement("kettle", Role.CONSUMER),
    Placement("circuit", Role.SUB, "meter"),
    Placement("tv", Role.SUB, "circuit"),
]


def bucket(device: str, wh: float, cost: float = 0.0, start: int = H, **kw: float) -> Bucket:
    return Bucket(device, Granularity.HOUR, start, wh, cost, samples=60, **kw)  # type: ignore[arg-type]


def test_layout_puts_each_device_in_one_term() -> None:
    layout = Layout.of(FULL)
    assert layout.metered
    assert (layout.grid, layout.production, layout.battery) == (
        ("meter",),
        ("solar",),
        ("battery",),
    )
    # The kettle has no parent: top level. The fridge and the circuit sit in the meter: top
    # level. The TV sits inside the circuit, a load: it only breaks the circuit down.
    assert layout.loads == ("fridge", "kettle", "circuit")
    assert layout.nested == ("tv",)
    assert layout.weights() == {"meter": 1.0, "solar": 1.0, "battery": -1.0}


def test_a_sub_whose_parent_is_gone_counts_at_the_top() -> None:
    layout = Layout.of([Placement("lamp", Role.SUB, "deleted"), Placement("tv", Role.CONSUMER)])
    assert not layout.metered
    assert layout.loads == ("lamp", "tv")


def test_the_formula_with_a_meter_solar_export_and_a_battery() -> None:
    # A sunny hour: solar makes 4.0 kWh; the battery charges 1.0 kWh; the meter exports 1.0 kWh
    # net (-1.0). Consumption = -1.0 + 4.0 - 1.0 = 2.0 kWh. The top-level loads measured 0.8
    # (fridge 0.3 + kettle 0.5), so other = 2.0 - 0.8 = 1.2 kWh.
    flows = Flows(grid=-1000.0, production=4000.0, battery=1000.0, loads=800.0)
    assert consumption(flows, metered=True) == pytest.approx(2000.0)
    assert other(flows, metered=True) == pytest.approx(1200.0)
    # The evening: the battery discharges 0.6 kWh (-0.6), the meter imports 0.4 kWh, no sun:
    # consumption = 0.4 + 0 - (-0.6) = 1.0 kWh.
    assert consumption(Flows(grid=400.0, battery=-600.0), metered=True) == pytest.approx(1000.0)


def test_a_home_of_plugs_only_sums_its_plugs() -> None:
    # No meter: 0.3 + 0.5 = 0.8 kWh, and nothing measures what the plugs miss.
    flows = Flows(loads=800.0)
    assert consumption(flows, metered=False) == 800.0
    assert other(flows, metered=False) is None


def test_household_buckets_of_a_full_home_count_each_kwh_once() -> None:
    layout = Layout.of(FULL)
    # The sunny hour above, as each device's hour bucket. The meter's cost is what its quarters
    # were priced at: 1.0 kWh exported at 0.08 = -0.08. The TV (0.1 kWh) is inside the circuit
    # (0.25 kWh) and adds nothing; the plugs' costs (priced as imports) count for nothing either.
    buckets = [
        bucket("meter", -1000.0, -0.08, power_samples=60, power_sum_w=-60_000.0),
        bucket("solar", 4000.0, 1.2, power_samples=60, power_sum_w=240_000.0),
        bucket("battery", 1000.0, 0.3, power_samples=60, power_sum_w=60_000.0),
        bucket("fridge", 300.0, 0.09),
        bucket("kettle", 250.0, 0.075),
        bucket("circuit", 250.0, 0.075),
        bucket("tv", 100.0, 0.03),
    ]
    [hour] = combined(layout, Granularity.HOUR, buckets)
    # consumption = -1.0 + 4.0 - 1.0 = 2.0 kWh; loads = 0.3 + 0.25 + 0.25 = 0.8; other = 1.2.
    assert hour.bucket.energy_wh == pytest.approx(2000.0)
    assert hour.bucket.cost == pytest.approx(-0.08)
    assert hour.flows == Flows(grid=-1000.0, production=4000.0, battery=1000.0, loads=800.0)
    assert hour.other_wh == pytest.approx(1200.0)
    # Mean power: -1,000 W + 4,000 W - 1,000 W = 2,000 W. Samples: the six devices of the terms
    # (the TV, nested, is in none) x 60 = 360.
    assert hour.bucket.avg_power_w == pytest.approx(2000.0)
    assert hour.bucket.samples == 360
    assert hour.bucket.max_power_w is None  # peaks of three devices do not add


def test_household_buckets_of_plugs_only_are_the_old_sum() -> None:
    layout = Layout.of([Placement("fridge", Role.CONSUMER), Placement("kettle", Role.CONSUMER)])
    buckets = [
        bucket("fridge", 300.0, 0.09, power_samples=60, power_sum_w=18_000.0, max_power_w=120.0),
        bucket("kettle", 500.0, 0.15, power_samples=60, power_sum_w=30_000.0, max_power_w=2400.0),
    ]
    [hour] = combined(layout, Granularity.HOUR, buckets)
    # 0.3 + 0.5 = 0.8 kWh for 0.09 + 0.15 = 0.24; the highest power of either, 2,400 W; the
    # mean over both devices' 120 samples, (18,000 + 30,000) / 120 = 400 W, as before roles.
    assert (hour.bucket.energy_wh, hour.bucket.cost) == (pytest.approx(800.0), 0.24)
    assert (hour.bucket.max_power_w, hour.bucket.avg_power_w) == (2400.0, 400.0)
    assert hour.other_wh is None


def test_an_unmetered_home_with_solar_is_priced_quarter_by_quarter() -> None:
    layout = Layout.of([Placement("plug", Role.CONSUMER), Placement("balcony", Role.PRODUCTION)])
    assert layout.priced_per_quarter
    tariff = {"type": "flat", "price_per_kwh": 0.30, "export_price_per_kwh": 0.08}
    # Quarter 1: the plug 0.5 kWh, the panel 0.2: 0.3 kWh imported at 0.30 = 0.09.
    # Quarter 2: the plug 0.1 kWh, the panel 0.3: 0.2 kWh exported at 0.08 = -0.016.
    # The hour: 0.09 - 0.016 = 0.074; its consumption is the plug's 0.6 kWh.
    quarters = [
        Bucket("plug", Granularity.QUARTER, H, 500.0),
        Bucket("balcony", Granularity.QUARTER, H, 200.0),
        Bucket("plug", Granularity.QUARTER, H + QUARTER_MS, 100.0),
        Bucket("balcony", Granularity.QUARTER, H + QUARTER_MS, 300.0),
    ]
    household = combined(layout, Granularity.QUARTER, quarters)
    assert [q.bucket.energy_wh for q in household] == [500.0, 100.0]
    costs = exchange_costs(household, Granularity.HOUR, UTC, UTC, tariff)
    assert costs == {H: pytest.approx(0.074)}


# -- placement checks --------------------------------------------------------------------------


def ctx(device_id: str, role: Role = Role.CONSUMER, parent: str | None = None) -> DeviceContext:
    return DeviceContext(device_id, "u", device_id, "UTC", "EUR", None, True, "h", role, parent)


HOME = [
    ctx("meter", Role.GRID),
    ctx("solar", Role.PRODUCTION),
    ctx("circuit", Role.SUB, "meter"),
    ctx("tv", Role.SUB, "circuit"),
]


@pytest.mark.parametrize(
    ("device_id", "role", "parent", "field", "says"),
    [
        (None, Role.SUB, None, "parent_id", "needs the id"),
        (None, Role.GRID, "meter", "parent_id", "sits inside no other"),
        ("circuit", Role.SUB, "circuit", "parent_id", "inside itself"),
        (None, Role.SUB, "nobody", "parent_id", "no such device"),
        (None, Role.SUB, "solar", "parent_id", "holds no other"),
        ("circuit", Role.SUB, "tv", "parent_id", "loop"),
        ("circuit", Role.BATTERY, None, "role", "tv sit inside"),
        ("meter", Role.PRODUCTION, None, "role", "circuit sit inside"),
    ],
)
def test_bad_placements_are_422_naming_the_field(
    device_id: str | None, role: Role, parent: str | None, field: str, says: str
) -> None:
    with pytest.raises(ApiError) as caught:
        check_placement(HOME, device_id, role, parent)
    assert caught.value.status == 422
    assert caught.value.details[0]["field"] == field
    assert says in caught.value.details[0]["message"]


@pytest.mark.parametrize(
    ("device_id", "role", "parent"),
    [
        (None, Role.SUB, "meter"),  # a plug behind the meter
        (None, Role.SUB, "tv"),  # inside a load inside a load
        (None, Role.EV_CHARGER, None),
        (None, Role.BATTERY, None),
        ("tv", Role.CONSUMER, None),  # moved out of the circuit
        ("meter", Role.GRID, None),
    ],
)
def test_good_placements_pass(device_id: str | None, role: Role, parent: str | None) -> None:
    check_placement(HOME, device_id, role, parent)
