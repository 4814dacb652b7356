"""Named database operations of workflows, chords, events and messages.

Like :class:`pgtasks.db.store.Store` for the core queue, this is the only caller of the SQL in
``pgtasks/sql/workflows.sql``; the workflow code above it never sees SQL text. Each method takes
an optional ``conn`` so that several operations can share one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from pgtasks.db.queries import query

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.db.store import NewJob


@dataclass(slots=True)
class StepRecord:
    """A checkpoint: the recorded output (or error) of the step at ``position``."""

    position: int
    name: str
    content_type: str | None
    output: bytes | None
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    finished_at: datetime


@dataclass(slots=True)
class NewStep:
    """A checkpoint to write."""

    position: int
    name: str
    content_type: str | None = None
    inputs: bytes | None = None
    output: bytes | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    attempts: int = 1
    started_at: datetime | None = None


class WorkflowStore:
    """Database operations of the workflow layer, over the app's connection pool."""

    def __init__(self, app: PgTasks) -> None:
        self.app = app

    @contextlib.contextmanager
    def connection(self, conn: psycopg.Connection[Any] | None = None,
                   ) -> Iterator[psycopg.Connection[Any]]:
        """``conn`` itself, or one borrowed from the app's pool."""
        if conn is not None:
            yield conn
            return
        with self.app.store.pool().connection() as pooled:
            yield pooled

    @contextlib.contextmanager
    def transaction(self, conn: psycopg.Connection[Any] | None = None,
                    ) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction: a pooled one, or the caller's ``conn``, whose
        own open transaction is joined (and left for the caller to commit or roll back)."""
        if conn is not None and not conn.autocommit:
            yield conn
            return
        with self.connection(conn) as c, c.transaction():
            yield c

    def _rows(self, name: str, params: Mapping[str, Any],
              conn: psycopg.Connection[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.connection(conn) as c:
            cur = c.execute(query(f"workflows.{name}"), params, prepare=True)
            return cur.fetchall() if cur.description else []

    def _dicts(self, name: str, params: Mapping[str, Any],
               conn: psycopg.Connection[Any] | None = None) -> list[dict[str, Any]]:
        with self.connection(conn) as c, c.cursor(row_factory=dict_row) as cur:
            cur.execute(query(f"workflows.{name}"), params)
            return cur.fetchall()

    # -- runs -------------------------------------------------------------------------------

    def insert_workflow(self, workflow_id: str, name: str, status: str, job: NewJob,
                        conn: psycopg.Connection[Any] | None = None,
                        forked_from: str | None = None) -> bool:
        return bool(self._rows("insert_workflow", {
            "workflow_id": workflow_id, "name": name, "status": status, "queue": job.queue,
            "content_type": job.content_type, "inputs": job.payload,
            "forked_from": forked_from}, conn))

    def insert_running_job(self, job: NewJob, worker_id: int,
                           conn: psycopg.Connection[Any] | None = None) -> int:
        return int(self._rows("insert_running_job", {
            "task_id": job.task_id, "task_name": job.task_name, "queue": job.queue,
            "priority": job.priority, "content_type": job.content_type, "payload": job.payload,
            "worker_id": worker_id, "parent_id": job.parent_id, "root_id": job.root_id},
            conn)[0][0])

    def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        found = self._dicts("get_workflow", {"workflow_id": workflow_id})
        return found[0] if found else None

    def begin_run(self, workflow_id: str) -> bool:
        """Mark the run started; False if it already finished or was cancelled."""
        return bool(self._rows("begin_run", {"workflow_id": workflow_id}))

    def load_steps(self, workflow_id: str) -> dict[int, StepRecord]:
        rows = self._rows("load_steps", {"workflow_id": workflow_id})
        return {row[0]: StepRecord(*row) for row in rows}

    def load_step(self, workflow_id: str, position: int) -> StepRecord | None:
        rows = self._rows("load_step", {"workflow_id": workflow_id, "position": position})
        return StepRecord(*rows[0]) if rows else None

    def record_step(self, workflow_id: str, step: NewStep,
                    conn: psycopg.Connection[Any] | None = None) -> tuple[bool, str | None]:
        """Write a checkpoint; returns (written by us, the workflow's status)."""
        rows = self._rows("record_step", {
            "workflow_id": workflow_id, "position": step.position, "name": step.name,
            "content_type": step.content_type, "inputs": step.inputs, "output": step.output,
            "exc_type": step.exc_type, "exc_message": step.exc_message,
            "traceback": step.traceback, "attempts": step.attempts,
            "started_at": step.started_at}, conn)
        if not rows:
            return False, None
        return bool(rows[0][0]), rows[0][1]

    def finish_workflow(self, workflow_id: str, status: str, output: bytes | None = None,
                        exc_type: str | None = None, exc_message: str | None = None,
                        traceback: str | None = None) -> None:
        self._rows("finish_workflow", {
            "workflow_id": workflow_id, "status": status, "output": output,
            "exc_type": exc_type, "exc_message": exc_message, "traceback": traceback})

    # -- children, groups, chords -----------------------------------------------------------

    def results_of(self, task_ids: Sequence[str],
                   conn: psycopg.Connection[Any] | None = None) -> dict[str, dict[str, Any]]:
        found = self._dicts("results_of", {"task_ids": list(task_ids)}, conn)
        return {row["task_id"]: row for row in found}

    def fail_results(self, task_ids: Sequence[str], task_names: Sequence[str], queue: str,
                     exc_type: str | None, exc_message: str | None, traceback: str | None,
                     parent_id: str | None, conn: psycopg.Connection[Any] | None = None) -> None:
        self._rows("fail_results", {
            "task_ids": list(task_ids), "task_names": list(task_names), "queue": queue,
            "exc_type": exc_type, "exc_message": exc_message, "traceback": traceback,
            "parent_id": parent_id}, conn)

    def insert_chord(self, chord_id: str, members: Sequence[str], queue: str,
                     content_type: str, payload: bytes, conn: psycopg.Connection[Any]) -> None:
        self._rows("insert_chord", {
            "chord_id": chord_id, "remaining": len(members), "members": list(members),
            "queue": queue, "content_type": content_type, "payload": payload}, conn)

    def take_chord(self, chord_id: str, conn: psycopg.Connection[Any]) -> bool:
        return bool(self._rows("take_chord", {"chord_id": chord_id}, conn))

    # -- events and messages ----------------------------------------------------------------

    def set_event(self, workflow_id: str, key: str, content_type: str, value: bytes,
                  conn: psycopg.Connection[Any] | None = None) -> None:
        self._rows("set_event", {"workflow_id": workflow_id, "key": key,
                                 "content_type": content_type, "value": value}, conn)

    def get_event(self, workflow_id: str, key: str) -> tuple[str, bytes] | None:
        rows = self._rows("get_event", {"workflow_id": workflow_id, "key": key})
        return (rows[0][0], rows[0][1]) if rows else None

    def send_message(self, workflow_id: str, topic: str, content_type: str, message: bytes,
                     conn: psycopg.Connection[Any] | None = None) -> None:
        self._rows("send_message", {"workflow_id": workflow_id, "topic": topic,
                                    "content_type": content_type, "message": message}, conn)

    def take_message(self, workflow_id: str, topic: str,
                     conn: psycopg.Connection[Any]) -> tuple[str, bytes] | None:
        rows = self._rows("take_message", {"workflow_id": workflow_id, "topic": topic}, conn)
        return (rows[0][0], rows[0][1]) if rows else None

    # -- management -------------------------------------------------------------------------

    def list_workflows(self, status: str | None, name: str | None,
                       limit: int) -> list[dict[str, Any]]:
        return self._dicts("list_workflows", {"status": status, "name": name, "limit": limit})

    def list_steps(self, workflow_id: str) -> list[dict[str, Any]]:
        return self._dicts("list_steps", {"workflow_id": workflow_id})

    def cancel_workflow(self, workflow_id: str) -> bool:
        return bool(self._rows("cancel_workflow", {"workflow_id": workflow_id}))

    def reopen_workflow(self, workflow_id: str,
                        conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
        found = self._dicts("reopen_workflow", {"workflow_id": workflow_id}, conn)
        return found[0] if found else None

    def copy_steps(self, workflow_id: str, new_id: str, before: int,
                   conn: psycopg.Connection[Any]) -> None:
        self._rows("copy_steps", {"workflow_id": workflow_id, "new_id": new_id,
                                  "before": before}, conn)
