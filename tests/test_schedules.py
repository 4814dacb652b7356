"""Specifications for pgtasks.schedules: pure schedule logic, no database.

Transition days used throughout (2025):
  America/New_York  springs forward 03-09 at 02:00 EST (07:00Z) -> 03:00 EDT
                    falls back      11-02 at 02:00 EDT (06:00Z) -> 01:00 EST (01:00-02:00 repeats)
  Europe/London     springs forward 03-30 at 01:00 GMT (01:00Z) -> 02:00 BST
                    falls back      10-26 at 02:00 BST (01:00Z) -> 01:00 GMT (01:00-02:00 repeats)
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from pgtasks.errors import ScheduleError
from pgtasks.schedules import (
    CATCH_UP_POLICIES,
    Schedule,
    as_schedule,
    baseline,
    catch_up_ticks,
    cron,
    crontab,
    interval,
    latest_due_tick,
    parse_schedule,
    validate_catch_up_policy,
)

NEW_YORK = "America/New_York"
LONDON = "Europe/London"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def wall(text: str, zone: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold)


def local(tick: datetime, zone: str) -> datetime:
    return tick.astimezone(ZoneInfo(zone))


def gaps(ticks: list[datetime]) -> set[timedelta]:
    return {later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)}


# --- field validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("minute", 60, "60 is out of range 0-59"),
        ("minute", "61", "61 is out of range 0-59"),
        ("hour", "24", "24 is out of range 0-23"),
        ("hour", -1, "-1 is out of range 0-23"),
        ("hour", "-1", "a number is missing"),
        ("hour", "5-", "a number is missing"),
        ("day_of_week", "mon-fry", "'fry' is not a number or a weekday name"),
        ("day_of_week", 8, "8 is out of range 0-7"),
        ("day_of_month", 0, "0 is out of range 1-31"),
        ("day_of_month", "32", "32 is out of range 1-31"),
        ("month_of_year", "13", "13 is out of range 1-12"),
        ("month_of_year", "jun-foo", "'foo' is not a number or a month name"),
        ("minute", "*/0", "step '0' is not a positive integer"),
        ("minute", "*/x", "step 'x' is not a positive integer"),
        ("minute", "", "it is empty"),
        ("minute", "1,,2", "a list item is empty"),
        ("minute", "1-2-3", "'2-3' is not a number"),
        ("minute", "5 10", "'5 10' is not a number"),
        ("minute", "L", "'L' is not a number"),
        ("minute", 1.5, "expected an int, a string or a collection of them, not float"),
        ("minute", True, "expected an int, a string or a collection of them, not a bool"),
        ("minute", [], "it is empty"),
        ("minute", [1, None], "expected a collection of ints or strings"),
    ],
)
def test_a_malformed_field_is_rejected_at_construction_naming_the_field_and_value(
    field: str, value: object, reason: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        crontab(**{field: value})  # type: ignore[arg-type]
    assert str(caught.value) == f"invalid crontab: {field}={value!r}: {reason}"


def test_a_crontab_that_could_never_run_is_rejected() -> None:
    with pytest.raises(
        ScheduleError, match="day_of_month=31 never occurs in month_of_year='2,4,6'"
    ):
        crontab(minute=0, hour=0, day_of_month=31, month_of_year="2,4,6")


def test_february_29th_is_a_real_day_that_comes_every_four_years() -> None:
    leap_day = crontab(minute=0, hour=0, day_of_month=29, month_of_year="feb")
    assert leap_day.next_tick(utc("2025-03-01T00:00")) == utc("2028-02-29T00:00")


def test_a_cron_string_must_have_five_fields() -> None:
    with pytest.raises(ScheduleError) as caught:
        cron("0 */5 * * * *")
    assert str(caught.value) == (
        "invalid cron expression '0 */5 * * * *': expected 5 fields "
        "(minute hour day_of_month month_of_year day_of_week), got 6"
    )


def test_a_cron_string_error_names_the_expression_and_the_field() -> None:
    with pytest.raises(ScheduleError) as caught:
        crontab.from_string("0 25 * * *")
    assert str(caught.value) == (
        "invalid cron expression '0 25 * * *': hour='25': 25 is out of range 0-23"
    )


def test_an_unknown_cron_macro_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="invalid cron expression '@reboot': unknown macro"):
        cron("@reboot")


def test_an_unknown_timezone_is_rejected_naming_it() -> None:
    with pytest.raises(ScheduleError, match="unknown timezone 'Mars/Olympus'"):
        crontab(minute=0, tz="Mars/Olympus")


# --- Celery's meaning of the fields --------------------------------------------------------------


@pytest.mark.parametrize("sunday", [0, 7, "0", "7", "sun", "Sunday", "SUN", [7]])
def test_day_of_week_counts_from_sunday_as_zero_and_seven_like_celery(sunday: object) -> None:
    schedule = crontab(minute=0, hour=0, day_of_week=sunday)  # type: ignore[arg-type]
    assert schedule.day_of_week == {0}
    assert schedule.next_tick(utc("2025-01-01T12:00")) == utc("2025-01-05T00:00")  # a Sunday


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("day_of_week", "mon-fri", {1, 2, 3, 4, 5}),
        ("day_of_week", "fri-mon", {5, 6, 0, 1}),
        ("day_of_week", "sat,sun", {6, 0}),
        ("day_of_week", "*/2", {0, 2, 4, 6}),
        ("day_of_week", "1-7", {0, 1, 2, 3, 4, 5, 6}),
        ("day_of_week", ["monday", 3], {1, 3}),
        ("minute", "*/15", {0, 15, 30, 45}),
        ("minute", "10/15", {10, 25, 40, 55}),
        ("minute", "0-30/10", {0, 10, 20, 30}),
        ("minute", [0, 30], {0, 30}),
        ("hour", [0, "12-13"], {0, 12, 13}),
        ("hour", range(0, 24, 6), {0, 6, 12, 18}),
        ("hour", "22-2", {22, 23, 0, 1, 2}),
        ("month_of_year", "jan,jul", {1, 7}),
        ("month_of_year", "Oct-Dec", {10, 11, 12}),
        ("minute", None, set(range(60))),
    ],
)
def test_fields_accept_celery_spellings(field: str, value: object, expected: set[int]) -> None:
    assert getattr(crontab(**{field: value}), field) == expected  # type: ignore[arg-type]


def test_equivalent_spellings_share_one_key() -> None:
    spellings = [
        crontab(minute=0, hour="*/6"),
        crontab(minute="0", hour="0,6,12,18"),
        crontab(minute=[0], hour=[18, 12, 6, 0]),
        cron("0 0-23/6 * * *"),
    ]
    assert {schedule.key() for schedule in spellings} == {"crontab 0 0,6,12,18 * * * UTC"}
    assert len(set(spellings)) == 1


def test_a_weekday_job_skips_the_weekend() -> None:
    weekdays = crontab(minute=0, hour=9, day_of_week="mon-fri")
    assert weekdays.next_tick(utc("2025-01-03T10:00")) == utc("2025-01-06T09:00")  # Fri -> Mon


def test_day_of_month_and_day_of_week_must_both_match_as_in_celery() -> None:
    friday_13th = crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri")
    ticks = friday_13th.ticks_between(utc("2025-01-01T00:00"), utc("2026-10-31T00:00"), 10)
    assert ticks == [utc("2025-06-13T00:00"), utc("2026-02-13T00:00"), utc("2026-03-13T00:00")]


def test_cron_strings_use_the_usual_field_order() -> None:
    assert cron("30 4 1 * *") == crontab(minute=30, hour=4, day_of_month=1)
    assert cron("0 0 * 6 mon") == crontab(minute=0, hour=0, month_of_year=6, day_of_week=1)
    assert crontab.from_string(" */5 * * * * ") == crontab(minute="*/5")


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
     ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@MIDNIGHT", "0 0 * * *")],
)  # fmt: skip
def test_cron_macros_mean_what_they_mean_in_cron(macro: str, expanded: str) -> None:
    assert cron(macro) == cron(expanded)


# --- next_tick -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", "2025-05-01T10:02:30", "2025-05-01T10:05"),
        ("*/5 * * * *", "2025-05-01T10:05", "2025-05-01T10:10"),
        ("*/5 * * * *", "2025-05-01T10:04:59.999999", "2025-05-01T10:05"),
        ("0 3 * * *", "2025-05-01T03:00:00.000001", "2025-05-02T03:00"),
        ("0 3 * * *", "2025-05-01T02:59:59", "2025-05-01T03:00"),
        ("0 0 1 * *", "2025-01-31T12:00", "2025-02-01T00:00"),
        ("59 23 31 12 *", "2025-06-01T00:00", "2025-12-31T23:59"),
        ("0 12 * * sat", "2025-12-27T12:00", "2026-01-03T12:00"),
        ("15,45 8-9 * * *", "2025-05-01T08:45", "2025-05-01T09:15"),
        ("0 0 31 * *", "2025-01-31T00:00", "2025-03-31T00:00"),
    ],
)
def test_next_tick_is_the_first_matching_time_strictly_after(
    expr: str, after: str, expected: str
) -> None:
    assert cron(expr).next_tick(utc(after)) == utc(expected)


def test_next_tick_returns_utc_whatever_the_zone_of_its_input() -> None:
    schedule = cron("0 3 * * *")
    tick = schedule.next_tick(wall("2025-05-01T12:00", "Asia/Tokyo"))  # 03:00Z
    assert tick == utc("2025-05-02T03:00")
    assert tick.tzinfo is UTC


def test_a_crontab_reads_its_fields_in_its_timezone() -> None:
    nine_in_new_york = crontab(minute=0, hour=9, tz=NEW_YORK)
    assert nine_in_new_york.next_tick(utc("2025-01-15T00:00")) == utc("2025-01-15T14:00")
    assert nine_in_new_york.next_tick(utc("2025-07-15T00:00")) == utc("2025-07-15T13:00")


def test_schedules_refuse_naive_datetimes() -> None:
    with pytest.raises(ScheduleError, match="after must be timezone-aware"):
        cron("* * * * *").next_tick(datetime(2025, 1, 1))
    with pytest.raises(ScheduleError, match="now must be timezone-aware"):
        catch_up_ticks(interval(5), utc("2025-01-01T00:00"), datetime(2025, 1, 1))


def test_ticks_between_excludes_the_start_includes_the_end_and_stops_at_the_limit() -> None:
    quarter_hours = cron("*/15 * * * *")
    start, end = utc("2025-05-01T10:00"), utc("2025-05-01T11:00")
    assert quarter_hours.ticks_between(start, end, 10) == [
        utc("2025-05-01T10:15"),
        utc("2025-05-01T10:30"),
        utc("2025-05-01T10:45"),
        utc("2025-05-01T11:00"),
    ]
    assert quarter_hours.ticks_between(start, end, 2) == [
        utc("2025-05-01T10:15"),
        utc("2025-05-01T10:30"),
    ]
    assert quarter_hours.ticks_between(start, end, 0) == []


# --- intervals -----------------------------------------------------------------------------------


def test_an_interval_ticks_on_a_grid_anchored_at_registration() -> None:
    registered = utc("2025-05-01T10:00:07")
    every_30s = interval(30, anchor=registered)
    assert every_30s.next_tick(registered) == utc("2025-05-01T10:00:37")
    assert every_30s.next_tick(utc("2025-05-01T10:00:37")) == utc("2025-05-01T10:01:07")
    assert every_30s.next_tick(utc("2025-05-01T10:05:00")) == utc("2025-05-01T10:05:07")


def test_every_process_computes_the_same_interval_ticks_wherever_it_starts_looking() -> None:
    registered = utc("2025-05-01T10:00:00.250")
    schedule = parse_schedule(timedelta(seconds=7), entry_name="poll", anchor=registered)
    for offset in [0.0, 0.001, 6.999, 7.0, 3600.5, 86400 * 365 + 0.3]:
        tick = schedule.next_tick(registered + timedelta(seconds=offset))
        assert (tick - registered) % timedelta(seconds=7) == timedelta(0)
        assert (
            timedelta(0) < tick - (registered + timedelta(seconds=offset)) <= timedelta(seconds=7)
        )


def test_an_interval_without_an_anchor_is_anchored_at_the_unix_epoch() -> None:
    assert interval(60).next_tick(utc("2025-05-01T10:00:30")) == utc("2025-05-01T10:01")


@pytest.mark.parametrize(
    "period", [30, 30.0, timedelta(seconds=30), timedelta(milliseconds=30_000)]
)
def test_an_interval_accepts_seconds_or_a_timedelta(period: float | timedelta) -> None:
    assert interval(period).key() == "interval 30s"
    assert interval(period) == interval(30)


def test_fractional_intervals_are_exact_to_the_microsecond() -> None:
    quarter_second = interval(0.25, anchor=utc("2025-05-01T00:00"))
    assert quarter_second.key() == "interval 0.25s"
    ticks = quarter_second.ticks_between(utc("2025-05-01T00:00"), utc("2025-05-01T00:01"), 1000)
    assert len(ticks) == 240
    assert gaps(ticks) == {timedelta(milliseconds=250)}


@pytest.mark.parametrize(
    "period", [0, -1, 0.0000001, timedelta(0), timedelta(seconds=-5), math.nan, math.inf, True]
)
def test_a_non_positive_or_non_finite_interval_is_rejected(period: float | timedelta) -> None:
    with pytest.raises(ScheduleError, match="an interval must be"):
        interval(period)


def test_an_interval_answers_range_questions_without_walking_the_range() -> None:
    every_second = interval(1, anchor=utc("2020-01-01T00:00"))
    start, end = utc("2020-01-01T00:00"), utc("2030-01-01T00:00:00.5")
    assert every_second.ticks_between(start, end, 2) == [
        utc("2020-01-01T00:00:01"),
        utc("2020-01-01T00:00:02"),
    ]
    assert every_second.latest_tick(start, end) == utc("2030-01-01T00:00")
    assert every_second.latest_tick(start, utc("2020-01-01T00:00:00.9")) is None


# --- daylight saving time ------------------------------------------------------------------------

SPRING_FORWARD = {NEW_YORK: date(2025, 3, 9), LONDON: date(2025, 3, 30)}
FALL_BACK = {NEW_YORK: date(2025, 11, 2), LONDON: date(2025, 10, 26)}
CLOCK_JUMPS_AT = {NEW_YORK: time(3, 0), LONDON: time(2, 0)}  # local time after the spring jump


@pytest.mark.parametrize("zone", [NEW_YORK, LONDON])
@pytest.mark.parametrize(
    "at", [time(0, 30), time(1, 0), time(1, 30), time(2, 0), time(2, 30), time(3, 0), time(23, 59)]
)
def test_a_daily_job_runs_exactly_once_on_every_local_day_of_a_year(zone: str, at: time) -> None:
    daily = crontab(minute=at.minute, hour=at.hour, tz=zone)
    ticks = daily.ticks_between(wall("2025-01-01T00:00", zone), wall("2026-01-01T00:00", zone), 999)

    assert [local(tick, zone).date() for tick in ticks] == [
        date(2025, 1, 1) + timedelta(days=n) for n in range(365)
    ]
    for tick in ticks:
        day = local(tick, zone).date()
        naive = datetime.combine(day, at)
        exists = naive.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).astimezone(ZoneInfo(zone))
        if exists.replace(tzinfo=None) == naive:
            # When the time happens twice, the job runs at the first occurrence (fold=0).
            assert tick == naive.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)
        else:
            assert day == SPRING_FORWARD[zone]
            assert local(tick, zone).time() == CLOCK_JUMPS_AT[zone]
    assert all(timedelta(hours=23) <= gap <= timedelta(hours=25) for gap in gaps(ticks))


@pytest.mark.parametrize(
    ("zone", "at", "expected"),
    [
        (NEW_YORK, "30 2 * * *", "2025-03-09T07:00"),  # 02:30 does not exist: 03:00 EDT
        (NEW_YORK, "0 2 * * *", "2025-03-09T07:00"),
        (NEW_YORK, "0 3 * * *", "2025-03-09T07:00"),
        (NEW_YORK, "30 1 * * *", "2025-03-09T06:30"),  # before the gap: 01:30 EST
        (LONDON, "30 1 * * *", "2025-03-30T01:00"),  # 01:30 does not exist: 02:00 BST
        (LONDON, "0 1 * * *", "2025-03-30T01:00"),
        (LONDON, "0 3 * * *", "2025-03-30T02:00"),
    ],
)
def test_a_daily_job_runs_once_on_the_spring_forward_day(zone: str, at: str, expected: str) -> None:
    daily = cron(at, tz=zone)
    day = SPRING_FORWARD[zone]
    ticks = daily.ticks_between(
        wall(f"{day}T00:00", zone), wall(f"{day + timedelta(days=1)}T00:00", zone), 10
    )
    assert ticks == [utc(expected)]


@pytest.mark.parametrize(
    ("zone", "at", "expected"),
    [
        (NEW_YORK, "30 1 * * *", "2025-11-02T05:30"),  # 01:30 EDT, not again at 01:30 EST
        (NEW_YORK, "0 1 * * *", "2025-11-02T05:00"),
        (NEW_YORK, "0 2 * * *", "2025-11-02T07:00"),
        (LONDON, "30 1 * * *", "2025-10-26T00:30"),  # 01:30 BST, not again at 01:30 GMT
        (LONDON, "59 1 * * *", "2025-10-26T00:59"),
        (LONDON, "0 2 * * *", "2025-10-26T02:00"),
    ],
)
def test_a_daily_job_in_the_repeated_hour_runs_once_at_its_first_occurrence(
    zone: str, at: str, expected: str
) -> None:
    day = FALL_BACK[zone]
    ticks = cron(at, tz=zone).ticks_between(
        wall(f"{day}T00:00", zone), wall(f"{day + timedelta(days=1)}T00:00", zone), 10
    )
    assert ticks == [utc(expected)]


def test_a_daily_job_looked_at_during_the_repeated_hour_does_not_run_again() -> None:
    daily = cron("30 1 * * *", tz=NEW_YORK)
    tomorrow = utc("2025-11-03T06:30")  # 01:30 EST
    assert daily.next_tick(utc("2025-11-02T05:30")) == tomorrow  # its first occurrence
    assert daily.next_tick(wall("2025-11-02T01:15", NEW_YORK, fold=1)) == tomorrow
    assert daily.next_tick(wall("2025-11-02T01:45", NEW_YORK, fold=1)) == tomorrow


@pytest.mark.parametrize("zone", [NEW_YORK, LONDON])
def test_an_hourly_job_follows_elapsed_time_across_fall_back(zone: str) -> None:
    # Decided: "every hour" means every elapsed hour, so the repeated hour runs twice.
    day = FALL_BACK[zone]
    hourly = cron("0 * * * *", tz=zone)
    ticks = hourly.ticks_between(
        wall(f"{day}T00:00", zone), wall(f"{day + timedelta(days=1)}T00:00", zone), 99
    )
    assert gaps(ticks) == {timedelta(hours=1)}
    assert len(ticks) == 25  # the day is 25 hours long
    assert [local(tick, zone).hour for tick in ticks][:3] == [1, 1, 2]


@pytest.mark.parametrize("zone", [NEW_YORK, LONDON])
def test_an_hourly_job_follows_elapsed_time_across_spring_forward(zone: str) -> None:
    day = SPRING_FORWARD[zone]
    hourly = cron("30 * * * *", tz=zone)
    ticks = hourly.ticks_between(
        wall(f"{day}T00:00", zone), wall(f"{day + timedelta(days=1)}T00:00", zone), 99
    )
    assert gaps(ticks) == {timedelta(hours=1)}
    assert len(ticks) == 23  # the day is 23 hours long: the skipped hour's :30 does not run


@pytest.mark.parametrize("zone", [NEW_YORK, LONDON])
@pytest.mark.parametrize("transition", [SPRING_FORWARD, FALL_BACK])
def test_a_quarter_hourly_job_neither_pauses_nor_bunches_across_a_clock_change(
    zone: str, transition: dict[str, date]
) -> None:
    day = transition[zone]
    ticks = cron("*/15 * * * *", tz=zone).ticks_between(
        wall(f"{day}T00:00", zone), wall(f"{day}T06:00", zone), 99
    )
    assert gaps(ticks) == {timedelta(minutes=15)}


def test_a_job_pinned_to_hours_runs_once_per_wall_clock_time_across_fall_back() -> None:
    # Decided: a job whose hour field is not "every hour" is about wall-clock times, so the
    # repeated hour runs once (first pass) and the times skipped by spring-forward collapse into
    # one run at the end of the gap.
    fall_back = cron("*/30 1-2 * * *", tz=LONDON).ticks_between(
        utc("2025-10-25T23:00"), utc("2025-10-26T06:00"), 99
    )
    assert fall_back == [
        utc("2025-10-26T00:00"),  # 01:00 BST
        utc("2025-10-26T00:30"),  # 01:30 BST; the GMT pass of 01:00-01:59 does not run again
        utc("2025-10-26T02:00"),  # 02:00 GMT
        utc("2025-10-26T02:30"),
    ]
    spring_forward = cron("*/15 2 * * *", tz=NEW_YORK).ticks_between(
        utc("2025-03-09T00:00"), utc("2025-03-10T00:00"), 99
    )
    assert spring_forward == [utc("2025-03-09T07:00")]  # 02:00-02:45 never happen: once, at 03:00


@pytest.mark.parametrize("zone", [NEW_YORK, LONDON])
@pytest.mark.parametrize("transition", [SPRING_FORWARD, FALL_BACK])
@pytest.mark.parametrize("expr", ["30 1 * * *", "30 2 * * *", "*/20 * * * *", "0 1,2 * * *"])
def test_next_tick_from_any_instant_around_a_clock_change_agrees_with_the_tick_list(
    zone: str, transition: dict[str, date], expr: str
) -> None:
    schedule = cron(expr, tz=zone)
    start = datetime.combine(transition[zone], time(0), tzinfo=ZoneInfo(zone)) - timedelta(hours=6)
    ticks = schedule.ticks_between(start, start + timedelta(days=2), 999)
    near = [tick for tick in ticks if tick < start + timedelta(hours=12)]
    probes = [start + timedelta(minutes=11 * n) for n in range(12 * 60 // 11)]
    probes += [tick + delta for tick in near for delta in (timedelta(seconds=-1), timedelta(0))]
    for probe in probes:
        expected = next(tick for tick in ticks if tick > probe)
        assert schedule.next_tick(probe) == expected, probe
        latest = [tick for tick in ticks if tick <= probe]
        assert schedule.latest_tick(start, probe) == (latest[-1] if latest else None), probe


# --- catching up ---------------------------------------------------------------------------------

REGISTERED = utc("2025-05-01T10:00")
EVERY_MINUTE = interval(60, anchor=REGISTERED)


def test_a_new_entry_has_nothing_to_catch_up_and_first_runs_at_its_first_tick() -> None:
    now = utc("2025-05-01T10:00:20")
    for policy in CATCH_UP_POLICIES:
        assert catch_up_ticks(EVERY_MINUTE, None, now, policy) == []
    last_tick = baseline(EVERY_MINUTE, now)
    assert last_tick == now
    assert catch_up_ticks(EVERY_MINUTE, last_tick, utc("2025-05-01T10:00:59")) == []
    assert catch_up_ticks(EVERY_MINUTE, last_tick, utc("2025-05-01T10:01:00")) == [
        utc("2025-05-01T10:01")
    ]


def test_nothing_is_due_before_the_next_tick() -> None:
    last_tick = utc("2025-05-01T10:05")
    for policy in CATCH_UP_POLICIES:
        assert catch_up_ticks(EVERY_MINUTE, last_tick, utc("2025-05-01T10:05:59"), policy) == []


def test_a_tick_exactly_at_now_is_due() -> None:
    assert catch_up_ticks(EVERY_MINUTE, REGISTERED, utc("2025-05-01T10:01")) == [
        utc("2025-05-01T10:01")
    ]


def test_the_latest_policy_runs_only_the_most_recent_missed_tick() -> None:
    now = utc("2025-05-01T13:37:30")
    assert catch_up_ticks(EVERY_MINUTE, REGISTERED, now, "latest") == [utc("2025-05-01T13:37")]
    hourly = cron("0 * * * *")
    assert catch_up_ticks(hourly, REGISTERED, now) == [utc("2025-05-01T13:00")]
    years_later = catch_up_ticks(cron("0 3 * * sun"), utc("2020-01-01T00:00"), now, "latest")
    assert years_later == [utc("2025-04-27T03:00")]


def test_the_all_policy_runs_each_missed_tick_in_order() -> None:
    now = utc("2025-05-01T10:03:30")
    assert catch_up_ticks(EVERY_MINUTE, REGISTERED, now, "all") == [
        utc("2025-05-01T10:01"),
        utc("2025-05-01T10:02"),
        utc("2025-05-01T10:03"),
    ]


@pytest.mark.parametrize("schedule", [EVERY_MINUTE, cron("* * * * *")])
def test_the_all_policy_keeps_only_the_most_recent_ticks_beyond_max_catch_up(
    schedule: Schedule,
) -> None:
    now = utc("2025-05-31T10:00:30")  # a month of minutes missed
    ticks = catch_up_ticks(schedule, REGISTERED, now, "all", max_catch_up=100)
    assert len(ticks) == 100
    assert ticks[-1] == utc("2025-05-31T10:00")
    assert gaps(ticks) == {timedelta(minutes=1)}


def test_the_all_policy_catches_up_a_daily_job_across_fall_back_once_per_day() -> None:
    daily = cron("30 1 * * *", tz=NEW_YORK)
    ticks = catch_up_ticks(daily, utc("2025-10-31T05:30"), utc("2025-11-03T12:00"), "all")
    assert ticks == [utc("2025-11-01T05:30"), utc("2025-11-02T05:30"), utc("2025-11-03T06:30")]


def test_the_none_policy_skips_missed_ticks_and_runs_only_a_tick_due_now() -> None:
    last_tick = REGISTERED
    assert catch_up_ticks(EVERY_MINUTE, last_tick, utc("2025-05-01T10:01:00.5"), "none") == [
        utc("2025-05-01T10:01")
    ]
    assert catch_up_ticks(EVERY_MINUTE, last_tick, utc("2025-05-01T10:01:02"), "none") == []
    late = utc("2025-05-01T10:03:02")
    assert catch_up_ticks(EVERY_MINUTE, last_tick, late, "none") == []
    assert catch_up_ticks(EVERY_MINUTE, last_tick, late, "none", grace=5) == [
        utc("2025-05-01T10:03")
    ]


def test_the_latest_due_tick_is_what_beat_records_whatever_the_policy_ran() -> None:
    late = utc("2025-05-01T10:03:02")
    assert latest_due_tick(EVERY_MINUTE, REGISTERED, late) == utc("2025-05-01T10:03")
    assert latest_due_tick(EVERY_MINUTE, utc("2025-05-01T10:03"), late) is None
    assert latest_due_tick(EVERY_MINUTE, None, late) is None


def test_catch_up_accepts_seconds_timedeltas_and_cron_strings_as_schedules() -> None:
    last_tick, now = utc("2025-05-01T10:00"), utc("2025-05-01T10:02:30")
    assert catch_up_ticks(60, last_tick, now) == [utc("2025-05-01T10:02")]
    assert catch_up_ticks(timedelta(minutes=1), last_tick, now) == [utc("2025-05-01T10:02")]
    assert catch_up_ticks("*/2 * * * *", last_tick, now) == [utc("2025-05-01T10:02")]


def test_an_unknown_catch_up_policy_is_rejected_naming_it() -> None:
    message = "unknown catch-up policy 'sometimes': expected one of 'latest', 'all', 'none'"
    with pytest.raises(ScheduleError) as caught:
        catch_up_ticks(EVERY_MINUTE, None, REGISTERED, "sometimes")
    assert str(caught.value) == message
    with pytest.raises(ScheduleError, match="'sometimes'"):
        validate_catch_up_policy("sometimes")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_catch_up": 0}, "max_catch_up must be an integer >= 1, not 0"),
        ({"grace": -1}, "grace must be a non-negative number of seconds, not -1"),
    ],
)
def test_catch_up_options_are_validated(options: dict[str, float], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        catch_up_ticks(EVERY_MINUTE, REGISTERED, REGISTERED, "all", **options)  # type: ignore[arg-type]


# --- beat_schedule entries -----------------------------------------------------------------------


def test_parse_schedule_accepts_crontabs_cron_strings_seconds_and_timedeltas() -> None:
    def parse(value: object) -> Schedule:
        return parse_schedule(value, tz=LONDON, entry_name="e")

    assert parse(crontab(minute=0, hour=3)) == crontab(minute=0, hour=3, tz=LONDON)
    assert parse("0 3 * * *") == crontab(minute=0, hour=3, tz=LONDON)
    assert parse(30) == interval(30)
    assert parse(2.5) == interval(2.5)
    assert parse(timedelta(minutes=5)) == interval(300)
    assert parse(interval(10)) == interval(10)


def test_the_app_timezone_applies_to_crontabs_that_do_not_name_their_own() -> None:
    own = crontab(minute=0, hour=3, tz=NEW_YORK)
    assert parse_schedule(own, tz=LONDON, entry_name="e").key() == "crontab 0 3 * * * " + NEW_YORK
    assert parse_schedule("0 3 * * *", entry_name="e").key() == "crontab 0 3 * * * UTC"


def test_parse_schedule_anchors_intervals() -> None:
    schedule = parse_schedule(60, tz=LONDON, entry_name="e", anchor=utc("2025-05-01T10:00:05"))
    assert schedule.next_tick(utc("2025-05-01T10:00:30")) == utc("2025-05-01T10:01:05")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            "61 * * * *",
            "invalid cron expression '61 * * * *': minute='61': 61 is out of range 0-59",
        ),
        ("every day", "invalid cron expression 'every day': expected 5 fields"),
        (-5, "an interval must be positive (at least 1 microsecond), not -5"),
        (0, "an interval must be positive"),
        (True, "unsupported schedule True"),
        (None, "unsupported schedule None: expected a crontab, a 5-field cron string, "),
        ([1, 2], "unsupported schedule [1, 2]"),
    ],
)
def test_schedule_errors_name_the_beat_schedule_entry(value: object, reason: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(value, tz="UTC", entry_name="nightly-report")
    assert str(caught.value).startswith(f"beat_schedule entry 'nightly-report': {reason}")


def test_an_unknown_app_timezone_is_reported_against_the_entry() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("0 3 * * *", tz="Mars/Olympus", entry_name="nightly-report")
    assert (
        str(caught.value) == "beat_schedule entry 'nightly-report': unknown timezone 'Mars/Olympus'"
    )


def test_the_key_changes_when_the_schedule_or_its_timezone_changes() -> None:
    keys = {
        crontab(minute=0, hour=3).key(),
        crontab(minute=0, hour=4).key(),
        crontab(minute=0, hour=3, tz=LONDON).key(),
        crontab(minute=0, hour=3, day_of_week="mon").key(),
        interval(30).key(),
        interval(31).key(),
    }
    assert len(keys) == 6
    assert interval(30, anchor=REGISTERED).key() == interval(30).key()  # the anchor is beat's state
    assert crontab(minute=0, hour=9, day_of_week="mon-fri", tz=LONDON).key() == (
        "crontab 0 9 * * 1-5 Europe/London"
    )


def test_schedules_have_readable_reprs() -> None:
    assert repr(crontab(minute=0, hour=9, day_of_week="mon-fri")) == (
        "<crontab: 0 9 * * mon-fri (m/h/dM/MY/d)>"
    )
    assert (
        repr(cron("*/5 * * * *", tz=LONDON)) == "<crontab: */5 * * * * (m/h/dM/MY/d) Europe/London>"
    )
    assert repr(crontab(minute=(m for m in [30, 0]))) == "<crontab: 0,30 * * * * (m/h/dM/MY/d)>"
    assert repr(interval(90, anchor=REGISTERED)) == (
        "<interval: every 90s from 2025-05-01T10:00:00+00:00>"
    )


def test_as_schedule_passes_schedules_through() -> None:
    schedule = interval(5)
    assert as_schedule(schedule) is schedule


# --- an independent oracle for the DST rules -----------------------------------------------------


def transitions(zone: str, year: int) -> list[datetime]:
    """The instants (UTC, whole minutes) at which ``zone`` changes its UTC offset in ``year``."""
    tz = ZoneInfo(zone)
    found = []
    hour = datetime(year, 1, 1, tzinfo=UTC)
    while hour.year == year:
        if local(hour, zone).utcoffset() != local(hour + timedelta(hours=1), zone).utcoffset():
            minute = hour
            while minute.astimezone(tz).utcoffset() == hour.astimezone(tz).utcoffset():
                minute += timedelta(minutes=1)
            found.append(minute)
        hour += timedelta(hours=1)
    return found


def oracle_ticks(schedule: crontab, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Ticks in (start, end] found by reading the zone's clock at every UTC minute.

    Stated directly from the rules: an every-hour job runs whenever the clock shows a matching
    time; any other job runs when the clock first shows a matching time, or, for matching times
    the clock skipped, at the minute it jumped over them.
    """

    def matches(clock: datetime) -> bool:
        return (
            clock.minute in schedule.minute
            and clock.hour in schedule.hour
            and clock.day in schedule.day_of_month
            and clock.month in schedule.month_of_year
            and clock.isoweekday() % 7 in schedule.day_of_week
        )

    every_hour = len(schedule.hour) == 24
    ticks = []
    minute = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute <= end:
        clock = local(minute, zone)
        previous = local(minute - timedelta(minutes=1), zone).replace(tzinfo=None)
        skipped = previous + timedelta(minutes=1)
        skipped_match = False
        while skipped < clock.replace(tzinfo=None):
            skipped_match = skipped_match or matches(skipped)
            skipped += timedelta(minutes=1)
        shows_match = matches(clock) and (every_hour or clock.fold == 0)
        if shows_match or (skipped_match and not every_hour):
            ticks.append(minute)
        minute += timedelta(minutes=1)
    return ticks


ORACLE_ZONES = [
    NEW_YORK,
    LONDON,
    "Europe/Paris",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/Santiago",  # the clock changes at midnight
    "America/St_Johns",  # a -03:30 offset
    "Pacific/Chatham",  # a +12:45 offset
]


@pytest.mark.parametrize("zone", ORACLE_ZONES)
@pytest.mark.parametrize(
    "expr",
    ["30 2 * * *", "0 0 * * *", "45 1,2,3 * * *", "*/30 2 * * *", "15 * * * *", "*/20 * * * *"],
)
def test_cron_ticks_around_every_clock_change_match_an_independent_oracle(
    zone: str, expr: str
) -> None:
    schedule = cron(expr, tz=zone)
    changes = transitions(zone, 2025)
    assert len(changes) == 2
    for change in changes:
        start, end = change - timedelta(hours=8), change + timedelta(hours=8)
        assert schedule.ticks_between(start, end, 999) == oracle_ticks(schedule, zone, start, end)
