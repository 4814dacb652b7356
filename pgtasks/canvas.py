"""Celery's canvas: signatures, chain, group, chord, chunks, map and starmap.

A chain runs as one checkpointed workflow (``pgtasks.chain``): each link is a job of its own,
with its own task id, and the chain records each link's result as a step, so a crash during
link 3 runs link 3 again and never links 1 and 2. A chord's header members count down a row in
``pgtasks.chords`` in the statement that completes them; the completion that reaches zero
enqueues the callback, exactly once, with no polling unlock task.

Argument passing follows Celery: a link gets its parent's result prepended to its own arguments
unless its signature is immutable (``.si()``); ``link=`` callbacks get the result too and
``link_error=`` errbacks get the failed task's id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pgtasks import states
from pgtasks.errors import TaskError, TimeoutError
from pgtasks.result import AsyncResult
from pgtasks.task import Task

if TYPE_CHECKING:
    from pgtasks.app import PgTasks


def _new_id() -> str:
    return str(uuid.uuid4())


def _default_app() -> PgTasks:
    from pgtasks.app import _apps

    if not _apps:
        raise TaskError("a signature needs an app: create a PgTasks app first")
    return _apps[-1]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Signature) or not isinstance(value, list | tuple):
        return [value]
    return list(value)


class Signature(dict):  # type: ignore[type-arg]
    """A task call to make later: ``add.s(2, 2)``, ``add.si(2, 2)``, ``signature("add")``.

    A dict (Celery's wire form), so it can be passed as an argument or stored in a header.
    """

    subtask_kind: str | None = None

    def __init__(self, task: str | Task | Mapping[str, Any] | None = None,
                 args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                 *, app: PgTasks | None = None, options: Mapping[str, Any] | None = None,
                 immutable: bool = False, subtask_type: str | None = None) -> None:
        if isinstance(task, Mapping):
            super().__init__(task)
            self._app = app
            return
        if isinstance(task, Task):
            app = app or task.app
            task = task.name
        if task is not None and not isinstance(task, str):
            raise TaskError(f"a signature needs a task or task name, got {task!r}")
        if args is not None and not isinstance(args, list | tuple):
            raise TaskError(f"signature {task}: args must be a list or tuple, "
                            f"got {type(args).__name__}")
        super().__init__(task=task, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options=dict(options or {}), subtask_type=subtask_type or
                         self.subtask_kind, immutable=bool(immutable))
        self._app = app

    # -- fields -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self["task"])

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.get("args") or ())

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.get("kwargs") or {})

    @property
    def options(self) -> dict[str, Any]:
        opts = self.get("options")
        if opts is None:
            opts = self["options"] = {}
        return opts

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def app(self) -> PgTasks:
        return self._app or _default_app()

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)}){'!' if self.immutable else ''}"

    # -- building ---------------------------------------------------------------------------

    def partial_args(self, args: Sequence[Any] | None) -> tuple[Any, ...]:
        """This signature's arguments with ``args`` (a parent's result) prepended."""
        if self.immutable or not args:
            return self.args
        return (*args, *self.args)

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Signature:
        return Signature(self.name, self.partial_args(args), {**self.kwargs, **(kwargs or {})},
                         app=self._app, options={**self.options, **options},
                         immutable=self.immutable)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set call options (``queue=``, ``countdown=``, ``priority=``...); returns self."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result once it succeeds."""
        self.options["link"] = [*_as_list(self.options.get("link")), callback]
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` with this task's id if it fails."""
        self.options["link_error"] = [*_as_list(self.options.get("link_error")), errback]
        return errback

    def freeze(self, _id: str | None = None) -> AsyncResult:
        """Fix the task id now and return the result handle it will have."""
        task_id = self.options.setdefault("task_id", _id or _new_id())
        return AsyncResult(task_id, self.app, self.name)

    def __or__(self, other: Any) -> chain:
        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    # -- running ----------------------------------------------------------------------------

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Queue the call; ``args`` are prepended (unless immutable) as a parent result is."""
        merged = {**self.options, **options}
        return self.app.send_task(self.name, self.partial_args(args),
                                  {**self.kwargs, **(kwargs or {})}, **merged)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run here and now (eagerly)."""
        return self.app.get_task(self.name).apply(self.partial_args(args),
                                                  {**self.kwargs, **(kwargs or {})}, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function here (Celery's ``sig()``)."""
        return self.app.get_task(self.name)(*self.partial_args(args),
                                            **{**self.kwargs, **kwargs})


def signature(varies: str | Task | Mapping[str, Any], args: Sequence[Any] | None = None,
              kwargs: Mapping[str, Any] | None = None, *, app: PgTasks | None = None,
              **options: Any) -> Signature:
    """A signature from a task name, a task, or its dict form (as received in a message)."""
    if isinstance(varies, Mapping):
        return from_dict(varies, app)
    immutable = bool(options.pop("immutable", False))
    return Signature(varies, args, kwargs, app=app, options=options, immutable=immutable)


def from_dict(data: Mapping[str, Any], app: PgTasks | None = None) -> Signature:
    """Rebuild a signature (or chain, group, chord) from its dict form."""
    if isinstance(data, Signature) and app is None:
        return data
    kind = data.get("subtask_type")
    cls: type[Signature] = _KINDS.get(kind or "", Signature)
    if kind and cls is Signature:
        raise TaskError(f"unknown signature type {kind!r} in {dict(data)!r}")
    sig = cls.__new__(cls)
    dict.__init__(sig, data)
    sig._app = app
    return sig


# -- chain ------------------------------------------------------------------------------------


class chain(Signature):  # noqa: N801 - Celery's name
    """Links run one after the other, each given the previous result:
    ``chain(add.s(1, 2), mul.s(10))`` or ``add.s(1, 2) | mul.s(10)``.

    Runs as one checkpointed workflow; returns the last link's result handle, whose ``parent``
    chain leads back to the first link.
    """

    subtask_kind = "chain"

    def __init__(self, *tasks: Any, app: PgTasks | None = None, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], list | tuple) and not isinstance(
                tasks[0], Signature):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for item in tasks:
            if not isinstance(item, Signature):
                raise TaskError(f"chain: every link must be a signature (task.s(...)), "
                                f"got {item!r}")
            if isinstance(item, chain):
                flat.extend(item.tasks)
            else:
                flat.append(item)
        found_app = app or next((t._app for t in flat if t._app is not None), None)
        super().__init__("pgtasks.chain", (), {"tasks": flat}, app=found_app, options=options)

    @property
    def tasks(self) -> list[Signature]:
        return [from_dict(t, self._app) for t in self["kwargs"]["tasks"]]

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"

    def __or__(self, other: Any) -> chain:
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> chain:
        tasks = self.tasks
        if tasks and args:
            tasks[0] = tasks[0].clone(args)
        return chain(*tasks, app=self._app, **{**self.options, **options})

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        from pgtasks.workflow.chains import start_chain

        tasks = self.tasks
        if not tasks:
            raise TaskError("chain: nothing to run (no links)")
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs)
        if args or kwargs:
            tasks[0] = tasks[0].clone(args, kwargs)
        return start_chain(self.app, tasks, {**self.options, **options})

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        result: Any = None
        value: tuple[Any, ...] | None = tuple(args or ()) or None
        for link in self.tasks:
            result = link.apply(value, kwargs if result is None else None)
            value = (result.get(),)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


# -- group ------------------------------------------------------------------------------------


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel: ``group(add.s(i, i) for i in range(10))``; returns a
    :class:`GroupResult`."""

    subtask_kind = "group"

    def __init__(self, *tasks: Any, app: PgTasks | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature) and isinstance(
                tasks[0], Iterable):
            tasks = tuple(tasks[0])
        for item in tasks:
            if not isinstance(item, Signature):
                raise TaskError(f"group: every member must be a signature (task.s(...)), "
                                f"got {item!r}")
        found_app = app or next((t._app for t in tasks if t._app is not None), None)
        super().__init__("pgtasks.group", (), {"tasks": list(tasks)}, app=found_app,
                         options=options)

    @property
    def tasks(self) -> list[Signature]:
        return [from_dict(t, self._app) for t in self["kwargs"]["tasks"]]

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __iter__(self) -> Iterator[Signature]:  # type: ignore[override]
        return iter(self.tasks)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chord):
            return NotImplemented
        if isinstance(other, Signature) and not isinstance(other, group | chain):
            return chord(self, other)
        return super().__or__(other)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> GroupResult:
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs)
        group_id = options.pop("task_id", None) or options.pop("group_id", None) or _new_id()
        plain: list[tuple[Signature, str]] = []
        results: list[AsyncResult | GroupResult] = []
        for member in self.tasks:
            sig = member.clone(args, kwargs, **options)
            if type(sig) is Signature and not sig.options.get("link") and not sig.options.get(
                    "link_error"):
                task_id = sig.options.get("task_id") or _new_id()
                plain.append((sig, task_id))
                results.append(AsyncResult(task_id, app, sig.name))
            else:
                results.append(sig.apply_async())
        if plain:
            app.enqueue_many([(s.name, s.args, s.kwargs,
                               {**_call_options(s.options), "task_id": tid})
                              for s, tid in plain])
        return GroupResult(group_id, results, app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> GroupResult:
        return GroupResult(_new_id(), [t.apply(args, kwargs) for t in self.tasks], self.app)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


def _call_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in ("group_id", "chord")}


# -- chord ------------------------------------------------------------------------------------


class chord(Signature):  # noqa: N801 - Celery's name
    """A group whose results, in order, are passed as a list to a callback once every member
    has finished: ``chord(add.s(i, i) for i in range(100))(tsum.s())``.

    If a member fails, the callback does not run: its result becomes a
    :class:`~pgtasks.errors.ChordError` naming the member, and its ``link_error`` errbacks run.
    """

    subtask_kind = "chord"

    def __init__(self, header: Any, body: Signature | None = None, *,
                 app: PgTasks | None = None, **options: Any) -> None:
        members = header.tasks if isinstance(header, group) else list(header)
        for item in members:
            if type(item) is not Signature:
                raise TaskError(f"chord: header members must be task signatures "
                                f"(task.s(...)), got {item!r}")
        found_app = app or next((t._app for t in members if t._app is not None), None)
        super().__init__("pgtasks.chord", (), {"header": members, "body": body},
                         app=found_app or (body._app if body is not None else None),
                         options=options)

    @property
    def header(self) -> list[Signature]:
        return [from_dict(t, self._app) for t in self["kwargs"]["header"]]

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"]["body"]
        return None if body is None else from_dict(body, self._app)

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.header)}], {self.body!r})"

    def __call__(self, body: Signature | None = None, **options: Any) -> AsyncResult:
        """``chord(header)(callback)``: queue the chord with that callback."""
        if body is not None:
            self["kwargs"]["body"] = body
        return self.apply_async(**options)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> AsyncResult:
        from pgtasks.workflow.chords import start_chord

        body = self.body
        if body is None:
            raise TaskError("chord: no callback given; use chord(header)(callback) or "
                            "chord(header, callback)")
        header = [m.clone(args, kwargs) for m in self.header]
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs)
        return start_chord(self.app, header, body.clone(**{**self.options, **options}))

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run here and now: the header in order, then the callback with their results."""
        body = self.body
        if body is None:
            raise TaskError("chord: no callback given")
        values = [m.apply(args, kwargs).get() for m in self.header]
        return body.apply((values,))


# -- map, starmap, chunks ---------------------------------------------------------------------


def xmap(task: Task, items: Iterable[Any]) -> Signature:
    """One task that calls ``task`` on each item in turn (``task.map(items)``)."""
    return Signature("pgtasks.map", (task.name, list(items)), app=task.app)


def xstarmap(task: Task, items: Iterable[Sequence[Any]]) -> Signature:
    """One task that calls ``task(*item)`` for each item (``task.starmap(items)``)."""
    return Signature("pgtasks.starmap", (task.name, [list(i) for i in items]), app=task.app)


class chunks(Signature):  # noqa: N801 - Celery's name
    """``task.chunks(items, n)``: the items split into tasks of ``n`` calls each, run as a
    group; each member returns the list of its calls' results."""

    subtask_kind = "chunks"

    def __init__(self, task: Task, items: Iterable[Sequence[Any]], n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TaskError(f"{task.name}.chunks: the chunk size must be an int >= 1, got {n!r}")
        super().__init__("pgtasks.chunks", (), {"task": task.name,
                                                "items": [list(i) for i in items], "n": n},
                         app=task.app)

    def group(self) -> group:
        kw = self["kwargs"]
        items = kw["items"]
        return group([Signature("pgtasks.starmap", (kw["task"], items[i:i + kw["n"]]),
                                app=self._app) for i in range(0, len(items), kw["n"])],
                     app=self._app)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> GroupResult:
        return self.group().apply_async(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async()


_KINDS: dict[str, type[Signature]] = {"chain": chain, "group": group, "chord": chord,
                                      "chunks": chunks}


# -- results ----------------------------------------------------------------------------------


class GroupResult:
    """The results of a group's members, in order (Celery's ``GroupResult``)."""

    def __init__(self, id: str, results: Sequence[AsyncResult | GroupResult],  # noqa: A002
                 app: PgTasks | None = None, parent: AsyncResult | None = None) -> None:
        self.id = id
        self.results = list(results)
        self.app = app or _default_app()
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __iter__(self) -> Iterator[AsyncResult | GroupResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult | GroupResult:
        return self.results[index]

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        return self.results

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True,
            **options: Any) -> list[Any]:
        """Every member's result, in order; waits at most ``timeout`` seconds in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"group {self.id} did not finish within {timeout}s")
            values.append(result.get(timeout=remaining, propagate=propagate, **options))
        return values

    join = get

    def revoke(self, terminate: bool = False, reason: str = "revoked") -> None:
        for result in self.results:
            result.revoke(terminate=terminate, reason=reason)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    @property
    def state(self) -> str:
        if self.failed():
            return states.FAILURE
        return states.SUCCESS if self.ready() else states.PENDING


__all__ = ["GroupResult", "Signature", "chain", "chord", "chunks", "from_dict", "group",
           "signature", "xmap", "xstarmap"]
