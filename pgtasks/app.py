"""The application: task registry, configuration, enqueueing, and the way to the database."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload

import psycopg

from pgtasks.config import Config
from pgtasks.db.connect import resolve_dsn, validate_dsn
from pgtasks.db.migrate import migrate
from pgtasks.db.store import NewJob, Store
from pgtasks.errors import ConfigurationError, NotRegistered, TaskError
from pgtasks.result import AsyncResult, ResultListener
from pgtasks.routing import route
from pgtasks.serialization import Serializer
from pgtasks.task import (
    CALL_OPTIONS,
    Task,
    check_priority,
    check_task_options,
    current_request_stack,
    new_task_id,
    resolve_times,
    unknown_option_error,
)

log = logging.getLogger("pgtasks")

#: Tasks declared with ``@shared_task``; every app registers them.
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_apps: list[PgTasks] = []

#: A call for :meth:`PgTasks.enqueue_many`: (task or task name, args, kwargs, options).
Call = tuple[Task | str, Sequence[Any], Mapping[str, Any], Mapping[str, Any]]


class PgTasks:
    """A pgtasks application.

    ``PgTasks("proj", dsn="postgresql://...")``: the DSN falls back to ``PGTASKS_DSN`` and then
    to an embedded Postgres kept under ``./.pgtasks``. Settings use Celery's names
    (``app.conf.task_default_queue``, ``result_expires``, ...).
    """

    def __init__(self, main: str | None = None, *, dsn: str | None = None,
                 config_source: Any = None, **settings: Any) -> None:
        self.main = main
        self.conf = Config(**settings)
        if dsn is not None:
            self.conf.dsn = dsn
        if config_source is not None:
            self.config_from_object(config_source)
        self.tasks: dict[str, Task] = {}
        self._store: Store | None = None
        self._lock = threading.RLock()
        self._listener: ResultListener | None = None
        self._serializers: dict[str, Serializer] = {}
        for fun, options in _shared_tasks:
            self._register(fun, options)
        _apps.append(self)
        os.register_at_fork(after_in_child=self._after_fork)

    def __repr__(self) -> str:
        return f"<PgTasks {self.main or '__main__'}>"

    # -- configuration ---------------------------------------------------------------------

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Load settings from a module, module path, mapping or object (Celery's rules)."""
        self.conf.from_object(obj, namespace=namespace)
        self._serializers.clear()

    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] = (),
                           related_name: str = "tasks", force: bool = True) -> None:
        """Import ``<package>.<related_name>`` for each package, registering its tasks."""
        names = packages() if callable(packages) else packages
        for package in names:
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise

    def import_default_modules(self) -> None:
        for module in [*self.conf.imports, *self.conf.include]:
            importlib.import_module(module)

    @property
    def serializer(self) -> Serializer:
        """The serializer for task arguments (``task_serializer``, ``accept_content``)."""
        return self._serializer(self.conf.task_serializer, self.conf.accept_content)

    @property
    def result_serializer(self) -> Serializer:
        accept = self.conf.result_accept_content or self.conf.accept_content
        return self._serializer(self.conf.result_serializer, accept)

    def _serializer(self, name: str, accept: Iterable[str]) -> Serializer:
        key = f"{name}|{','.join(accept)}"
        found = self._serializers.get(key)
        if found is None:
            found = self._serializers[key] = Serializer(name, accept)
        return found

    # -- the database ----------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return self.store.dsn

    @property
    def store(self) -> Store:
        """The database operations, opened (and the schema migrated) on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    dsn = validate_dsn(resolve_dsn(self.conf.dsn))
                    if self.conf.auto_migrate:
                        migrate(dsn)
                    self._store = Store(dsn, pool_max_size=int(self.conf.pool_max_size))
        return self._store

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns their names."""
        return migrate(validate_dsn(resolve_dsn(self.conf.dsn)))

    def result_listener(self) -> ResultListener:
        if self._listener is None:
            with self._lock:
                if self._listener is None:
                    self._listener = ResultListener(self)
        self._listener.start()
        return self._listener

    def close(self) -> None:
        """Close the connection pool and stop the result listener."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _after_fork(self) -> None:
        # A forked child (process pool) must not share the parent's sockets.
        if self._store is not None:
            self._store.forget_pool_after_fork()
        self._store = None
        self._listener = None
        self._lock = threading.RLock()

    # -- tasks -----------------------------------------------------------------------------

    @overload
    def task(self, fun: Callable[..., Any], /) -> Task: ...

    @overload
    def task(self, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, /,
             **options: Any) -> Task | Callable[[Callable[..., Any]], Task]:
        """Declare a task: ``@app.task`` or ``@app.task(name=..., queue=..., bind=True, ...)``.

        Unknown options raise :class:`UnknownTaskOption` here, at decoration time.
        """
        if fun is not None:
            if not callable(fun):
                raise TaskError(f"@app.task expects a function, got {fun!r}")
            return self._register(fun, options)

        check_task_options(options, "@app.task")

        def decorate(f: Callable[..., Any]) -> Task:
            return self._register(f, options)

        return decorate

    def _register(self, fun: Callable[..., Any], options: Mapping[str, Any]) -> Task:
        base = options.get("base")
        cls = base if isinstance(base, type) and issubclass(base, Task) else Task
        task = cls(self, fun, {k: v for k, v in options.items() if k != "base"})
        self.tasks[task.name] = task
        return task

    def register_task(self, task: Task) -> Task:
        self.tasks[task.name] = task
        return task

    # -- sending ---------------------------------------------------------------------------

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None, *, _task: Task | None = None,
                  **options: Any) -> AsyncResult:
        """Queue a call to a task by name (it need not be registered in this process)."""
        task = _task if _task is not None else self.tasks.get(name)
        args, kwargs = self._check_call(name, args, kwargs)
        if self.conf.task_always_eager and task is not None:
            return task.apply(args, kwargs, **options)
        job = self.build_job(name, task, args, kwargs, options, datetime.now(UTC))
        self.store.enqueue(job, conn=self._connection(name, options))
        return AsyncResult(job.task_id, self, name)

    def enqueue_many(self, calls: Iterable[Call],
                     connection: psycopg.Connection[Any] | None = None) -> list[AsyncResult]:
        """Queue many calls in one statement (one round trip, one commit).

        Each call is ``(task or name, args, kwargs, options)``. Jobs whose deduplication id is
        already queued are skipped; their results are left out of the returned list.
        """
        now = datetime.now(UTC)
        jobs: list[NewJob] = []
        for target, args, kwargs, options in calls:
            name = target.name if isinstance(target, Task) else target
            task = target if isinstance(target, Task) else self.tasks.get(name)
            checked_args, checked_kwargs = self._check_call(name, args, kwargs)
            if "connection" in options:
                raise TaskError(f"{name}: pass connection= to enqueue_many, not per call")
            jobs.append(self.build_job(name, task, checked_args, checked_kwargs, options, now))
        inserted = self.store.enqueue_many(jobs, conn=connection)
        return [AsyncResult(j.task_id, self, j.task_name) for j in jobs if j.task_id in inserted]

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, self, task_name)

    @staticmethod
    def _check_call(name: str, args: Sequence[Any] | None,
                    kwargs: Mapping[str, Any] | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args is not None and not isinstance(args, list | tuple):
            raise TaskError(f"{name}: args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TaskError(f"{name}: kwargs must be a dict, got {type(kwargs).__name__}")
        return tuple(args or ()), dict(kwargs or {})

    @staticmethod
    def _connection(name: str, options: Mapping[str, Any]) -> psycopg.Connection[Any] | None:
        conn = options.get("connection")
        if conn is not None and not isinstance(conn, psycopg.Connection):
            raise TaskError(f"{name}: connection must be a psycopg.Connection (sync), "
                            f"got {type(conn).__name__}")
        return conn

    def queue_for(self, name: str, task: Task | None, args: Sequence[Any],
                  kwargs: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, int | None]:
        """The queue (and routed priority) of a call: the call's option, the task's, the
        matching ``task_routes`` entry, then ``task_default_queue``."""
        if options.get("queue"):
            return str(options["queue"]), None
        if task is not None and task.queue:
            return task.queue, None
        found = route(self.conf.task_routes, name, args, kwargs, options)
        if found and found.get("queue"):
            return str(found["queue"]), found.get("priority")
        return str(self.conf.task_default_queue), None

    def build_job(self, name: str, task: Task | None, args: tuple[Any, ...],
                  kwargs: dict[str, Any], options: Mapping[str, Any], now: datetime) -> NewJob:
        """Validate a call and turn it into a job row."""
        unknown = set(options) - CALL_OPTIONS
        if unknown:
            raise unknown_option_error("apply_async option", name, unknown, CALL_OPTIONS)
        queue, routed_priority = self.queue_for(name, task, args, kwargs, options)
        priority = options.get("priority")
        if priority is None:
            priority = routed_priority
        if priority is None and task is not None:
            priority = task.priority
        if priority is None:
            priority = self.conf.task_default_priority
        check_priority(priority, name)
        expires = options.get("expires")
        if expires is None and task is not None:
            expires = task.expires
        run_at, expires_at = resolve_times(name, options.get("countdown"), options.get("eta"),
                                           expires, now)
        serializer = self.serializer
        chosen = options.get("serializer") or (task.serializer if task is not None else None)
        if chosen and chosen != serializer.name:
            serializer = self._serializer(chosen, self.conf.accept_content)
        payload = serializer.dumps_call(name, args, kwargs,
                                        task.run if task is not None else None)
        headers: dict[str, Any] = {}
        for key in ("time_limit", "soft_time_limit", "ignore_result", "link", "link_error"):
            if options.get(key) is not None:
                headers[key] = options[key]
        if options.get("headers"):
            headers["headers"] = dict(options["headers"])
        parent_id, root_id = options.get("parent_id"), options.get("root_id")
        stack = current_request_stack()
        if parent_id is None and stack and stack[-1].id and not stack[-1].is_eager:
            parent_id = stack[-1].id
            root_id = root_id or stack[-1].root_id
        task_id = options.get("task_id") or new_task_id()
        if not isinstance(task_id, str):
            raise TaskError(f"{name}: task_id must be a str, got {type(task_id).__name__}")
        return NewJob(
            task_id=task_id, task_name=name, queue=queue, content_type=serializer.content_type,
            payload=payload, priority=priority, run_at=run_at, expires_at=expires_at,
            headers=headers or None, parent_id=parent_id, root_id=root_id,
            dedup_key=options.get("deduplication_id"), partition_key=options.get("partition"),
        )

    # -- running ---------------------------------------------------------------------------

    def Worker(self, **options: Any) -> Any:  # noqa: N802 - Celery's name
        from pgtasks.worker.loop import Worker

        return Worker(self, **options)

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"no task named {name!r} is registered") from None


def shared_task(fun: Callable[..., Any] | None = None, /,
                **options: Any) -> Any:
    """Declare a task without an app (for reusable libraries): every app registers it."""

    def decorate(f: Callable[..., Any]) -> Any:
        _shared_tasks.append((f, dict(options)))
        registered = None
        for app in _apps:
            registered = app._register(f, options)
        return registered if registered is not None else _SharedTaskProxy(f, options)

    check_task_options(options, "@shared_task")
    if fun is not None:
        return decorate(fun)
    return decorate


class _SharedTaskProxy:
    """A shared task before any app exists: resolves to the current app's task when used."""

    def __init__(self, fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self._fun = fun
        self._options = options

    def _task(self) -> Task:
        if not _apps:
            raise ConfigurationError(
                f"shared task {self._fun.__qualname__} used before any PgTasks app was created"
            )
        app = _apps[-1]
        for task in app.tasks.values():
            if task.run is self._fun:
                return task
        return app._register(self._fun, self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)
