"""Beat in real processes: several schedulers at once, a restart after downtime, and a worker
running beat inside."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import psycopg

from pgtasks.beat import tick_task_id
from tests.apps.beat_app import MARKS_DDL
from tests.support import WorkerProcess, rows, scalar, wait_until

APP = "tests.apps.beat_app"
SECOND = timedelta(seconds=1)


def jobs(dsn: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM pgtasks.jobs"))


def scheduled(dsn: str) -> list[datetime]:
    """The scheduled times of the queued jobs, oldest first."""
    return [datetime.fromisoformat(r[0]) for r in rows(
        dsn, "SELECT headers->'headers'->>'scheduled_time' FROM pgtasks.jobs ORDER BY 1")]


def test_three_schedulers_enqueue_exactly_one_job_per_tick_with_none_missing(dsn: str):
    beats = [WorkerProcess(dsn, APP, command="beat") for _ in range(3)]
    try:
        wait_until(lambda: jobs(dsn) >= 5, timeout=20, message="5 ticks enqueued")
        assert all(b.proc.poll() is None for b in beats), [b.output() for b in beats]
        # No leader to lose: the other two carry on without missing a tick.
        beats[0].kill()
        wait_until(lambda: jobs(dsn) >= 12, timeout=20, message="12 ticks enqueued")
        assert all(b.proc.poll() is None for b in beats[1:]), [b.output() for b in beats[1:]]
    finally:
        for b in beats:
            b.stop()

    anchor, last_tick, total_runs = rows(
        dsn, "SELECT anchor, last_tick, total_runs FROM pgtasks.schedules "
             "WHERE name = 'every-second'")[0]
    settled = (last_tick - anchor) // SECOND
    assert scheduled(dsn) == [anchor + k * SECOND for k in range(1, settled + 1)]
    assert total_runs == settled >= 12


def test_a_scheduler_killed_and_restarted_enqueues_each_missed_tick_once(dsn: str):
    # The entry's catch_up is "all": every tick missed while no scheduler ran is owed once.
    first = WorkerProcess(dsn, APP, command="beat")
    try:
        wait_until(lambda: jobs(dsn) >= 2, timeout=20, message="2 ticks enqueued")
    finally:
        first.stop()
    down_from = scalar(dsn, "SELECT last_tick FROM pgtasks.schedules")
    wait_until(lambda: datetime.now(UTC) > down_from + 3.5 * SECOND, timeout=10,
               message="3 ticks missed")

    second = WorkerProcess(dsn, APP, command="beat")
    try:
        wait_until(lambda: scalar(dsn, "SELECT last_tick FROM pgtasks.schedules")
                   >= down_from + 6 * SECOND, timeout=20, message="the missed ticks and more")
    finally:
        second.stop()

    anchor, last_tick = rows(dsn, "SELECT anchor, last_tick FROM pgtasks.schedules")[0]
    assert scheduled(dsn) == [anchor + k * SECOND
                              for k in range(1, (last_tick - anchor) // SECOND + 1)]


def test_a_worker_started_with_beat_runs_each_tick_with_its_scheduled_time(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(MARKS_DDL)
    worker = WorkerProcess(dsn, APP, "--beat", "-c", "2")
    try:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM beat_marks") >= 3, timeout=20,
                   message="3 scheduled runs")
        # The beat thread must not hold up a clean shutdown.
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.output()
    finally:
        worker.stop()

    anchor = scalar(dsn, "SELECT anchor FROM pgtasks.schedules WHERE name = 'every-second'")
    marks = rows(dsn, "SELECT task_id, scheduled_time, header FROM beat_marks")
    for task_id, scheduled_time, header in marks:
        assert (scheduled_time - anchor) % SECOND == timedelta(0)
        assert datetime.fromisoformat(header) == scheduled_time
        assert task_id == tick_task_id("every-second", scheduled_time)
