"""Events and messages between workflows and the outside world, durable and exactly once.

- ``app.set_event(key, value)`` (in a workflow) publishes a value others read with
  ``app.get_event(workflow_id, key, timeout=)``.
- ``app.send(workflow_id, message, topic=)`` leaves a message that the workflow takes with
  ``app.recv(topic=, timeout=)``. A message is deleted in the same transaction that checkpoints
  its receipt, so a replay gets the same message back and no message is received twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgtasks.errors import WorkflowError
from pgtasks.worker.execute import Suspend
from pgtasks.workflow.context import current, recheck_at, require, utcnow
from pgtasks.workflow.core import workflows_of
from pgtasks.workflow.store import NewStep

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

DEFAULT_TOPIC = "__default__"


def _check_timeout(timeout: float, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise WorkflowError(f"{what}: timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def set_event(app: PgTasks, key: str, value: Any) -> None:
    """Publish ``value`` under ``key`` for the running workflow (a durable call)."""
    ctx = require("app.set_event()")
    if not isinstance(key, str):
        raise WorkflowError(f"app.set_event(): key must be a str, got {key!r}")
    name = f"pgtasks.set_event:{key}"
    position, found = ctx.next(name)
    if found is not None:
        return
    data = ctx.dumps(value, f"the value of event {key!r} of type {type(value).__name__} "
                            f"cannot be stored")
    store = workflows_of(app)
    with store.transaction() as conn:
        store.set_event(ctx.workflow_id, key, app.result_serializer.content_type, data, conn)
        ctx.record(NewStep(position, name), conn)


def get_event(app: PgTasks, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
    """The value ``workflow_id`` published under ``key``, waiting up to ``timeout`` seconds for
    it; None if it is not published by then. Inside a workflow the value read is checkpointed."""
    timeout = _check_timeout(timeout, "app.get_event()")
    ctx = current()
    position = -1
    name = f"pgtasks.get_event:{workflow_id}:{key}"
    if ctx is not None and not ctx.in_step:
        position, found = ctx.next(name)
        if found is not None:
            return ctx.value(found)
    store = workflows_of(app)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        found_value = store.get_event(workflow_id, key)
        if found_value is not None or time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
    value = None
    if found_value is not None:
        value = app.result_serializer.loads(bytes(found_value[1]), found_value[0])
    if ctx is not None and position >= 0:
        ctx.record(ctx.output_step(position, name, value))
    return value


def send(app: PgTasks, workflow_id: str, message: Any, topic: str | None = None) -> None:
    """Send ``message`` to the workflow ``workflow_id`` (woken if it waits in ``recv``).
    From inside a workflow the send is a durable call: a replay does not send again."""
    topic = topic or DEFAULT_TOPIC
    store = workflows_of(app)
    if store.get_workflow(workflow_id) is None:
        raise WorkflowError(f"app.send(): there is no workflow {workflow_id!r}")
    ctx = current()
    data = app.result_serializer.dumps(message)
    content_type = app.result_serializer.content_type
    if ctx is None or ctx.in_step:
        store.send_message(workflow_id, topic, content_type, data)
        return
    name = f"pgtasks.send:{workflow_id}:{topic}"
    position, found = ctx.next(name)
    if found is not None:
        return
    with store.transaction() as conn:
        store.send_message(workflow_id, topic, content_type, data, conn)
        ctx.record(NewStep(position, name), conn)


def recv(app: PgTasks, topic: str | None = None, timeout: float = 60.0) -> Any:
    """Take the oldest message sent to the running workflow on ``topic``, waiting up to
    ``timeout`` seconds (durably: a restart waits only what remains); None if none came."""
    timeout = _check_timeout(timeout, "app.recv()")
    ctx = require("app.recv()")
    topic = topic or DEFAULT_TOPIC
    position, found = ctx.next("pgtasks.recv.deadline")
    if found is not None:
        deadline, since = float(ctx.value(found)), found.finished_at
    else:
        deadline, since = time.time() + timeout, utcnow()
        ctx.record(ctx.output_step(position, "pgtasks.recv.deadline", deadline))
    name = f"pgtasks.recv:{topic}"
    position, found = ctx.next(name)
    if found is not None:
        return ctx.value(found)
    store = workflows_of(app)
    inline_until = time.monotonic() + float(app.conf.workflow_wait_inline)
    delay = 0.02
    while True:
        with store.transaction() as conn:
            taken = store.take_message(ctx.workflow_id, topic, conn)
            if taken is not None:
                ctx.record(NewStep(position, name, taken[0], None, bytes(taken[1])), conn)
                return app.result_serializer.loads(bytes(taken[1]), taken[0])
        remaining = deadline - time.time()
        if remaining <= 0:
            ctx.record(ctx.output_step(position, name, None))
            return None
        if ctx.in_worker and time.monotonic() >= inline_until:
            # Give the slot back; app.send() wakes the job early.
            raise Suspend(recheck_at(ctx, since, datetime.fromtimestamp(deadline, UTC)))
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)
