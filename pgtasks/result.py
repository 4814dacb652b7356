"""AsyncResult: the state and outcome of a queued task, waited on with LISTEN/NOTIFY."""

from __future__ import annotations

import builtins
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks import states
from pgtasks.db.queries import query
from pgtasks.errors import PgTasksError, RemoteError, TaskRevokedError, TimeoutError

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

log = logging.getLogger("pgtasks.result")

class ResultListener:
    """One LISTEN connection per process, shared by every waiting ``get()``.

    Waiters re-check the database whenever a notification names their task (or says ``*``), when
    the connection is re-established, and at a slow safety interval.
    """

    def __init__(self, app: PgTasks) -> None:
        self.app = app
        self._cond = threading.Condition()
        self._generation = 0
        self._seen: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()

    def start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="pgtasks-results",
                                                daemon=True)
                self._thread.start()
        self._ready.wait(5.0)

    def stop(self) -> None:
        self._stop.set()

    def _bump(self, ids: list[str] | None) -> None:
        with self._cond:
            self._generation += 1
            if ids is None:
                self._seen.clear()
                self._seen["*"] = self._generation
            else:
                for task_id in ids:
                    self._seen[task_id] = self._generation
                if len(self._seen) > 10000:
                    self._seen.clear()
                    self._seen["*"] = self._generation
            self._cond.notify_all()

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                with self.app.store.connect() as conn:
                    conn.execute(query("results.listen_results"))
                    self._ready.set()
                    self._bump(None)
                    delay = 0.05
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._bump(None if note.payload == "*" else note.payload.split(","))
            except (psycopg.Error, PgTasksError) as exc:
                log.debug("result listener reconnecting: %s", exc)
                self._ready.set()
                self._bump(None)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def wait(self, task_id: str, since: int, timeout: float) -> int:
        """Block until ``task_id`` may have changed after generation ``since`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                mark = max(self._seen.get(task_id, 0), self._seen.get("*", 0))
                if mark > since:
                    return self._generation
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._generation
                self._cond.wait(remaining)

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation


def rebuild_exception(exc_type: str | None, message: str | None,
                      traceback: str | None) -> BaseException:
    """The stored failure as an exception: the original class when it is already imported
    and can be built from its message (nothing is imported from what the database says)."""
    if not exc_type:
        return RemoteError("Exception", message or "", traceback)
    module_name, _, qualname = exc_type.rpartition(".")
    module = sys.modules.get(module_name or "builtins", builtins)
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            break
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            exc = cls(message) if message is not None else cls()
        except Exception:  # noqa: BLE001 - exotic constructors fall back to RemoteError
            return RemoteError(exc_type, message or "", traceback)
        if isinstance(exc, BaseException):
            return exc
    return RemoteError(exc_type, message or "", traceback)


class AsyncResult:
    """The handle of a queued task (Celery's ``AsyncResult``)."""

    def __init__(self, task_id: str, app: PgTasks, task_name: str | None = None,
                 parent: AsyncResult | None = None) -> None:
        self.id = task_id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    def _load(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        row = self.app.store.get_result(self.id)
        if row is not None:
            info = dict(row)
            self._cache = info
            return info
        job = self.app.store.job_status(self.id)
        if job is None:
            return {"state": states.PENDING}
        if job["state"] == "running":
            return {**job, "state": states.STARTED}
        if job["retries"] > 0:
            return {**job, "state": states.RETRY}
        return {**job, "state": states.PENDING}

    @property
    def state(self) -> str:
        return str(self._load()["state"])

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value once successful, the exception once failed, else None."""
        info = self._load()
        return self._value(info, propagate=False)

    info = result

    @property
    def traceback(self) -> str | None:
        return self._load().get("traceback")

    def _value(self, info: dict[str, Any], propagate: bool) -> Any:
        state = info["state"]
        if state == states.SUCCESS:
            if info.get("result") is None:
                return None
            return self.app.result_serializer.loads(info["result"], info["content_type"])
        if state == states.FAILURE:
            exc = rebuild_exception(info.get("exc_type"), info.get("exc_message"),
                                    info.get("traceback"))
            if propagate:
                raise exc
            return exc
        if state == states.REVOKED:
            exc = TaskRevokedError(f"task {self.id} was revoked"
                                   + (f": {info['exc_message']}" if info.get("exc_message")
                                      else ""))
            if propagate:
                raise exc
            return exc
        return None

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 1.0, **_: Any) -> Any:
        """Wait for the outcome (LISTEN/NOTIFY, no busy poll) and return it; re-raise the
        task's exception when ``propagate``. Raises :class:`TimeoutError` after ``timeout``."""
        listener = self.app.result_listener()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            generation = listener.generation
            self._cache = None
            info = self._load()
            if info["state"] in states.READY_STATES:
                return self._value(info, propagate)
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"task {self.id} did not finish within {timeout}s "
                                   f"(state {info['state']})")
            listener.wait(self.id, generation, min(remaining, 5.0))

    wait = get

    def forget(self) -> None:
        """Delete the stored outcome."""
        self._cache = None
        self.app.store.forget_result(self.id)

    def revoke(self, terminate: bool = False, reason: str = "revoked") -> None:
        """Revoke the task: a queued task never runs; a running one is recorded as REVOKED."""
        self._cache = None
        self.app.store.revoke(self.id, reason)

    def iter_parents(self) -> Iterator[AsyncResult]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class EagerResult(AsyncResult):
    """The outcome of a task run in the caller (``task.apply()`` or ``task_always_eager``)."""

    def __init__(self, task_id: str, app: PgTasks, state: str, value: Any,
                 traceback: str | None = None) -> None:
        super().__init__(task_id, app)
        self._state = state
        self._value_ = value
        self._traceback = traceback

    def _load(self) -> dict[str, Any]:
        return {"state": self._state}

    @property
    def result(self) -> Any:
        return self._value_

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 1.0, **_: Any) -> Any:
        if self._state == states.FAILURE and propagate:
            raise self._value_
        return self._value_
