"""The worker: claim jobs in batches sized to free slots, run them, record outcomes in batches.

Threads, each with its own connection:
- the claim loop (main): woken by LISTEN/NOTIFY, by a freed slot, or by the poll interval;
- the listener: LISTEN ``pgtasks_jobs`` and wake the claim loop for our queues;
- the completer: writes outcomes in batches, one statement per batch (group commit); a job is
  acknowledged only by that committed statement, so a crash loses nothing;
- the lease: heartbeats, reaping dead workers' jobs, pruning old results.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.db.queries import query
from pgtasks.db.store import Finished
from pgtasks.errors import PgTasksError
from pgtasks.queues import ClaimPlan, known_queues, warn_unknown_queues
from pgtasks.worker.execute import Outcome
from pgtasks.worker.lease import Lease
from pgtasks.worker.pool import ProcessPool, ThreadPool, make_pool

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

log = logging.getLogger("pgtasks.worker")

class Worker:
    """Runs the jobs of some queues until stopped.

    ``Worker(app, queues=["default"], concurrency=8, pool="threads").run()`` blocks and handles
    SIGTERM/SIGINT: the first stops claiming and lets running jobs finish within
    ``worker_shutdown_grace`` seconds, then gives back what is unfinished; a second gives back
    everything at once.
    """

    def __init__(self, app: PgTasks, queues: Sequence[str] | None = None,
                 concurrency: int | None = None, pool: str | None = None,
                 hostname: str | None = None, shutdown_grace: float | None = None,
                 extra_services: Sequence[Callable[[Worker], Any]] = ()) -> None:
        self.app = app
        conf = app.conf
        self.queues = list(queues or [conf.task_default_queue])
        self.concurrency = int(concurrency or conf.worker_concurrency or
                               max(8, 4 * (os.cpu_count() or 1)))
        if self.concurrency < 1:
            raise PgTasksError(f"worker concurrency must be >= 1, got {self.concurrency}")
        self.pool_kind = pool or conf.worker_pool
        self.hostname = hostname or f"pgtasks@{socket.gethostname()}"
        self.name = f"{self.hostname}:{os.getpid()}"
        self.shutdown_grace = float(conf.worker_shutdown_grace if shutdown_grace is None
                                    else shutdown_grace)
        self.poll_interval = float(conf.worker_poll_interval)
        self.claim_batch = int(conf.worker_claim_batch)
        # The most jobs held at once, running or waiting for a slot (Celery's prefetch); the
        # pool holds fewer while jobs are long (pgtasks.worker.pool.Prefetch).
        self.capacity = self.concurrency * max(1, int(conf.worker_prefetch_multiplier))
        self.complete_batch = int(conf.worker_complete_batch)
        self.lease_seconds = float(conf.worker_lease_seconds)
        self.extra_services = list(extra_services)
        self.worker_id = 0
        self._wake = threading.Event()
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPool | ProcessPool | None = None
        self._lease: Lease | None = None
        self._reconnect_max = float(conf.worker_reconnect_max_delay)
        self.completed = 0
        self._unrecorded: set[int] = set()
        warn_unknown_queues(self.queues, known_queues(
            conf.task_default_queue, app.queue_specs, (t.queue for t in app.tasks.values()),
            conf.task_routes), repr(app))
        # The claim plan, made at start (when every task is registered); None: the plain claim.
        self._limits: ClaimPlan | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run until a signal (or :meth:`stop`); install SIGTERM/SIGINT handlers."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self._claim_loop()
            self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        """Register, start the pool and the helper threads (not the claim loop)."""
        with self.app.store.connect() as conn:
            self._register(conn)
        self._pool = make_pool(self.pool_kind, self.app, self.concurrency, self._on_outcome,
                               self.hostname, self.capacity)
        self._pool.start()
        self._lease = Lease(self.app, lambda: self.worker_id, self._stopping.is_set,
                            self._on_lease_lost)
        self._lease.start()
        for target, name in ((self._listen, "pgtasks-listen"),
                             (self._complete_loop, "pgtasks-complete")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        for service in self.extra_services:
            service(self)
        # None when no served queue has limits and no task a rate limit: the plain claim.
        self._limits = ClaimPlan.for_worker(
            self.queues, self.app.queue_specs,
            {t.name: t.rate for t in self.app.tasks.values() if t.rate is not None},
            held=lambda: self._pool.held_job_ids() if self._pool is not None else [],
            wake=self._wake.set, poll_interval=self.poll_interval)
        log.info("worker %s (id %d) serving %s with %d %s", self.name, self.worker_id,
                 ",".join(self.queues), self.concurrency, self.pool_kind)

    def run_in_background(self) -> threading.Thread:
        """Start the worker on a thread of this process (``app.launch()``)."""
        self.start()

        def body() -> None:
            self._claim_loop()
            self._shutdown()

        thread = threading.Thread(target=body, name="pgtasks-worker", daemon=True)
        thread.start()
        return thread

    def stop(self, graceful: bool = True) -> None:
        """Stop claiming; with ``graceful=False`` give back running jobs at once."""
        if self._stopping.is_set() or not graceful:
            self._hard_stop.set()
        self._stopping.set()
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():
            log.warning("second signal: releasing every unfinished job now")
        else:
            log.warning("signal %d: finishing running jobs (grace %gs), claiming nothing new",
                        signum, self.shutdown_grace)
        self.stop()

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        self.worker_id = self.app.store.register_worker(
            conn, name=self.name, hostname=self.hostname, pid=os.getpid(), queues=self.queues,
            concurrency=self.concurrency, lease_seconds=self.lease_seconds)

    def _on_lease_lost(self) -> None:
        with self.app.store.connect() as conn:
            self._register(conn)

    # -- claiming ----------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        assert self._pool is not None
        conn: psycopg.Connection[Any] | None = None
        delay = 0.05
        claim_lost = False
        while not self._stopping.is_set():
            self._wake.clear()
            wanted = self._claim_size()
            got = 0
            if wanted > 0:
                try:
                    if conn is None or conn.closed:
                        conn = self.app.store.claim_connection()
                    if claim_lost:
                        self._release_unheld(conn)
                        claim_lost = False
                    jobs = self.claim(conn, wanted)
                    delay = 0.05
                except (psycopg.Error, PgTasksError) as exc:
                    log.warning("claim failed (%s); reconnecting in %.2fs", exc, delay)
                    # The claim may have committed with its reply lost: its jobs would stay
                    # ours, unrun, for as long as this worker lives. Give them back first thing.
                    claim_lost = True
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self._reconnect_max)
                    continue
                got = len(jobs)
                for job in jobs:
                    self._pool.submit(job)
            if got and got == wanted:
                continue
            self._wake.wait(self.poll_interval)
        if conn is not None:
            conn.close()

    def _release_unheld(self, conn: psycopg.Connection[Any]) -> None:
        """Give back jobs recorded as this worker's that it neither holds nor has finished.

        The pool reports a job's outcome before it stops holding it, so reading what the pool
        holds first and then what is unrecorded can't miss a job moving from one to the other.
        """
        assert self._pool is not None
        keep = set(self._pool.held_job_ids())
        keep |= set(self._unrecorded)
        released = self.app.store.release_unheld(conn, self.worker_id, keep)
        if released:
            log.warning("gave back %d jobs of a claim whose reply was lost", released)

    def _claim_size(self) -> int:
        """How many jobs to claim now: as many as fit when a slot is idle or half the capacity
        is free, else none (while jobs wait for a slot, a claim of one or two jobs would cost a
        commit for little)."""
        assert self._pool is not None
        free, capacity, idle = self._pool.room()
        if free > 0 and (2 * free >= capacity or idle > 0):
            return min(free, self.claim_batch)
        return 0

    def claim(self, conn: psycopg.Connection[Any], n: int) -> list[Any]:
        """Claim up to ``n`` ready jobs, within the queues' limits (:mod:`pgtasks.queues`)."""
        if self._limits is None:
            return self.app.store.claim(conn, self.worker_id, self.queues, n)
        # A limited claim runs on the plan's own connection: it holds the concurrency slots.
        return self._limits.claim(self.app.store, self.worker_id, n)

    def _listen(self) -> None:
        delay = 0.05
        ours = set(self.queues)
        while not self._stopping.is_set():
            try:
                with self.app.store.connect() as conn:
                    conn.execute(query("workers.listen_jobs"))
                    self._wake.set()
                    delay = 0.05
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.payload in ours:
                                self._wake.set()
            except (psycopg.Error, PgTasksError) as exc:
                log.debug("listener reconnecting: %s", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, self._reconnect_max)

    # -- completing --------------------------------------------------------------------------

    def _on_outcome(self, outcome: Outcome) -> None:
        # Until its outcome is written, a finished job is still this worker's (release_unheld).
        self._unrecorded.add(outcome.job_id)
        self._outcomes.put(outcome)
        if not self._wake.is_set() and self._claim_size():
            self._wake.set()

    def _complete_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        pending: list[Outcome] = []
        closing = False
        delay = 0.05
        while True:
            if not pending:
                item = self._outcomes.get()
                if item is None:
                    break
                pending.append(item)
            while len(pending) < self.complete_batch:
                try:
                    item = self._outcomes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                pending.append(item)
            try:
                if conn is None or conn.closed:
                    conn = self.app.store.connect()
                self._write(conn, pending)
                self._unrecorded.difference_update(o.job_id for o in pending)
                pending = []
                delay = 0.05
            except (psycopg.Error, PgTasksError) as exc:
                log.warning("recording %d outcomes failed (%s); retrying", len(pending), exc)
                if conn is not None:
                    conn.close()
                conn = None
                if self._hard_stop.is_set() and closing:
                    break
                time.sleep(delay)
                delay = min(delay * 2, self._reconnect_max)
                continue
            if closing:
                break
        if conn is not None:
            conn.close()

    def _write(self, conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> None:
        store = self.app.store
        finished: list[Finished] = []
        for o in outcomes:
            if o.kind == "retry":
                store.retry_later(conn, self.worker_id, o.job_id, o.delay, o.exc_message)
            elif o.kind == "defer":
                assert o.run_at is not None
                store.defer(conn, self.worker_id, o.job_id, o.run_at)
            else:
                state = {"success": "SUCCESS", "failure": "FAILURE", "revoked": "REVOKED"}[o.kind]
                finished.append(Finished(o.job_id, state, o.content_type, o.result, o.exc_type,
                                         o.exc_message, o.traceback, o.store))
        if finished:
            kept = store.complete(conn, self.worker_id, self.name, finished)
            if kept < len(finished):
                log.warning("%d outcomes were not recorded: their jobs had been requeued after "
                            "this worker's lease expired", len(finished) - kept)
        self.completed += len(outcomes)

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        assert self._pool is not None
        deadline = time.monotonic() + self.shutdown_grace
        while not self._pool.idle() and not self._hard_stop.is_set():
            if time.monotonic() >= deadline:
                log.warning("grace period over: releasing unfinished jobs")
                break
            time.sleep(0.02)
        unfinished = self._pool.held_job_ids()
        self._pool.stop()
        self._outcomes.put(None)
        for thread in self._threads:
            if thread.name == "pgtasks-complete":
                thread.join(self.shutdown_grace if not self._hard_stop.is_set() else 2.0)
        try:
            with self.app.store.connect() as conn:
                if unfinished:
                    self.app.store.release(conn, self.worker_id, unfinished)
                    log.warning("released %d unfinished jobs back to their queues",
                                len(unfinished))
                self.app.store.unregister_worker(conn, self.worker_id)
        except (psycopg.Error, PgTasksError) as exc:
            log.warning("could not unregister cleanly (%s); the lease will expire", exc)
        if isinstance(self._pool, ProcessPool):
            self._pool.kill_children()
        if self._lease is not None:
            self._lease.stop()
        self._done.set()
        log.info("worker %s stopped after %d jobs", self.name, self.completed)
