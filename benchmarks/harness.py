"""What every scenario uses: the scenario registry, sizes, the database, worker processes, the
marks file, progress, and the rows of the final table.

A scenario is a function ``(bench: Bench) -> list[Row]`` decorated with :func:`scenario` in its
own module under ``benchmarks/scenarios/``; ``benchmarks.run`` imports every module there, so
adding a file is enough. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.app import MARKS_ENV, app, make_payload

REPO = Path(__file__).resolve().parent.parent


class BenchmarkError(Exception):
    """A scenario could not produce a trustworthy figure (a job lost, run twice, or failed)."""


@dataclass
class Row:
    """One line of the final table: ``metric`` of ``scenario`` is ``value`` ``unit``."""

    scenario: str
    metric: str
    value: float | str | None
    unit: str = ""
    target: str = ""
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    title: str
    order: int
    run: Callable[[Bench], list[Row]]


SCENARIOS: dict[str, Scenario] = {}


def scenario(order: int) -> Callable[[Callable[[Bench], list[Row]]], Callable[[Bench], list[Row]]]:
    """Register a scenario: its name is the function's, its title the docstring's first line;
    scenarios run in ``order``."""

    def register(fun: Callable[[Bench], list[Row]]) -> Callable[[Bench], list[Row]]:
        title = (fun.__doc__ or fun.__name__).strip().splitlines()[0]
        SCENARIOS[fun.__name__] = Scenario(fun.__name__, title, order, fun)
        return fun

    return register


@dataclass
class Sizes:
    """How big each scenario is. ``smoke()`` gives the CI sizes (a few seconds in all)."""

    n: int = 20_000              # single enqueue and the drain
    bulk_n: int = 100_000        # bulk enqueue
    bulk_chunk: int = 1_000
    latency_jobs: int = 500
    latency_rate: float = 50.0
    big: int = 1_000_000         # finished rows / queued backlog of the "big tables" scenario
    big_drain: int = 100_000     # jobs per drain there (a 20,000-job drain lasts ~1 s: noisy)
    memory_jobs: int = 100_000
    workflow_seconds: float = 20.0
    chord_size: int = 1_000

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(n=200, bulk_n=200, bulk_chunk=100, latency_jobs=20, latency_rate=50.0,
                   big=2_000, big_drain=200, memory_jobs=400, workflow_seconds=1.0, chord_size=20)


@dataclass
class WorkerSetup:
    """The worker processes a scenario starts (the recommended set-up unless overridden).

    Recommended for this 2-core machine: 2 processes x 8 threads (16 slots). A worker process
    spends ~50 us of Python per tiny job under one GIL; two processes use both cores while
    Postgres waits on commits (measured: 1 x 16 drains ~25% slower; see RESULTS.md).
    """

    processes: int = 2
    concurrency: int = 8
    pool: str = "threads"

    def describe(self) -> str:
        return f"{self.processes} process(es) x {self.concurrency} {self.pool}"


class Marks:
    """Incremental reader of the marks file: per phase, seq -> (t_enqueued, t_started)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.by_phase: dict[str, dict[int, tuple[float, float]]] = {}
        self.duplicates: dict[str, int] = {}

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            phase, seq, t_enq, t_start = line.decode().split()
            seen = self.by_phase.setdefault(phase, {})
            if int(seq) in seen:
                self.duplicates[phase] = self.duplicates.get(phase, 0) + 1
            else:
                seen[int(seq)] = (float(t_enq), float(t_start))

    def count(self, phase: str) -> int:
        return len(self.by_phase.get(phase, {}))

    def get(self, phase: str) -> dict[int, tuple[float, float]]:
        return self.by_phase.get(phase, {})


class Workers:
    """``pgtasks worker -A benchmarks.app`` subprocesses, each in its own session."""

    def __init__(self, bench: Bench, setup: WorkerSetup, env: dict[str, str]) -> None:
        full_env = {**os.environ, "PGTASKS_DSN": bench.dsn, MARKS_ENV: str(bench.marks_path),
                    **env}
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.log_path = bench.work_dir / "worker.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        command = [sys.executable, "-m", "pgtasks", "worker", "-A", "benchmarks.app",
                   "-l", "WARNING", "-c", str(setup.concurrency), "--pool", setup.pool]
        self.procs = [
            subprocess.Popen(command, cwd=REPO, env=full_env, stdout=self._log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
            for _ in range(setup.processes)
        ]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise BenchmarkError(f"worker {p.pid} exited with {p.returncode}; "
                                     f"see {self.log_path}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each worker's process group, then SIGKILL what is left."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        self._log.close()


class Bench:
    """The context a scenario runs in: sizes, database, workers, marks and progress."""

    def __init__(self, dsn: str, sizes: Sizes, worker_setup: WorkerSetup, work_dir: Path,
                 progress: Callable[[str], None] | None = None, checkpoint: bool = True) -> None:
        self.dsn = dsn
        self.checkpoint = checkpoint
        self.sizes = sizes
        self.worker_setup = worker_setup
        self.work_dir = work_dir
        self.marks_path = work_dir / "marks.txt"
        self.marks = Marks(self.marks_path)
        self._progress = progress or (lambda text: None)
        self.app = app
        self._marks_env = os.environ.get(MARKS_ENV)
        # The job body runs in this process too (eager calls, inline workflows).
        os.environ[MARKS_ENV] = str(self.marks_path)

    def close(self) -> None:
        self.app.close()
        if self._marks_env is None:
            os.environ.pop(MARKS_ENV, None)
        else:
            os.environ[MARKS_ENV] = self._marks_env

    # -- state between scenarios -----------------------------------------------------------

    def reset(self) -> None:
        """Empty pgtasks' tables and the marks file, then CHECKPOINT (as the peer harness does
        before each phase), so that no scenario inherits another's dead rows or dirty pages."""
        self.app.close()
        self.app.conf.dsn = self.dsn
        with self.connect() as conn:
            conn.execute("TRUNCATE pgtasks.jobs, pgtasks.results, pgtasks.workers")
            if self.checkpoint:
                conn.execute("CHECKPOINT")
        with contextlib.suppress(FileNotFoundError):
            self.marks_path.unlink()
        self.marks = Marks(self.marks_path)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def scalar(self, statement: str, params: Any = None) -> Any:
        with self.connect() as conn:
            row = conn.execute(statement, params).fetchone()
            return row[0] if row else None

    def remaining(self) -> int:
        """Jobs not finished yet (queued or running)."""
        return int(self.scalar("SELECT count(*) FROM pgtasks.jobs"))

    def server_cpu(self) -> dict[int, float]:
        """CPU seconds so far of every Postgres process (backends and background processes),
        by pid; empty when the server is not on this machine."""
        with self.connect() as conn:
            pids = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity")]
        return {pid: cpu_seconds(pid) for pid in pids}

    def failed(self) -> int:
        return int(self.scalar("SELECT count(*) FROM pgtasks.results WHERE state <> 'SUCCESS'"))

    # -- producing -------------------------------------------------------------------------

    def fill(self, phase: str, count: int, chunk: int = 1_000, queue: str | None = None) -> None:
        """Queue ``count`` no-op jobs through the bulk API (untimed set-up)."""
        from benchmarks.app import noop

        options = {"queue": queue} if queue else {}
        done = 0
        while done < count:
            k = min(chunk, count - done)
            self.app.enqueue_many(
                (noop, (make_payload(phase, done + i),), {}, options) for i in range(k))
            done += k
            self.progress(f"fill {phase}", done, count)

    # -- workers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def workers(self, setup: WorkerSetup | None = None,
                env: dict[str, str] | None = None) -> Iterator[Workers]:
        workers = Workers(self, setup or self.worker_setup, env or {})
        try:
            yield workers
        finally:
            workers.stop()

    def wait_for_marks(self, phase: str, want: int, workers: Workers, timeout: float,
                       label: str | None = None) -> None:
        """Wait until ``want`` distinct jobs of ``phase`` started; raise if a worker died or
        the time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            self.marks.poll()
            got = self.marks.count(phase)
            self.progress(label or phase, got, want)
            if got >= want:
                return
            workers.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{phase}: only {got}/{want} jobs started within "
                                     f"{timeout:g}s; see {workers.log_path}")
            time.sleep(0.01)

    def wait_until_finished(self, timeout: float = 60.0) -> float:
        """Wait until no job is left queued or running; returns the time it happened."""
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while True:
                left = conn.execute("SELECT count(*) FROM pgtasks.jobs").fetchone()
                if left is not None and left[0] == 0:
                    return time.time()
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"{left[0] if left else '?'} jobs still unfinished "
                                         f"after {timeout:g}s")
                time.sleep(0.005)

    def check_exactly_once(self, phase: str, expected: int) -> None:
        """Every job of ``phase`` ran, none twice, none failed."""
        self.marks.poll()
        started = self.marks.count(phase)
        duplicates = self.marks.duplicates.get(phase, 0)
        failed = self.failed()
        if started != expected or duplicates or failed:
            raise BenchmarkError(f"{phase}: {started}/{expected} jobs ran, {duplicates} ran "
                                 f"twice, {failed} failed")

    # -- display ---------------------------------------------------------------------------

    def progress(self, label: str, done: int, total: int = 0) -> None:
        """Show ``label: done/total`` (or just ``done`` when the total is not known)."""
        self._progress(f"{label}: {done:,}/{total:,}" if total > 0 else f"{label}: {done:,}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of a process (KiB), from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100), as the peer harness."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)
