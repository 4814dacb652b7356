"""pgtasks adapter for the shared peer harness (../shared/bench, see its README "Adding pgtasks").

Copied into the harness's adapters/ by ``run_with_peers.sh``; the harness runs it in the venv
/tmp/bench/venvs/pgtasks with this checkout installed editable. The worker CLI imports this
module (``pgtasks worker -A pgtasks_bench``), so the app and its task live at module level.

Producer: ``noop.delay(payload)`` per job; bulk: ``noop.delay_many`` (one INSERT .. unnest per
chunk). Worker: the recommended set-up for this 2-core machine, two ``pgtasks worker -c 8``
processes (16 threads in all); ``BENCH_PGTASKS_WORKERS`` / ``BENCH_PGTASKS_CONCURRENCY`` /
``BENCH_PGTASKS_POOL`` change it (run_with_peers.sh also runs 1 x 16 as "pgtasks-1x16").
pgtasks moves a finished job out of ``pgtasks.jobs`` into ``pgtasks.results`` in the completing
statement, so "remaining" is ``pgtasks.jobs``' row count.
Extra phase: the same 10-step durable workflow loop as the DBOS adapter, when this pgtasks has
``@app.workflow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import common

from pgtasks import PgTasks

WORKERS = int(os.environ.get("BENCH_PGTASKS_WORKERS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_PGTASKS_CONCURRENCY", "8"))
POOL = os.environ.get("BENCH_PGTASKS_POOL", "threads")
STEPS = 10

app = PgTasks("pgtasks_bench", dsn=common.PG_DSN)


@app.task(name="bench_noop")
def noop(payload: dict[str, Any]) -> None:
    common.mark(payload)


if hasattr(app, "workflow"):

    @app.step(name="bench_step")
    def step(i: int) -> int:
        return i

    @app.workflow(name="bench_ten_steps")
    def ten_steps(n: int) -> int:
        return sum(step(i) for i in range(n))


def steps_benchmark(seconds: float, max_workflows: int) -> dict[str, Any]:
    """Run in a subprocess: sequential calls of a 10-step durable workflow (as DBOS's)."""
    ten_steps(STEPS)  # warm-up
    done = 0
    t0 = time.perf_counter()
    while done < max_workflows and time.perf_counter() - t0 < seconds:
        ten_steps(STEPS)
        done += 1
    elapsed = time.perf_counter() - t0
    app.close()
    return {"workflows": done, "steps_per_workflow": STEPS, "seconds": round(elapsed, 3),
            "workflows_per_s": common.rate(done, elapsed),
            "steps_per_s": common.rate(done * STEPS, elapsed),
            "caller": "one thread, direct workflow calls (each step checkpointed)"}


class Adapter(common.Adapter):
    name = "pgtasks"
    bulk_api = "noop.delay_many(chunk) (one INSERT .. unnest statement)"
    settings = {
        "driver": "psycopg 3 (sync), pool for the producer, dedicated connections per worker",
        "worker": f"{WORKERS} process(es): pgtasks worker -A pgtasks_bench -c {CONCURRENCY} "
                  f"--pool {POOL} -l WARNING (recommended set-up for 2 cores)",
        "producer": "noop.delay(payload) per job",
        "results": "stored (default): pgtasks.results, one row per finished job",
    }

    def versions(self) -> dict[str, str]:
        return {k: common.pkg_version(k) for k in ("pgtasks", "psycopg", "kombu")}

    def setup(self) -> None:
        self.pg = common.Pg()
        self.pg.execute("DROP SCHEMA IF EXISTS pgtasks CASCADE")
        app.migrate()

    def reset(self) -> None:
        self.pg.execute("TRUNCATE pgtasks.jobs, pgtasks.results, pgtasks.workers")
        self.pg.execute("CHECKPOINT")

    def enqueue_one(self, payload: dict[str, Any]) -> None:
        noop.delay(payload)

    def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        noop.delay_many((p,) for p in payloads)

    def before_drain(self) -> None:
        self.pg.execute("ANALYZE")

    def remaining(self) -> int:
        return self.pg.scalar("SELECT count(*) FROM pgtasks.jobs")

    def failed(self) -> int:
        return self.pg.scalar("SELECT count(*) FROM pgtasks.results WHERE state <> 'SUCCESS'")

    def worker_commands(self) -> list[list[str]]:
        command = [sys.executable, "-m", "pgtasks", "worker", "-A", "pgtasks_bench",
                   "-l", "WARNING", "-c", str(CONCURRENCY), "--pool", POOL]
        return [command] * WORKERS

    def extra_phases(self, cfg: common.Config) -> dict[str, Any]:
        if not hasattr(app, "workflow"):
            return {"workflow_10_steps": {"skipped": "this pgtasks has no @app.workflow"}}
        self.reset()
        out = subprocess.run([sys.executable, __file__, "steps"], cwd=common.HERE,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            return {"workflow_10_steps": {"error": out.stderr[-2000:]}}
        return {"workflow_10_steps": json.loads(out.stdout.strip().splitlines()[-1])}

    def close(self) -> None:
        app.close()
        self.pg.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "steps":
        print(json.dumps(steps_benchmark(seconds=20, max_workflows=20000)))
    else:
        common.main(Adapter)
