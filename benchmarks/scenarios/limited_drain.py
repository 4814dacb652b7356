"""Drain a queue with a global concurrency limit of 50 against the same queue unlimited.

Both sides run in this one scenario, alternated (unlimited, limited, unlimited, limited) with each
side's best kept, so both see the same machine state; each drain starts from empty tables.

Two worker set-ups, because a limit measures two different things:

- "limit idle": 2 workers x 24 threads, prefetch 1, so at most 48 jobs are ever held and the
  limit of 50 never binds. The ratio is the cost of the limit's machinery alone (every claim of
  the limited queue takes slots and goes through ``pgtasks.claim_limited``). The issue's
  target, >= 70 %, is for this one.
- "limit binds": 2 workers x 32 threads, default prefetch. Unlimited, no-op jobs keep a few
  hundred jobs in flight (claimed in big batches, waiting in the workers' prefetch buffers);
  limited, at most 50 are, so each claim is a small batch. The ratio shows what capping a
  pipeline of tiny jobs at 50 costs, not overhead; with jobs that take time, it tends to the
  ratio of the running jobs (here 50 of 64 slots).
"""

from __future__ import annotations

import json

from benchmarks.harness import Bench, Row, WorkerSetup, rate, scenario

QUEUE = "bench-limited"
LIMIT = 50
ROUNDS = 2
SETUPS = {
    "limit idle": (WorkerSetup(processes=2, concurrency=24),
                   {"PGTASKS_WORKER_PREFETCH_MULTIPLIER": "1"}),
    "limit binds": (WorkerSetup(processes=2, concurrency=32), {}),
}


def _drain(bench: Bench, phase: str, n: int, setup: WorkerSetup, env: dict[str, str],
           limited: bool) -> float:
    """Fill ``n`` jobs, start the workers on them, return jobs/s from first start to empty."""
    bench.reset()
    bench.fill(phase, n, queue=QUEUE)
    with bench.connect() as conn:
        conn.execute("ANALYZE pgtasks.jobs")
    env = {**env, "PGTASKS_TASK_DEFAULT_QUEUE": QUEUE}
    if limited:
        env["PGTASKS_TASK_QUEUES"] = json.dumps({QUEUE: {"concurrency": LIMIT}})
    with bench.workers(setup, env=env) as workers:
        bench.wait_for_marks(phase, n, workers, timeout=max(120.0, n / 500),
                             label=f"drain {phase}")
        done = bench.wait_until_finished()
    first = min(t for _, t in bench.marks.get(phase).values())
    bench.check_exactly_once(phase, n)
    return rate(n, done - first)


@scenario(order=35)
def limited_drain(bench: Bench) -> list[Row]:
    """Drain with a global concurrency limit of 50 vs unlimited (jobs/s)"""
    n = bench.sizes.n
    rounds = ROUNDS if n >= 5_000 else 1  # the smoke run checks that it works, not how fast
    result: list[Row] = []
    for label, (setup, env) in SETUPS.items():
        runs: dict[bool, list[float]] = {False: [], True: []}
        for round_no in range(rounds):
            for limited in (False, True):
                phase = f"{label.replace(' ', '_')}_{'lim' if limited else 'unl'}{round_no}"
                runs[limited].append(_drain(bench, phase, n, setup, env, limited))
        unlimited, limited = max(runs[False]), max(runs[True])
        ratio = round(limited / unlimited, 3) if unlimited else 0.0
        note = (f"{label}: {n:,} no-op jobs per drain, {setup.describe()}"
                f"{', prefetch 1' if env else ''}, best of {rounds}; "
                f"unlimited {runs[False]}, limited {runs[True]}")
        detail = {"unlimited": runs[False], "limited": runs[True], "ratio": ratio}
        result += [
            Row("limited_drain", f"unlimited ({label})", unlimited, "jobs/s", note=note),
            Row("limited_drain", f"concurrency {LIMIT} ({label})", limited, "jobs/s", note=note,
                detail=detail),
            Row("limited_drain", f"limited / unlimited ({label})", ratio, "",
                target=">= 0.70" if label == "limit idle" else "", note=note),
        ]
    return result
