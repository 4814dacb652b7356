"""Chains (and ``link=`` / ``link_error=``) as checkpointed workflows.

``start_chain`` fixes every link's task id up front, so that the handles returned to the caller
(the last link's, with ``.parent`` leading back) are valid before anything runs, and starts the
``pgtasks.chain`` workflow. That workflow enqueues each link when its parent's result is known,
records the link's result as a step, and after the last link runs the ``link=`` callbacks; if a
link fails, the links after it are recorded as failed with its error and the ``link_error=``
errbacks get its task id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pgtasks.canvas import GroupResult, Signature, chord, from_dict, group
from pgtasks.errors import TaskError
from pgtasks.result import AsyncResult
from pgtasks.worker.execute import exc_type_name
from pgtasks.workflow import children
from pgtasks.workflow.context import require
from pgtasks.workflow.core import start_now, workflows_of
from pgtasks.workflow.store import NewStep

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

CHAIN_TASK = "pgtasks.chain"
#: Options of a chain's apply_async that apply to its links (unless a link sets its own).
_LINK_DEFAULTS = ("queue", "priority", "time_limit", "soft_time_limit", "expires")
#: Options that apply to the chain as a whole (when it starts).
_CHAIN_OPTIONS = ("countdown", "eta", "connection")


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def start_chain(app: PgTasks, tasks: Sequence[Signature], options: Mapping[str, Any]) -> Any:
    """Start a chain; returns the last link's result handle (``.parent`` leads back)."""
    options = dict(options)
    callbacks = [dict(s) for s in _signatures(options.pop("link", None), "link")]
    errbacks = [dict(s) for s in _signatures(options.pop("link_error", None), "link_error")]
    start_options = {k: options.pop(k) for k in _CHAIN_OPTIONS if k in options}
    chain_id = str(options.pop("chain_id", None) or uuid.uuid4())
    unknown = set(options) - set(_LINK_DEFAULTS) - {"task_id"}
    if unknown:
        raise TaskError(f"chain: options {sorted(unknown)} cannot apply to a whole chain; set "
                        f"them on its links with .set(...)")
    last_task_id = options.pop("task_id", None)
    links: list[dict[str, Any]] = []
    result: Any = None
    expanded: list[Signature] = []
    for sig in tasks:
        if isinstance(sig, chord):
            body = sig.body
            if body is None:
                raise TaskError("chain: a chord in a chain needs a callback")
            expanded.extend([group(sig.header, app=app), body])
        else:
            expanded.append(sig)
    for index, sig in enumerate(expanded):
        defaults = {k: options[k] for k in _LINK_DEFAULTS if k in options}
        if isinstance(sig, group):
            members = [m.clone(**{**defaults, **m.options}) for m in sig.tasks]
            for member in members:
                if type(member) is not Signature:
                    raise TaskError(f"chain: a group in a chain must hold task signatures, "
                                    f"got {member!r}")
                children.needs_results(app, member, "chain")
            ids = [m.id or i for m, i in zip(members, _ids(len(members)), strict=True)]
            group_id = str(uuid.uuid4())
            links.append({"group": [dict(m) for m in members], "task_ids": ids,
                          "group_id": group_id})
            result = GroupResult(group_id, [AsyncResult(i, app, m.name)
                                            for i, m in zip(ids, members, strict=True)],
                                 app, parent=result)
        elif type(sig) is Signature:
            if sig.options.get("link") or sig.options.get("link_error"):
                raise TaskError(f"chain: link {sig!r} has its own link/link_error; give them "
                                f"to the chain instead: chain(...).apply_async(link=...)")
            sig = sig.clone(**{**defaults, **sig.options})
            children.needs_results(app, sig, "chain")
            is_last = index == len(expanded) - 1
            task_id = sig.id or (last_task_id if is_last and last_task_id else None) or _ids(1)[0]
            links.append({"sig": dict(sig), "task_id": task_id})
            result = AsyncResult(task_id, app, sig.name, parent=result)
        else:
            raise TaskError(f"chain: cannot run {sig!r} as a link")
    first = expanded[0].tasks[0] if isinstance(expanded[0], group) else expanded[0]
    queue = app.queue_for(first.name, app.tasks.get(first.name), first.args, first.kwargs,
                          first.options)[0]
    start_now(app.get_task(CHAIN_TASK), (links, callbacks, errbacks), {}, chain_id,
              {"queue": queue, **start_options})
    if isinstance(result, AsyncResult | GroupResult):
        result.chain_id = chain_id  # type: ignore[union-attr]
    return result


def _signatures(value: Any, what: str) -> list[Signature]:
    if value is None:
        return []
    items = [value] if isinstance(value, Mapping) else list(value)
    found = []
    for item in items:
        if not isinstance(item, Mapping):
            raise TaskError(f"{what}= takes signatures (task.s(...)), got {item!r}")
        found.append(item if isinstance(item, Signature) else from_dict(item))
    return found


def run_chain(links: list[dict[str, Any]], callbacks: list[dict[str, Any]],
              errbacks: list[dict[str, Any]]) -> Any:
    """The ``pgtasks.chain`` workflow: run the links in order, each as a child job."""
    ctx = require(CHAIN_TASK)
    app = ctx.app
    parent: tuple[Any, ...] = ()
    value: Any = None
    for index, link in enumerate(links):
        if "group" in link:
            sigs = [from_dict(d, app) for d in link["group"]]
            label = f"group[{len(sigs)}]"
        else:
            sigs = [from_dict(link["sig"], app)]
            label = sigs[0].name
        ids = list(link["task_ids"]) if "group" in link else [link["task_id"]]
        calls = [(s, s.partial_args(parent), s.kwargs, t) for s, t in zip(sigs, ids, strict=True)]
        since = children.enqueue(ctx, f"pgtasks.chain.enqueue[{index}]:{label}", calls)
        try:
            values = children.wait(ctx, f"pgtasks.chain.result[{index}]:{label}", ids, since)
        except Exception as exc:
            _failed(ctx, links[index + 1:], ids, exc, errbacks)
            raise
        value = values if "group" in link else values[0]
        parent = (value,)
    calls = [(s, s.partial_args(parent), s.kwargs, str(uuid.uuid4()))
             for s in (from_dict(d, app) for d in callbacks)]
    if calls:
        children.enqueue(ctx, "pgtasks.chain.callbacks", calls, wake=False)
    return value


def _failed(ctx: Any, rest: list[dict[str, Any]], ids: list[str], exc: Exception,
            errbacks: list[dict[str, Any]]) -> None:
    """One step: the links that will never run fail with ``exc``; errbacks are enqueued."""
    name = "pgtasks.chain.failed"
    position, found = ctx.next(name)
    if found is not None:
        return
    app = ctx.app
    blamed = children.first_failed(app, ids)
    never_ids: list[str] = []
    never_names: list[str] = []
    for link in rest:
        if "group" in link:
            never_ids.extend(link["task_ids"])
            never_names.extend(d["task"] for d in link["group"])
        else:
            never_ids.append(link["task_id"])
            never_names.append(link["sig"]["task"])
    jobs = children.build_jobs(app, [(s, s.partial_args((blamed,)), s.kwargs, str(uuid.uuid4()))
                                     for s in (from_dict(d, app) for d in errbacks)])
    store = workflows_of(app)
    with store.transaction() as conn:
        if never_ids:
            store.fail_results(never_ids, never_names, app.conf.task_default_queue,
                               exc_type_name(exc), str(exc), None, blamed, conn)
        if jobs:
            app.store.enqueue_many(jobs, conn=conn)
        ctx.record(NewStep(position, name), conn)


def send_with_links(app: PgTasks, name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                    options: Mapping[str, Any]) -> AsyncResult:
    """``apply_async(link=..., link_error=...)``: the call runs as a one-link chain, so its
    callbacks and errbacks are enqueued durably, once."""
    call_options = dict(options)
    chain_options = {k: call_options.pop(k) for k in ("link", "link_error", *_CHAIN_OPTIONS)
                     if k in call_options}
    sig = Signature(name, args, kwargs, app=app, options=call_options)
    result: AsyncResult = start_chain(app, [sig], chain_options)
    return result
