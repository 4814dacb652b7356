"""Bulk enqueue: ``app.enqueue_many`` with chunks of ``bulk_chunk`` jobs per call."""

from __future__ import annotations

import time

from benchmarks.app import make_payload, noop
from benchmarks.harness import Bench, BenchmarkError, Row, rate, scenario


@scenario(order=20)
def enqueue_bulk(bench: Bench) -> list[Row]:
    """Bulk enqueue (jobs/s)"""
    n, chunk = bench.sizes.bulk_n, bench.sizes.bulk_chunk
    bench.app.enqueue_many([(noop, (make_payload("warm", 0),), {}, {})])
    bench.reset()
    done = 0
    t0 = time.perf_counter()
    while done < n:
        k = min(chunk, n - done)
        payloads = [make_payload("bulk", done + i) for i in range(k)]
        noop.delay_many((p,) for p in payloads)
        done += k
        bench.progress("bulk enqueue", done, n)
    elapsed = time.perf_counter() - t0
    queued = bench.remaining()
    if queued != n:
        raise BenchmarkError(f"enqueue_bulk: {queued} jobs queued, expected {n}")
    return [Row("bulk enqueue", "throughput", rate(n, elapsed), "jobs/s", target=">= pgqueuer",
                note=f"{n:,} jobs, {chunk:,} per enqueue_many call")]
