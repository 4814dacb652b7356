"""Durable workflows: plain Python functions whose steps are checkpointed in Postgres.

A workflow run is a job (task name = the workflow's name, task id = the workflow id) plus a row in
``pgtasks.workflows``. Running it executes the function from the top; each step, sleep or other
durable call returns its checkpoint when an earlier run recorded one, so a run resumed after a
crash continues at the first unfinished step. Steps retry in place; a step that exhausts its
retries records its error and the workflow fails with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.db.store import Finished
from pgtasks.errors import (
    DatabaseError,
    Retry,
    SerializationError,
    TaskError,
    WorkflowCancelled,
    WorkflowConflictError,
    WorkflowError,
)
from pgtasks.result import AsyncResult, rebuild_exception
from pgtasks.task import Task, current_request_stack
from pgtasks.worker.execute import Suspend, exc_type_name
from pgtasks.workflow.context import (
    WorkflowContext,
    current,
    error_step,
    inside_step,
    next_workflow_id,
    require,
    running,
    utcnow,
)
from pgtasks.workflow.owner import InlineOwner
from pgtasks.workflow.store import WorkflowStore

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.db.store import NewJob

log = logging.getLogger("pgtasks.workflow")

#: ``@app.workflow(...)`` options; anything else is a typo and raises at decoration time.
WORKFLOW_OPTIONS = frozenset({"name", "queue", "priority", "serializer", "time_limit",
                              "soft_time_limit"})
#: ``@app.step(...)`` options.
STEP_OPTIONS = frozenset({"name", "retries", "retry_delay", "retry_backoff", "retry_on"})


_attach_lock = threading.Lock()


def workflows_of(app: PgTasks) -> WorkflowStore:
    """The app's workflow store (created on first use)."""
    store: WorkflowStore | None = getattr(app, "_workflow_store", None)
    if store is None:
        with _attach_lock:
            store = getattr(app, "_workflow_store", None)
            if store is None:
                store = WorkflowStore(app)
                app._workflow_store = store  # type: ignore[attr-defined]
    return store


def inline_owner(app: PgTasks) -> InlineOwner:
    """This process's lease for the app's inline workflows (a forked child gets its own)."""
    with _attach_lock:
        owner: InlineOwner | None = getattr(app, "_workflow_owner", None)
        if owner is None or owner.pid != os.getpid():
            owner = InlineOwner(app)
            app._workflow_owner = owner  # type: ignore[attr-defined]
        return owner


class WorkflowHandle(AsyncResult):
    """The handle of a workflow run: an :class:`AsyncResult` whose id is the workflow id."""

    @property
    def workflow_id(self) -> str:
        return self.id

    def get_status(self) -> str | None:
        """PENDING, RUNNING, SUCCESS, FAILURE or CANCELLED (None: no such workflow)."""
        row = workflows_of(self.app).get_workflow(self.id)
        return None if row is None else str(row["status"])

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 1.0, **extra: Any) -> Any:
        """Wait for the outcome. A finished workflow's outcome outlives its task result."""
        row = workflows_of(self.app).get_workflow(self.id)
        if row is not None and row["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return outcome_of(self.app, row, propagate)
        return super().get(timeout=timeout, propagate=propagate, interval=interval, **extra)


def outcome_of(app: PgTasks, row: Mapping[str, Any], propagate: bool = True) -> Any:
    """The value (or raised error) a finished workflow row records."""
    if row["status"] == "SUCCESS":
        if row["output"] is None:
            return None
        return app.result_serializer.loads(row["output"], app.result_serializer.content_type)
    if row["status"] == "CANCELLED":
        exc: BaseException = WorkflowCancelled(
            f"workflow {row['name']}[{row['workflow_id']}] was cancelled")
    else:
        exc = rebuild_exception(row["exc_type"], row["exc_message"], row["traceback"])
    if propagate:
        raise exc
    return exc


class Workflow(Task):
    """A durable workflow (``@app.workflow()``).

    ``checkout(42)`` runs it here, durably: if this process dies a worker resumes it.
    ``checkout.delay(42)`` / ``apply_async`` queue it for a worker and return a
    :class:`WorkflowHandle`; ``app.start_workflow(checkout, 42, workflow_id="order-42")`` uses
    the id as an idempotency key.
    """

    def __init__(self, app: PgTasks, fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
        unknown = set(options) - WORKFLOW_OPTIONS
        if unknown:
            from pgtasks.task import unknown_option_error

            raise unknown_option_error("workflow option", f"@workflow {fun.__qualname__}",
                                       unknown, WORKFLOW_OPTIONS)
        super().__init__(app, fun, options)
        self.fun = fun

        @functools.wraps(fun)
        def run_job(*args: Any, **kwargs: Any) -> Any:
            stack = current_request_stack()
            request = stack[-1] if stack else None
            if request is None or request.id is None or request.is_eager:
                return self._run_inline(args, kwargs, request.id if request else None)
            return run_workflow(self, request.id, args, kwargs, in_worker=True)

        self.run = run_job

    def __repr__(self) -> str:
        return f"<@workflow: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        running_now = current()
        if running_now is not None:
            raise WorkflowError(
                f"{self.name} was called inside the running {running_now.label}; start a "
                f"child workflow with app.start_workflow({self.__name__}, ...) instead")
        return self._run_inline(args, kwargs, None)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> WorkflowHandle:
        """Queue a run; ``workflow_id=`` (or ``task_id=``) makes the call idempotent."""
        workflow_id = options.pop("workflow_id", None) or options.pop("task_id", None)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=workflow_id)  # type: ignore[return-value]
        if options.get("link") is not None or options.get("link_error") is not None:
            from pgtasks.workflow.chains import send_with_links

            if workflow_id:
                options["task_id"] = workflow_id
            return send_with_links(self.app, self.name, tuple(args or ()), dict(kwargs or {}),
                                   options)  # type: ignore[return-value]
        return start(self, tuple(args or ()), dict(kwargs or {}), workflow_id, options)

    def _run_inline(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                    workflow_id: str | None) -> Any:
        app = self.app
        workflow_id = workflow_id or _take_workflow_id()
        job = _build_job(self, args, kwargs, workflow_id, {})
        owner = inline_owner(app)
        store = workflows_of(app)
        with store.transaction() as conn:
            created = store.insert_workflow(workflow_id, self.name, "RUNNING", job, conn)
            job_id = store.insert_running_job(job, owner.id(), conn) if created else 0
        if not created:
            return _existing(self, workflow_id, job).get()
        try:
            value = run_workflow(self, workflow_id, args, kwargs, in_worker=False)
        except (psycopg.OperationalError, DatabaseError):
            # Not the workflow's failure: hand it to a worker to resume, if we still can.
            with contextlib.suppress(psycopg.Error, DatabaseError), \
                    app.store.connect() as conn:
                app.store.release(conn, owner.worker_id, [job_id])
            raise
        except BaseException as exc:
            self._complete_inline(owner, Finished(
                job_id, "FAILURE", exc_type=exc_type_name(exc), exc_message=str(exc),
                traceback="".join(tb_module.format_exception(exc))))
            raise
        # run_workflow stored the value with this serializer already: it cannot fail here.
        data = app.result_serializer.dumps(value)
        self._complete_inline(owner, Finished(
            job_id, "SUCCESS", app.result_serializer.content_type, data))
        return value

    def _complete_inline(self, owner: InlineOwner, finished: Finished) -> None:
        with self.app.store.pool().connection() as conn:
            self.app.store.complete(conn, owner.worker_id, owner.name, [finished])


def _take_workflow_id() -> str:
    chosen = next_workflow_id.get()
    if chosen is not None:
        next_workflow_id.set(None)
        return chosen
    return str(uuid.uuid4())


def _build_job(workflow: Task, args: tuple[Any, ...], kwargs: dict[str, Any], workflow_id: str,
               options: Mapping[str, Any]) -> NewJob:
    if not isinstance(workflow_id, str) or not workflow_id:
        raise WorkflowError(f"{workflow.name}: workflow_id must be a non-empty str, "
                            f"got {workflow_id!r}")
    return workflow.app.build_job(workflow.name, workflow, args, kwargs,
                                  {**options, "task_id": workflow_id}, datetime.now(UTC))


def _existing(workflow: Task, workflow_id: str, job: NewJob) -> WorkflowHandle:
    """The handle of an already started run, after checking it is the same call."""
    app = workflow.app
    row = workflows_of(app).get_workflow(workflow_id)
    if row is None:
        raise WorkflowError(f"workflow {workflow_id!r} vanished while being started")
    if row["name"] != workflow.name or bytes(row["inputs"]) != job.payload:
        raise WorkflowConflictError(
            f"workflow id {workflow_id!r} was already used to start {row['name']}"
            f"{_describe(app, row['inputs'], row['content_type'])}; it cannot start "
            f"{workflow.name}{_describe(app, job.payload, job.content_type)} as well "
            f"(a workflow id runs one call, once)")
    return WorkflowHandle(workflow_id, app, workflow.name)


def _describe(app: PgTasks, payload: bytes, content_type: str) -> str:
    try:
        args, kwargs = app.serializer.loads(bytes(payload), content_type)
    except Exception:  # noqa: BLE001 - only for a message
        return "(...)"
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


def start(workflow: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
          workflow_id: str | None, options: Mapping[str, Any]) -> WorkflowHandle:
    """Queue a workflow run unless ``workflow_id`` was started already (then return its handle,
    or raise :class:`WorkflowConflictError` if it was started with other arguments).

    Inside a workflow, the start is itself a durable call: the child's default id derives from
    the parent's, so a replay finds the same child instead of starting another.
    """
    app = workflow.app
    ctx = current()
    if ctx is not None and not ctx.in_step:
        position, found = ctx.next(f"pgtasks.start:{workflow.name}")
        if found is not None:
            return WorkflowHandle(str(ctx.value(found)), app, workflow.name)
        workflow_id = workflow_id or f"{ctx.workflow_id}-{position}"
        handle = start_now(workflow, args, kwargs, workflow_id, options)
        ctx.record(ctx.output_step(position, f"pgtasks.start:{workflow.name}", workflow_id))
        return handle
    return start_now(workflow, args, kwargs, workflow_id or _take_workflow_id(), options)


def start_now(workflow: Task, args: tuple[Any, ...], kwargs: dict[str, Any], workflow_id: str,
              options: Mapping[str, Any], forked_from: str | None = None) -> WorkflowHandle:
    app = workflow.app
    job = _build_job(workflow, args, kwargs, workflow_id, options)
    store = workflows_of(app)
    # connection=: start it inside the caller's own transaction, as apply_async does.
    with store.transaction(app._connection(workflow.name, options)) as conn:
        created = store.insert_workflow(workflow_id, workflow.name, "PENDING", job, conn,
                                        forked_from=forked_from)
        if created:
            app.store.enqueue(job, conn=conn)
    if not created:
        return _existing(workflow, workflow_id, job)
    return WorkflowHandle(workflow_id, app, workflow.name)


def run_workflow(workflow: Workflow, workflow_id: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, in_worker: bool) -> Any:
    """Run (or resume) a workflow to its end: replay its checkpoints, then go on."""
    app = workflow.app
    store = workflows_of(app)
    if not store.begin_run(workflow_id):
        row = store.get_workflow(workflow_id)
        if row is None:
            # Queued by name without a workflow row (send_task, a schedule): adopt the job.
            job = _build_job(workflow, args, kwargs, workflow_id, {})
            store.insert_workflow(workflow_id, workflow.name, "RUNNING", job)
        else:
            return outcome_of(app, row)
    ctx = WorkflowContext(app, store, workflow_id, workflow.name, store.load_steps(workflow_id),
                          in_worker)
    try:
        with running(ctx):
            value = workflow.fun(*args, **kwargs)
        output = ctx.dumps(value, f"its result of type {type(value).__name__} cannot be stored")
    except (Suspend, WorkflowCancelled):
        raise
    except (psycopg.OperationalError, DatabaseError) as exc:
        # Postgres, not the workflow, failed: run it again later from its last checkpoint.
        if in_worker:
            raise Retry(f"{ctx.label}: database unavailable ({exc}); resuming later",
                        exc=exc, when=2.0) from exc
        raise
    except BaseException as exc:
        store.finish_workflow(workflow_id, "FAILURE", exc_type=exc_type_name(exc),
                              exc_message=str(exc),
                              traceback="".join(tb_module.format_exception(exc)))
        raise
    store.finish_workflow(workflow_id, "SUCCESS", output=output)
    return value


# -- steps ------------------------------------------------------------------------------------


class Step:
    """A checkpointed function (``@app.step()``): inside a workflow its result (or final error)
    is recorded, and a resumed workflow gets the record back instead of running it again.

    Outside a workflow a step is a plain function call (with its retries).

    Options: ``retries`` (extra attempts after the first, default 0), ``retry_delay`` (seconds
    before the first retry, default 1), ``retry_backoff`` (the delay's multiplier per retry,
    default 2), ``retry_on`` (exception classes worth retrying, default ``Exception``).
    """

    def __init__(self, app: PgTasks, fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
        unknown = set(options) - STEP_OPTIONS
        if unknown:
            from pgtasks.task import unknown_option_error

            raise unknown_option_error("step option", f"@step {fun.__qualname__}", unknown,
                                       STEP_OPTIONS)
        self.app = app
        self.fun = fun
        module = getattr(fun, "__module__", "__main__")
        # As for tasks: a script's steps keep one name whether it runs as __main__ or imported.
        prefix = app.main if module == "__main__" and app.main else module
        self.name: str = options.get("name") or f"{prefix}.{fun.__qualname__}"
        retries = options.get("retries", 0)
        delay = options.get("retry_delay", 1.0)
        backoff = options.get("retry_backoff", 2.0)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise TaskError(f"@step {self.name}: retries must be an int >= 0, got {retries!r}")
        for label, value, low in (("retry_delay", delay, 0), ("retry_backoff", backoff, 1)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise TaskError(f"@step {self.name}: {label} must be a number >= {low}, "
                                f"got {value!r}")
        retry_on = options.get("retry_on", (Exception,))
        retry_on = tuple(retry_on) if isinstance(retry_on, list | tuple) else (retry_on,)
        for cls in retry_on:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise TaskError(f"@step {self.name}: retry_on must hold exception classes, "
                                f"got {cls!r}")
        self.retries = retries
        self.retry_delay = float(delay)
        self.retry_backoff = float(backoff)
        self.retry_on: tuple[type[Exception], ...] = retry_on
        functools.update_wrapper(self, fun)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<@step: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None or ctx.in_step:
            return self._attempts(args, kwargs)[0]
        position, found = ctx.next(self.name)
        if found is not None:
            return ctx.value(found)
        inputs = self._inputs(ctx, position, args, kwargs)
        started_at = utcnow()
        try:
            with inside_step(ctx):
                value, attempts = self._attempts(args, kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, then raised in the workflow
            raced = ctx.record(error_step(position, self.name, exc, inputs=inputs,
                                          attempts=getattr(exc, "_pgtasks_attempts", 1),
                                          started_at=started_at))
            if raced is not None:
                return ctx.value(raced)
            raise
        try:
            step = ctx.output_step(position, self.name, value, inputs=inputs, attempts=attempts,
                                   started_at=started_at)
        except SerializationError as exc:
            ctx.record(error_step(position, self.name, exc, inputs=inputs, attempts=attempts,
                                  started_at=started_at))
            raise
        raced = ctx.record(step)
        return value if raced is None else ctx.value(raced)

    def _inputs(self, ctx: WorkflowContext, position: int, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> bytes:
        try:
            return ctx.app.serializer.dumps_call(f"step {self.name!r} (position {position})",
                                                 args, kwargs, self.fun)
        except SerializationError as exc:
            raise SerializationError(f"{ctx.label}: {exc}") from None

    def _attempts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int]:
        delay = self.retry_delay
        attempt = 1
        while True:
            try:
                return self.fun(*args, **kwargs), attempt
            except Exception as exc:
                if attempt > self.retries or not isinstance(exc, self.retry_on):
                    # How many attempts the checkpoint reports.
                    exc._pgtasks_attempts = attempt  # type: ignore[attr-defined]
                    raise
                log.warning("step %s failed (attempt %d of %d): %r; retrying in %.2fs",
                            self.name, attempt, self.retries + 1, exc, delay)
            time.sleep(delay)
            delay *= self.retry_backoff
            attempt += 1


# -- durable sleep ----------------------------------------------------------------------------


def durable_sleep(seconds: float) -> None:
    """Sleep inside a workflow so that a restart sleeps only what remains.

    The wake-up time is a checkpoint. A worker running the workflow gives its slot back for a
    sleep longer than ``workflow_sleep_inline_threshold`` and the job runs again at wake-up.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise WorkflowError(f"app.sleep() takes a number of seconds >= 0, got {seconds!r}")
    ctx = require("app.sleep() (a durable sleep)")
    if ctx.in_step:
        time.sleep(seconds)
        return
    position, found = ctx.next("pgtasks.sleep")
    if found is not None:
        wake = float(ctx.value(found))
    else:
        wake = time.time() + float(seconds)
        raced = ctx.record(ctx.output_step(position, "pgtasks.sleep", wake))
        if raced is not None:
            wake = float(ctx.value(raced))
    wait_until(ctx, wake)


def wait_until(ctx: WorkflowContext, wake: float) -> None:
    """Block until the epoch time ``wake``, or suspend the job until then in a worker."""
    remaining = wake - time.time()
    if remaining <= 0:
        return
    if ctx.in_worker and remaining > float(ctx.app.conf.workflow_sleep_inline_threshold):
        raise Suspend(datetime.fromtimestamp(wake, UTC))
    time.sleep(remaining)
