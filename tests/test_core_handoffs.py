"""A job waiting for another is woken when it finishes, whichever of the two happens first."""

from __future__ import annotations

import datetime as dt

import psycopg

from pgtasks import PgTasks
from pgtasks.db.store import Finished, NewJob
from tests.support import scalar


def _setup(app: PgTasks) -> tuple[psycopg.Connection, int, dict[str, int]]:
    conn = app.store.connect()
    worker_id = app.store.register_worker(conn, name="w", hostname="h", pid=1,
                                          queues=["default"], concurrency=2, lease_seconds=30)
    serializer = app.serializer
    for task_id, headers in (("parent", None), ("child", {"wake": "parent"})):
        app.store.enqueue(NewJob(task_id=task_id, task_name="t", queue="default",
                                 content_type=serializer.content_type,
                                 payload=serializer.dumps([[], {}]), headers=headers))
    claimed = {job.task_id: job.id for job in app.store.claim(conn, worker_id, ["default"], 2)}
    return conn, worker_id, claimed


def _delay_of(app: PgTasks) -> float:
    return float(scalar(app.dsn, "SELECT extract(epoch FROM run_at - now()) FROM pgtasks.jobs "
                        "WHERE task_id = 'parent'"))


def test_a_completion_before_the_waiter_suspends_is_not_lost(app: PgTasks):
    conn, worker_id, ids = _setup(app)
    with conn:
        app.store.complete(conn, worker_id, "w", [Finished(ids["child"], "SUCCESS")])
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert app.store.defer(conn, worker_id, ids["parent"], later)
    assert _delay_of(app) < 5


def test_a_completion_after_the_waiter_suspends_wakes_it(app: PgTasks):
    conn, worker_id, ids = _setup(app)
    with conn:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert app.store.defer(conn, worker_id, ids["parent"], later)
        assert _delay_of(app) > 3000
        app.store.complete(conn, worker_id, "w", [Finished(ids["child"], "SUCCESS")])
    assert _delay_of(app) < 5


def test_a_suspension_with_nothing_pending_keeps_its_time(app: PgTasks):
    conn, worker_id, ids = _setup(app)
    with conn:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert app.store.defer(conn, worker_id, ids["parent"], later)
    assert _delay_of(app) > 3000
