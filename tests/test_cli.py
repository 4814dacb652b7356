"""The command line: status, purge, migrate and the worker's environment fallbacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pgtasks import PgTasks
from tests.apps import core_app
from tests.support import REPO, WorkerProcess, rows, scalar, wait_until


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGTASKS_DSN": dsn, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pgtasks", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_status_lists_queues_by_state_and_live_workers(app: PgTasks):
    core_app.add.delay_many([(1, 1)] * 3)
    core_app.add.apply_async((1, 1), queue="other", countdown=600)
    worker = WorkerProcess(app.dsn, "tests.apps.core_app", "-Q", "nothing-here")
    try:
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.workers") == 1)
        out = run_cli(app.dsn, "status", "-A", "tests.apps.core_app")
    finally:
        worker.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:4] == ["default", "3", "0", "0"] for line in lines), out.stdout
    assert any(line.split()[:4] == ["other", "0", "1", "0"] for line in lines), out.stdout
    assert "queues=nothing-here" in out.stdout


def test_purge_deletes_queued_jobs_of_one_queue(app: PgTasks):
    core_app.add.delay_many([(1, 1)] * 3)
    core_app.add.apply_async((1, 1), queue="keep")
    out = run_cli(app.dsn, "purge", "-A", "tests.apps.core_app", "-Q", "default", "-f")
    assert out.returncode == 0, out.stderr
    assert "purged 3 jobs" in out.stdout
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 1


def test_db_migrate_installs_the_schema(empty_dsn: str):
    out = run_cli(empty_dsn, "db", "migrate")
    assert out.returncode == 0, out.stderr
    assert "0001_core.sql" in out.stdout
    again = run_cli(empty_dsn, "db", "migrate")
    assert "up to date" in again.stdout


def test_worker_options_fall_back_to_environment_variables(app: PgTasks):
    env = {"PGTASKS_CONCURRENCY": "3", "PGTASKS_QUEUES": "envq"}
    worker = WorkerProcess(app.dsn, "tests.apps.core_app", env=env)
    try:
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.workers") == 1)
        assert scalar(app.dsn, "SELECT concurrency FROM pgtasks.workers") == 3
        assert scalar(app.dsn, "SELECT queues FROM pgtasks.workers") == ["envq"]
    finally:
        worker.stop()


def test_an_app_that_cannot_be_found_is_a_clear_error(app: PgTasks):
    out = run_cli(app.dsn, "status", "-A", "no_such_module_here")
    assert out.returncode != 0
    assert "cannot import 'no_such_module_here'" in out.stderr


def worker_pids(dsn: str) -> list[int]:
    return [row[0] for row in rows(dsn, "SELECT pid FROM pgtasks.workers ORDER BY id")]


def test_processes_runs_several_workers_restarts_a_dead_one_and_stops_them_all(app: PgTasks):
    worker = WorkerProcess(app.dsn, "tests.apps.core_app", "--processes", "2", "-c", "2")
    try:
        wait_until(lambda: len(worker_pids(app.dsn)) == 2, message="two worker processes")
        pids = worker_pids(app.dsn)
        assert worker.pid not in pids
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.workers "
                                  "WHERE pid <> ALL(%s)", (pids,)) == 1,
                   message="a replacement worker process")
        results = core_app.add.delay_many([(i, i) for i in range(20)])
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.stop()
    # The killed one's row stays until its lease expires; the others left cleanly.
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.workers WHERE pid <> %s",
                  (pids[0],)) == 0
