"""Worker memory over many jobs: peak RSS, and growth after warm-up (should be ~0)."""

from __future__ import annotations

import time

from benchmarks.harness import Bench, BenchmarkError, Row, rss_kib, scenario


@scenario(order=80)
def memory(bench: Bench) -> list[Row]:
    """Worker memory over many jobs (peak RSS, growth after warm-up)"""
    n = bench.sizes.memory_jobs
    bench.fill("memory", n, chunk=5_000)
    samples: list[tuple[int, int]] = []  # (jobs started, RSS KiB of all workers)
    with bench.workers() as workers:
        deadline = time.monotonic() + max(120.0, n / 300)
        while True:
            bench.marks.poll()
            started = bench.marks.count("memory")
            samples.append((started, sum(rss_kib(pid) for pid in workers.pids)))
            bench.progress("memory", started, n)
            if started >= n:
                break
            workers.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"memory: only {started}/{n} jobs ran in time")
            time.sleep(0.1)
        bench.wait_until_finished()
        samples.append((n, sum(rss_kib(pid) for pid in workers.pids)))
    bench.check_exactly_once("memory", n)
    warm = next(rss for started, rss in samples if started >= n // 5)
    peak = max(rss for _, rss in samples)
    end = samples[-1][1]
    return [
        Row("worker memory", "peak RSS", round(peak / 1024, 1), "MiB",
            note=f"{n:,} jobs, {bench.worker_setup.describe()}"),
        Row("worker memory", "growth after warm-up", round((end - warm) / 1024, 1), "MiB",
            target="~0 (flat)", note=f"RSS at {n // 5:,} jobs {warm / 1024:.1f} MiB, "
                                     f"at the end {end / 1024:.1f} MiB"),
    ]
