"""Deduplication: one queued-or-running job per deduplication id, even under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from pgtasks import DuplicateJob, PgTasks
from pgtasks.errors import TaskError
from tests.apps import limits_app
from tests.apps.limits_app import span
from tests.support import WorkerProcess, scalar, wait_until


@pytest.fixture
def app(dsn: str) -> Iterator[PgTasks]:
    limits_app.app.conf.dsn = dsn
    with limits_app.app.store.pool().connection() as conn:
        conn.execute(limits_app.SPANS_DDL)
    yield limits_app.app
    limits_app.app.close()


def test_twenty_concurrent_enqueues_of_one_deduplication_id_create_one_job(
        app: PgTasks, dsn: str) -> None:
    # Given twenty enqueuers, each on its own connection, released at the same instant
    start = threading.Barrier(20)
    won: list[str] = []
    refused: list[DuplicateJob] = []
    lock = threading.Lock()

    def enqueue(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            start.wait()
            try:
                result = span.apply_async((f"try{i}",), deduplication_id="welcome-42",
                                          connection=conn)
            except DuplicateJob as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    won.append(result.id)

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one job exists, and every other enqueuer was told which one holds the id
    assert len(won) == 1 and len(refused) == 19
    assert scalar(dsn, "SELECT count(*) FROM pgtasks.jobs") == 1
    assert {exc.existing_task_id for exc in refused} == set(won)
    assert all("'welcome-42'" in str(exc) for exc in refused)


def test_on_duplicate_existing_returns_the_result_of_the_job_holding_the_id(
        app: PgTasks, dsn: str) -> None:
    first = span.apply_async(("first",), deduplication_id="report-7")
    again = span.apply_async(("again",), deduplication_id="report-7", on_duplicate="existing")
    assert again.id == first.id
    assert scalar(dsn, "SELECT count(*) FROM pgtasks.jobs") == 1
    worker = WorkerProcess(dsn, "tests.apps.limits_app", "-c", "2")
    try:
        assert again.get(timeout=20) == "first"
    finally:
        worker.stop()


def test_a_deduplication_id_is_free_again_once_its_job_has_finished(
        app: PgTasks, dsn: str) -> None:
    worker = WorkerProcess(dsn, "tests.apps.limits_app", "-c", "2")
    try:
        span.apply_async(("one",), deduplication_id="nightly").get(timeout=20)
        second = span.apply_async(("two",), deduplication_id="nightly")
        assert second.get(timeout=20) == "two"
    finally:
        worker.stop()
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM spans") == 2, message="both runs")


def test_a_duplicate_raises_by_default_and_on_duplicate_must_be_known(app: PgTasks) -> None:
    span.apply_async(("x",), deduplication_id="d")
    with pytest.raises(DuplicateJob, match=r"deduplication id 'd' is already queued or running"):
        span.apply_async(("y",), deduplication_id="d")
    with pytest.raises(TaskError, match=r"on_duplicate must be 'raise' or 'existing', "
                                        r"got 'ignore'"):
        span.apply_async(("z",), deduplication_id="d", on_duplicate="ignore")
