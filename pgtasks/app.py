"""The application: task registry, configuration, enqueueing, and the way to the database."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import psycopg

from pgtasks.calls import CallPlan, plan_call
from pgtasks.config import Config
from pgtasks.db.connect import resolve_dsn, validate_dsn
from pgtasks.db.migrate import migrate
from pgtasks.db.store import NewJob, Store
from pgtasks.errors import (
    ConfigurationError,
    DuplicateJob,
    NotRegistered,
    ScheduleError,
    TaskError,
)
from pgtasks.queues import QueueSpec, declare, queue_specs
from pgtasks.result import AsyncResult, ResultListener
from pgtasks.routing import route
from pgtasks.serialization import Serializer
from pgtasks.task import (
    Task,
    check_task_options,
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
        self.declared_queues: dict[str, QueueSpec] = {}
        self._store: Store | None = None
        self._lock = threading.RLock()
        self._listener: ResultListener | None = None
        self._serializers: dict[str, Serializer] = {}
        #: Entries declared with ``@app.periodic``, in ``beat_schedule``'s format.
        self.periodic_entries: dict[str, dict[str, Any]] = {}
        for fun, options in _shared_tasks:
            self._register(fun, options)
        from pgtasks.workflow.builtins import register_builtins

        register_builtins(self)
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

    def serializer_for(self, name: str) -> Serializer:
        """A serializer by name (a task's or a call's ``serializer=``), within accept_content."""
        return self._serializer(name, self.conf.accept_content)

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
        owner = self.__dict__.pop("_workflow_owner", None)
        if owner is not None:
            owner.stop()
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
    def task(self, fun: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Task]:
        ...

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

    def periodic(self, *, cron: str | None = None, every: float | timedelta | None = None,
                 catch_up: str = "latest", name: str | None = None,
                 args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 **options: Any) -> Callable[[Callable[..., Any]], Task]:
        """Declare a task that beat runs on a schedule: ``@app.periodic(cron="*/5 * * * *")``
        or ``@app.periodic(every=30)``.

        ``cron`` is a 5-field cron line read in ``app.conf.timezone``; ``every`` is seconds or a
        timedelta. ``catch_up`` says what a scheduler that was down does with the missed ticks:
        ``"latest"`` (one run), ``"all"`` (each, up to ``beat_max_catch_up``) or ``"none"``.
        ``name`` names both the task and its schedule entry; other options go to ``@app.task``.
        A task with a ``scheduled_time`` parameter receives its tick (an aware UTC datetime).
        """
        from pgtasks.beat import check_entry

        if (cron is None) == (every is None):
            raise ScheduleError(f"@app.periodic{f' {name!r}' if name else ''}: "
                                f"give exactly one of cron= or every=")
        if name is not None:
            options["name"] = name
        check_task_options(options, "@app.periodic")

        def decorate(fun: Callable[..., Any]) -> Task:
            task = self._register(fun, options)
            entry = {"task": task.name, "schedule": cron if cron is not None else every,
                     "catch_up": catch_up, "args": tuple(args), "kwargs": dict(kwargs or {})}
            check_entry(self, task.name, entry)
            self.periodic_entries[task.name] = entry
            return task

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

    # -- queues ----------------------------------------------------------------------------

    def queue(self, name: str, *, concurrency: int | None = None,
              worker_concurrency: int | None = None, rate_limit: str | float | None = None,
              partition_by: str | None = None) -> QueueSpec:
        """Declare a queue's limits, which hold across every worker (see :mod:`pgtasks.queues`).

        ``concurrency``: jobs running at once over all workers (per partition key with
        ``partition_by``, the keyword argument whose value is a job's partition unless it is
        given ``partition=``); ``worker_concurrency``: at once on one worker; ``rate_limit``:
        Celery's "N/s", "N/m", "N/h", over all workers. Workers read declarations at start.
        """
        spec = declare(name, concurrency=concurrency, worker_concurrency=worker_concurrency,
                       rate_limit=rate_limit, partition_by=partition_by)
        self.declared_queues[name] = spec
        return spec

    @property
    def queue_specs(self) -> dict[str, QueueSpec]:
        """Every declared queue: ``task_queues`` and ``app.queue(...)``."""
        return queue_specs(self.conf.task_queues, self.declared_queues)

    def queue_spec(self, name: str) -> QueueSpec | None:
        # Enqueueing asks this for every job: skip parsing task_queues when it is unset.
        found = self.declared_queues.get(name)
        if found is None and self.conf.task_queues:
            found = self.queue_specs.get(name)
        return found

    # -- sending ---------------------------------------------------------------------------

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None, *, _task: Task | None = None,
                  **options: Any) -> AsyncResult:
        """Queue a call to a task by name (it need not be registered in this process)."""
        task = _task if _task is not None else self.tasks.get(name)
        args, kwargs = self._check_call(name, args, kwargs)
        if self.conf.task_always_eager and task is not None:
            return task.apply(args, kwargs, **options)
        if options.get("link") is not None or options.get("link_error") is not None:
            from pgtasks.workflow.chains import send_with_links

            return send_with_links(self, name, args, kwargs, options)
        on_duplicate = options.get("on_duplicate", "raise")
        if on_duplicate not in ("raise", "existing"):
            raise TaskError(f"{name}: on_duplicate must be 'raise' or 'existing', "
                            f"got {on_duplicate!r}")
        job = self.build_job(name, task, args, kwargs, options, datetime.now(UTC))
        conn = self._connection(name, options)
        while True:
            try:
                self.store.enqueue(job, conn=conn)
            except DuplicateJob as exc:
                if on_duplicate == "raise" or job.dedup_key is None:
                    raise
                if exc.existing_task_id is not None:
                    return AsyncResult(exc.existing_task_id, self, name)
                continue  # the holder finished between our insert and our look-up: try again
            return AsyncResult(job.task_id, self, name)

    def enqueue_many(self, calls: Iterable[Call],
                     connection: psycopg.Connection[Any] | None = None) -> list[AsyncResult]:
        """Queue many calls in one statement (one round trip, one commit).

        Each call is ``(task or name, args, kwargs, options)``. Jobs whose deduplication id is
        already queued are skipped; their results are left out of the returned list.
        """
        now = datetime.now(UTC)
        jobs: list[NewJob] = []
        # Calls to one task with the same options object (task.delay_many) share one plan. The
        # cache holds each options object, so its id can't be reused by another while cached.
        plans: dict[tuple[str, int], tuple[Mapping[str, Any], CallPlan]] = {}
        for target, args, kwargs, options in calls:
            name = target.name if isinstance(target, Task) else target
            checked_args, checked_kwargs = self._check_call(name, args, kwargs)
            cached = plans.get((name, id(options)))
            plan = cached[1] if cached is not None else None
            if plan is None:
                task = target if isinstance(target, Task) else self.tasks.get(name)
                if "connection" in options:
                    raise TaskError(f"{name}: pass connection= to enqueue_many, not per call")
                plan = plan_call(self, name, task, checked_args, checked_kwargs, options, now)
                if plan.reusable:
                    plans[(name, id(options))] = (options, plan)
            jobs.append(plan.job(checked_args, checked_kwargs))
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
        return plan_call(self, name, task, args, kwargs, options, now).job(args, kwargs)

    # -- workflows (pgtasks/workflow/) ----------------------------------------------------------

    def workflow(self, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """Declare a durable workflow: ``@app.workflow()`` (options: name, queue, priority,
        serializer, time_limit, soft_time_limit). See :class:`pgtasks.workflow.Workflow`."""
        from pgtasks.workflow.core import WORKFLOW_OPTIONS, Workflow

        unknown = set(options) - WORKFLOW_OPTIONS
        if unknown:
            raise unknown_option_error("workflow option", "@app.workflow", unknown,
                                       WORKFLOW_OPTIONS)

        def decorate(fun: Callable[..., Any]) -> Any:
            return self.register_task(Workflow(self, fun, options))

        return decorate

    def step(self, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """Declare a checkpointed step: ``@app.step(retries=3, retry_backoff=2.0)``.
        See :class:`pgtasks.workflow.Step` (outside a workflow a step is a plain call)."""
        from pgtasks.workflow.core import STEP_OPTIONS, Step

        unknown = set(options) - STEP_OPTIONS
        if unknown:
            raise unknown_option_error("step option", "@app.step", unknown, STEP_OPTIONS)

        def decorate(fun: Callable[..., Any]) -> Any:
            return Step(self, fun, options)

        return decorate

    def sleep(self, seconds: float) -> None:
        """Durable sleep inside a workflow: a restart sleeps only what remains."""
        from pgtasks.workflow.core import durable_sleep

        durable_sleep(seconds)

    def start_workflow(self, workflow: Any, /, *args: Any, workflow_id: str | None = None,
                       **kwargs: Any) -> Any:
        """Queue ``workflow(*args, **kwargs)`` for a worker; ``workflow_id`` is an idempotency
        key (a second start returns the first run's handle). Returns a WorkflowHandle."""
        from pgtasks.workflow.core import Workflow, start

        if not isinstance(workflow, Workflow):
            raise TaskError(f"start_workflow() takes an @app.workflow function, got {workflow!r}")
        return start(workflow, args, kwargs, workflow_id, {})

    def workflow_id(self, workflow_id: str) -> Any:
        """``with app.workflow_id("order-42"): checkout(42)``: the id of the next workflow
        started in this block (an idempotency key for inline runs too)."""
        import contextlib

        from pgtasks.workflow.context import next_workflow_id

        @contextlib.contextmanager
        def scope() -> Any:
            token = next_workflow_id.set(workflow_id)
            try:
                yield
            finally:
                next_workflow_id.reset(token)

        return scope()

    def set_event(self, key: str, value: Any) -> None:
        """Publish ``value`` under ``key`` for the running workflow."""
        from pgtasks.workflow import messages

        messages.set_event(self, key, value)

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The event ``key`` of ``workflow_id``, waiting up to ``timeout`` s (None if absent)."""
        from pgtasks.workflow import messages

        return messages.get_event(self, workflow_id, key, timeout)

    def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
        """Send ``message`` to a workflow (it takes it with ``app.recv``)."""
        from pgtasks.workflow import messages

        messages.send(self, workflow_id, message, topic)

    def recv(self, topic: str | None = None, timeout: float = 60.0) -> Any:
        """In a workflow: take the next message on ``topic``, waiting up to ``timeout`` s."""
        from pgtasks.workflow import messages

        return messages.recv(self, topic, timeout)

    def list_workflows(self, status: str | None = None, name: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        from pgtasks.workflow import manage

        return manage.list_workflows(self, status, name, limit)

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        from pgtasks.workflow import manage

        return manage.get_workflow(self, workflow_id)

    def workflow_steps(self, workflow_id: str) -> list[dict[str, Any]]:
        from pgtasks.workflow import manage

        return manage.workflow_steps(self, workflow_id)

    def cancel_workflow(self, workflow_id: str) -> bool:
        from pgtasks.workflow import manage

        return manage.cancel_workflow(self, workflow_id)

    def resume_workflow(self, workflow_id: str) -> Any:
        from pgtasks.workflow import manage

        return manage.resume_workflow(self, workflow_id)

    def restart_workflow(self, workflow_id: str, from_step: int = 0,
                         new_workflow_id: str | None = None) -> Any:
        """Run a workflow again as a new one, keeping its checkpoints before ``from_step``."""
        from pgtasks.workflow import manage

        return manage.restart_workflow(self, workflow_id, from_step, new_workflow_id)

    def GroupResult(self, id: str, results: Sequence[Any]) -> Any:  # noqa: N802, A002
        from pgtasks.canvas import GroupResult

        return GroupResult(id, results, self)

    def launch(self, **worker_options: Any) -> Any:
        """Run a worker on background threads of this process (a web app that also runs its
        workflows); returns the Worker (``.stop()``, ``.wait()``)."""
        worker = self.Worker(**worker_options)
        worker.run_in_background()
        return worker

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
