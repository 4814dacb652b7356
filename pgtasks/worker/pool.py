"""Execution pools: threads (default) or processes, each enforcing soft and hard time limits.

A pool takes claimed jobs and hands each one's :class:`Outcome` to a callback. The soft limit
raises :class:`SoftTimeLimitExceeded` inside the task. The hard limit fails the job with
:class:`TimeLimitExceeded` and frees its slot: a process is killed and replaced; a thread cannot
be killed, so it is abandoned (an exception is injected to stop it if it runs Python code) and a
fresh thread takes its slot. Nothing holds a slot forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from pgtasks.errors import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from pgtasks.worker.execute import Outcome, execute, failure, time_limits

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.db.store import ClaimedJob

log = logging.getLogger("pgtasks.worker")

OnOutcome = Callable[[Outcome], None]


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type))


class Prefetch:
    """How many jobs a pool holds at once: one per slot, plus waiting ones while jobs are short.

    Waiting jobs keep the slots busy while the next claim is on its way, and let claims be large
    (one commit for many jobs). But a job waiting here is one that an idle worker elsewhere
    cannot take, so only as many wait as the slots finish in ``window`` seconds at the recent
    average run time: tiny jobs get up to ``max_held``, one-second jobs none.
    """

    def __init__(self, concurrency: int, max_held: int | None, window: float = 0.05) -> None:
        self.concurrency = concurrency
        self.max_held = max(max_held or concurrency, concurrency)
        self.window = window
        self.average: float | None = None  # seconds per job, moving average

    def observe(self, seconds: float) -> None:
        # Quick to rise, slow to fall: when long jobs follow short ones, stop hoarding at once.
        if self.average is None:
            self.average = seconds
        else:
            weight = 0.5 if seconds > self.average else 0.1
            self.average += weight * (seconds - self.average)

    def capacity(self) -> int:
        if self.average is None:
            return self.concurrency
        waiting = int(self.concurrency * self.window / max(self.average, 1e-6))
        return min(self.concurrency + waiting, self.max_held)


@dataclass
class _Running:
    job: ClaimedJob
    started: float
    soft: float | None
    hard: float | None
    soft_fired: bool = False


class _Slots:
    """What both pools share: the jobs they hold (running or waiting) and the room left."""

    kind = ""

    def __init__(self, app: PgTasks, concurrency: int, on_outcome: OnOutcome,
                 hostname: str, capacity: int | None = None) -> None:
        self.app = app
        self.concurrency = concurrency
        self.prefetch = Prefetch(concurrency, capacity)
        self.on_outcome = on_outcome
        self.hostname = hostname
        self._inbox: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy = 0
        self._held: dict[int, ClaimedJob] = {}

    def free_slots(self) -> int:
        """How many more jobs this pool takes now (running or waiting)."""
        with self._lock:
            return self.prefetch.capacity() - self._busy

    def capacity(self) -> int:
        """Jobs this pool holds at most right now (see :class:`Prefetch`)."""
        with self._lock:
            return self.prefetch.capacity()

    def room(self) -> tuple[int, int, int]:
        """(free, capacity, idle) at once: what :meth:`free_slots`, :meth:`capacity` and
        :meth:`idle_slots` return, under one lock (asked after every job)."""
        with self._lock:
            capacity = self.prefetch.capacity()
            return (capacity - self._busy, capacity, max(self.concurrency - self._busy, 0))

    def idle_slots(self) -> int:
        """Threads or children with nothing to run, even counting the jobs waiting for one."""
        with self._lock:
            return max(self.concurrency - self._busy, 0)

    def submit(self, job: ClaimedJob) -> None:
        with self._lock:
            self._busy += 1
            self._held[job.id] = job
        self._inbox.put(job)

    def held_job_ids(self) -> list[int]:
        """Jobs submitted and not finished: running or waiting for a thread or child."""
        with self._lock:
            return list(self._held)

    def idle(self) -> bool:
        with self._lock:
            return self._busy == 0


class ThreadPool(_Slots):
    """``concurrency`` threads taking jobs from one queue."""

    kind = "threads"

    def __init__(self, app: PgTasks, concurrency: int, on_outcome: OnOutcome,
                 hostname: str, capacity: int | None = None) -> None:
        super().__init__(app, concurrency, on_outcome, hostname, capacity)
        self._running: dict[int, _Running] = {}  # thread ident -> job
        self._abandoned: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()
        self._timer = threading.Thread(target=self._watch_limits, name="pgtasks-limits",
                                       daemon=True)
        self._timer.start()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._serve, name="pgtasks-task", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while True:
            job = self._inbox.get()
            if job is None:
                return
            soft, hard = time_limits(self.app, job)
            now = time.monotonic()
            with self._lock:
                self._running[me] = _Running(job, now, soft, hard)
            try:
                outcome = execute(self.app, job, self.hostname)
            except BaseException as exc:  # noqa: BLE001 - includes injected limits
                outcome = failure(job.id, exc)
            if me not in self._abandoned:
                # Reported before the job leaves _held: it is always in one of the two (see
                # Worker). Should the hard limit abandon this thread right now, the job gets two
                # outcomes, and the statement that records the first ignores the second.
                self.on_outcome(outcome)
            while True:
                try:
                    abandoned = self._finish(me, job, now)
                    break
                except (SoftTimeLimitExceeded, TimeLimitExceeded):
                    # A limit that fired just as the job returned: the job is already done.
                    continue
            if abandoned:
                return

    def _finish(self, me: int, job: ClaimedJob, started: float) -> bool:
        """Give the slot back after a job; True if the hard limit had already abandoned this
        thread. Safe to run again if an injected limit interrupts it: each step is idempotent,
        and the slot is counted back only by the call that took the job out of ``_held``."""
        with self._lock:
            self._running.pop(me, None)
            held = self._held.pop(job.id, None)
            if held is not None:
                self._busy -= 1
            if me in self._abandoned:
                # The hard limit already failed this job and gave its slot away.
                self._abandoned.discard(me)
                return True
        self.prefetch.observe(time.monotonic() - started)
        return False

    def _watch_limits(self) -> None:
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            expired: list[tuple[int, _Running]] = []
            with self._lock:
                for ident, run in self._running.items():
                    elapsed = now - run.started
                    if run.soft is not None and not run.soft_fired and elapsed >= run.soft:
                        run.soft_fired = True
                        _raise_in_thread(ident, SoftTimeLimitExceeded)
                    if run.hard is not None and elapsed >= run.hard:
                        expired.append((ident, run))
                for ident, run in expired:
                    self._running.pop(ident, None)
                    self._held.pop(run.job.id, None)
                    self._abandoned.add(ident)
                    self._busy -= 1
                    _raise_in_thread(ident, TimeLimitExceeded)
            for _ident, run in expired:
                self.on_outcome(failure(run.job.id, TimeLimitExceeded(
                    f"task {run.job.task_name}[{run.job.task_id}] exceeded its hard time limit "
                    f"of {run.hard:g}s and was stopped"), with_traceback=False))
                self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._inbox.put(None)


def _child_main(app: PgTasks, conn: Connection, hostname: str) -> None:
    """A process-pool child: run jobs sent over the pipe, soft limit by SIGALRM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_alarm(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    signal.signal(signal.SIGALRM, on_alarm)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job, soft = message
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            outcome = execute(app, job, hostname)
        except BaseException as exc:  # noqa: BLE001
            outcome = failure(job.id, exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send(outcome)


class _Child:
    def __init__(self, app: PgTasks, hostname: str) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(app, child_end, hostname),
                                   daemon=True, name="pgtasks-child")
        self.process.start()
        child_end.close()

    def kill(self) -> None:
        if self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(5)
        self.conn.close()


class ProcessPool(_Slots):
    """``concurrency`` forked child processes; one parent thread drives each child."""

    kind = "processes"

    def __init__(self, app: PgTasks, concurrency: int, on_outcome: OnOutcome,
                 hostname: str, capacity: int | None = None) -> None:
        super().__init__(app, concurrency, on_outcome, hostname, capacity)
        self._drivers: list[threading.Thread] = []
        self._children: list[_Child] = []

    def start(self) -> None:
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._drive, args=(index,), daemon=True,
                                      name="pgtasks-child-driver")
            self._drivers.append(thread)
            thread.start()

    def _drive(self, index: int) -> None:
        child = _Child(self.app, self.hostname)
        with self._lock:
            self._children.append(child)
        while True:
            job = self._inbox.get()
            if job is None:
                with contextlib.suppress(OSError):
                    child.conn.send(None)
                child.process.join(2)
                return
            soft, hard = time_limits(self.app, job)
            started = time.monotonic()
            outcome, child = self._run_in(child, job, soft, hard)
            # Reported before the job leaves _held: it is always in one of the two (see Worker).
            self.on_outcome(outcome)
            with self._lock:
                self._held.pop(job.id, None)
                self._busy -= 1
                self.prefetch.observe(time.monotonic() - started)

    def _run_in(self, child: _Child, job: ClaimedJob, soft: float | None,
                hard: float | None) -> tuple[Outcome, _Child]:
        try:
            child.conn.send((job, soft))
            if child.conn.poll(hard):
                return child.conn.recv(), child
            reason: BaseException = TimeLimitExceeded(
                f"task {job.task_name}[{job.task_id}] exceeded its hard time limit of "
                f"{hard:g}s; its process was killed")
        except (EOFError, OSError) as exc:
            reason = WorkerLostError(
                f"the process running task {job.task_name}[{job.task_id}] exited "
                f"unexpectedly ({exc!r})")
        child.kill()
        replacement = _Child(self.app, self.hostname)
        with self._lock:
            self._children = [c for c in self._children if c is not child] + [replacement]
        return failure(job.id, reason, with_traceback=False), replacement

    def stop(self) -> None:
        for _ in self._drivers:
            self._inbox.put(None)

    def kill_children(self) -> None:
        with self._lock:
            children = list(self._children)
        for child in children:
            child.kill()


def make_pool(kind: str, app: PgTasks, concurrency: int, on_outcome: OnOutcome,
              hostname: str, capacity: int | None = None) -> ThreadPool | ProcessPool:
    if kind == "threads":
        return ThreadPool(app, concurrency, on_outcome, hostname, capacity)
    if kind in ("processes", "prefork"):
        return ProcessPool(app, concurrency, on_outcome, hostname, capacity)
    raise ValueError(f"unknown pool {kind!r}: expected threads or processes")
