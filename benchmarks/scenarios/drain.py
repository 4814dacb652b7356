"""Drain a pre-filled queue of no-op jobs with the recommended worker set-up.

Timed from the first job's start to the moment no job is left queued or running (the worker's
boot is excluded and reported apart), as the shared peer harness times its drains.
"""

from __future__ import annotations

import time

from benchmarks.harness import Bench, Row, WorkerSetup, cpu_seconds, rate, scenario


def timed_drain(bench: Bench, phase: str, n: int, setup: WorkerSetup | None = None,
                slice_n: int | None = None) -> dict[str, float]:
    """Start the workers on ``n`` queued jobs of ``phase``; time first start -> all finished.

    With ``slice_n``, time first start -> the ``slice_n``-th start of this call instead (a slice
    of a larger backlog, which may be drained slice by slice). Returns seconds, jobs/s, the
    workers' boot time and CPU per job (boot included).
    """
    count = slice_n or n
    bench.marks.poll()
    before = bench.marks.count(phase)
    with bench.connect() as conn:
        conn.execute("ANALYZE pgtasks.jobs")
    server_before = bench.server_cpu()
    launched = time.time()
    with bench.workers(setup) as workers:
        bench.wait_for_marks(phase, before + count, workers, timeout=max(120.0, count / 500),
                             label=f"drain {phase}")
        ours = sorted(t for _, t in bench.marks.get(phase).values() if t >= launched)[:count]
        done = ours[-1] if slice_n else bench.wait_until_finished()
        # Where the time went (boot included): CPU of the workers and of Postgres.
        worker_cpu = sum(cpu_seconds(pid) for pid in workers.pids)
        server_cpu = sum(max(0.0, cpu - server_before.get(pid, 0.0))
                         for pid, cpu in bench.server_cpu().items())
    first = ours[0]
    seconds = done - first
    if not slice_n:
        bench.check_exactly_once(phase, n)
    return {"seconds": round(seconds, 3), "jobs_per_s": rate(count, seconds),
            "boot_s": round(first - launched, 3),
            "worker_cpu_us_per_job": round(worker_cpu / count * 1e6, 1),
            "postgres_cpu_us_per_job": round(server_cpu / count * 1e6, 1)}


@scenario(order=30)
def drain(bench: Bench) -> list[Row]:
    """Drain a pre-filled queue (jobs/s)"""
    n = bench.sizes.n
    bench.fill("drain", n)
    result = timed_drain(bench, "drain", n)
    return [Row("drain", "throughput", result["jobs_per_s"], "jobs/s", target=">= 2x pgqueuer",
                note=f"{n:,} no-op jobs, {bench.worker_setup.describe()}, "
                     f"worker boot {result['boot_s']:.2f}s excluded; CPU per job: worker "
                     f"{result['worker_cpu_us_per_job']:.0f} us, Postgres "
                     f"{result['postgres_cpu_us_per_job']:.0f} us",
                detail=result)]
