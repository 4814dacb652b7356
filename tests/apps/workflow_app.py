"""The workflows and canvas tasks the workflow tests run, in this process and in workers.

The DSN comes from ``PGTASKS_DSN`` (worker subprocesses) or is set by the test fixture. Side
effects are recorded in the table ``marks`` so tests can count how often each step ran.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pgtasks import PgTasks

app = PgTasks("wf")

MARKS_DDL = """
CREATE TABLE IF NOT EXISTS marks (
    id bigserial PRIMARY KEY, label text NOT NULL, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

#: Which steps ``shifting`` calls: tests change it to simulate a code change between runs.
SHIFTING_ORDER: list[str] = ["first", "fails"]


def mark(label: str) -> None:
    with app.store.pool().connection() as conn:
        conn.execute("INSERT INTO marks (label, pid) VALUES (%s, %s)", (label, os.getpid()))


# -- steps and workflows ----------------------------------------------------------------------


@app.step()
def record(label: str) -> str:
    mark(label)
    return label


@app.step()
def slow(label: str, seconds: float) -> str:
    mark(f"{label}:start")
    time.sleep(seconds)
    mark(f"{label}:end")
    return label


@app.step(retries=2, retry_delay=0.01, retry_backoff=1.5)
def declined(label: str) -> None:
    mark(label)
    raise ValueError(f"card declined for {label}")


@app.step()
def echo(value: Any) -> Any:
    return value


@app.workflow()
def three_steps(tag: str, seconds: float = 2.0) -> list[str]:
    return [record(f"{tag}:a"), slow(f"{tag}:b", seconds), record(f"{tag}:c")]


@app.workflow()
def napper(tag: str, seconds: float) -> str:
    mark(f"{tag}:run")  # deliberately not a step: marks every run, replays included
    record(f"{tag}:before")
    app.sleep(seconds)
    record(f"{tag}:after")
    return tag


@app.workflow()
def once(tag: str) -> str:
    return record(tag)


@app.workflow()
def pays(tag: str) -> str:
    record(f"{tag}:start")
    declined(tag)
    return "paid"


@app.workflow()
def echoes(value: Any) -> Any:
    return echo(value)


@app.workflow()
def shifting() -> str:
    for name in SHIFTING_ORDER:
        {"first": record, "second": echo, "fails": declined}[name](name)
    return "done"


@app.workflow()
def conversation(tag: str) -> str:
    app.set_event("status", "waiting")
    first = app.recv(topic="chat", timeout=30)
    second = app.recv(topic="chat", timeout=30)
    app.set_event("status", "done")
    record(f"{tag}:{first}+{second}")
    return f"{first}+{second}"


@app.workflow()
def waits_briefly() -> Any:
    return app.recv(timeout=0.2)


# -- tasks for the canvas ---------------------------------------------------------------------


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(values: list[int]) -> int:
    mark(f"tsum:{len(values)}")
    return sum(values)


@app.task
def note(label: str, *rest: Any) -> str:
    mark(label)
    return label


@app.task
def linger(value: Any, label: str, seconds: float) -> Any:
    mark(f"{label}:start")
    time.sleep(seconds)
    mark(f"{label}:end")
    return value


@app.task
def fail(*args: Any) -> None:
    raise KeyError("missing")


@app.task
def noted_failure(task_id: str, label: str) -> str:
    mark(f"{label}:{task_id}")
    return task_id
