"""Real worker processes: throughput, crashes, shutdown, retries, time limits, restarts."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from pgtasks import PgTasks, states
from pgtasks.db import embedded
from tests.apps import core_app
from tests.support import WorkerProcess, rows, scalar, wait_until

APP = "tests.apps.core_app"


def count(dsn: str, label_like: str = "%") -> int:
    return int(scalar(dsn, "SELECT count(*) FROM marks WHERE label LIKE %s", (label_like,)))


def test_a_thousand_tasks_across_two_workers_all_complete_once(app: PgTasks):
    core_app.record.delay_many([(f"job{i}",) for i in range(1000)])
    workers = [WorkerProcess(app.dsn, APP, "-c", "8") for _ in range(2)]
    try:
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.results") == 1000,
                   timeout=60, message="1000 results")
    finally:
        for w in workers:
            w.stop()
    assert count(app.dsn) == 1000
    assert scalar(app.dsn, "SELECT count(DISTINCT label) FROM marks") == 1000
    assert scalar(app.dsn, "SELECT count(DISTINCT pid) FROM marks") == 2
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.results WHERE state = 'SUCCESS'") == 1000
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_a_worker_killed_mid_task_leaves_its_task_to_another_worker(app: PgTasks):
    result = core_app.sleepy.delay("victim", 1.5)
    first = WorkerProcess(app.dsn, APP, "-c", "2")
    try:
        wait_until(lambda: count(app.dsn, "victim:start") == 1, message="the task to start")
        first.kill()
        assert count(app.dsn, "victim:end") == 0
        second = WorkerProcess(app.dsn, APP, "-c", "2")
        try:
            assert result.get(timeout=30) == "victim"
        finally:
            second.stop()
    finally:
        first.stop()
    assert count(app.dsn, "victim:start") == 2
    assert count(app.dsn, "victim:end") == 1
    pids = rows(app.dsn, "SELECT DISTINCT pid FROM marks WHERE label = 'victim:end'")
    assert pids[0][0] != first.pid


def test_sigterm_lets_running_tasks_finish_and_claims_nothing_new(app: PgTasks):
    running = core_app.sleepy.delay("graceful", 1.0)
    worker = WorkerProcess(app.dsn, APP, "-c", "1")
    try:
        wait_until(lambda: count(app.dsn, "graceful:start") == 1, message="the task to start")
        waiting = core_app.record.delay("after-term")
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.stop()
    assert running.state == states.SUCCESS
    assert count(app.dsn, "graceful:end") == 1
    assert count(app.dsn, "after-term") == 0
    assert waiting.state == states.PENDING
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.workers") == 0


def test_a_second_signal_releases_running_tasks_at_once(app: PgTasks):
    task = core_app.sleepy.delay("impatient", 20)
    worker = WorkerProcess(app.dsn, APP, "-c", "1")
    try:
        wait_until(lambda: count(app.dsn, "impatient:start") == 1, message="the task to start")
        worker.signal(signal.SIGTERM)
        time.sleep(0.3)
        worker.signal(signal.SIGTERM)
        assert worker.wait(10) == 0, worker.output()
    finally:
        worker.stop()
    state, owner = rows(app.dsn, "SELECT state, worker_id FROM pgtasks.jobs WHERE task_id = %s",
                        (task.id,))[0]
    assert (state, owner) == ("queued", None)


def test_retries_follow_the_backoff(app: PgTasks):
    result = core_app.flaky.delay("retrying", 3)
    worker = WorkerProcess(app.dsn, APP, "-c", "2")
    try:
        assert result.get(timeout=30) == "ok"
    finally:
        worker.stop()
    times = [r[0] for r in rows(app.dsn, "SELECT at FROM marks ORDER BY id")]
    attempts = [r[0] for r in rows(app.dsn, "SELECT attempt FROM marks ORDER BY id")]
    assert attempts == [0, 1, 2, 3]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # retry_backoff=0.2 without jitter: 0.2, 0.4, 0.8 s (plus claim latency)
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert expected <= gap < expected + 0.6, gaps


def test_a_task_that_keeps_failing_stops_after_max_retries_with_its_error(app: PgTasks):
    result = core_app.explicit_retry.delay("hopeless")
    worker = WorkerProcess(app.dsn, APP, "-c", "2")
    try:
        with pytest.raises(ValueError, match="not yet"):
            result.get(timeout=30)
    finally:
        worker.stop()
    assert count(app.dsn, "hopeless") == 3  # the first run and max_retries=2 retries
    assert scalar(app.dsn, "SELECT retries FROM pgtasks.results") == 2


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_time_limits_fire(app: PgTasks, pool: str):
    soft = core_app.soft_limited.delay("s")
    hard = core_app.hard_limited.delay("h")
    worker = WorkerProcess(app.dsn, APP, "-c", "2", "--pool", pool)
    try:
        assert soft.get(timeout=20) == "cleaned up"
        with pytest.raises(Exception, match="hard time limit"):
            hard.get(timeout=20)
    finally:
        worker.stop()
    assert count(app.dsn, "s:soft") == 1
    assert count(app.dsn, "h:end") == 0
    assert hard.state == states.FAILURE


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_a_task_stuck_past_its_hard_limit_gives_its_slot_back(app: PgTasks, pool: str):
    stuck = core_app.blocked_forever.delay("stuck")
    worker = WorkerProcess(app.dsn, APP, "-c", "1", "--pool", pool)
    try:
        wait_until(lambda: count(app.dsn, "stuck:start") == 1, message="the stuck task")
        after = core_app.add.delay(20, 22)
        assert after.get(timeout=15) == 42
        wait_until(lambda: stuck.state == states.FAILURE, timeout=10, message="the stuck task "
                   "to be failed")
    finally:
        worker.stop()


def test_a_postgres_restart_mid_run_loses_nothing(embedded_root):
    root = embedded_root
    server = embedded.ensure_server(root)
    dsn = server
    worker = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(core_app.MARKS_DDL)
        app = PgTasks("restart", dsn=dsn)
        app.conf.dsn = dsn
        core_app.app.conf.dsn = dsn
        core_app.durable_record.delay_many([(f"before{i}",) for i in range(300)])
        worker = WorkerProcess(dsn, APP, "-c", "4")
        wait_until(lambda: count(dsn) >= 50, timeout=30, message="some progress")
        embedded.stop_server(root)
        time.sleep(1.0)
        embedded.ensure_server(root)
        core_app.app.close()
        core_app.durable_record.delay_many([(f"after{i}",) for i in range(100)])
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgtasks.results") == 400,
                   timeout=60, message="all 400 results")
        assert scalar(dsn, "SELECT count(*) FROM pgtasks.results WHERE state = 'SUCCESS'") == 400
        assert scalar(dsn, "SELECT count(DISTINCT label) FROM marks") == 400
        assert scalar(dsn, "SELECT count(*) FROM pgtasks.jobs") == 0
        app.close()
    finally:
        if worker is not None:
            worker.stop()
        core_app.app.close()
        embedded.stop_server(root)


def test_a_rolled_back_transactional_enqueue_leaves_no_job(app: PgTasks):
    with psycopg.connect(app.dsn) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO marks (label, pid) VALUES ('kept', 0)")
            core_app.record.apply_async(("committed",), connection=conn)
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO marks (label, pid) VALUES ('dropped', 0)")
            core_app.record.apply_async(("rolled-back",), connection=conn)
            raise RuntimeError("the caller's transaction fails")
    labels = [r[0] for r in rows(app.dsn, "SELECT payload FROM pgtasks.jobs")]
    assert len(labels) == 1
    assert b"committed" in bytes(labels[0])
    assert count(app.dsn, "dropped") == 0
