"""The tasks the core-queue tests run, in this process and in worker subprocesses.

The DSN comes from ``PGTASKS_DSN`` (worker subprocesses) or is set by the test fixture.
Side effects are recorded in the table ``marks`` so tests can count executions.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from pgtasks import PgTasks

app = PgTasks("core")

MARKS_DDL = """
CREATE TABLE IF NOT EXISTS marks (
    id bigserial PRIMARY KEY, label text NOT NULL, task_id text, pid int NOT NULL,
    attempt int, at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def mark(label: str, task_id: str | None = None, attempt: int | None = None) -> None:
    with app.store.pool().connection() as conn:
        conn.execute("INSERT INTO marks (label, task_id, pid, attempt) VALUES (%s, %s, %s, %s)",
                     (label, task_id, os.getpid(), attempt))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def record(self: Any, label: str) -> str:
    mark(label, self.request.id)
    return label


@app.task(bind=True)
def sleepy(self: Any, label: str, seconds: float) -> str:
    mark(f"{label}:start", self.request.id)
    time.sleep(seconds)
    mark(f"{label}:end", self.request.id)
    return label


@app.task(bind=True, max_retries=3, retry_backoff=0.2, retry_jitter=False,
          autoretry_for=(ConnectionError,))
def flaky(self: Any, label: str, failures: int) -> str:
    mark(label, self.request.id, self.request.retries)
    if self.request.retries < failures:
        raise ConnectionError(f"attempt {self.request.retries} failed")
    return "ok"


@app.task(bind=True, max_retries=2)
def explicit_retry(self: Any, label: str) -> str:
    mark(label, self.request.id, self.request.retries)
    raise self.retry(exc=ValueError("not yet"), countdown=0.1)


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(soft_time_limit=0.3)
def soft_limited(label: str) -> str:
    from pgtasks import SoftTimeLimitExceeded

    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        mark(f"{label}:soft")
        return "cleaned up"
    return "finished"


@app.task(time_limit=0.5)
def hard_limited(label: str) -> str:
    mark(f"{label}:start")
    for _ in range(100):
        time.sleep(0.05)
    mark(f"{label}:end")
    return "finished"


@app.task(time_limit=0.5)
def blocked_forever(label: str) -> str:
    mark(f"{label}:start")
    time.sleep(60)
    return "finished"


@app.task(bind=True, max_retries=20, retry_backoff=0.2, retry_backoff_max=1.0,
          autoretry_for=(psycopg.OperationalError,))
def durable_record(self: Any, label: str) -> str:
    """Like ``record``, but retried when its own side-effect write meets a database outage."""
    mark(label, self.request.id, self.request.retries)
    return label
