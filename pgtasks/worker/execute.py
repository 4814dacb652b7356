"""Running one job: decode it, call the task with ``self.request`` set, and decide its outcome.

The outcome is data (:class:`Outcome`); writing it to the database is the worker loop's business,
so that outcomes can be written in batches.
"""

from __future__ import annotations

import random
import traceback as tb_module
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgtasks import states
from pgtasks.errors import (
    ContentDisallowed,
    NotRegistered,
    Retry,
    SerializationError,
    TimeLimitExceeded,
)
from pgtasks.task import Request, Task, current_request_stack, new_task_id

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.db.store import ClaimedJob
    from pgtasks.result import EagerResult


@dataclass(slots=True)
class Outcome:
    """What became of a job. ``kind``: success, failure, revoked, retry or defer."""

    job_id: int
    kind: str
    content_type: str | None = None
    result: bytes | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    store: bool = True
    delay: float = 0.0
    run_at: datetime | None = None


class Suspend(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a job to give its slot back until ``run_at`` (durable sleeps, waits)."""

    def __init__(self, run_at: datetime) -> None:
        super().__init__(run_at.isoformat())
        self.run_at = run_at


def exc_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def failure(job_id: int, exc: BaseException, with_traceback: bool = True) -> Outcome:
    text = "".join(tb_module.format_exception(exc)) if with_traceback else None
    return Outcome(job_id, "failure", exc_type=exc_type_name(exc), exc_message=str(exc),
                   traceback=text)


def backoff_delay(task: Task, retries: int) -> float:
    """Celery's exponential backoff: factor * 2**retries, capped, with full jitter."""
    factor = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
    countdown = min(task.retry_backoff_max, factor * (2 ** retries))
    if task.retry_jitter:
        countdown = random.uniform(0, countdown)
    return countdown


def _autoretry(task: Task, exc: BaseException) -> Retry | None:
    if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
        return None
    if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
        return None
    kwargs = dict(task.retry_kwargs)
    if task.retry_backoff:
        kwargs["countdown"] = backoff_delay(task, task.request.retries)
    # Raises the original exception itself once the retries are used up.
    return task.retry(exc=exc, throw=False, **kwargs)


def _retry_text(signal: Retry) -> str:
    cause = signal.exc
    if cause is None:
        return "Retry requested"
    return f"{exc_type_name(cause)}: {cause}"


def build_request(job: ClaimedJob, args: tuple[Any, ...], kwargs: dict[str, Any],
                  hostname: str | None) -> Request:
    headers = job.headers or {}
    return Request(
        id=job.task_id, task=job.task_name, args=args, kwargs=kwargs, retries=job.retries,
        delivery_info={"queue": job.queue, "priority": job.priority,
                       "routing_key": job.queue, "redelivered": job.deliveries > 1},
        hostname=hostname, eta=job.run_at, expires=job.expires_at,
        headers=dict(headers.get("headers") or {}), called_directly=False,
        parent_id=job.parent_id, root_id=job.root_id or job.task_id,
        time_limit=(headers.get("time_limit"), headers.get("soft_time_limit")),
    )


def time_limits(app: PgTasks, job: ClaimedJob) -> tuple[float | None, float | None]:
    """(soft, hard) limits in seconds for a job: call options, then the task's, then the app's."""
    headers = job.headers or {}
    task = app.tasks.get(job.task_name)
    soft = headers.get("soft_time_limit")
    hard = headers.get("time_limit")
    if task is not None:
        soft = soft if soft is not None else task.soft_time_limit
        hard = hard if hard is not None else task.time_limit
    soft = soft if soft is not None else app.conf.task_soft_time_limit
    hard = hard if hard is not None else app.conf.task_time_limit
    return soft, hard


def execute(app: PgTasks, job: ClaimedJob, hostname: str | None = None) -> Outcome:
    """Run ``job`` and return its outcome. Never raises for a task's own errors."""
    task = app.tasks.get(job.task_name)
    if task is None:
        known = ", ".join(sorted(n for n in app.tasks if not n.startswith("pgtasks."))[:20])
        return failure(job.id, NotRegistered(
            f"task {job.task_name!r} is not registered with this worker "
            f"(known tasks: {known or 'none'}); the job was failed, not retried"
        ), with_traceback=False)
    if job.revoked:
        return Outcome(job.id, "revoked", exc_type="pgtasks.errors.TaskRevokedError",
                       exc_message="revoked before it started")
    if job.expires_at is not None and job.expires_at <= datetime.now(UTC):
        return Outcome(job.id, "revoked", exc_type="pgtasks.errors.TaskRevokedError",
                       exc_message=f"expired at {job.expires_at.isoformat()}")
    try:
        args_kwargs = app.serializer.loads(job.payload, job.content_type)
        args, kwargs = tuple(args_kwargs[0]), dict(args_kwargs[1])
    except (ContentDisallowed, SerializationError) as exc:
        return failure(job.id, exc, with_traceback=False)
    store = not task.ignore_result and not (job.headers or {}).get("ignore_result", False)
    stack = current_request_stack()
    stack.append(build_request(job, args, kwargs, hostname))
    try:
        value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
    except Suspend as signal:
        return Outcome(job.id, "defer", run_at=signal.run_at)
    except Retry as signal:
        return Outcome(job.id, "retry", delay=float(signal.when or 0.0),
                       exc_message=_retry_text(signal))
    except TimeLimitExceeded as exc:
        return failure(job.id, exc)
    except Exception as exc:  # noqa: BLE001 - any task error becomes the job's outcome
        try:
            auto = _autoretry(task, exc)
        except Exception as final:  # noqa: BLE001 - retries used up: fail with the error
            return failure(job.id, final)
        if auto is not None:
            return Outcome(job.id, "retry", delay=float(auto.when or 0.0),
                           exc_message=_retry_text(auto))
        return failure(job.id, exc)
    finally:
        stack.pop()
    if not store:
        return Outcome(job.id, "success", store=False)
    try:
        data = app.result_serializer.dumps(value)
    except SerializationError as exc:
        return failure(job.id, SerializationError(
            f"task {job.task_name}[{job.task_id}] returned a value of type "
            f"{type(value).__name__} that cannot be stored: {exc}"
        ), with_traceback=False)
    return Outcome(job.id, "success", content_type=app.result_serializer.content_type,
                   result=data)


def run_eagerly(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
                options: dict[str, Any]) -> EagerResult:
    """Run a task in the caller, with retries applied in place (``task.apply()``)."""
    from pgtasks.result import EagerResult

    task_id = options.get("task_id") or new_task_id()
    retries = 0
    stack = current_request_stack()
    while True:
        stack.append(Request(id=task_id, task=task.name, args=args, kwargs=kwargs,
                             retries=retries, is_eager=True, called_directly=False,
                             root_id=task_id))
        try:
            value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
        except Retry:
            retries += 1
            continue
        except Exception as exc:  # noqa: BLE001 - recorded in the eager result
            try:
                signal = _autoretry(task, exc)
            except Exception as final:  # noqa: BLE001
                return EagerResult(task_id, task.app, states.FAILURE, final,
                                   "".join(tb_module.format_exception(final)))
            if signal is not None:
                retries += 1
                continue
            return EagerResult(task_id, task.app, states.FAILURE, exc,
                               "".join(tb_module.format_exception(exc)))
        finally:
            stack.pop()
        return EagerResult(task_id, task.app, states.SUCCESS, value)
