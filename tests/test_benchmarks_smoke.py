"""The benchmark suite keeps working: its smoke run (about 200 jobs per scenario, no peers).

Benchmarks are not tests: this checks only that every scenario completes and that every job
ran exactly once (each scenario checks that itself and reports an "error" row otherwise),
never how fast.
"""

from __future__ import annotations

from benchmarks.run import main


def test_every_benchmark_scenario_completes_at_smoke_size_with_every_job_run_once(
        dsn: str) -> None:
    # Given a fresh database; when the suite runs every scenario at smoke size
    rows = main(["--smoke", "--dsn", dsn, "--quiet"])

    # then no scenario failed, and the throughput scenarios measured something
    errors = [f"{r.scenario}: {r.note}" for r in rows if r.metric == "error"]
    assert errors == []
    measured = {r.scenario for r in rows if isinstance(r.value, float | int)}
    assert {"enqueue one per call", "bulk enqueue", "drain", "latency",
            "worker memory"} <= measured
