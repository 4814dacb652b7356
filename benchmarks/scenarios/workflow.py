"""A 10-step durable workflow called in a loop from one thread (as the peer harness runs DBOS's):
workflows/s and steps/s, every step checkpointed."""

from __future__ import annotations

import time

from benchmarks import app as bench_app
from benchmarks.harness import Bench, BenchmarkError, Row, rate, scenario


@scenario(order=50)
def workflow(bench: Bench) -> list[Row]:
    """10-step workflow, inline, one thread (workflows/s, steps/s)"""
    ten_steps = getattr(bench_app, "ten_steps", None)
    if ten_steps is None:
        return [Row("10-step workflow", "steps/s", "not available",
                    note="this pgtasks has no @app.workflow / @app.step")]
    ten_steps(-1)  # warm-up: prepare the statements
    seconds = bench.sizes.workflow_seconds
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if ten_steps(done) != sum(range(done, done + 10)):
            raise BenchmarkError(f"workflow {done} returned a wrong total")
        done += 1
        bench.progress("workflows", done)
    elapsed = time.perf_counter() - t0
    note = f"{done:,} workflows in {elapsed:.1f}s, direct calls from one thread"
    return [Row("10-step workflow", "workflows/s", rate(done, elapsed), "wf/s", note=note),
            Row("10-step workflow", "steps/s", rate(done * 10, elapsed), "steps/s",
                target=">= 3x DBOS", note=note)]
