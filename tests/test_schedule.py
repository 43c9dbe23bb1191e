"""Fire times, DST policy and preview (jobengine.schedule), with exact expected times."""

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from jobengine import InvalidArgumentError, InvalidJobError, Job
from jobengine.schedule import fire_times, preview

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def iso(times):
    return [t.isoformat() for t in times]


def test_berlin_spring_forward_shifts_by_the_gap_by_default():
    # 2024-03-31: 02:00 CET -> 03:00 CEST, so 02:30 does not exist that day
    got = preview("30 2 * * *", BERLIN, datetime(2024, 3, 30, 12), 3)
    assert iso(got) == [
        "2024-03-31T03:30:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_berlin_spring_forward_skip_policy():
    got = preview("30 2 * * *", BERLIN, datetime(2024, 3, 30, 12), 2, nonexistent="skip")
    assert iso(got) == ["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("first", ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
        ("second", ["2024-10-27T02:30:00+01:00", "2024-10-28T02:30:00+01:00"]),
        ("both", ["2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00"]),
    ],
)
def test_berlin_fall_back_fires_once_at_the_first_occurrence_by_default(policy, expected):
    # 2024-10-27: 03:00 CEST -> 02:00 CET, so 02:30 happens twice
    got = preview("30 2 * * *", BERLIN, datetime(2024, 10, 26, 12), 2, ambiguous=policy)
    assert iso(got) == expected


def test_new_york_spring_forward_every_half_hour_fires_each_instant_once():
    # 2024-03-10: 02:00 EST -> 03:00 EDT; 02:00 and 02:30 move to 03:00 and 03:30,
    # which the regular ticks also name: each instant fires once
    got = preview("*/30 * * * *", NEW_YORK, datetime(2024, 3, 10, 1, 0), 4)
    assert iso(got) == [
        "2024-03-10T01:30:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T03:30:00-04:00",
        "2024-03-10T04:00:00-04:00",
    ]


def test_new_york_fall_back():
    # 2024-11-03: 02:00 EDT -> 01:00 EST, so 01:30 happens twice
    got = preview("30 1 * * *", NEW_YORK, datetime(2024, 11, 2, 12), 2)
    assert iso(got) == ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]
    both = preview("30 1 * * *", NEW_YORK, datetime(2024, 11, 2, 12), 3, ambiguous="both")
    assert iso(both) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:30:00-05:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_hourly_ticks_across_fall_back_are_one_hour_apart_in_real_time():
    got = preview("0 * * * *", BERLIN, datetime(2024, 10, 27, 0, 30), 5)
    utc = [t.astimezone(timezone.utc) for t in got]  # same-zone subtraction ignores offsets
    gaps = {b - a for a, b in itertools.pairwise(utc)}
    # 01:00 CEST, 02:00 CEST, 02:00 CET (skipped: ambiguous=first), 03:00 CET ...
    assert iso(got)[:3] == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T03:00:00+01:00",
    ]
    assert max(gaps) == timedelta(hours=2) and min(gaps) == timedelta(hours=1)


def test_seconds_field_and_descriptors():
    start = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert iso(preview("* * * * * */20", "UTC", start, 3)) == [
        "2024-01-01T12:00:20+00:00",
        "2024-01-01T12:00:40+00:00",
        "2024-01-01T12:01:00+00:00",
    ]
    assert iso(preview("@hourly", "UTC", start, 2)) == [
        "2024-01-01T13:00:00+00:00",
        "2024-01-01T14:00:00+00:00",
    ]
    assert iso(preview("@daily", "UTC", start, 1)) == ["2024-01-02T00:00:00+00:00"]


def test_fire_times_are_strictly_after_start_and_increasing():
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    got = preview("*/7 * * * *", "Asia/Kolkata", start)
    assert len(got) == 20 and all(t > start for t in got)
    assert all(a < b for a, b in itertools.pairwise(got))


def test_naive_start_is_read_in_the_given_zone():
    (t,) = preview("0 9 * * *", NEW_YORK, datetime(2024, 6, 1, 8, 0), 1)
    assert t.isoformat() == "2024-06-01T09:00:00-04:00"


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: preview("61 * * * *"), "61 * * * *"),
        (lambda: preview("every day"), "every day"),
        (lambda: preview("* * * * *", "Mars/Olympus"), "Mars/Olympus"),
        (lambda: preview("* * * * *", count=-1), "-1"),
        (lambda: preview("* * * * *", ambiguous="latest"), "latest"),
        (lambda: list(fire_times("* * * * *", nonexistent="never")), "never"),
    ],
)
def test_bad_schedules_raise_naming_the_bad_value(call, needle):
    with pytest.raises(InvalidArgumentError) as e:
        call()
    assert needle in str(e.value)


def test_bad_crontab_or_zone_is_refused_at_job_creation():
    with pytest.raises(InvalidJobError, match="'0 25 \\* \\* \\*'"):
        Job("cron", print, crontab="0 25 * * *")
    with pytest.raises(InvalidJobError, match="Nowhere/City"):
        Job("cron", print, crontab="* * * * *", timezone="Nowhere/City")
    with pytest.raises(InvalidArgumentError, match="max_overlap"):
        Job("cron", print, crontab="* * * * *", max_overlap=0)


@pytest.mark.parametrize("crontab", ["*/15 * * * *", "30 2 * * *", "0 * * * *"])
@pytest.mark.parametrize("ambiguous", ["first", "second", "both"])
def test_walk_from_any_start_agrees_with_a_walk_from_long_before(crontab, ambiguous):
    # fire_times starts its croniter walk at `start` unless an offset change is near;
    # whatever the start, it must yield exactly the ticks a long walk has after it.
    utc = timezone.utc
    for transition in (datetime(2024, 3, 31, 1, tzinfo=utc), datetime(2024, 10, 27, 1, tzinfo=utc)):
        reference = list(itertools.islice(
            fire_times(crontab, "Europe/Berlin", transition - timedelta(hours=12),
                       ambiguous=ambiguous), 400))  # fmt: skip
        for minutes in range(-6 * 60, 6 * 60, 20):
            start = transition + timedelta(minutes=minutes)
            got = list(itertools.islice(
                fire_times(crontab, "Europe/Berlin", start, ambiguous=ambiguous), 3))  # fmt: skip
            assert got == [t for t in reference if t > start][:3], (crontab, start)
