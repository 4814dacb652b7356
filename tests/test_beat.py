"""Beat in this process with an injected clock: ticks, catch-up, DST, restarts, sync, control."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgtasks import PgTasks
from pgtasks.beat import Beat, run_now, set_paused, tick_task_id
from pgtasks.errors import ScheduleError
from pgtasks.schedules import interval
from tests.apps.beat_app import make_app
from tests.support import rows, scalar, wait_until

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Start = Callable[..., Beat]


@pytest.fixture
def start(dsn: str) -> Iterator[Start]:
    """``start(beat_schedule, clock, **settings)``: a set-up Beat on a fresh app of its own (a
    separate scheduler: its own pool and connection)."""
    made: list[tuple[PgTasks, Beat]] = []

    def factory(beat_schedule: dict[str, Any], clock: FakeClock, **settings: Any) -> Beat:
        app = make_app(dsn, beat_schedule, **settings)
        beat = Beat(app, clock=clock)
        made.append((app, beat))
        beat.setup()
        return beat

    yield factory
    for app, beat in made:
        beat.close()
        app.close()


def at(*seconds: float) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


def scheduled(dsn: str, name: str) -> list[datetime]:
    """The scheduled times of the queued jobs of entry ``name``, oldest first."""
    found = rows(dsn, "SELECT headers->'headers'->>'scheduled_time' FROM pgtasks.jobs "
                      "WHERE headers->'headers'->>'schedule' = %s", (name,))
    return sorted(datetime.fromisoformat(r[0]) for r in found)


def every(seconds: float | interval, task: str = "beat.plain",
          **extra: Any) -> dict[str, Any]:
    return {"task": task, "schedule": seconds, **extra}


def test_a_due_tick_is_enqueued_once_and_beat_sleeps_until_the_next(dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"ping": every(10)}, clock)

    assert beat.tick() == 10.0
    clock.advance(10)
    assert beat.tick() == 10.0
    assert beat.tick() == 10.0
    clock.advance(4)
    assert beat.tick() == 6.0

    assert scheduled(dsn, "ping") == at(10)
    assert scalar(dsn, "SELECT task_id FROM pgtasks.jobs") == tick_task_id("ping", T0 + timedelta(
        seconds=10))
    assert scalar(dsn, "SELECT last_tick FROM pgtasks.schedules WHERE name = 'ping'") == at(10)[0]


def test_an_interval_ticks_on_the_grid_of_its_first_registration_or_its_own_anchor(
        dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"ping": every(10),
                  "pong": every(interval(10, anchor=T0 + timedelta(seconds=3)))}, clock)
    clock.advance(25)

    beat.tick()

    assert scheduled(dsn, "ping") == at(20)
    assert scheduled(dsn, "pong") == at(23)


def test_beat_sleeps_no_longer_than_its_max_loop_interval(start: Start):
    clock = FakeClock(T0)
    beat = start({"daily": every(86400)}, clock, beat_max_loop_interval=2.5)

    assert beat.tick() == 2.5


def test_schedulers_racing_for_the_same_ticks_enqueue_each_tick_once(dsn: str, start: Start):
    clock = FakeClock(T0)
    beats = [start({"pulse": every(1)}, clock) for _ in range(4)]
    rounds = 25
    # Every scheduler looks at every instant together; the clock moves between rounds.
    barrier = threading.Barrier(len(beats), action=lambda: clock.advance(1))
    errors: list[BaseException] = []

    def race(beat: Beat) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(10)
                beat.tick()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(b,)) for b in beats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert scheduled(dsn, "pulse") == at(*range(1, rounds + 1))
    assert sum(b.enqueued for b in beats) == rounds


@pytest.mark.parametrize(("policy", "expected"), [
    ("all", at(10, 20, 30, 40, 50, 60)),
    ("latest", at(10, 50, 60)),
    ("none", at(10, 60)),
])
def test_ticks_missed_while_every_scheduler_was_down_follow_the_catch_up_policy(
        dsn: str, start: Start, policy: str, expected: list[datetime]):
    entries = {"sweep": every(10, catch_up=policy)}
    clock = FakeClock(T0)
    first = start(entries, clock)
    clock.advance(10)
    first.tick()
    first.close()

    # Down from T0+10 to T0+55: the ticks at 20, 30, 40 and 50 were missed.
    clock.advance(45)
    second = start(entries, clock)
    second.tick()
    second.tick()
    clock.advance(5)
    second.tick()

    assert scheduled(dsn, "sweep") == expected


def test_catch_up_all_enqueues_at_most_max_catch_up_of_the_most_recent_ticks(
        dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"sweep": every(10, catch_up="all", max_catch_up=3)}, clock)
    clock.advance(95)

    beat.tick()

    assert scheduled(dsn, "sweep") == at(70, 80, 90)
    assert scalar(dsn, "SELECT last_tick FROM pgtasks.schedules") == at(90)[0]


NEW_YORK = "America/New_York"


@pytest.mark.parametrize(("cron", "begin", "expected"), [
    # Spring forward on 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 never happens that
    # day and the job runs once, at 03:00 EDT.
    ("30 2 * * *", datetime(2026, 3, 6, 12, tzinfo=UTC), [
        datetime(2026, 3, 7, 7, 30, tzinfo=UTC),  # 02:30 EST
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # 03:00 EDT, the end of the gap
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),  # 02:30 EDT
        datetime(2026, 3, 10, 6, 30, tzinfo=UTC),
    ]),
    # Fall back on 2026-11-01: 02:00 EDT goes back to 01:00 EST, so 01:30 happens twice that
    # day and the job runs once, at the first.
    ("30 1 * * *", datetime(2026, 10, 30, 12, tzinfo=UTC), [
        datetime(2026, 10, 31, 5, 30, tzinfo=UTC),  # 01:30 EDT
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, not again at 01:30 EST
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),  # 01:30 EST
        datetime(2026, 11, 3, 6, 30, tzinfo=UTC),
    ]),
])
@pytest.mark.parametrize("stepping", ["sleeping until each tick", "waking every 10 minutes"])
def test_a_daily_job_neither_skips_nor_doubles_across_a_dst_change(
        dsn: str, start: Start, cron: str, begin: datetime, expected: list[datetime],
        stepping: str):
    clock = FakeClock(begin)
    # catch_up="all" so that a doubled tick could not hide behind "latest".
    beat = start({"daily": {"task": "beat.report", "schedule": cron, "catch_up": "all"}}, clock,
                 timezone=NEW_YORK, beat_max_loop_interval=3 * 86400)
    end = begin + timedelta(days=4)

    while clock.now < end:
        delay = beat.tick()
        clock.advance(delay if stepping == "sleeping until each tick" else 600)

    assert scheduled(dsn, "daily") == expected


def test_a_running_beat_rides_out_a_lost_connection_without_losing_a_tick(dsn: str):
    app = make_app(dsn, {"pulse": every(1, catch_up="all")}, worker_reconnect_max_delay=0.2)
    beat = Beat(app)
    thread = beat.run_in_background()
    try:
        wait_until(lambda: len(scheduled(dsn, "pulse")) >= 2, timeout=10, message="2 ticks")
        rows(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        wait_until(lambda: len(scheduled(dsn, "pulse")) >= 4, timeout=10, message="4 ticks")
    finally:
        beat.stop()
        thread.join(10)
        app.close()

    anchor, last_tick = rows(dsn, "SELECT anchor, last_tick FROM pgtasks.schedules")[0]
    second = timedelta(seconds=1)
    assert scheduled(dsn, "pulse") == [anchor + k * second
                                       for k in range(1, (last_tick - anchor) // second + 1)]


def test_a_restarted_scheduler_keeps_the_last_run(dsn: str, start: Start):
    entries = {"ping": every(10)}
    clock = FakeClock(T0)
    first = start(entries, clock)
    for _ in range(2):
        clock.advance(10)
        first.tick()
    first.close()

    clock.advance(5)
    second = start(entries, clock)

    assert scalar(dsn, "SELECT last_tick FROM pgtasks.schedules") == at(20)[0]
    assert second.tick() == 5.0
    clock.advance(5)
    second.tick()
    assert scheduled(dsn, "ping") == at(10, 20, 30)
    assert scalar(dsn, "SELECT total_runs FROM pgtasks.schedules") == 3


def test_an_entry_removed_from_the_code_is_disabled_with_its_history_and_restarts_fresh(
        dsn: str, start: Start):
    clock = FakeClock(T0)
    both = {"ping": every(10), "sweep": every(10, catch_up="all")}
    first = start(both, clock)
    clock.advance(10)
    first.tick()

    clock.advance(1)
    second = start({"ping": every(10)}, clock)
    clock.advance(29)
    second.tick()
    assert rows(dsn, "SELECT name, enabled, total_runs FROM pgtasks.schedules ORDER BY name") == [
        ("ping", True, 2), ("sweep", False, 1)]

    # Back in the code: the ticks it was gone for are not caught up, even with catch_up="all".
    third = start(both, clock)
    clock.advance(10)
    third.tick()
    assert scheduled(dsn, "sweep") == at(10, 50)


def test_a_changed_schedule_starts_over_from_now(dsn: str, start: Start):
    clock = FakeClock(T0)
    first = start({"ping": every(10, catch_up="all")}, clock)
    clock.advance(10)
    first.tick()
    clock.advance(25)

    second = start({"ping": every(60, catch_up="all")}, clock)
    second.tick()
    clock.advance(60)
    second.tick()

    assert scheduled(dsn, "ping") == at(10, 95)


def test_a_scheduler_leaves_alone_an_entry_another_redefined(dsn: str, start: Start):
    clock = FakeClock(T0)
    old = start({"ping": every(10)}, clock)
    start({"ping": every(7)}, clock)
    clock.advance(10)

    old.tick()

    assert scheduled(dsn, "ping") == []


def test_a_paused_entry_enqueues_nothing_and_resumes_from_now(dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"ping": every(10, catch_up="all")}, clock)
    set_paused(beat.app, "ping", True, clock)
    clock.advance(35)
    beat.tick()
    assert scheduled(dsn, "ping") == []

    set_paused(beat.app, "ping", False, clock)
    beat.tick()
    clock.advance(5)
    beat.tick()

    assert scheduled(dsn, "ping") == at(40)


def test_pausing_an_unknown_entry_names_it(start: Start):
    beat = start({"ping": every(10)}, FakeClock(T0))

    with pytest.raises(ScheduleError, match=r"no schedule named 'pnig'; known: ping"):
        set_paused(beat.app, "pnig", True)


def test_run_now_enqueues_an_extra_run_and_leaves_the_ticks_alone(dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"ping": every(10)}, clock)
    clock.advance(3)

    task_id = run_now(beat.app, "ping", clock)
    clock.advance(7)
    beat.tick()

    assert scheduled(dsn, "ping") == at(3, 10)
    assert rows(dsn, "SELECT last_tick, total_runs, last_task_id FROM pgtasks.schedules") == [
        (at(10)[0], 2, tick_task_id("ping", at(10)[0]))]
    assert task_id != tick_task_id("ping", at(3)[0])


def test_the_task_gets_its_scheduled_time_when_it_asks_for_it(dsn: str, start: Start):
    clock = FakeClock(T0)
    beat = start({"late-report": {"task": "beat.report", "schedule": 10, "args": ("a",)},
                  "plain": every(10)}, clock)
    clock.advance(12)

    beat.tick()

    app = beat.app
    calls = {name: app.serializer.loads(payload, content_type) for name, payload, content_type in
             rows(dsn, "SELECT task_name, payload, content_type FROM pgtasks.jobs")}
    assert calls["beat.report"] == [["a"], {"scheduled_time": at(10)[0]}]
    assert calls["beat.plain"] == [[], {}]


def test_periodic_declares_a_task_and_its_schedule(dsn: str, start: Start):
    clock = FakeClock(T0)
    app = make_app(dsn)

    @app.periodic(every=timedelta(seconds=10), catch_up="all", name="beat.cleanup")
    def cleanup(scheduled_time: datetime) -> str:
        return scheduled_time.isoformat()

    beat = Beat(app, clock=clock)
    try:
        beat.setup()
        clock.advance(20)
        beat.tick()
        assert cleanup(T0) == T0.isoformat()
        assert scheduled(dsn, "beat.cleanup") == at(10, 20)
    finally:
        beat.close()
        app.close()


@pytest.mark.parametrize(("entry", "problem"), [
    ({"task": "beat.report", "schedule": "61 * * * *"}, r"minute='61'.*out of range"),
    ({"task": "beat.report", "schedule": "*/5 * * *"}, r"expected 5 fields"),
    ({"task": "beat.report", "schedule": "* * * * * *"}, r"expected 5 fields"),
    ({"task": "beat.reprot", "schedule": 60}, r"unknown task 'beat.reprot' \(did you mean "
                                              r"'beat.report'\?\)"),
    ({"task": "beat.report", "schedule": 0}, r"positive"),
    ({"task": "beat.report", "schedule": -5.0}, r"positive"),
    ({"task": "beat.report", "schedule": timedelta(0)}, r"positive"),
    ({"task": "beat.report", "schedule": 60, "catch_up": "some"}, r"catch-up policy 'some'"),
    ({"task": "beat.report", "schedule": 60, "max_catch_up": 0}, r"max_catch_up"),
    ({"task": "beat.report", "schedule": 60, "optoins": {}}, r"unknown key\(s\) 'optoins'"),
    ({"task": "beat.report", "schedule": 60, "options": {"priority": 12}}, r"priority"),
    ({"task": "beat.report", "schedule": 60, "options": {"task_id": "x"}}, r"task_id"),
    ({"task": "beat.report"}, r"'schedule' is missing"),
])
def test_a_bad_entry_stops_beat_at_start_up_naming_it(entry: dict[str, Any], problem: str):
    # Nothing listens there: the entries must be refused before beat touches the database.
    app = make_app(UNREACHABLE, {"nightly-report": entry})
    beat = Beat(app, clock=FakeClock(T0))

    with pytest.raises(ScheduleError, match=r"entry 'nightly-report': .*" + problem):
        beat.setup()


def test_a_malformed_cron_field_in_periodic_names_the_entry():
    app = make_app(UNREACHABLE)

    with pytest.raises(ScheduleError, match=r"entry 'beat.hourly': .*hour='25'"):
        @app.periodic(cron="0 25 * * *", name="beat.hourly")
        def hourly() -> None:
            return None

    with pytest.raises(ScheduleError, match=r"exactly one of cron= or every="):
        app.periodic(cron="* * * * *", every=5)
