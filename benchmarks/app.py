"""The benchmark app: one no-op task whose body records when it started.

Worker subprocesses import this module (``pgtasks worker -A benchmarks.app``) and take the DSN
from ``PGTASKS_DSN``; the benchmark process sets ``app.conf.dsn`` itself. The job body appends
one line ``phase seq t_enqueued t_started`` to the marks file named by ``PGTASKS_BENCH_MARKS``
with a single ``O_APPEND`` write, as the shared peer harness does: that is how a scenario knows
when each job started and that every job ran exactly once.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pgtasks import PgTasks

MARKS_ENV = "PGTASKS_BENCH_MARKS"

app = PgTasks("bench")

_marks_fd: int | None = None


def mark(payload: dict[str, Any]) -> None:
    """Record that the job of ``payload`` started (one write, safe from many processes)."""
    global _marks_fd
    started = time.time()
    if _marks_fd is None:
        _marks_fd = os.open(os.environ[MARKS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = f"{payload['phase']} {payload['seq']} {payload['t_enq']:.6f} {started:.6f}\n"
    os.write(_marks_fd, line.encode())


def _forget_marks_fd() -> None:
    global _marks_fd
    _marks_fd = None


os.register_at_fork(after_in_child=_forget_marks_fd)


@app.task(name="bench.noop")
def noop(payload: dict[str, Any]) -> None:
    """The benchmark job: record the start, do nothing else."""
    mark(payload)


def make_payload(phase: str, seq: int) -> dict[str, Any]:
    """The shared harness's payload (about 110 bytes of JSON)."""
    return {"phase": phase, "seq": seq, "t_enq": time.time(), "user_id": 4242,
            "action": "noop", "tags": ["bench", "queue"]}


@app.task(name="bench.member")
def member(i: int) -> int:
    """A chord member: returns its index."""
    return i


@app.task(name="bench.chord_done")
def chord_done(results: list[int], phase: str, seq: int, t_enq: float) -> int:
    """A chord's callback: records its start like a job of ``phase``."""
    mark({"phase": phase, "seq": seq, "t_enq": t_enq})
    return len(results)


# The workflow API is optional here: the suite also runs on a pgtasks without it.
if hasattr(app, "workflow") and hasattr(app, "step"):

    @app.step(name="bench.step")
    def bench_step(i: int) -> int:
        return i

    @app.workflow(name="bench.ten_steps")
    def ten_steps(n: int) -> int:
        """A durable workflow of 10 no-op steps (each one checkpointed)."""
        total = 0
        for i in range(10):
            total += bench_step(i + n)
        return total
