"""Seeded models of homes: what each of a home's devices reports, reading after reading.

Pure: no I/O and no clock. Every random choice comes from a `random.Random` seeded with a
string (string seeds hash the same on every run and platform), so one seed and one start time
give the same readings every time.

A home has a whole-house meter and plugs on its fridge, kettle, washing machine and TV; some
homes have a solar inverter, some an EV charger. What they draw:

- base load (always-on electronics), flat with a little noise;
- the fridge compressor cycling on a fixed period;
- the kettle (2-3 kW for a few minutes) at seeded times around breakfast, tea and dinner;
- the oven (hard-wired: only the meter sees it) before dinner, preheat then thermostat cycles;
- the washing machine: heating, then tumbling, then a spin;
- the TV in the evening;
- the evening (and a smaller morning) peak of lights and cooking;
- solar: zero from sunset to sunrise, a sine-shaped day scaled by the season's sun height and
  that day's clouds;
- EV charging at 7.4 kW for a few hours on some evenings.

The meter is the home's grid meter (role `grid`) and reports the net power (negative while solar
exports) and, in a home without solar, an import counter (a home with solar exports, which an
import counter would hide, so its meter reports power only); the plugs and the EV charger sit
behind it (their kWh are inside the meter's), the inverter is `production`. Every other device
reports its own power, never negative, and its own counter. Counters only ever
grow: they add each interval's energy to a lifetime value that starts at a seeded base plus
the home's mean use since 2020, so that a later run's counters start later in life. Within one
stream they are exact; across separately started streams they are only close.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

DAY_S = 86_400
HOUR_MS = 3_600_000
COUNTER_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: counters grow from here on


class Sample(NamedTuple):
    """One reading of one device of a home; `device` is the device's key within the home."""

    device: str
    ts: int  # epoch ms
    power_w: float
    energy_wh: float | None  # None: no counter (the meter of a home with solar)
    voltage_v: float


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as it is registered: its key in the home, its name, its registry type, its
    role in the home and the key of the device it sits inside."""

    key: str
    name: str
    type: str
    role: str = "consumer"
    parent: str | None = None


METER = DeviceSpec("meter", "Main meter", "meter", "grid")
FRIDGE = DeviceSpec("fridge", "Fridge", "plug", "sub", "meter")
KETTLE = DeviceSpec("kettle", "Kettle", "plug", "sub", "meter")
WASHER = DeviceSpec("washer", "Washing machine", "plug", "sub", "meter")
TV = DeviceSpec("tv", "TV", "plug", "sub", "meter")
SOLAR = DeviceSpec("solar", "Solar inverter", "solar", "production")
EV = DeviceSpec("ev", "EV charger", "ev_charger", "ev_charger", "meter")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a home is: its zone, its position for the sun, and what energy costs there."""

    timezone: str
    latitude: float
    longitude: float
    currency: str
    tariff: dict[str, Any]


PLACES = (
    Place(
        "Europe/Berlin",
        52.52,
        13.40,
        "EUR",
        {"type": "flat", "price_per_kwh": 0.35, "export_price_per_kwh": 0.08},
    ),
    Place(
        "Europe/London",
        51.51,
        -0.13,
        "GBP",
        {
            "type": "tou",
            "bands": [
                {"from_hour": 0, "to_hour": 7, "price_per_kwh": 0.09},
                {"from_hour": 7, "to_hour": 16, "price_per_kwh": 0.27},
                {"from_hour": 16, "to_hour": 19, "price_per_kwh": 0.38},
                {"from_hour": 19, "to_hour": 24, "price_per_kwh": 0.27},
            ],
            "export_price_per_kwh": 0.15,
        },
    ),
    Place("Europe/Madrid", 40.42, -3.70, "EUR", {"type": "flat", "price_per_kwh": 0.18}),
    Place("America/New_York", 40.71, -74.01, "USD", {"type": "flat", "price_per_kwh": 0.23}),
    Place(
        "Australia/Sydney",
        -33.87,
        151.21,
        "AUD",
        {"type": "flat", "price_per_kwh": 0.33, "export_price_per_kwh": 0.05},
    ),
)


# -- the parts of a home -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fridge:
    """A compressor running `on_w` for the first `duty` of every period, `standby_w` after."""

    on_w: float
    standby_w: float
    period_s: int
    duty: float
    phase_s: int

    def power_w(self, utc_s: float) -> float:
        position = (utc_s + self.phase_s) % self.period_s
        return self.on_w if position < self.duty * self.period_s else self.standby_w


@dataclass(frozen=True, slots=True)
class Window:
    """A use may start between `from_h` and `to_h` (local hours) with probability `chance`."""

    from_h: float
    to_h: float
    chance: float


@dataclass(slots=True)
class Schedule:
    """When an appliance runs on each local day: drawn from the seed and the day alone, so a
    day's uses are the same whichever stream asks, and cached because every reading asks."""

    seed: str
    windows: tuple[Window, ...]
    duration_s: tuple[int, int]
    _days: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def uses(self, day: int) -> tuple[tuple[int, int], ...]:
        """(start, end) seconds after local midnight of each use on local day `day`."""
        found = self._days.get(day)
        if found is None:
            rng = random.Random(f"{self.seed}:{day}")
            picked = []
            for w in self.windows:
                if rng.random() < w.chance:
                    start = int(rng.uniform(w.from_h, w.to_h) * 3600)
                    picked.append((start, start + rng.randint(*self.duration_s)))
            found = self._days[day] = tuple(picked)
        return found

    def running(self, day: int, second: float) -> tuple[float, int] | None:
        """(seconds since the current use began, its length), or None when it is off."""
        for start, end in self.uses(day):
            if start <= second < end:
                return second - start, end - start
        return None


@dataclass(frozen=True, slots=True)
class Kettle:
    power_w: float
    schedule: Schedule

    def draw_w(self, day: int, second: float) -> float:
        return 0.0 if self.schedule.running(day, second) is None else self.power_w


@dataclass(frozen=True, slots=True)
class Oven:
    """Full power while preheating, then the thermostat keeps it on for `duty` of each cycle."""

    power_w: float
    schedule: Schedule
    preheat_s: int = 600
    cycle_s: int = 240
    duty: float = 0.55

    def draw_w(self, day: int, second: float) -> float:
        use = self.schedule.running(day, second)
        if use is None:
            return 0.0
        since = use[0]
        if since < self.preheat_s or (since - self.preheat_s) % self.cycle_s < (
            self.duty * self.cycle_s
        ):
            return self.power_w
        return 0.0


@dataclass(frozen=True, slots=True)
class Washer:
    """Heats the water for the first 15 minutes, then tumbles, then spins for the last 10."""

    heater_w: float
    schedule: Schedule
    standby_w: float = 1.0

    def draw_w(self, day: int, second: float) -> float:
        use = self.schedule.running(day, second)
        if use is None:
            return self.standby_w
        since, length = use
        if since < 900:
            return self.heater_w
        return 500.0 if since >= length - 600 else 180.0


@dataclass(frozen=True, slots=True)
class Television:
    on_w: float
    schedule: Schedule
    standby_w: float = 0.5

    def draw_w(self, day: int, second: float) -> float:
        return self.standby_w if self.schedule.running(day, second) is None else self.on_w


@dataclass(frozen=True, slots=True)
class EvCharger:
    power_w: float
    schedule: Schedule

    def draw_w(self, day: int, second: float) -> float:
        # A session that starts late goes on past midnight: the previous day's uses count too.
        if self.schedule.running(day, second) is not None:
            return self.power_w
        return 0.0 if self.schedule.running(day - 1, second + DAY_S) is None else self.power_w


@dataclass(frozen=True, slots=True)
class Solar:
    """A PV array of `peak_w` at `latitude`/`longitude`; `clouds` dims each UTC day."""

    peak_w: float
    latitude: float
    longitude: float
    seed: str

    def power_w(self, utc_s: float) -> float:
        utc_day, utc_second = divmod(int(utc_s), DAY_S)
        solar_hour = (utc_second / 3600 + self.longitude / 15) % 24
        sunrise, sunset, height = _sun(self.latitude, utc_day)
        if not sunrise < solar_hour < sunset:
            return 0.0
        shape = math.sin(math.pi * (solar_hour - sunrise) / (sunset - sunrise)) ** 1.5
        return self.peak_w * height * shape * self.clouds(utc_day)

    def clouds(self, utc_day: float) -> float:
        """The share of clear-sky output that gets through on this day: 0.15 to 1."""
        return _clouds(self.seed, int(utc_day))


@functools.lru_cache(maxsize=4096)
def _sun(latitude: float, utc_day: int) -> tuple[float, float, float]:
    """(sunrise, sunset) in solar hours and sin(the sun's height at noon) on a UTC day."""
    day_of_year = datetime.fromtimestamp(utc_day * DAY_S, UTC).timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day_of_year) / 365)
    lat = math.radians(latitude)
    cos_h0 = max(-1.0, min(1.0, -math.tan(lat) * math.tan(declination)))
    half_day_h = math.degrees(math.acos(cos_h0)) / 15
    noon_height = math.sin(max(math.pi / 2 - abs(lat - declination), 0.0))
    return 12 - half_day_h, 12 + half_day_h, noon_height


@functools.lru_cache(maxsize=65_536)
def _clouds(seed: str, utc_day: int) -> float:
    rng = random.Random(f"{seed}:{utc_day}")
    return 1.0 if rng.random() < 0.35 else rng.uniform(0.15, 0.95)


def bump(hour: float, centre: float, width: float) -> float:
    """A smooth daily peak: 1 at `centre` (local hours), falling off over about `width` hours."""
    distance = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-((distance / width) ** 2))


# -- a home ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Home:
    """One household, drawn from (`seed`, `index`); `Home.create` is the only constructor used
    outside tests, which build homes part by part to know every number."""

    seed: int
    index: int
    place: Place
    base_w: float
    fridge: Fridge
    kettle: Kettle
    oven: Oven
    washer: Washer
    tv: Television
    evening_w: float
    solar: Solar | None
    ev: EvCharger | None
    counter_base_wh: dict[str, float]

    @classmethod
    def create(cls, seed: int, index: int) -> Home:
        rng = random.Random(f"home:{seed}:{index}")
        tag = f"{seed}:{index}"
        place = rng.choice(PLACES)
        fridge = Fridge(
            on_w=rng.uniform(70, 140),
            standby_w=rng.uniform(0.5, 2.0),
            period_s=rng.randint(40, 75) * 60,
            duty=rng.uniform(0.3, 0.5),
            phase_s=rng.randint(0, 3600),
        )
        kettle = Kettle(
            rng.choice((2000.0, 2200.0, 2400.0, 3000.0)),
            Schedule(
                f"kettle:{tag}",
                (
                    Window(6.5, 9.0, 0.9),
                    Window(11.5, 13.5, 0.4),
                    Window(15.5, 17.0, 0.5),
                    Window(19.0, 22.0, 0.6),
                ),
                (120, 240),
            ),
        )
        oven = Oven(
            rng.uniform(2000, 3500),
            Schedule(f"oven:{tag}", (Window(17.0, 19.5, 0.6),), (1800, 4500)),
        )
        washer = Washer(
            rng.uniform(1800, 2300),
            Schedule(f"washer:{tag}", (Window(8.0, 20.0, 0.45),), (4200, 7800)),
        )
        tv = Television(
            rng.uniform(60, 160),
            Schedule(f"tv:{tag}", (Window(18.5, 21.0, 0.85),), (3600, 14400)),
        )
        solar = (
            Solar(rng.uniform(3000, 10000), place.latitude, place.longitude, f"solar:{tag}")
            if rng.random() < 0.4
            else None
        )
        ev = (
            EvCharger(
                rng.choice((3700.0, 7400.0)),
                Schedule(f"ev:{tag}", (Window(18.0, 23.0, 0.35),), (3600, 5 * 3600)),
            )
            if rng.random() < 0.25
            else None
        )
        keys = [d.key for d in _devices(solar, ev)]
        bases = {k: rng.uniform(0, 2e5) for k in keys} | {"meter": rng.uniform(5e5, 5e6)}
        return cls(
            seed=seed,
            index=index,
            place=place,
            base_w=rng.uniform(60, 250),
            fridge=fridge,
            kettle=kettle,
            oven=oven,
            washer=washer,
            tv=tv,
            evening_w=rng.uniform(300, 1200),
            solar=solar,
            ev=ev,
            counter_base_wh=bases,
        )

    @property
    def devices(self) -> tuple[DeviceSpec, ...]:
        return _devices(self.solar, self.ev)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.place.timezone)

    def powers(self, utc_s: float, day: int, second: float) -> dict[str, float]:
        """Noise-free power of every device at `utc_s`, given the local day and second of day;
        the meter's is the net of all loads, hidden ones included, minus solar."""
        hour = second / 3600
        out = {
            "fridge": self.fridge.power_w(utc_s),
            "kettle": self.kettle.draw_w(day, second),
            "washer": self.washer.draw_w(day, second),
            "tv": self.tv.draw_w(day, second),
        }
        if self.ev is not None:
            out["ev"] = self.ev.draw_w(day, second)
        house = (
            self.base_w
            + sum(out.values())
            + self.oven.draw_w(day, second)
            + self.evening_w * (bump(hour, 19.5, 1.8) + 0.4 * bump(hour, 7.5, 1.0))
        )
        solar = 0.0
        if self.solar is not None:
            solar = out["solar"] = self.solar.power_w(utc_s)
        out["meter"] = house - solar
        return out

    def mean_w(self, key: str) -> float:
        """A rough lifetime mean of a device's draw, to place its counter in its life."""
        means = {
            "meter": self.base_w + 0.35 * self.fridge.on_w + 0.3 * self.evening_w + 250,
            "fridge": 0.4 * self.fridge.on_w,
            "kettle": 30.0,
            "washer": 80.0,
            "tv": 25.0,
            "solar": 0.12 * self.solar.peak_w if self.solar else 0.0,
            "ev": 0.05 * self.ev.power_w if self.ev else 0.0,
        }
        return means[key]

    def stream(self, start_ms: int, interval_ms: int) -> HomeStream:
        return HomeStream(self, start_ms, interval_ms)


def _devices(solar: Solar | None, ev: EvCharger | None) -> tuple[DeviceSpec, ...]:
    return (
        METER,
        FRIDGE,
        KETTLE,
        WASHER,
        TV,
        *((SOLAR,) if solar is not None else ()),
        *((EV,) if ev is not None else ()),
    )


class HomeStream:
    """Every device's readings from `start_ms` on, one per device every `interval_ms`;
    successive `take` calls continue the same series (counters included)."""

    def __init__(self, home: Home, start_ms: int, interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError("the interval must be positive")
        self.home = home
        self.interval_ms = interval_ms
        self.next_ms = start_ms
        self._rng = random.Random(f"stream:{home.seed}:{home.index}:{start_ms}:{interval_ms}")
        self._keys = [d.key for d in home.devices]
        lived_h = max(0, start_ms - COUNTER_EPOCH_MS) / HOUR_MS
        self._counters = {k: home.counter_base_wh[k] + home.mean_w(k) * lived_h for k in self._keys}
        self._offsets: dict[int, int] = {}  # UTC hour -> local offset in seconds

    def _offset_s(self, ts_ms: int) -> int:
        hour = ts_ms // HOUR_MS
        offset = self._offsets.get(hour)
        if offset is None:
            moment = datetime.fromtimestamp(hour * 3600, UTC).astimezone(self.home.tz)
            offset = self._offsets[hour] = int(moment.utcoffset().total_seconds())  # type: ignore[union-attr]
        return offset

    def take(self, count: int) -> list[Sample]:
        """The next `count` instants' readings, every device at each instant."""
        out: list[Sample] = []
        rng, home, counters = self._rng, self.home, self._counters
        step_h = self.interval_ms / HOUR_MS
        meter_counts = home.solar is None
        for _ in range(count):
            ts = self.next_ms
            self.next_ms += self.interval_ms
            utc_s = ts / 1000
            day, second = divmod(utc_s + self._offset_s(ts), DAY_S)
            powers = home.powers(utc_s, int(day), second)
            volts = round(230.0 + 3.0 * math.sin(utc_s / 5400) + rng.gauss(0, 0.6), 1)
            for key in self._keys:
                power = powers[key]
                if key == "meter":
                    power += rng.gauss(0, 8)
                elif power > 0:
                    power *= 1 + rng.gauss(0, 0.01)
                    power = max(power, 0.0)
                # The counter takes the energy of the interval that ends here, as a meter
                # registers what flowed since its last report; the meter counts imports only.
                counters[key] += max(power, 0.0) * step_h
                counted = key != "meter" or meter_counts
                energy = round(counters[key], 1) if counted else None
                out.append(Sample(key, ts, round(power, 1), energy, volts))
        return out


def make_homes(seed: int, count: int, first: int = 0) -> list[Home]:
    """Homes `first` to `first + count - 1` of the population drawn from `seed`."""
    return [Home.create(seed, i) for i in range(first, first + count)]
