"""Turning calls into job rows: what depends on the options is settled once per (task, options),
so that a bulk enqueue of many calls with the same options only does per call what varies
(the payload, the task id, an argument-derived partition)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgtasks.db.store import NewJob
from pgtasks.errors import TaskError
from pgtasks.queues import QueueSpec, partition_for
from pgtasks.serialization import Serializer
from pgtasks.task import (
    CALL_OPTIONS,
    Task,
    check_priority,
    current_request_stack,
    new_task_id,
    resolve_times,
    unknown_option_error,
)

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

_HEADER_OPTIONS = ("time_limit", "soft_time_limit", "ignore_result", "link", "link_error")


@dataclass(slots=True)
class CallPlan:
    """Everything about a call that its options decide; :meth:`job` adds the arguments."""

    name: str
    queue: str
    priority: int
    run_at: datetime | None
    expires_at: datetime | None
    serializer: Serializer
    headers: dict[str, Any] | None
    parent_id: str | None
    root_id: str | None
    task_id: str | None
    dedup_key: str | None
    partition: Any
    spec: QueueSpec | None
    fun: Callable[..., Any] | None
    bound: bool
    #: False when a router function chose the queue from the arguments: then the plan holds
    #: for this call only.
    reusable: bool

    def job(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NewJob:
        """The job row of one call under this plan."""
        return NewJob(
            task_id=self.task_id or new_task_id(), task_name=self.name, queue=self.queue,
            content_type=self.serializer.content_type,
            payload=self.serializer.dumps_call(self.name, args, kwargs, self.fun),
            priority=self.priority, run_at=self.run_at, expires_at=self.expires_at,
            headers=self.headers, parent_id=self.parent_id, root_id=self.root_id,
            dedup_key=self.dedup_key,
            partition_key=partition_for(self.spec, self.partition, args, kwargs, self.fun,
                                        self.bound, self.name),
        )


def _routers(routes: Any) -> Sequence[Any]:
    if not routes:
        return ()
    return routes if isinstance(routes, list | tuple) else [routes]


def plan_call(app: PgTasks, name: str, task: Task | None, args: Sequence[Any],
              kwargs: Mapping[str, Any], options: Mapping[str, Any],
              now: datetime) -> CallPlan:
    """Validate a call's options and settle what they decide (``args`` only for routing)."""
    unknown = set(options) - CALL_OPTIONS
    if unknown:
        raise unknown_option_error("apply_async option", name, unknown, CALL_OPTIONS)
    queue, routed_priority = app.queue_for(name, task, args, kwargs, options)
    reusable = bool(options.get("queue") or (task is not None and task.queue)) or not any(
        callable(r) for r in _routers(app.conf.task_routes))
    priority = options.get("priority")
    if priority is None:
        priority = routed_priority
    if priority is None and task is not None:
        priority = task.priority
    if priority is None:
        priority = app.conf.task_default_priority
    check_priority(priority, name)
    expires = options.get("expires")
    if expires is None and task is not None:
        expires = task.expires
    run_at, expires_at = resolve_times(name, options.get("countdown"), options.get("eta"),
                                       expires, now)
    serializer = app.serializer
    chosen = options.get("serializer") or (task.serializer if task is not None else None)
    if chosen and chosen != serializer.name:
        serializer = app.serializer_for(chosen)
    headers: dict[str, Any] = {key: options[key] for key in _HEADER_OPTIONS
                               if options.get(key) is not None}
    if options.get("headers"):
        headers["headers"] = dict(options["headers"])
    parent_id, root_id = options.get("parent_id"), options.get("root_id")
    stack = current_request_stack()
    if parent_id is None and stack and stack[-1].id and not stack[-1].is_eager:
        parent_id = stack[-1].id
        root_id = root_id or stack[-1].root_id
    task_id = options.get("task_id")
    if task_id is not None and not isinstance(task_id, str):
        raise TaskError(f"{name}: task_id must be a str, got {type(task_id).__name__}")
    return CallPlan(
        name=name, queue=queue, priority=priority, run_at=run_at, expires_at=expires_at,
        serializer=serializer, headers=headers or None, parent_id=parent_id, root_id=root_id,
        task_id=task_id or None, dedup_key=options.get("deduplication_id"),
        partition=options.get("partition"), spec=app.queue_spec(queue),
        fun=task.run if task is not None else None, bound=task is not None and task.bind,
        reusable=reusable,
    )
