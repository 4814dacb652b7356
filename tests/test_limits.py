"""Global concurrency limits: per queue, per worker, per partition, and crash recovery."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from pgtasks import PgTasks
from tests.apps.limits_app import for_customer, hold, span
from tests.support import WorkerProcess, rows, scalar, wait_until

APP = "tests.apps.limits_app"


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant don't
    overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def start_workers(dsn: str, workers: list[WorkerProcess], count: int, *args: str) -> None:
    before = scalar(dsn, "SELECT count(*) FROM pgtasks.workers")
    workers.extend(WorkerProcess(dsn, APP, *args) for _ in range(count))
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgtasks.workers") == before + count,
               message=f"{count} workers to register")


def spans_done(dsn: str, n: int) -> bool:
    return scalar(dsn, "SELECT count(*) FROM spans") >= n


def test_three_workers_with_four_slots_never_run_more_than_two_jobs_of_a_queue_of_concurrency_2(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given a queue of concurrency 2 and a backlog of 300 short jobs
    limits.enqueue_many([(span, (f"job{i}",), {}, {"queue": "pair"}) for i in range(300)])
    # When three workers with four slots each drain it
    start_workers(dsn, workers, 3, "-Q", "pair", "-c", "4")
    wait_until(lambda: spans_done(dsn, 300), timeout=60, message="300 jobs to finish")
    # Then no instant ever saw more than two of its jobs running, and two did run together
    intervals = rows(dsn, "SELECT started_at, ended_at FROM spans")
    assert max_overlap(intervals) == 2
    assert scalar(dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_worker_concurrency_caps_each_worker_while_the_workers_run_in_parallel(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given two workers with four slots on a queue allowing one job per worker
    start_workers(dsn, workers, 2, "-Q", "one-per-worker", "-c", "4")
    # When twenty jobs arrive
    limits.enqueue_many([(span, (f"job{i}",), {"seconds": 0.05}, {"queue": "one-per-worker"})
                         for i in range(20)])
    wait_until(lambda: spans_done(dsn, 20), timeout=30, message="20 jobs to finish")
    # Then each worker ran one at a time, and both ran at once
    by_pid: dict[int, list[tuple[datetime, datetime]]] = {}
    for pid, start, end in rows(dsn, "SELECT pid, started_at, ended_at FROM spans"):
        by_pid.setdefault(pid, []).append((start, end))
    assert all(max_overlap(spans) == 1 for spans in by_pid.values())
    assert max_overlap([s for spans in by_pid.values() for s in spans]) == 2


def test_slots_of_a_worker_killed_with_sigkill_come_back_and_its_jobs_run_again(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given a worker holding both slots of a queue of concurrency 2
    hold.apply_async(("a",), queue="pair")
    hold.apply_async(("b",), queue="pair")
    start_workers(dsn, workers, 1, "-Q", "pair", "-c", "4")
    doomed = workers[0]
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgtasks.jobs WHERE state = 'running'")
               == 2, message="both slots to be taken")
    start_workers(dsn, workers, 1, "-Q", "pair", "-c", "4")
    quick = span.apply_async(("quick",), queue="pair")
    # A negative check needs a wait: a second long enough for several of the survivor's polls.
    time.sleep(1.0)
    assert scalar(dsn, "SELECT state FROM pgtasks.jobs WHERE task_id = %s", (quick.id,)) \
        == "queued"
    # When the holder is killed without a chance to give anything back (and its two jobs, to
    # be run again once its lease expires, are told to finish at once next time)
    doomed.kill()
    scalar(dsn, "INSERT INTO released VALUES ('a'), ('b') RETURNING 1")
    # Then its slots come back, the waiting job runs, and so do the dead worker's jobs
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM spans WHERE label = 'quick'"),
               timeout=20, message="the waiting job to run")
    wait_until(lambda: spans_done(dsn, 3), timeout=20, message="the requeued jobs to finish")
    assert scalar(dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_partitions_run_in_parallel_while_each_stays_within_its_own_limit(
        limits: PgTasks, dsn: str, workers: list[WorkerProcess]) -> None:
    # Given a queue limited to one running job per customer, and six jobs for each of three
    calls = [(for_customer, (f"{c}{i}", c), {}, {"queue": "per-customer"})
             for i in range(6) for c in "abc"]
    limits.enqueue_many(calls)
    # When two workers with four slots each drain it
    start_workers(dsn, workers, 2, "-Q", "per-customer", "-c", "4")
    wait_until(lambda: spans_done(dsn, 18), timeout=30, message="18 jobs to finish")
    # Then no customer ever had two jobs running, and customers ran side by side
    by_customer: dict[str, list[tuple[datetime, datetime]]] = {}
    for customer, start, end in rows(dsn, "SELECT customer, started_at, ended_at FROM spans"):
        by_customer.setdefault(customer, []).append((start, end))
    assert sorted(by_customer) == ["a", "b", "c"]
    assert all(max_overlap(spans) == 1 for spans in by_customer.values())
    assert max_overlap([s for spans in by_customer.values() for s in spans]) >= 2


def test_a_partition_key_comes_from_the_partition_option_or_the_partition_by_argument(
        limits: PgTasks, dsn: str) -> None:
    from_kwarg = for_customer.apply_async(("x", "cust-7"), queue="per-customer")
    explicit = for_customer.apply_async(("y", "cust-7"), queue="per-customer",
                                        partition="vip")
    keys = dict(rows(dsn, "SELECT task_id, partition_key FROM pgtasks.jobs"))
    assert keys == {from_kwarg.id: "cust-7", explicit.id: "vip"}
