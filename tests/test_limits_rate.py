"""Global rate limits: per queue and per task, over every worker at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from pgtasks import PgTasks
from tests.apps.limits_app import paced_task, span
from tests.support import WorkerProcess, rows, scalar, wait_until
from tests.test_limits import spans_done, start_workers


def busiest_second(times: list[datetime]) -> int:
    """The most times inside any one-second window [t, t + 1s)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + timedelta(seconds=1))
               for i, t in enumerate(times))


def per_second(times: list[datetime]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]).total_seconds()


def test_a_queue_rate_of_20_per_second_holds_across_three_workers_and_is_nearly_reached(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given three workers with four slots each on a queue limited to 20 jobs a second
    start_workers(dsn, workers, 3, "-Q", "paced", "-c", "4")
    # When 60 jobs arrive at once
    limits.enqueue_many([(span, (f"job{i}",), {"seconds": 0}, {"queue": "paced"})
                         for i in range(60)])
    wait_until(lambda: spans_done(dsn, 60), timeout=30, message="60 jobs to finish")
    # Then no one-second window saw more than 20 of them admitted, and the rate was >= 18/s
    admitted = [r[0] for r in rows(dsn, "SELECT admitted_at FROM spans")]
    assert busiest_second(admitted) <= 20
    assert per_second(admitted) >= 18
    assert len({r[0] for r in rows(dsn, "SELECT pid FROM spans")}) >= 2


def test_a_task_rate_limit_holds_across_workers_whatever_its_queue(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given two workers on the queue of a task limited to 10 calls a second
    start_workers(dsn, workers, 2, "-Q", "task-paced", "-c", "4")
    # When 30 calls arrive at once
    limits.enqueue_many([(paced_task, (f"job{i}",), {}, {}) for i in range(30)])
    wait_until(lambda: spans_done(dsn, 30), timeout=30, message="30 jobs to finish")
    # Then no one-second window admitted more than 10, and the rate was >= 9/s
    admitted = [r[0] for r in rows(dsn, "SELECT admitted_at FROM spans")]
    assert busiest_second(admitted) <= 10
    assert per_second(admitted) >= 9
    # Jobs put back for a later token were not counted as deliveries or retries
    assert scalar(dsn, "SELECT count(*) FROM pgtasks.results WHERE retries > 0") == 0
