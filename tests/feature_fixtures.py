"""Fixtures shared by the feature tests: the limits and workflow test apps on the test database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgtasks import PgTasks
from tests.apps import limits_app, workflow_app
from tests.support import WorkerProcess


@pytest.fixture
def limits(dsn: str) -> Iterator[PgTasks]:
    """The limits test app on a fresh database, with its ``spans`` table."""
    app = limits_app.app
    app.conf.dsn = dsn
    with app.store.pool().connection() as conn:
        conn.execute(limits_app.SPANS_DDL)
    yield app
    app.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses a test starts (append them), all stopped afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def wf(dsn: str) -> Iterator[str]:
    """The workflow test app on a fresh database, with its ``marks`` table; yields the DSN."""
    workflow_app.app.conf.dsn = dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(workflow_app.MARKS_DDL)
    yield dsn
    workflow_app.app.close()
