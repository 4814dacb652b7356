"""The tasks and queue declarations the queue-limit tests run in worker subprocesses.

Each job records when it ran in the table ``spans`` (database clock, so that workers' times
compare), including when its claim admitted it (``pgtasks.jobs.started_at``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from pgtasks import PgTasks

app = PgTasks("limits")
app.queue("pair", concurrency=2)
app.queue("paced", rate_limit="20/s")
app.queue("per-customer", concurrency=1, partition_by="customer")
app.queue("one-per-worker", worker_concurrency=1)

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS spans (
    id bigserial PRIMARY KEY, label text NOT NULL, task_id text NOT NULL, pid int NOT NULL,
    customer text, admitted_at timestamptz, started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS released (label text PRIMARY KEY);
"""


def _run_span(task_id: str, label: str, seconds: float, customer: str | None = None,
              hold: bool = False) -> None:
    with app.store.pool().connection() as conn:
        admitted_at, started_at = conn.execute(
            "SELECT (SELECT started_at FROM pgtasks.jobs WHERE task_id = %s), clock_timestamp()",
            (task_id,)).fetchone()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if hold and conn.execute("SELECT 1 FROM released WHERE label = %s",
                                     (label,)).fetchone():
                break
            time.sleep(min(0.05, seconds))
        conn.execute(
            "INSERT INTO spans (label, task_id, pid, customer, admitted_at, started_at, ended_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp())",
            (label, task_id, os.getpid(), customer, admitted_at, started_at))


@app.task(bind=True)
def span(self: Any, label: str, seconds: float = 0.01) -> str:
    _run_span(self.request.id, label, seconds)
    return label


@app.task(bind=True)
def for_customer(self: Any, label: str, customer: str, seconds: float = 0.05) -> str:
    _run_span(self.request.id, label, seconds, customer=customer)
    return label


@app.task(bind=True)
def hold(self: Any, label: str, seconds: float = 30.0) -> str:
    """Runs until a row ``label`` appears in ``released`` (or ``seconds`` pass)."""
    _run_span(self.request.id, label, seconds, hold=True)
    return label


@app.task(bind=True, rate_limit="10/s", queue="task-paced")
def paced_task(self: Any, label: str) -> str:
    _run_span(self.request.id, label, 0.0)
    return label
