"""The core API: queueing calls, waiting for results, states, and result management."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import psycopg
import pytest

from pgtasks import PgTasks, states
from pgtasks.errors import TimeoutError
from pgtasks.worker.loop import Worker
from tests.apps import core_app
from tests.support import rows, scalar, wait_until


def test_a_delayed_call_runs_on_a_worker_and_returns_its_result(app: PgTasks, worker: Worker):
    result = core_app.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.state == states.SUCCESS
    assert result.successful() and result.ready() and not result.failed()


def test_a_queued_task_is_pending_until_a_worker_takes_it(app: PgTasks):
    result = core_app.add.delay(1, 1)
    assert result.state == states.PENDING
    assert not result.ready()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)


def test_send_task_queues_by_name(app: PgTasks, worker: Worker):
    result = app.send_task("tests.apps.core_app.add", args=(1, 2))
    assert result.get(timeout=10) == 3


def test_task_names_follow_celery_module_and_function(app: PgTasks):
    assert core_app.add.name == "tests.apps.core_app.add"
    assert "tests.apps.core_app.add" in app.tasks


def test_a_failed_task_stores_type_message_and_traceback(app: PgTasks, worker: Worker):
    result = core_app.boom.delay("it broke")
    with pytest.raises(ValueError, match="it broke"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert isinstance(result.result, ValueError)
    assert "ValueError: it broke" in (result.traceback or "")
    assert "def boom" in (result.traceback or "") or "boom" in (result.traceback or "")


def test_get_without_propagate_returns_the_exception(app: PgTasks, worker: Worker):
    result = core_app.boom.delay("quiet")
    value = result.get(timeout=10, propagate=False)
    assert isinstance(value, ValueError)


def test_json_keeps_datetimes_uuids_and_decimals(app: PgTasks, worker: Worker):
    @app.task(name="core.echo")
    def echo(value):
        return value

    value = {
        "when": dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "amount": decimal.Decimal("10.25"),
    }
    assert echo.delay(value).get(timeout=10) == value


def test_many_calls_are_queued_in_one_round_trip_and_all_run(app: PgTasks, worker: Worker):
    results = core_app.add.delay_many([(i, i) for i in range(200)])
    assert len(results) == 200
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(200)]


def test_enqueue_many_accepts_calls_to_different_tasks(app: PgTasks, worker: Worker):
    results = app.enqueue_many([
        (core_app.add, (1, 2), {}, {}),
        ("tests.apps.core_app.record", ("bulk",), {}, {"priority": 5}),
    ])
    assert [r.get(timeout=10) for r in results] == [3, "bulk"]


def test_a_countdown_delays_the_start(app: PgTasks, worker: Worker):
    queued_at = dt.datetime.now(dt.UTC)
    result = core_app.record.apply_async(("later",), countdown=1.0)
    assert result.state == states.PENDING
    assert result.get(timeout=10) == "later"
    started = scalar(app.dsn, "SELECT at FROM marks")
    assert (started - queued_at).total_seconds() >= 0.95


def test_an_eta_in_the_future_is_not_claimed_early(app: PgTasks):
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    core_app.add.apply_async((1, 1), eta=eta)
    running = app.Worker(concurrency=2)
    thread = running.run_in_background()
    try:
        with psycopg.connect(app.dsn) as conn:
            claimed = app.store.claim(conn, running.worker_id, ["default"], 10)
        assert claimed == []
        assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs WHERE state = 'queued'") == 1
    finally:
        running.stop()
        thread.join(10)


def test_a_given_task_id_is_used(app: PgTasks, worker: Worker):
    result = core_app.add.apply_async((2, 2), task_id="my-own-id")
    assert result.id == "my-own-id"
    assert app.AsyncResult("my-own-id").get(timeout=10) == 4


def test_forget_deletes_the_stored_result(app: PgTasks, worker: Worker):
    result = core_app.add.delay(1, 2)
    result.get(timeout=10)
    result.forget()
    assert app.AsyncResult(result.id).state == states.PENDING


def test_revoking_a_queued_task_means_it_never_runs(app: PgTasks):
    result = core_app.record.apply_async(("never",), countdown=0.5)
    result.revoke()
    assert result.state == states.REVOKED
    running = app.Worker(concurrency=2)
    thread = running.run_in_background()
    try:
        with pytest.raises(Exception, match="revoked"):
            result.get(timeout=5)
        assert scalar(app.dsn, "SELECT count(*) FROM marks") == 0
    finally:
        running.stop()
        thread.join(10)


def test_ignore_result_runs_the_task_but_keeps_no_result(app: PgTasks, worker: Worker):
    @app.task(name="core.quiet", ignore_result=True)
    def quiet(label):
        core_app.mark(label)

    quiet.delay("quiet")
    wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM marks") == 1)
    wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0)
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.results") == 0


def test_a_task_called_directly_runs_in_the_caller(app: PgTasks):
    assert core_app.add(2, 2) == 4
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_apply_runs_eagerly_with_retries(app: PgTasks):
    result = core_app.flaky.apply(("eager", 2))
    assert result.get() == "ok"
    assert scalar(app.dsn, "SELECT count(*) FROM marks") == 3


def test_always_eager_runs_delay_in_the_caller(app: PgTasks):
    app.conf.task_always_eager = True
    try:
        assert core_app.add.delay(3, 4).get() == 7
    finally:
        app.conf.task_always_eager = False


def test_a_task_queued_from_a_task_records_its_parent(app: PgTasks, worker: Worker):
    @app.task(name="core.spawner", bind=True)
    def spawner(self):
        return core_app.add.delay(1, 1).id

    spawned = spawner.delay()
    child_id = spawned.get(timeout=10)
    assert app.AsyncResult(child_id).get(timeout=10) == 2
    parent = scalar(app.dsn, "SELECT parent_id FROM pgtasks.results WHERE task_id = %s",
                    (child_id,))
    assert parent == spawned.id


def test_old_results_are_pruned_after_result_expires(app: PgTasks, worker: Worker):
    core_app.add.delay(1, 1).get(timeout=10)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgtasks.results SET date_done = now() - interval '2 days'")
        pruned = app.store.prune_results(conn, max_age=86400)
    assert pruned == 1
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.results") == 0


def test_higher_priority_jobs_run_before_a_backlog(app: PgTasks):
    for i in range(20):
        core_app.record.apply_async((f"low{i}",), priority=0)
    core_app.record.apply_async(("high",), priority=9)
    running = app.Worker(concurrency=1, shutdown_grace=5)
    thread = running.run_in_background()
    try:
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM marks") == 21)
    finally:
        running.stop()
        thread.join(10)
    assert scalar(app.dsn, "SELECT label FROM marks ORDER BY id LIMIT 1") == "high"


def test_pickle_is_used_only_when_accepted(dsn: str):
    picky = PgTasks("picky", dsn=dsn, task_serializer="pickle",
                    accept_content=["json", "pickle"])

    @picky.task(name="picky.identity")
    def identity(value):
        return value

    try:
        result = identity.delay({1, 2})
        assert scalar(dsn, "SELECT content_type FROM pgtasks.jobs") == \
            "application/x-python-serialize"
        assert result.state == states.PENDING
    finally:
        picky.close()


def test_a_bulk_enqueue_applies_each_calls_own_options(app: PgTasks):
    # A generator makes (and frees) a new options dict per call: none may borrow another's.
    app.enqueue_many((core_app.add, (i, i), {}, {"priority": i % 10}) for i in range(50))
    priorities = [r[0] for r in rows(app.dsn, "SELECT priority FROM pgtasks.jobs ORDER BY id")]
    assert priorities == [i % 10 for i in range(50)]


def test_a_bulk_enqueue_routes_each_call_when_a_router_looks_at_the_arguments(app: PgTasks):
    def by_parity(name, args, kwargs, options):
        return {"queue": "even" if args[0] % 2 == 0 else "odd"}

    app.conf.task_routes = [by_parity]
    try:
        core_app.add.delay_many([(i, 0) for i in range(6)])
    finally:
        app.conf.task_routes = None
    queues = [r[0] for r in rows(app.dsn, "SELECT queue FROM pgtasks.jobs ORDER BY id")]
    assert queues == ["even", "odd"] * 3
