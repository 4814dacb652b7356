"""Latency from enqueue to start at a steady rate, on a warmed-up idle worker.

Latency = job start - the moment just before the ``delay()`` call, so it includes the enqueue
commit, NOTIFY, the claim and the hand-off to a pool thread (as in the shared peer harness).
"""

from __future__ import annotations

import time

from benchmarks.app import make_payload, noop
from benchmarks.harness import Bench, Row, percentile, scenario


@scenario(order=40)
def latency(bench: Bench) -> list[Row]:
    """Latency enqueue -> start at a steady rate (ms)"""
    jobs, per_second = bench.sizes.latency_jobs, bench.sizes.latency_rate
    with bench.workers() as workers:
        for i in range(3):
            noop.delay(make_payload("warm", i))
        bench.wait_for_marks("warm", 3, workers, timeout=60, label="warm-up")
        time.sleep(min(2.0, jobs / per_second))  # let the worker go idle
        period = 1.0 / per_second
        t0 = time.perf_counter()
        for i in range(jobs):
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            noop.delay(make_payload("latency", i))
            if i % 25 == 0:
                bench.progress("latency", i, jobs)
        bench.wait_for_marks("latency", jobs, workers, timeout=60)
        bench.wait_until_finished()
    bench.check_exactly_once("latency", jobs)
    ms = sorted((started - enqueued) * 1000.0
                for enqueued, started in bench.marks.get("latency").values())
    p50, p95, p99 = (round(percentile(ms, q), 2) for q in (50, 95, 99))
    note = f"{jobs} jobs at {per_second:g}/s, max {ms[-1]:.2f} ms"
    return [Row("latency", "p50", p50, "ms", target="<= 2 ms", note=note),
            Row("latency", "p95", p95, "ms", note=note),
            Row("latency", "p99", p99, "ms", target="<= 5 ms", note=note)]
