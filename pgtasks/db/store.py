"""Named database operations: the only caller of the SQL in ``pgtasks/sql/``.

Domain code (tasks, results, the worker) calls these methods and never sees SQL. Each method
takes an optional ``conn``: the caller's own connection (a transactional enqueue, the worker's
dedicated connections) or, when omitted, one borrowed from the app's pool.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtasks.db.connect import connect, redact
from pgtasks.db.queries import query
from pgtasks.errors import DatabaseError, DuplicateJob

_JOB_COLUMNS = (
    "task_id", "task_name", "queue", "priority", "run_at", "expires_at", "content_type",
    "payload", "headers", "parent_id", "root_id", "dedup_key", "partition_key",
)


@dataclass(slots=True)
class NewJob:
    """A job to insert."""

    task_id: str
    task_name: str
    queue: str
    content_type: str
    payload: bytes
    priority: int = 0
    run_at: datetime | None = None
    expires_at: datetime | None = None
    headers: Mapping[str, Any] | None = None
    parent_id: str | None = None
    root_id: str | None = None
    dedup_key: str | None = None
    partition_key: str | None = None

    def params(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _JOB_COLUMNS}
        values["headers"] = Jsonb(self.headers) if self.headers else None
        return values


@dataclass(slots=True)
class ClaimedJob:
    """A job a worker holds."""

    id: int
    task_id: str
    task_name: str
    queue: str
    priority: int
    run_at: datetime
    expires_at: datetime | None
    content_type: str
    payload: bytes
    headers: dict[str, Any] | None
    retries: int
    deliveries: int
    parent_id: str | None
    root_id: str | None
    revoked: bool


@dataclass(slots=True)
class Finished:
    """A job's final outcome, to be written by :meth:`Store.complete`."""

    job_id: int
    state: str  # SUCCESS | FAILURE
    content_type: str | None = None
    result: bytes | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    store: bool = True


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class Store:
    """Database operations over a lazily opened connection pool."""

    def __init__(self, dsn: str, pool_max_size: int = 10, retry_seconds: float = 10.0) -> None:
        self.dsn = dsn
        self._pool_max_size = pool_max_size
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self.retry_seconds = retry_seconds

    # -- connections ------------------------------------------------------------------------

    def pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = self._open_pool()
        return self._pool

    def _open_pool(self) -> ConnectionPool:
        return ConnectionPool(self.dsn, min_size=1, max_size=self._pool_max_size,
                              kwargs={"autocommit": True}, open=True, name="pgtasks")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def forget_pool_after_fork(self) -> None:
        """Drop the parent's pool in a forked child without touching its sockets."""
        self._pool = None
        self._pool_lock = threading.Lock()

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A dedicated autocommit connection (the worker's claim, completion and listen ones)."""
        kwargs.setdefault("autocommit", True)
        return connect(self.dsn, **kwargs)

    def claim_connection(self) -> psycopg.Connection[Any]:
        """A dedicated connection for claiming: its commits do not wait for the WAL to reach
        the disk (see ``jobs.claim_session``), which takes a flush off every claim's latency."""
        conn = self.connect()
        try:
            conn.execute(query("jobs.claim_session"))
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _borrow(self, conn: psycopg.Connection[Any] | None) -> Iterator[psycopg.Connection[Any]]:
        if conn is not None:
            yield conn
            return
        try:
            with self.pool().connection(timeout=self.retry_seconds) as pooled:
                yield pooled
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"Postgres at {redact(self.dsn)} is unreachable: {exc}") from exc
        except PoolTimeout as exc:
            raise DatabaseError(
                f"no connection to Postgres at {redact(self.dsn)} within "
                f"{self.retry_seconds:g}s: {exc}"
            ) from exc

    def _run(self, name: str, params: Mapping[str, Any] | None = None,
             conn: psycopg.Connection[Any] | None = None, *, rows: bool = True,
             retry: bool = True) -> list[tuple[Any, ...]]:
        """Run a named query; on a pooled connection, retry through a lost connection."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                with self._borrow(conn) as c:
                    cur = c.execute(query(name), params, prepare=True)
                    return cur.fetchall() if rows and cur.description else []
            except psycopg.Error as exc:
                if conn is not None or not retry or not _is_connection_error(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise DatabaseError(
                        f"Postgres at {redact(self.dsn)} is unreachable: {exc}"
                    ) from exc
            except DatabaseError:
                if conn is not None or not retry or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(self, job: NewJob, conn: psycopg.Connection[Any] | None = None) -> None:
        """Insert one job; raises :class:`DuplicateJob` if its deduplication key is taken.

        On a pooled connection, a connection lost mid-statement is retried; a retry that finds
        its own task id already stored means the first attempt committed.
        """
        attempts = 0
        while True:
            attempts += 1
            try:
                found = self._run("jobs.enqueue", job.params(), conn, retry=False)
                break
            except psycopg.errors.UniqueViolation as exc:
                if attempts > 1 and exc.diag.constraint_name == "jobs_task_id":
                    return
                if exc.diag.constraint_name == "jobs_task_id":
                    raise DuplicateJob(
                        f"a job with task id {job.task_id!r} is already queued or running",
                        job.task_id,
                    ) from exc
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseError) as exc:
                if conn is not None or attempts * 0.2 > self.retry_seconds:
                    if isinstance(exc, DatabaseError):
                        raise
                    raise DatabaseError(
                        f"could not enqueue {job.task_name} ({job.task_id}) into Postgres at "
                        f"{redact(self.dsn)}: {exc}"
                    ) from exc
                time.sleep(0.2)
        if not found and job.dedup_key is not None:
            existing = self._run("jobs.job_by_dedup_key", {"dedup_key": job.dedup_key}, conn)
            existing_id = existing[0][0] if existing else None
            raise DuplicateJob(
                f"{job.task_name}: a job with deduplication id {job.dedup_key!r} is already "
                f"queued or running (task id {existing_id})",
                existing_id,
            )

    def enqueue_many(self, jobs: Sequence[NewJob],
                     conn: psycopg.Connection[Any] | None = None) -> set[str]:
        """Insert many jobs in one statement; returns the task ids inserted (jobs whose
        deduplication key was taken are skipped)."""
        if not jobs:
            return set()
        params = {
            "task_ids": [j.task_id for j in jobs], "task_names": [j.task_name for j in jobs],
            "queues": [j.queue for j in jobs], "priorities": [j.priority for j in jobs],
            "run_ats": [j.run_at for j in jobs], "expires_ats": [j.expires_at for j in jobs],
            "content_types": [j.content_type for j in jobs],
            "payloads": [j.payload for j in jobs],
            "headers": [Jsonb(j.headers) if j.headers else None for j in jobs],
            "parent_ids": [j.parent_id for j in jobs], "root_ids": [j.root_id for j in jobs],
            "dedup_keys": [j.dedup_key for j in jobs],
            "partition_keys": [j.partition_key for j in jobs],
        }
        try:
            rows = self._run("jobs.enqueue_many", params, conn, retry=False)
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateJob(f"a task id in this batch is already queued or running: "
                               f"{exc.diag.message_detail}") from exc
        except psycopg.OperationalError as exc:
            raise DatabaseError(
                f"could not enqueue {len(jobs)} jobs into Postgres at {redact(self.dsn)}: {exc}"
            ) from exc
        return {r[0] for r in rows}

    # -- the worker's side ------------------------------------------------------------------

    def claim(self, conn: psycopg.Connection[Any], worker_id: int, queues: Sequence[str],
              n: int) -> list[ClaimedJob]:
        # Binary rows: payloads and timestamps arrive as they are stored, with no hex or text
        # to parse per row.
        rows = conn.execute(
            query("jobs.claim"), {"queues": list(queues), "n": n, "worker_id": worker_id},
            prepare=True, binary=True,
        ).fetchall()
        return [ClaimedJob(*row) for row in rows]

    def complete(self, conn: psycopg.Connection[Any], worker_id: int, worker_name: str,
                 finished: Sequence[Finished]) -> int:
        """Record a batch of outcomes in one statement; returns how many were still ours."""
        params = {
            "ids": [f.job_id for f in finished],
            "states": [f.state for f in finished],
            "content_types": [f.content_type for f in finished],
            "results": [f.result for f in finished],
            "exc_types": [f.exc_type for f in finished],
            "exc_messages": [f.exc_message for f in finished],
            "tracebacks": [f.traceback for f in finished],
            "store": [f.store for f in finished],
            "worker_id": worker_id,
            "worker_name": worker_name,
        }
        return len(conn.execute(query("jobs.complete"), params, prepare=True).fetchall())

    def retry_later(self, conn: psycopg.Connection[Any], worker_id: int, job_id: int,
                    delay: float, error: str | None) -> bool:
        rows = conn.execute(query("jobs.retry"), {"id": job_id, "worker_id": worker_id,
                                                  "delay": delay, "error": error}).fetchall()
        return bool(rows)

    def defer(self, conn: psycopg.Connection[Any], worker_id: int, job_id: int,
              run_at: datetime) -> bool:
        rows = conn.execute(query("jobs.defer"), {"id": job_id, "worker_id": worker_id,
                                                  "run_at": run_at}).fetchall()
        return bool(rows)

    def release(self, conn: psycopg.Connection[Any], worker_id: int,
                job_ids: Sequence[int]) -> None:
        conn.execute(query("jobs.release"), {"ids": list(job_ids), "worker_id": worker_id})

    def release_unheld(self, conn: psycopg.Connection[Any], worker_id: int,
                       keep: Iterable[int]) -> int:
        """Requeue this worker's running jobs other than ``keep``; returns how many."""
        row = conn.execute(query("jobs.release_unheld"),
                           {"worker_id": worker_id, "keep": list(keep)}).fetchone()
        return int(row[0]) if row else 0

    def register_worker(self, conn: psycopg.Connection[Any], *, name: str, hostname: str,
                        pid: int, queues: Sequence[str], concurrency: int,
                        lease_seconds: float) -> int:
        row = conn.execute(query("workers.register_worker"), {
            "name": name, "hostname": hostname, "pid": pid, "queues": list(queues),
            "concurrency": concurrency, "lease_seconds": lease_seconds,
        }).fetchone()
        assert row is not None
        return int(row[0])

    def heartbeat(self, conn: psycopg.Connection[Any], worker_id: int, stopping: bool) -> bool:
        """Extend the lease; False if the worker had been declared dead."""
        rows = conn.execute(query("workers.heartbeat"),
                            {"id": worker_id, "stopping": stopping}).fetchall()
        return bool(rows)

    def unregister_worker(self, conn: psycopg.Connection[Any], worker_id: int) -> None:
        conn.execute(query("workers.unregister_worker"), {"id": worker_id})

    def reap(self, conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """Requeue the jobs of dead workers; returns (dead workers, jobs requeued)."""
        row = conn.execute(query("workers.reap")).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def prune_results(self, conn: psycopg.Connection[Any], max_age: float,
                      limit: int = 5000) -> int:
        """Delete task results, finished workflow runs (with their steps and events) and
        untaken messages older than ``max_age`` seconds, in bounded batches."""
        total = 0
        while True:
            cur = conn.execute(query("results.prune_results"),
                               {"max_age": max_age, "limit": limit})
            total += cur.rowcount
            if cur.rowcount < limit:
                break
        while True:
            row = conn.execute(query("results.prune_workflows"),
                               {"max_age": max_age, "limit": limit}).fetchone()
            runs, messages = (int(row[0]), int(row[1])) if row else (0, 0)
            total += runs + messages
            if runs < limit and messages < limit:
                return total

    # -- results and inspection -------------------------------------------------------------

    def get_result(self, task_id: str) -> dict[str, Any] | None:
        with self._borrow(None) as c, c.cursor(row_factory=dict_row) as cur:
            cur.execute(query("results.get_result"), {"task_id": task_id}, prepare=True)
            return cur.fetchone()

    def job_status(self, task_id: str) -> dict[str, Any] | None:
        with self._borrow(None) as c, c.cursor(row_factory=dict_row) as cur:
            cur.execute(query("jobs.job_status"), {"task_id": task_id}, prepare=True)
            return cur.fetchone()

    def forget_result(self, task_id: str) -> None:
        self._run("results.forget_result", {"task_id": task_id}, rows=False)

    def revoke(self, task_id: str, reason: str) -> str:
        """Revoke a task: 'revoked' if it had not started, 'marked' if running, else 'unknown'."""
        if self._run("jobs.revoke_queued", {"task_id": task_id, "reason": reason}):
            return "revoked"
        if self._run("jobs.revoke_running", {"task_id": task_id}):
            return "marked"
        return "unknown"

    def revoke_waited_for(self, workflow_id: str, reason: str) -> int:
        """Revoke the queued jobs a workflow waits for; returns how many."""
        ids = [r[0] for r in self._run("jobs.waited_for", {"workflow_id": workflow_id})]
        return sum(self.revoke(task_id, reason) == "revoked" for task_id in ids)

    def purge(self, queues: Sequence[str]) -> int:
        with self._borrow(None) as c:
            return c.execute(query("jobs.purge"), {"queues": list(queues)}).rowcount

    def queue_counts(self) -> list[dict[str, Any]]:
        return self._dicts("jobs.queue_counts")

    def result_counts(self) -> list[dict[str, Any]]:
        return self._dicts("jobs.result_counts")

    def list_workers(self) -> list[dict[str, Any]]:
        return self._dicts("workers.list_workers")

    def _dicts(self, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._borrow(None) as c, c.cursor(row_factory=dict_row) as cur:
            cur.execute(query(name), params)
            return cur.fetchall()

    # -- beat schedules ---------------------------------------------------------------------

    def sync_schedules(self, conn: psycopg.Connection[Any], entries: Sequence[Mapping[str, str]],
                       now: datetime) -> list[str]:
        """Register beat's entries (name, task_name, schedule, catch_up) and disable the rest,
        in one transaction; returns the names disabled."""
        ordered = sorted(entries, key=lambda e: e["name"])
        names = [e["name"] for e in ordered]
        with conn.transaction():
            conn.execute(query("schedules.sync_schedules"), {
                "names": names, "task_names": [e["task_name"] for e in ordered],
                "schedules": [e["schedule"] for e in ordered],
                "catch_ups": [e["catch_up"] for e in ordered], "now": now,
            })
            gone = conn.execute(query("schedules.disable_missing_schedules"),
                                {"names": names}).fetchall()
        return [row[0] for row in gone]

    def list_schedules(self, conn: psycopg.Connection[Any] | None = None
                       ) -> list[dict[str, Any]]:
        """Every schedule row (name, task_name, schedule, catch_up, anchor, last_tick, enabled,
        paused, last_run_at, last_task_id, total_runs), by name."""
        with self._borrow(conn) as c, c.cursor(row_factory=dict_row) as cur:
            cur.execute(query("schedules.list_schedules"), prepare=True)
            return cur.fetchall()

    def advance_schedule(self, conn: psycopg.Connection[Any], *, name: str, schedule: str,
                         expected_tick: datetime, new_tick: datetime, runs: int,
                         task_id: str | None, now: datetime) -> bool:
        """Compare-and-set a schedule's last tick; False if another scheduler got there first.
        Run it in the transaction that enqueues the ticks' jobs."""
        return bool(conn.execute(query("schedules.advance_schedule"), {
            "name": name, "schedule": schedule, "expected_tick": expected_tick,
            "new_tick": new_tick, "runs": runs, "task_id": task_id, "now": now,
        }, prepare=True).fetchall())

    def record_schedule_run(self, conn: psycopg.Connection[Any], name: str, task_id: str,
                            now: datetime) -> bool:
        """Record an extra run of a schedule; False if there is no schedule of that name."""
        return bool(self._run("schedules.record_schedule_run",
                              {"name": name, "task_id": task_id, "now": now}, conn))

    def set_schedule_paused(self, name: str, paused: bool, now: datetime) -> bool:
        """Pause or resume a schedule; False if there is no schedule of that name."""
        which = "schedules.pause_schedule" if paused else "schedules.resume_schedule"
        return bool(self._run(which, {"name": name, "now": now}))

    # -- queue limits -----------------------------------------------------------------------

    def claim_limited(self, conn: psycopg.Connection[Any], worker_id: int, spec: Any, n: int,
                      held: Sequence[int], mine: Sequence[int], release: Sequence[int],
                      ) -> tuple[list[tuple[ClaimedJob, int | None]], float | None]:
        """Claim up to ``n`` jobs of a limited queue (a :class:`pgtasks.queues.QueueSpec`),
        each with the concurrency slot it holds on ``conn`` (see ``pgtasks.claim_limited``).
        ``held``: jobs this worker still runs; ``mine``: slots it holds; ``release``: slots to
        give back first. Returns the jobs and, when a limit stopped the claim, the seconds
        until the next rate token (0: the queue is full while jobs wait)."""
        rows = conn.execute(query("queues.claim_limited"), {
            "queue": spec.name, "worker_id": worker_id, "n": n, "concurrency": spec.concurrency,
            "rate": spec.rate, "partitioned": spec.partition_by is not None, "held": list(held),
            "mine": list(mine), "release": list(release),
        }, prepare=True).fetchall()
        jobs = [(ClaimedJob(*row[:-2]), row[-2]) for row in rows if row[0] is not None]
        waits = [row[-1] for row in rows if row[-1] is not None]
        return jobs, (min(waits) if waits else None)

    def release_slots(self, conn: psycopg.Connection[Any], queue: str,
                      slots: Sequence[int]) -> None:
        """Give back concurrency slots held by ``conn``."""
        conn.execute(query("queues.release_slots"), {"queue": queue, "slots": list(slots)})

    def take_task_tokens(self, conn: psycopg.Connection[Any], worker_id: int, task_name: str,
                         job_ids: Sequence[int], rate: float) -> tuple[set[int], float | None]:
        """Admit claimed jobs of a rate-limited task, in the order given; the refused ones go
        back to their queue. Returns the admitted ids and the seconds until the next token."""
        row = conn.execute(query("queues.take_task_tokens"), {
            "task_name": task_name, "worker_id": worker_id, "ids": list(job_ids), "rate": rate,
        }, prepare=True).fetchone()
        assert row is not None
        return set(row[0] or ()), row[1]

    def lock_queues(self, conn: psycopg.Connection[Any], queues: Sequence[str]) -> None:
        """Take several limited queues' claim locks, in the order given, until the transaction
        ends."""
        conn.execute(query("queues.lock_queues"), {"queues": list(queues)})
