"""The running workflow's context: its id, its checkpoints, and the position of the next
durable call.

Every durable call (a step, a sleep, a child task, a message) takes the next position. On replay
the call at a position finds the checkpoint recorded there and returns it instead of running
again; a checkpoint with another name means the code no longer matches the recorded run.
"""

from __future__ import annotations

import contextvars
import traceback as tb_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.errors import (
    NonDeterministicWorkflowError,
    SerializationError,
    WorkflowCancelled,
    WorkflowError,
)
from pgtasks.result import rebuild_exception
from pgtasks.worker.execute import exc_type_name
from pgtasks.workflow.store import NewStep, StepRecord, WorkflowStore

if TYPE_CHECKING:
    from pgtasks.app import PgTasks


@dataclass
class WorkflowContext:
    """What a running workflow knows about itself (one per run, per thread)."""

    app: PgTasks
    store: WorkflowStore
    workflow_id: str
    name: str
    recorded: dict[int, StepRecord]
    #: True when a worker runs it: long waits then give the worker slot back (Suspend).
    in_worker: bool
    position: int = 0
    in_step: bool = False

    @property
    def label(self) -> str:
        return f"workflow {self.name}[{self.workflow_id}]"

    def next(self, name: str) -> tuple[int, StepRecord | None]:
        """Take the next position for a durable call named ``name``; return its checkpoint
        if one was recorded by an earlier run."""
        position = self.position
        self.position += 1
        found = self.recorded.get(position)
        if found is not None and found.name != name:
            raise NonDeterministicWorkflowError(
                f"{self.label}: position {position} was recorded as {found.name!r} but the code "
                f"now calls {name!r} there; a workflow must make the same durable calls in the "
                f"same order on every run (was its code changed while it ran?)"
            )
        return position, found

    def record(self, step: NewStep,
               conn: psycopg.Connection[Any] | None = None) -> StepRecord | None:
        """Write a checkpoint. Returns the checkpoint another run of this workflow wrote at the
        same position first (use it instead), or None when ours was written. Raises
        :class:`WorkflowCancelled` if the workflow was cancelled meanwhile."""
        inserted, status = self.store.record_step(self.workflow_id, step, conn)
        if status == "CANCELLED":
            raise WorkflowCancelled(f"{self.label} was cancelled")
        if inserted:
            return None
        if conn is not None:
            # The caller's transaction must not commit its side effects for a lost race.
            raise WorkflowError(f"{self.label}: position {step.position} ({step.name}) was "
                                f"recorded concurrently by another run of this workflow")
        return self.store.load_step(self.workflow_id, step.position)

    # -- values -----------------------------------------------------------------------------

    def dumps(self, value: Any, what: str) -> bytes:
        """Serialize a step's value with the result serializer, naming ``what`` on failure."""
        try:
            return self.app.result_serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"{self.label}: {what}: {exc}") from None

    def value(self, record: StepRecord) -> Any:
        """The recorded output of a checkpoint, or its recorded error raised again."""
        if record.exc_type is not None:
            raise rebuild_exception(record.exc_type, record.exc_message, record.traceback)
        if record.output is None or record.content_type is None:
            return None
        return self.app.result_serializer.loads(record.output, record.content_type)

    def output_step(self, position: int, name: str, value: Any, *, inputs: bytes | None = None,
                    attempts: int = 1, started_at: datetime | None = None) -> NewStep:
        return NewStep(position, name, self.app.result_serializer.content_type, inputs,
                       self.dumps(value, f"the result of step {name!r} (position {position})"
                                  f" of type {type(value).__name__} cannot be stored"),
                       attempts=attempts, started_at=started_at)


def error_step(position: int, name: str, exc: BaseException, *, inputs: bytes | None = None,
               attempts: int = 1, started_at: datetime | None = None) -> NewStep:
    return NewStep(position, name, None, inputs, None, exc_type_name(exc), str(exc),
                   "".join(tb_module.format_exception(exc)), attempts, started_at)


_current: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "pgtasks_workflow", default=None)
#: The id ``with app.workflow_id(...)`` gives the next workflow started in this context.
next_workflow_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pgtasks_next_workflow_id", default=None)


def current() -> WorkflowContext | None:
    """The workflow running in this thread, if any."""
    return _current.get()


def require(what: str) -> WorkflowContext:
    ctx = _current.get()
    if ctx is None:
        raise WorkflowError(f"{what} only works inside a workflow (a function decorated with "
                            f"@app.workflow), and none is running here")
    return ctx


@contextmanager
def running(ctx: WorkflowContext) -> Iterator[WorkflowContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextmanager
def inside_step(ctx: WorkflowContext) -> Iterator[None]:
    """Durable calls made inside a step run plainly: the step is the unit of replay."""
    previous = ctx.in_step
    ctx.in_step = True
    try:
        yield
    finally:
        ctx.in_step = previous


def utcnow() -> datetime:
    return datetime.now(UTC)


def recheck_at(ctx: WorkflowContext, since: datetime, limit: datetime | None = None) -> datetime:
    """When a workflow that gave its slot back to wait (since ``since``) should look again.

    It is woken before that by the completion or message it waits for, also when that lands
    between its last look and its suspension (``jobs.wake_pending``); this is only a safety net
    (a message sent by an older version, a row changed by hand). Waiting half the time already
    waited (0.25 s at least, ``workflow_wait_poll_interval`` at most) bounds what it can add.
    """
    now = utcnow()
    waited = max(0.0, (now - since).total_seconds())
    delay = min(float(ctx.app.conf.workflow_wait_poll_interval), max(0.25, waited / 2))
    at = now + timedelta(seconds=delay)
    return at if limit is None else min(at, limit)
