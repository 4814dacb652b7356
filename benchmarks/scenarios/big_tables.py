"""Drain speed next to big tables: with ``big`` finished jobs kept in the results, and with a
backlog of ``big`` queued jobs, each against a plain drain of ``big_drain`` jobs measured the
same way.

The big rows are written with one SQL statement each (set-up, untimed). Every drain is timed
from the first job's start to the n-th job's start, so that the backlog case, which never
empties, is measured like the others.
"""

from __future__ import annotations

from benchmarks.harness import Bench, Row, scenario
from benchmarks.scenarios.drain import timed_drain

FINISHED_ROWS = """
INSERT INTO pgtasks.results (task_id, task_name, queue, state, content_type, result, worker,
                             date_done)
SELECT 'done-' || g, 'bench.noop', 'default', 'SUCCESS', 'application/json', 'null'::bytea,
       'bench', now() - make_interval(secs => g / 1000.0)
FROM generate_series(1, %(count)s) AS g
"""

# The same payload as benchmarks.app.make_payload, built in SQL, in the same queue as the drain
# and queued before it: the worker meets the backlog first.
BACKLOG_ROWS = """
INSERT INTO pgtasks.jobs (task_id, task_name, queue, content_type, payload)
SELECT 'backlog-' || g, 'bench.noop', 'default', 'application/json',
       convert_to(json_build_array(json_build_array(json_build_object(
           'phase', 'backlog', 'seq', g, 't_enq', extract(epoch FROM clock_timestamp()),
           'user_id', 4242, 'action', 'noop', 'tags', json_build_array('bench', 'queue'))),
           json_build_object())::text, 'UTF8')
FROM generate_series(0, %(count)s - 1) AS g
"""


ROUNDS = 2


def _insert(bench: Bench, statement: str, count: int, label: str) -> None:
    bench.progress(label, 0, count)
    with bench.connect() as conn:
        conn.execute(statement, {"count": count})
        conn.execute("VACUUM ANALYZE pgtasks.jobs")
        conn.execute("VACUUM ANALYZE pgtasks.results")
        conn.execute("CHECKPOINT")
    bench.progress(label, count, count)


@scenario(order=70)
def big_tables(bench: Bench) -> list[Row]:
    """Drain with big tables: finished rows / queued backlog vs a plain drain (jobs/s)"""
    n, big = bench.sizes.big_drain, bench.sizes.big

    def best(results: list[dict[str, float]]) -> dict[str, float]:
        return max(results, key=lambda r: r["jobs_per_s"])

    # Best of two drains each, so that one noisy moment on a shared machine does not decide.
    plains = []
    for round_ in range(ROUNDS):
        bench.fill(f"plain{round_}", n)
        plains.append(timed_drain(bench, f"plain{round_}", n, slice_n=n))
    plain = best(plains)

    bench.reset()
    _insert(bench, FINISHED_ROWS, big, "finished rows")
    finisheds = []
    for round_ in range(ROUNDS):
        bench.fill(f"finished{round_}", n)
        finisheds.append(timed_drain(bench, f"finished{round_}", n, slice_n=n))
    finished = best(finisheds)

    bench.reset()
    _insert(bench, BACKLOG_ROWS, big, "backlog")
    # Each round times the next n jobs of the backlog.
    backlog = best([timed_drain(bench, "backlog", big, slice_n=n) for _ in range(ROUNDS)])

    def ratio(result: dict[str, float]) -> str:
        # CPU per job is the steadier signal: a drain of n tiny jobs lasts about a second.
        return (f"{result['jobs_per_s'] / plain['jobs_per_s']:.2f}x the plain drain; CPU per "
                f"job: Postgres {result['postgres_cpu_us_per_job']:.0f} us (plain "
                f"{plain['postgres_cpu_us_per_job']:.0f}), worker "
                f"{result['worker_cpu_us_per_job']:.0f} us (plain "
                f"{plain['worker_cpu_us_per_job']:.0f})")

    return [
        Row("drain next to big tables", f"plain, {n:,} jobs", plain["jobs_per_s"], "jobs/s",
            note=f"time to start every job; best of {ROUNDS} each", detail=plain),
        Row("drain next to big tables", f"{big:,} finished rows", finished["jobs_per_s"],
            "jobs/s", target=">= 0.9x plain", note=ratio(finished), detail=finished),
        Row("drain next to big tables", f"{big:,} queued backlog", backlog["jobs_per_s"],
            "jobs/s", target=">= 0.9x plain",
            note=f"{n:,} jobs of the backlog per drain; {ratio(backlog)}", detail=backlog),
    ]
