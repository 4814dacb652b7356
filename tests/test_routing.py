"""Routing (task_routes in Celery's forms, task_default_queue, -Q) and priorities."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from pgtasks import PgTasks
from pgtasks.errors import ConfigurationError
from tests.apps import limits_app
from tests.apps.limits_app import span
from tests.support import WorkerProcess, rows, scalar, wait_until


@pytest.fixture
def app(dsn: str) -> Iterator[PgTasks]:
    routed = PgTasks("proj", dsn=dsn)
    yield routed
    routed.close()


def queued(dsn: str, task_id: str) -> tuple[str, int]:
    found = rows(dsn, "SELECT queue, priority FROM pgtasks.jobs WHERE task_id = %s", (task_id,))
    return found[0]


def test_routes_match_exact_names_globs_and_regexes_in_order(app: PgTasks, dsn: str) -> None:
    app.conf.task_routes = {
        "proj.tasks.send_welcome": {"queue": "welcome", "priority": 7},
        "proj.tasks.send_*": {"queue": "emails"},
        re.compile(r"proj\.reports\..*"): "reports",
    }
    assert queued(dsn, app.send_task("proj.tasks.send_welcome").id) == ("welcome", 7)
    assert queued(dsn, app.send_task("proj.tasks.send_invoice").id) == ("emails", 0)
    assert queued(dsn, app.send_task("proj.reports.daily").id) == ("reports", 0)
    assert queued(dsn, app.send_task("proj.other").id) == ("default", 0)


def test_router_functions_and_lists_of_routers_are_tried_in_order(app: PgTasks,
                                                                    dsn: str) -> None:
    def by_argument(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> Any:
        return {"queue": f"shard-{kwargs['shard']}"} if "shard" in kwargs else None

    app.conf.task_routes = [by_argument, {"proj.*": "fallback"}]
    assert queued(dsn, app.send_task("proj.a", kwargs={"shard": 3}).id)[0] == "shard-3"
    assert queued(dsn, app.send_task("proj.a").id)[0] == "fallback"


def test_the_call_option_beats_the_task_option_which_beats_routes_and_the_default(
        app: PgTasks, dsn: str) -> None:
    app.conf.task_default_queue = "fallback"
    app.conf.task_routes = {"proj.*": "routed"}

    @app.task(name="proj.own", queue="own")
    def own() -> None: ...

    assert queued(dsn, own.apply_async(queue="explicit").id)[0] == "explicit"
    assert queued(dsn, own.delay().id)[0] == "own"
    assert queued(dsn, app.send_task("proj.other").id)[0] == "routed"
    assert queued(dsn, app.send_task("elsewhere.task").id)[0] == "fallback"


def test_a_route_that_is_neither_a_dict_nor_a_string_is_an_error(app: PgTasks) -> None:
    app.conf.task_routes = lambda *args, **kwargs: 42
    with pytest.raises(ConfigurationError, match="returned 42"):
        app.send_task("proj.a")


def test_a_worker_serves_only_its_queues_given_with_q(dsn: str) -> None:
    limits_app.app.conf.dsn = dsn
    with limits_app.app.store.pool().connection() as conn:
        conn.execute(limits_app.SPANS_DDL)
    try:
        mine = span.apply_async(("mine",), queue="alpha")
        other = span.apply_async(("other",), queue="beta")
        worker = WorkerProcess(dsn, "tests.apps.limits_app", "-Q", "alpha,gamma", "-c", "2")
        try:
            wait_until(lambda: scalar(dsn, "SELECT count(*) FROM spans"), message="alpha job")
        finally:
            worker.stop()
        assert rows(dsn, "SELECT task_id FROM spans") == [(mine.id,)]
        assert queued(dsn, other.id)[0] == "beta"
    finally:
        limits_app.app.close()


@pytest.mark.parametrize("queue", ["alpha", "pair"], ids=["unlimited", "limited"])
def test_higher_priority_jobs_enqueued_behind_a_backlog_run_first(dsn: str, queue: str) -> None:
    # Given a backlog of twenty priority-0 jobs, then five priority-9 jobs
    limits_app.app.conf.dsn = dsn
    with limits_app.app.store.pool().connection() as conn:
        conn.execute(limits_app.SPANS_DDL)
    try:
        limits_app.app.enqueue_many([(span, (f"low{i}",), {"seconds": 0}, {"queue": queue})
                                     for i in range(20)])
        limits_app.app.enqueue_many([(span, (f"high{i}",), {"seconds": 0},
                                      {"queue": queue, "priority": 9}) for i in range(5)])
        # When one worker with one slot drains the queue
        worker = WorkerProcess(dsn, "tests.apps.limits_app", "-Q", queue, "-c", "1")
        try:
            wait_until(lambda: scalar(dsn, "SELECT count(*) FROM spans") == 25,
                       message="25 jobs")
        finally:
            worker.stop()
    finally:
        limits_app.app.close()
    # Then the five high-priority jobs ran first, and the backlog kept its order
    order = [r[0] for r in rows(dsn, "SELECT label FROM spans ORDER BY started_at")]
    assert order == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(20)]
