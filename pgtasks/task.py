"""Tasks: the ``@app.task`` decorator's product, with Celery's calling API and options."""

from __future__ import annotations

import difflib
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgtasks.errors import MaxRetriesExceededError, Retry, TaskError, UnknownTaskOption
from pgtasks.queues import parse_rate

if TYPE_CHECKING:

    from pgtasks.app import PgTasks
    from pgtasks.result import AsyncResult

#: Options accepted by ``@app.task(...)``, with their defaults (None: from app.conf).
TASK_OPTIONS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "base": None,
    "queue": None,
    "priority": None,
    "max_retries": None,
    "default_retry_delay": None,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": None,
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "time_limit": None,
    "soft_time_limit": None,
    "ignore_result": None,
    "serializer": None,
    "rate_limit": None,
    "expires": None,
    "acks_late": True,
    "track_started": True,
    "typing": True,
    "shared": True,
}

#: Options accepted by ``apply_async`` beyond args/kwargs.
CALL_OPTIONS = frozenset({
    "countdown", "eta", "expires", "queue", "priority", "task_id", "headers", "connection",
    "deduplication_id", "partition", "serializer", "link", "link_error", "ignore_result",
    "time_limit", "soft_time_limit", "retries", "parent_id", "root_id", "routing_key",
    "exchange", "shadow", "add_to_parent", "retry", "retry_policy", "on_duplicate",
})

MAX_PRIORITY = 9


def unknown_option_error(kind: str, owner: str, unknown: Iterable[str],
                         known: Iterable[str]) -> UnknownTaskOption:
    known = sorted(known)
    parts = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return UnknownTaskOption(
        f"{owner}: unknown {kind} {', '.join(parts)}; known: {', '.join(known)}"
    )


def check_task_options(options: Mapping[str, Any], owner: str) -> None:
    """Raise :class:`UnknownTaskOption` for options ``@task`` does not know."""
    unknown = set(options) - set(TASK_OPTIONS)
    if unknown:
        raise unknown_option_error("task option", owner, unknown, TASK_OPTIONS)


@dataclass
class Request:
    """What a running task knows about its own call: ``self.request`` (Celery's fields)."""

    id: str | None = None
    task: str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 0
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    called_directly: bool = True
    is_eager: bool = False
    parent_id: str | None = None
    root_id: str | None = None
    time_limit: tuple[float | None, float | None] = (None, None)


_local = threading.local()


def current_request_stack() -> list[Request]:
    stack: list[Request] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Task:
    """A registered task. Call it to run it here; ``delay``/``apply_async`` to queue it."""

    def __init__(self, app: PgTasks, fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
        module = getattr(fun, "__module__", "__main__")
        prefix = app.main if module == "__main__" and app.main else module
        default_name = f"{prefix}.{fun.__qualname__}"
        check_task_options(options, f"@task {default_name}")
        self.app = app
        self.run = fun
        opts = {**TASK_OPTIONS, **options}
        self.name: str = opts["name"] or default_name
        self.bind: bool = bool(opts["bind"])
        self.queue: str | None = opts["queue"]
        self.priority: int | None = opts["priority"]
        self.max_retries: int | None = opts["max_retries"]
        self.default_retry_delay: float | None = opts["default_retry_delay"]
        self.autoretry_for: tuple[type[BaseException], ...] = tuple(opts["autoretry_for"])
        self.dont_autoretry_for: tuple[type[BaseException], ...] = tuple(
            opts["dont_autoretry_for"])
        self.retry_kwargs: dict[str, Any] = dict(opts["retry_kwargs"] or {})
        self.retry_backoff: bool | float = opts["retry_backoff"]
        self.retry_backoff_max: float = float(opts["retry_backoff_max"])
        self.retry_jitter: bool = bool(opts["retry_jitter"])
        self.time_limit: float | None = opts["time_limit"]
        self.soft_time_limit: float | None = opts["soft_time_limit"]
        self._ignore_result: bool | None = opts["ignore_result"]
        self.serializer: str | None = opts["serializer"]
        self.rate_limit: str | None = opts["rate_limit"]
        self.expires: float | timedelta | datetime | None = opts["expires"]
        self.acks_late: bool = bool(opts["acks_late"])
        self.typing: bool = bool(opts["typing"])
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", self.name)
        self.__module__ = module
        self.__wrapped__ = fun
        self._validate()

    def _validate(self) -> None:
        if self.priority is not None:
            check_priority(self.priority, self.name)
        # Jobs per second over all workers (pgtasks.queues), unlike Celery's per-worker limit.
        self.rate: float | None = parse_rate(self.rate_limit, f"task {self.name}", TaskError)
        for label, value in (("time_limit", self.time_limit),
                             ("soft_time_limit", self.soft_time_limit),
                             ("default_retry_delay", self.default_retry_delay)):
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise TaskError(f"task {self.name}: {label} must be a positive number of "
                                f"seconds, got {value!r}")
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or self.max_retries < 0
        ):
            raise TaskError(f"task {self.name}: max_retries must be a non-negative int or None, "
                            f"got {self.max_retries!r}")
        for exc_type in self.autoretry_for + self.dont_autoretry_for:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise TaskError(f"task {self.name}: autoretry_for must hold exception classes, "
                                f"got {exc_type!r}")

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- settings resolved against the app ------------------------------------------------

    @property
    def ignore_result(self) -> bool:
        if self._ignore_result is not None:
            return self._ignore_result
        return bool(self.app.conf.task_ignore_result)

    @property
    def effective_max_retries(self) -> int | None:
        if self.max_retries is not None:
            return self.max_retries
        return self.retry_kwargs.get("max_retries", self.app.conf.task_max_retries)

    @property
    def request(self) -> Request:
        stack = current_request_stack()
        return stack[-1] if stack else Request(task=self.name)

    # -- calling ---------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stack = current_request_stack()
        pushed = not stack or stack[-1].task != self.name
        if pushed:
            stack.append(Request(task=self.name, args=args, kwargs=kwargs))
        try:
            return self.run(self, *args, **kwargs) if self.bind else self.run(*args, **kwargs)
        finally:
            if pushed:
                stack.pop()

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Queue a call: ``add.delay(2, 3)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> AsyncResult:
        """Queue a call with options (Celery's names): ``countdown``, ``eta``, ``expires``,
        ``queue``, ``priority``, ``task_id``, ``headers``, ``deduplication_id``, ``partition``,
        and ``connection`` to enqueue inside the caller's own psycopg transaction."""
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    def delay_many(self, calls: Iterable[Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]],
                   **options: Any) -> list[AsyncResult]:
        """Queue many calls in one round trip. Each call is an args tuple, or
        ``(args, kwargs)`` when the second element is a dict."""
        normalized: list[tuple[Sequence[Any], Mapping[str, Any]]] = []
        for call in calls:
            if (isinstance(call, tuple | list) and len(call) == 2
                    and isinstance(call[1], Mapping) and isinstance(call[0], tuple | list)):
                normalized.append((call[0], call[1]))
            else:
                normalized.append((tuple(call), {}))
        return self.app.enqueue_many([(self, a, k, options) for a, k in normalized])

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the task here and now, as a worker would, and return an eager result."""
        from pgtasks.worker.execute import run_eagerly

        return run_eagerly(self, tuple(args or ()), dict(kwargs or {}), options)

    # -- retries ---------------------------------------------------------------------------

    def retry(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: datetime | None = None,
              countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Retry:
        """Ask to run again later (Celery's ``self.retry``). Raises :class:`Retry`, or the
        given ``exc`` / :class:`MaxRetriesExceededError` once the retries are used up."""
        request = self.request
        limit = max_retries if max_retries is not None else self.effective_max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"task {self.name}[{request.id}] exceeded its {limit} retries"
            )
        if eta is not None:
            when = max(0.0, (_as_utc(eta) - datetime.now(UTC)).total_seconds())
        elif countdown is not None:
            when = float(countdown)
        else:
            when = float(self.default_retry_delay if self.default_retry_delay is not None
                         else self.app.conf.task_default_retry_delay)
        signal = Retry(exc=exc, when=when)
        if throw:
            raise signal
        return signal

    # -- canvas ----------------------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A signature of this task: ``add.s(2)`` (the parent result is prepended in a chain)."""
        from pgtasks.canvas import Signature

        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature: it ignores the parent's result."""
        from pgtasks.canvas import Signature

        return Signature(self.name, args, kwargs, app=self.app, immutable=True)

    def signature(self, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        from pgtasks.canvas import Signature

        return Signature(self.name, tuple(args or ()), dict(kwargs or {}), app=self.app,
                         options=options, immutable=bool(options.pop("immutable", False)))

    subtask = signature

    def map(self, items: Iterable[Any]) -> Any:
        """One task calling this one on each item: ``add.map([1, 2])`` (Celery's xmap)."""
        from pgtasks.canvas import xmap

        return xmap(self, items)

    def starmap(self, items: Iterable[Sequence[Any]]) -> Any:
        """One task calling ``self(*item)`` for each item (Celery's xstarmap)."""
        from pgtasks.canvas import xstarmap

        return xstarmap(self, items)

    def chunks(self, items: Iterable[Sequence[Any]], n: int) -> Any:
        """The calls split into a group of tasks of ``n`` calls each."""
        from pgtasks.canvas import chunks

        return chunks(self, items, n)


def check_priority(priority: Any, owner: str) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or not (
        0 <= priority <= MAX_PRIORITY
    ):
        raise TaskError(f"{owner}: priority must be an int from 0 to {MAX_PRIORITY} "
                        f"(higher runs first), got {priority!r}")
    return priority


def new_task_id() -> str:
    return str(uuid.uuid4())


def resolve_times(name: str, countdown: float | None, eta: datetime | None,
                  expires: float | timedelta | datetime | None,
                  now: datetime) -> tuple[datetime | None, datetime | None]:
    """(run_at, expires_at) from Celery's countdown/eta/expires, with clear errors."""
    run_at: datetime | None = None
    if countdown is not None and eta is not None:
        raise TaskError(f"{name}: give countdown or eta, not both")
    if countdown is not None:
        if not isinstance(countdown, int | float) or countdown < 0:
            raise TaskError(f"{name}: countdown must be a number of seconds >= 0, "
                            f"got {countdown!r}")
        run_at = now + timedelta(seconds=countdown) if countdown else None
    elif eta is not None:
        if not isinstance(eta, datetime):
            raise TaskError(f"{name}: eta must be a datetime, got {eta!r}")
        run_at = _as_utc(eta)
    expires_at: datetime | None = None
    if expires is not None:
        if isinstance(expires, datetime):
            expires_at = _as_utc(expires)
        elif isinstance(expires, timedelta):
            expires_at = now + expires
        elif isinstance(expires, int | float) and not isinstance(expires, bool):
            expires_at = now + timedelta(seconds=expires)
        else:
            raise TaskError(f"{name}: expires must be seconds, a timedelta or a datetime, "
                            f"got {expires!r}")
        if expires_at <= now:
            raise TaskError(f"{name}: expires {expires!r} is already in the past; "
                            f"the job would never run")
        if run_at is not None and expires_at <= run_at:
            raise TaskError(f"{name}: expires ({expires_at.isoformat()}) is not after the "
                            f"planned start ({run_at.isoformat()}); the job would never run")
    return run_at, expires_at
