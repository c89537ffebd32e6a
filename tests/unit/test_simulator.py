"""The simulated homes: reproducible from a seed, and physically sensible. Expected numbers are
worked out by hand in the comments."""

from __future__ import annotations

import math
from datetime import datetime
from itertools import pairwise

import pytest

from energy_tracker.simulator.homes import (
    PLACES,
    EvCharger,
    Fridge,
    Home,
    Kettle,
    Oven,
    Sample,
    Schedule,
    Solar,
    Television,
    Washer,
    Window,
    make_homes,
)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def seconds(iso: str) -> float:
    return ms(iso) / 1000


NOV_1 = ms("2026-11-01T00:00:00+00:00")


def test_the_same_seed_gives_the_same_readings() -> None:
    first = [h.stream(NOV_1, 10_000).take(500) for h in make_homes(42, 5)]
    again = [h.stream(NOV_1, 10_000).take(500) for h in make_homes(42, 5)]
    other = [h.stream(NOV_1, 10_000).take(500) for h in make_homes(43, 5)]
    assert first == again
    assert first != other


def test_a_stream_continues_where_it_stopped() -> None:
    # Two takes of 100 are the same as one of 200: counters and noise carry on.
    home = Home.create(7, 3)
    whole = home.stream(NOV_1, 10_000).take(200)
    stream = home.stream(NOV_1, 10_000)
    assert stream.take(100) + stream.take(100) == whole
    assert stream.next_ms == NOV_1 + 200 * 10_000


def test_every_device_reads_at_every_instant() -> None:
    home = Home.create(7, 0)
    samples = home.stream(NOV_1, 60_000).take(3)
    keys = [d.key for d in home.devices]
    assert [s.device for s in samples] == keys * 3
    assert [s.ts for s in samples] == [NOV_1 + i * 60_000 for i in range(3) for _ in keys]


def test_plugs_never_draw_negative_power_and_counters_never_go_down() -> None:
    # Two days at one-minute readings of 20 homes: every plug, inverter and charger reading is
    # >= 0, and every counter is non-decreasing (a meter that can export has none).
    for home in make_homes(11, 20):
        by_device: dict[str, list[Sample]] = {}
        for s in home.stream(NOV_1, 60_000).take(2 * 24 * 60):
            by_device.setdefault(s.device, []).append(s)
        for key, mine in by_device.items():
            if key != "meter":
                assert min(s.power_w for s in mine) >= 0.0, (home.index, key)
            counters = [s.energy_wh for s in mine if s.energy_wh is not None]
            assert all(b >= a for a, b in pairwise(counters)), key


def test_the_meter_of_a_home_with_solar_exports_and_reports_net_power_only() -> None:
    # Some homes have 10 kW of panels and a base load near 100 W: on a clear midday their net
    # power goes negative. An import counter would hide that export from the home's energy
    # (a counter read wins over power), so such a meter reports power alone, and a home without
    # solar keeps its meter's counter.
    exporting = 0
    for home in make_homes(11, 40):
        stream = home.stream(ms("2026-06-01T00:00:00+00:00"), 300_000)
        samples = [s for s in stream.take(2 * 24 * 12) if s.device == "meter"]
        if home.solar is None:
            assert all(s.energy_wh is not None for s in samples)
            continue
        assert all(s.energy_wh is None for s in samples)
        exporting += sum(s.power_w < 0 for s in samples)
    assert exporting > 0


def test_a_fridge_cycles() -> None:
    # Period 3600 s, on for the first half: 100 W from :00:00 to :29:59, 1 W from :30 to :59:59.
    fridge = Fridge(on_w=100.0, standby_w=1.0, period_s=3600, duty=0.5, phase_s=0)
    hour = seconds("2026-11-01T10:00:00+00:00")
    assert fridge.power_w(hour) == 100.0
    assert fridge.power_w(hour + 1799) == 100.0
    assert fridge.power_w(hour + 1800) == 1.0
    assert fridge.power_w(hour + 3599) == 1.0
    assert fridge.power_w(hour + 3600) == 100.0
    # A phase of 900 s shifts the cycle 15 minutes earlier: at :15 the fridge is 900 + 900 =
    # 1800 s into its period, the first second off.
    shifted = Fridge(on_w=100.0, standby_w=1.0, period_s=3600, duty=0.5, phase_s=900)
    assert shifted.power_w(hour + 900) == 1.0
    assert shifted.power_w(hour + 899) == 100.0


def test_solar_is_zero_at_night_and_peaks_at_solar_noon() -> None:
    # On the equator at longitude 0, near the equinox (21 March: day 80, declination
    # 23.44° x sin(2π x 364/365) = -0.40°), the day is 12 h long: sunrise 06:00 UTC, sunset
    # 18:00 UTC. At noon the shape is sin(π/2)^1.5 = 1 and the sun stands 89.6° high, so the
    # output is 4,000 W x sin(89.6°) = 3,999.9 W x the day's clouds. At 09:00 the shape is
    # sin(π/4)^1.5 = 0.7071^1.5 = 0.5946.
    solar = Solar(peak_w=4000.0, latitude=0.0, longitude=0.0, seed="test")
    day = "2026-03-21T"
    clouds = solar.clouds(seconds(day + "00:00:00+00:00") // 86_400)
    assert 0.15 <= clouds <= 1.0
    for night in ("00:00:00", "03:00:00", "05:59:00", "18:01:00", "23:59:00"):
        assert solar.power_w(seconds(f"{day}{night}+00:00")) == 0.0, night
    noon = solar.power_w(seconds(day + "12:00:00+00:00"))
    assert noon == pytest.approx(3999.9 * clouds, rel=1e-4)
    nine = solar.power_w(seconds(day + "09:00:00+00:00"))
    assert nine == pytest.approx(3999.9 * clouds * 0.5946, rel=1e-3)
    # Longitude 15° E: noon comes an hour earlier in UTC.
    east = Solar(peak_w=4000.0, latitude=0.0, longitude=15.0, seed="test")
    assert east.power_w(seconds(day + "11:00:00+00:00")) == pytest.approx(noon, rel=1e-4)


def test_the_sun_sets_early_in_a_northern_winter() -> None:
    # Berlin (52.5° N) on 21 December: declination -23.44°, cos h0 = -tan(52.5°) x tan(-23.44°)
    # = 1.303 x 0.4335 = 0.565, h0 = 55.6° = 3.71 h: sun up from 08:17 to 15:43 solar time.
    # Solar time at 13.4° E is UTC + 0:54, so it is dark at 07:00 UTC and at 15:00 UTC.
    solar = Solar(peak_w=5000.0, latitude=52.5, longitude=13.4, seed="test")
    day = "2026-12-21T"
    assert solar.power_w(seconds(day + "07:00:00+00:00")) == 0.0
    assert solar.power_w(seconds(day + "15:00:00+00:00")) == 0.0
    assert solar.power_w(seconds(day + "11:00:00+00:00")) > 0.0


def test_a_schedule_is_the_same_for_every_caller() -> None:
    # One window from 07:00 to 08:00 that always fires, uses of exactly 120 s: every day has
    # one use, starting in that hour, and asking again (or from another instance) gives it back.
    schedule = Schedule("kettle:test", (Window(7.0, 8.0, 1.0),), (120, 120))
    for day in range(20_000, 20_010):
        ((start, end),) = schedule.uses(day)
        assert 7 * 3600 <= start < 8 * 3600
        assert end - start == 120
        assert Schedule("kettle:test", (Window(7.0, 8.0, 1.0),), (120, 120)).uses(day) == (
            (start, end),
        )
    kettle = Kettle(2000.0, schedule)
    ((start, end),) = schedule.uses(20_000)
    assert kettle.draw_w(20_000, start) == 2000.0
    assert kettle.draw_w(20_000, end - 1) == 2000.0
    assert kettle.draw_w(20_000, end) == 0.0
    assert kettle.draw_w(20_000, start - 1) == 0.0


def test_an_oven_preheats_then_cycles() -> None:
    # A use from 18:00 for an hour: full 3,000 W for the first 600 s, then in every 240 s cycle
    # on for the first 0.55 x 240 = 132 s: on at 600 + 131, off at 600 + 132 and 600 + 239.
    schedule = Schedule("oven:test", (Window(18.0, 18.0, 1.0),), (3600, 3600))
    oven = Oven(3000.0, schedule)
    ((start, _),) = schedule.uses(1)
    assert start == 18 * 3600
    assert oven.draw_w(1, start + 599) == 3000.0
    assert oven.draw_w(1, start + 731) == 3000.0
    assert oven.draw_w(1, start + 732) == 0.0
    assert oven.draw_w(1, start + 839) == 0.0
    assert oven.draw_w(1, start + 840) == 3000.0


def test_a_constant_load_fills_its_counter_by_the_hour() -> None:
    # A fridge that is always on at 120 W, read every 10 s for an hour (360 readings): its
    # counter grows by 120 W x 1 h = 120 Wh (each reading's power carries ±1 % noise, which
    # averages out to well under 1 %).
    never = Schedule("never", (), (1, 1))
    home = Home(
        seed=0,
        index=0,
        place=PLACES[0],
        base_w=100.0,
        fridge=Fridge(on_w=120.0, standby_w=1.0, period_s=3600, duty=1.0, phase_s=0),
        kettle=Kettle(2000.0, never),
        oven=Oven(3000.0, never),
        washer=Washer(2000.0, never),
        tv=Television(100.0, never),
        evening_w=0.0,
        solar=None,
        ev=EvCharger(7400.0, never),
        counter_base_wh=dict.fromkeys(("meter", "fridge", "kettle", "washer", "tv", "ev"), 0.0),
    )
    stream = home.stream(NOV_1, 10_000)
    # No solar: every device, the meter included, reports a counter.
    first = {s.device: s.energy_wh or 0.0 for s in stream.take(1)}
    samples = stream.take(360)
    last = {s.device: s.energy_wh or 0.0 for s in samples[-len(home.devices) :]}
    assert all(s.energy_wh is not None for s in samples)
    assert last["fridge"] - first["fridge"] == pytest.approx(120.0, rel=0.005)
    # Nothing else runs: the kettle and the charger read 0 W and their counters stand still;
    # the meter sees base + fridge + washer and TV standby = 100 + 120 + 1 + 0.5 = 221.5 W.
    assert last["kettle"] == first["kettle"]
    assert last["ev"] == first["ev"]
    meter = [s.power_w for s in samples if s.device == "meter"]
    assert sum(meter) / len(meter) == pytest.approx(221.5, abs=2.0)
    assert last["meter"] - first["meter"] == pytest.approx(221.5, rel=0.01)


def test_counters_start_later_in_life_for_a_later_stream() -> None:
    # A stream started a year later starts its counters about a year of mean use higher.
    home = Home.create(5, 1)
    now = home.stream(NOV_1, 10_000).take(1)
    later = home.stream(NOV_1 + 365 * 86_400_000, 10_000).take(1)
    for a, b in zip(now, later, strict=True):
        if a.energy_wh is None or b.energy_wh is None:
            assert a.device == "meter" and home.solar is not None  # power only
            continue
        expected = home.mean_w(a.device) * 365 * 24
        assert b.energy_wh - a.energy_wh == pytest.approx(expected, rel=0.01, abs=1.0)
    assert math.isfinite(sum(s.energy_wh or 0.0 for s in later))
