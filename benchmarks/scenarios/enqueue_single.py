"""Enqueue one job per call from one producer: ``noop.delay(payload)`` in a loop."""

from __future__ import annotations

import time

from benchmarks.app import make_payload, noop
from benchmarks.harness import Bench, BenchmarkError, Row, rate, scenario


@scenario(order=10)
def enqueue_single(bench: Bench) -> list[Row]:
    """Enqueue one job per call (jobs/s)"""
    n = bench.sizes.n
    noop.delay(make_payload("warm", 0))  # open the pool, prepare the statement
    bench.reset()
    t0 = time.perf_counter()
    for i in range(n):
        noop.delay(make_payload("single", i))
        if i % 500 == 0:
            bench.progress("enqueue 1/call", i, n)
    elapsed = time.perf_counter() - t0
    queued = bench.remaining()
    if queued != n:
        raise BenchmarkError(f"enqueue_single: {queued} jobs queued, expected {n}")
    return [Row("enqueue one per call", "throughput", rate(n, elapsed), "jobs/s",
                target=">= 1.5x pgqueuer", note=f"{n:,} calls, one commit each")]
