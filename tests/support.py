"""Helpers for tests that run real worker processes against a test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent

#: Short leases and polls so that crash tests don't wait on production defaults.
FAST_SETTINGS = {
    "PGTASKS_WORKER_LEASE_SECONDS": "2",
    "PGTASKS_WORKER_HEARTBEAT_INTERVAL": "0.3",
    "PGTASKS_WORKER_POLL_INTERVAL": "0.2",
    "PGTASKS_WORKER_RECONNECT_MAX_DELAY": "0.5",
}


class WorkerProcess:
    """``pgtasks worker`` in a subprocess, with the test database and fast lease settings."""

    def __init__(self, dsn: str, app: str, *args: str, env: Mapping[str, str] | None = None,
                 command: str = "worker") -> None:
        full_env = {**os.environ, **FAST_SETTINGS, "PGTASKS_DSN": dsn, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        # A file, not a pipe: a chatty worker must never block on a full pipe.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgtasks", command, "-A", app, "-l", "WARNING", *args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """``kill -9`` the worker and everything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        """What the worker printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def scalar(dsn: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        return row[0] if row else None


def rows(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()
