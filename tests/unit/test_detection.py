"""The anomaly detector of core/anomalies.py on small series, expected values by
hand. Four weeks of history (UTC, from Monday 2 March 2026) and the day judged after them."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from energy_tracker.core import anomalies as dt
from energy_tracker.core import hours as hourly
from energy_tracker.services.insights import evaluate as ev

approx = pytest.approx
MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
DAY = 28 * 24  # the first hour of the day judged


def detect(kwh: np.ndarray, first: int = DAY) -> list[dt.Event]:
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    return dt.detect(kwh, cal, first, kwh.size)


def flat(days: int = 29, kwh: float = 0.2) -> np.ndarray:
    return np.full(days * 24, kwh)


def test_a_load_stuck_on_for_six_hours() -> None:
    # 0.2 kWh every hour, then 2 kW more from 10:00 to 16:00. Each hour's 10th percentile over
    # the 28 days before is 0.2: 2.2 - 0.2 = 2.0 >= 1.8 on 6 hours running. Expected 6 x 0.2;
    # the spread is the 0.05 kWh floor (no range at all): (2.2 - 0.2) / 0.05 = 40 spreads.
    kwh = flat()
    kwh[DAY + 10 : DAY + 16] += 2.0
    assert detect(kwh) == [
        dt.Event("stuck_on", DAY + 10, DAY + 16, approx(6 * 2.2), approx(6 * 0.2), approx(40.0))
    ]


def test_hour_scores_carry_each_events_score_over_its_hours() -> None:
    # The load of the test above: its six hours score 40 (the event's score), the other hours
    # of the day judged 0, the hours before the first judged none (NaN).
    kwh = flat()
    kwh[DAY + 10 : DAY + 16] += 2.0
    scores = dt.hour_scores(kwh, hourly.calendar_of(MONDAY, kwh.size, UTC, None), DAY)
    assert np.isnan(scores[:DAY]).all()
    assert scores[DAY:] == approx([0.0] * 10 + [40.0] * 6 + [0.0] * 8)


def test_five_hours_are_not_stuck_on_but_unusual_at_a_quiet_hour() -> None:
    # Each hour is quiet (its 90th percentile, 0.2, within 0.1 kWh of the home's 10th
    # percentile, 0.2) and 2.2 is at least 1 kWh above the highest seen at that hour (0.2).
    kwh = flat()
    kwh[DAY + 10 : DAY + 15] += 2.0
    assert [(e.kind, e.first, e.end) for e in detect(kwh)] == [("unusual_hour", DAY + 10, DAY + 15)]


def test_a_spike_at_a_busy_hour_and_usage_at_a_quiet_one() -> None:
    # 0.2 an hour but 1.0 at 18:00 every day. Judged at 18:00, the hours 17:00 to 19:00 of 28
    # days: 56 x 0.2 and 28 x 1.0; 10th percentile 0.2, median 0.2, 90th (rank 74.7 of 0-83)
    # 1.0, highest 1.0; 18:00's own 90th percentile 1.0 is not quiet. 2.5 is 1.5 above the
    # highest: a spike, (2.5 - 0.2) / (0.8 / 2.563) = 7.369 spreads. 1.9 (0.9 above) is not.
    # At 03:00 (quiet, highest 0.2), 1.3 is 1.1 above: an unusual hour, (1.3 - 0.2) / 0.05 = 22.
    kwh = flat()
    kwh[18::24] = 1.0
    kwh[DAY + 18] = 2.5
    kwh[DAY + 3] = 1.3
    assert detect(kwh) == [
        dt.Event("unusual_hour", DAY + 3, DAY + 4, approx(1.3), approx(0.2), approx(22.0)),
        dt.Event("spike", DAY + 18, DAY + 19, approx(2.5), approx(0.2), approx(7.3686, abs=1e-4)),
    ]
    kwh[DAY + 18] = 1.9
    assert [e.kind for e in detect(kwh)] == ["unusual_hour"]


def test_a_meter_gone_silent() -> None:
    # Three hours without data from 05:00: silence, expected at the week before's 0.2 an hour,
    # 0.6 kWh; score 3 / 3 = 1. Two hours without data (from 20:00) are not news.
    kwh = flat()
    kwh[DAY + 5 : DAY + 8] = np.nan
    kwh[DAY + 20 : DAY + 22] = np.nan
    assert detect(kwh) == [dt.Event("silence", DAY + 5, DAY + 8, 0.0, approx(0.6), 1.0)]


def test_silence_after_a_mostly_silent_week_is_not_news() -> None:
    # The week before had only 100 of its 168 hours recorded, below 75 %.
    kwh = flat()
    kwh[DAY - 168 : DAY - 100] = np.nan
    kwh[DAY + 5 : DAY + 8] = np.nan
    assert [e.kind for e in detect(kwh)] == []


def test_a_baseload_step_of_three_days() -> None:
    # 0.2 an hour for 28 days, then 0.4 (200 W more, always on) for three days. Each day's
    # always-on level (10th percentile of its hours) steps from 0.2 to 0.4; the 28 days before
    # each have median 0.2 and MAD 0 (the later days' include the earlier 0.4s once or twice),
    # so the spread is the 0.05 floor: 0.2 >= max(0.15, 3 x 0.05). Over 72 hours: 0.4 x 72
    # against 0.2 x 72; score 0.2 / 0.05 = 4.
    kwh = np.concatenate([flat(28), flat(3, 0.4)])
    assert detect(kwh) == [
        dt.Event("baseload_step", DAY, DAY + 72, approx(28.8), approx(14.4), approx(4.0))
    ]
    # Two days are not a step.
    assert detect(kwh[: DAY + 48]) == []


def test_no_history_judges_nothing() -> None:
    kwh = flat(1, 5.0)
    kwh[3:8] = np.nan
    assert detect(kwh, first=0) == []


def busy_mornings(days: int = 29) -> tuple[np.ndarray, np.ndarray]:
    """Hours and quarters of a home at 200 W, but 1 kW from 07:00 to 14:00 every day."""
    kw = np.full(days * 96, 0.2)
    for d in range(days):
        kw[d * 96 + 7 * 4 : d * 96 + 14 * 4] = 1.0
    quarters = kw / 4
    return quarters.reshape(-1, 4).sum(axis=1), quarters


def test_a_short_spike_is_found_in_the_quarters_an_hour_hides() -> None:
    # 2.5 kW more from 10:45 to 11:15: 0.625 kWh in each of two hours, less than 1 kWh above
    # their highest (1.0): no hour is a spike. In quarters the two at 10:45 and 11:00 are at
    # 3.5 kW, 2.5 above the highest of their times of day ±1 h (1.0; no quarter of the weeks
    # before went above its own highest, so the margin is 1 kW). Hour 10 is not quiet (its
    # 90th percentile, 1.0, is more than 0.1 above the home's 10th percentile, 0.2): a spike
    # over hours 10 and 11, 2 x 3.5 / 4 = 1.75 kWh against 2 x 1.0 / 4 = 0.5; score: the
    # 2.5 kW excess over the 0.05 spread floor (no range at all) = 50.
    kwh, quarters = busy_mornings()
    kwh[DAY + 10 : DAY + 12] += 0.625
    quarters[(DAY + 10) * 4 + 3 : (DAY + 11) * 4 + 1] += 0.625
    assert detect(kwh) == []
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    assert dt.detect(kwh, cal, DAY, kwh.size, quarters) == [
        dt.Event("spike", DAY + 10, DAY + 12, approx(1.75), approx(0.5), approx(50.0))
    ]


def test_a_home_that_went_further_above_its_highest_needs_a_bigger_spike() -> None:
    # As above, but 20 days before, 3 kW more for a quarter at 20:00 (3.2 kW against a highest
    # of 0.2 after 8 days): the home's own margin for the day judged is 3.0 kW, and 2.5 above
    # the highest is no spike. 3.5 kW more (4.5, 3.5 above) is one again.
    kwh, quarters = busy_mornings()
    quarters[(8 * 24 + 20) * 4] += 0.75
    quarters[(DAY + 10) * 4 + 3 : (DAY + 11) * 4 + 1] += 0.625
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    assert dt.detect(kwh, cal, DAY, kwh.size, quarters) == []
    quarters[(DAY + 10) * 4 + 3 : (DAY + 11) * 4 + 1] += 0.25
    assert [(e.kind, e.first, e.end) for e in dt.detect(kwh, cal, DAY, kwh.size, quarters)] == [
        ("spike", DAY + 10, DAY + 12)
    ]


def test_the_backtest_finds_every_fault_injected_into_a_steady_home() -> None:
    # 160 days of 0.2 kWh an hour (0.05 a quarter): nothing to find in it; each fault injected
    # every 10 days after the warm-up (35 days) and the detector's history (84) is found: 2.2
    # for 6 h lifts each quarter 2.0 kW above its 10th percentile; +0.3 for a week lifts the
    # always-on level 0.3 above 0.2 (spread: the 0.05 floor); 6 h without data follow a
    # recorded week; 2.5 kW for 30 min lifts a whole quarter 2.5 kW above the highest of its
    # time of day, at a quiet hour (an unusual hour counts as the spike it is).
    kwh = flat(160)
    data = ev.DataSet(
        "steady",
        "test",
        MONDAY,
        kwh,
        hourly.calendar_of(MONDAY, kwh.size, UTC, None),
        np.full(kwh.size * 4, 0.05),
    )
    result = ev.Result("steady")
    ev.backtest_anomalies(data, result)
    # Faults start on the days 120, 130, 140 and 150 (day 119 is the first judged; the
    # week-long step from day 150 ends with day 156, a day before the data's end): 4 each.
    assert result.recall == {
        "2 kW load stuck on for 6 h": (4, 4),
        "+300 W baseload for a week": (4, 4),
        "6 h of silence": (4, 4),
        "2.5 kW spike for 30 min": (4, 4),
    }
    assert (result.false_alarms, result.data_silences) == (0, 0)
    assert result.alarm_months == approx(41 / 30.4375)


def test_alarms_count_runs_of_flagged_hours_once() -> None:
    # A stuck load over hours 10-15 and a spike at 15-16 touch: one alarm. A spike at 20 is a
    # second; a silence (the data's own gap) none.
    events = [
        dt.Event("stuck_on", 10, 16, 0.0, 0.0, 1.0),
        dt.Event("spike", 15, 17, 0.0, 0.0, 1.0),
        dt.Event("spike", 20, 21, 0.0, 0.0, 1.0),
        dt.Event("silence", 30, 36, 0.0, 0.0, 2.0),
    ]
    assert ev.alarms(events, 48) == 2


def test_hour_scores_find_a_load_on_since_before_the_first_hour_scored() -> None:
    # 0.2 kWh an hour, but 3.0 at 15:00 on every fourth day of the four weeks; then 2 kW more
    # from 10:00 to 16:00, and only 15:00 scored (an alert rule's last hour). At 15:00, 2.2 is
    # below the highest of 14:00-16:00 (3.0): no spike, and one hour is no run of six. Looking
    # from 24 hours before, the six hours stuck on are found (each 2.0 above the 10th
    # percentile, 0.2; the 90th percentiles are 0.2, so the spread is the 0.05 floor) and 15:00
    # carries their score, (2.2 - 0.2) / 0.05 = 40.
    kwh = flat()
    kwh[15 : DAY : 4 * 24] = 3.0
    kwh[DAY + 10 : DAY + 16] += 2.0
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    assert [e.kind for e in dt.detect(kwh, cal, DAY + 15, kwh.size)] == []
    scores = dt.hour_scores(kwh, cal, DAY + 15)
    assert np.isnan(scores[: DAY + 15]).all()
    assert scores[DAY + 15 :] == approx([40.0] + [0.0] * 8)
