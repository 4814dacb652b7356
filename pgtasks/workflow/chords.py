"""Chords: a header of tasks counted down in their completing statements, then a callback.

The chord row is written in the transaction that enqueues the header, each member's job carries
the ``chord`` header, and ``jobs.complete`` decrements the row. The completion that reaches zero
inserts the ``pgtasks.chord_fire`` job, which gathers the header's results in order and enqueues
the callback in the same transaction that deletes the chord row: the callback runs once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgtasks.canvas import GroupResult, Signature, from_dict
from pgtasks.errors import ChordError
from pgtasks.result import AsyncResult
from pgtasks.workflow import children
from pgtasks.workflow.core import workflows_of

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

FIRE_TASK = "pgtasks.chord_fire"


def start_chord(app: PgTasks, header: Sequence[Signature], body: Signature) -> AsyncResult:
    """Queue the header and register the countdown; returns the callback's result handle,
    whose ``parent`` is the header's :class:`GroupResult`."""
    chord_id = body.id or str(uuid.uuid4())
    for member in header:
        children.needs_results(app, member, "chord header")
    if not header:
        return body.apply_async(([],), task_id=chord_id)
    ids = [m.id or str(uuid.uuid4()) for m in header]
    body_dict = dict(body)
    body_dict["options"] = {**body.options, "task_id": chord_id}
    payload = app.serializer.dumps_call(FIRE_TASK, [chord_id, body_dict, ids], {})
    queue = app.queue_for(body.name, app.tasks.get(body.name), body.args, body.kwargs,
                          body.options)[0]
    jobs = children.build_jobs(app, [(m, m.args, m.kwargs, i)
                                     for m, i in zip(header, ids, strict=True)],
                               {"chord": chord_id})
    store = workflows_of(app)
    with store.transaction() as conn:
        store.insert_chord(chord_id, ids, queue, app.serializer.content_type, payload, conn)
        app.store.enqueue_many(jobs, conn=conn)
    members = GroupResult(str(uuid.uuid4()), [AsyncResult(i, app, m.name)
                                               for i, m in zip(ids, header, strict=True)], app)
    return AsyncResult(chord_id, app, body.name, parent=members)  # type: ignore[arg-type]


def fire(app: PgTasks, chord_id: str, body: dict[str, Any], member_ids: list[str]) -> None:
    """The ``pgtasks.chord_fire`` task: enqueue the callback with the header's results, or
    fail it with :class:`ChordError` if a member failed."""
    callback = from_dict(body, app)
    store = workflows_of(app)
    with store.transaction() as conn:
        if not store.take_chord(chord_id, conn):
            return
        rows = store.results_of(member_ids, conn)
        blamed = next((m for m in member_ids
                       if rows.get(m) is None or rows[m]["state"] != "SUCCESS"), None)
        if blamed is None:
            values = [None if rows[m]["result"] is None else app.result_serializer.loads(
                bytes(rows[m]["result"]), rows[m]["content_type"]) for m in member_ids]
            callback.apply_async((values,), connection=conn)
            return
        row = rows.get(blamed)
        reason = ("has no stored result" if row is None else
                  f"raised {row['exc_type']}: {row['exc_message']}")
        store.fail_results([chord_id], [callback.name], app.conf.task_default_queue,
                           f"{ChordError.__module__}.{ChordError.__qualname__}",
                           f"Dependency {blamed} {reason}", None, None, conn)
        errbacks = callback.options.get("link_error") or []
        if isinstance(errbacks, dict):
            errbacks = [errbacks]
        jobs = children.build_jobs(app, [(s, s.partial_args((chord_id,)), s.kwargs,
                                          str(uuid.uuid4()))
                                         for s in (from_dict(d, app) for d in errbacks)])
        if jobs:
            app.store.enqueue_many(jobs, conn=conn)
