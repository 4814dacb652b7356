"""Durable calls that run other tasks: enqueue jobs as a checkpoint, wait for their results.

Both are steps of the calling workflow. Enqueueing writes the jobs and the checkpoint in one
transaction, so a replay never enqueues twice. Waiting records the children's results; while they
run, a worker gives its slot back after ``workflow_wait_inline`` seconds, and each
child's completing statement wakes the workflow's job (the ``wake`` header).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgtasks.errors import TaskError
from pgtasks.result import rebuild_exception
from pgtasks.worker.execute import Suspend
from pgtasks.workflow.context import WorkflowContext, recheck_at, utcnow
from pgtasks.workflow.core import workflows_of
from pgtasks.workflow.store import NewStep

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.canvas import Signature
    from pgtasks.db.store import NewJob

#: A call to enqueue: (signature, args, kwargs, task id).
Call = tuple["Signature", Sequence[Any], dict[str, Any], str]


def build_jobs(app: PgTasks, calls: Sequence[Call], extra_headers: dict[str, str] | None = None,
               ) -> list[NewJob]:
    """Job rows for calls, with their fixed task ids and internal headers."""
    now = datetime.now(UTC)
    jobs = []
    for sig, args, kwargs, task_id in calls:
        options = {k: v for k, v in sig.options.items() if k not in ("link", "link_error")}
        options["task_id"] = task_id
        job = app.build_job(sig.name, app.tasks.get(sig.name), tuple(args), dict(kwargs),
                            options, now)
        if extra_headers:
            job.headers = {**(job.headers or {}), **extra_headers}
        jobs.append(job)
    return jobs


def needs_results(app: PgTasks, sig: Signature, what: str) -> None:
    """Refuse a task whose result would not be stored where a result is waited for."""
    task = app.tasks.get(sig.name)
    if sig.options.get("ignore_result") or (task is not None and task.ignore_result):
        raise TaskError(f"{what}: {sig.name} ignores its result (ignore_result=True), but its "
                        f"result is needed here")


def enqueue(ctx: WorkflowContext, name: str, calls: Sequence[Call],
            wake: bool = True) -> datetime:
    """Enqueue the calls as one checkpointed step (nothing happens on replay); returns when
    they were enqueued."""
    position, found = ctx.next(name)
    if found is not None:
        ctx.value(found)
        return found.finished_at
    app = ctx.app
    jobs = build_jobs(app, calls, {"wake": ctx.workflow_id} if wake else None)
    with workflows_of(app).transaction() as conn:
        if jobs:
            app.store.enqueue_many(jobs, conn=conn)
        ctx.record(NewStep(position, name), conn)
    return utcnow()


def wait(ctx: WorkflowContext, name: str, task_ids: Sequence[str],
         since: datetime) -> list[Any]:
    """The results of ``task_ids`` (enqueued at ``since``) in order, as one checkpoint; the
    first failure (in order) is recorded and raised instead."""
    position, found = ctx.next(name)
    if found is not None:
        return list(ctx.value(found))
    app = ctx.app
    store = workflows_of(app)
    listener = app.result_listener()
    inline_until = time.monotonic() + float(app.conf.workflow_wait_inline)
    while True:
        generation = listener.generation
        rows = store.results_of(task_ids)
        missing = [t for t in task_ids if t not in rows]
        if not missing:
            break
        if ctx.in_worker and time.monotonic() >= inline_until:
            raise Suspend(recheck_at(ctx, since))
        pause = max(0.01, inline_until - time.monotonic()) if ctx.in_worker else 1.0
        listener.wait(missing[0], generation, pause)
    for task_id in task_ids:
        row = rows[task_id]
        if row["state"] != "SUCCESS":
            exc_type = row["exc_type"] or "pgtasks.errors.TaskRevokedError"
            message = row["exc_message"] or f"task {task_id} was {row['state'].lower()}"
            ctx.record(NewStep(position, name, exc_type=exc_type, exc_message=message,
                               traceback=row["traceback"]))
            raise rebuild_exception(exc_type, message, row["traceback"])
    values = [None if rows[t]["result"] is None else
              app.result_serializer.loads(bytes(rows[t]["result"]), rows[t]["content_type"])
              for t in task_ids]
    ctx.record(ctx.output_step(position, name, values))
    return values


def first_failed(app: PgTasks, task_ids: Sequence[str]) -> str:
    """The first of ``task_ids`` that did not succeed (the one to blame in errbacks)."""
    rows = workflows_of(app).results_of(task_ids)
    for task_id in task_ids:
        row = rows.get(task_id)
        if row is not None and row["state"] != "SUCCESS":
            return task_id
    return task_ids[0]
