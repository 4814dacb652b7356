"""Fixtures for the core-queue tests: the core test app bound to the test database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgtasks import PgTasks
from pgtasks.worker.loop import Worker
from tests.apps import core_app


@pytest.fixture
def app(dsn: str) -> Iterator[PgTasks]:
    """The core test app on a fresh database, with the ``marks`` side-effect table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(core_app.MARKS_DDL)
    core_app.app.conf.dsn = dsn
    core_app.app.conf.worker_poll_interval = 0.2
    yield core_app.app
    core_app.app.close()


@pytest.fixture
def worker(app: PgTasks) -> Iterator[Worker]:
    """A worker on a thread of the test process (4 threads, default queue)."""
    running = app.Worker(concurrency=4, shutdown_grace=5)
    thread = running.run_in_background()
    yield running
    running.stop()
    thread.join(10)
