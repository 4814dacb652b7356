"""Hand-offs that must not be lost: a wake-up racing a suspension, a claim whose reply is lost."""

from __future__ import annotations

import datetime as dt

import psycopg

from pgtasks import PgTasks
from pgtasks.db.store import Finished, NewJob
from tests.apps import core_app
from tests.support import rows, scalar, wait_until


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


def test_a_claim_whose_reply_was_lost_gives_its_jobs_back_and_keeps_the_rest(app: PgTasks):
    worker = app.Worker(concurrency=2, shutdown_grace=5)
    thread = worker.run_in_background()
    try:
        held = core_app.sleepy.delay("held", 1.5)
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM marks") == 1)
        lost = core_app.add.apply_async((1, 1), queue="elsewhere")
        with app.store.connect() as conn:
            # A claim that committed but whose reply never reached the worker.
            assert len(app.store.claim(conn, worker.worker_id, ["elsewhere"], 1)) == 1
            worker._release_unheld(conn)
        states = dict(rows(app.dsn, "SELECT task_id, state FROM pgtasks.jobs"))
        assert states == {held.id: "running", lost.id: "queued"}
        assert held.get(timeout=10) == "held"
    finally:
        worker.stop()
        thread.join(10)

