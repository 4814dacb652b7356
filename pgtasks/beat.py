"""Beat: enqueue each tick of the app's periodic schedules once, however many schedulers run.

Every scheduler is equal; there is no leader to elect or to go stale. Each entry's row in
``pgtasks.schedules`` holds the last tick it settled. A scheduler that finds ticks due enqueues
their jobs and compare-and-sets ``last_tick`` in one transaction, and commits only if the
compare-and-set won: the others find the tick settled and enqueue nothing. A tick's job also has a
task id derived from (entry, tick), so two schedulers racing for it block on the same key.

Run it as ``pgtasks beat -A proj``, inside workers with ``pgtasks worker -A proj --beat``, or with
:class:`Beat` (``Beat(app, clock=...)`` takes an injected clock, which is how tests travel through
downtime and daylight saving changes without waiting).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.db.store import NewJob
from pgtasks.errors import (
    ConfigurationError,
    DatabaseError,
    DuplicateJob,
    PgTasksError,
    ScheduleError,
)
from pgtasks.schedules import (
    CatchUpPolicy,
    Schedule,
    catch_up_ticks,
    interval,
    latest_due_tick,
    parse_schedule,
    validate_catch_up_policy,
)
from pgtasks.task import CALL_OPTIONS, Task, new_task_id

if TYPE_CHECKING:
    from pgtasks.app import PgTasks
    from pgtasks.worker.loop import Worker

log = logging.getLogger("pgtasks.beat")

#: Keys of a ``beat_schedule`` entry: Celery's, plus ``catch_up`` and ``max_catch_up``.
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative", "catch_up",
                        "max_catch_up"})
#: Call options an entry may not set: beat decides the task id, and a fixed eta or a caller's
#: connection make no sense for a job enqueued again at every tick.
_FORBIDDEN_OPTIONS = frozenset({"task_id", "eta", "connection"})
_TICK_IDS = uuid.UUID("5a0d0a5e-6b1e-4c55-9d0e-6f2c8a1b7e42")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def tick_task_id(name: str, tick: datetime) -> str:
    """The task id of the job of entry ``name`` at ``tick``: the same in every scheduler."""
    return str(uuid.uuid5(_TICK_IDS, f"{name}@{tick.astimezone(UTC).isoformat()}"))


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated schedule entry."""

    name: str
    task: Task
    schedule: Schedule
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    catch_up: CatchUpPolicy
    max_catch_up: int
    wants_scheduled_time: bool

    @property
    def key(self) -> str:
        return self.schedule.key()

    def anchored(self, anchor: datetime) -> Schedule:
        """The schedule on the grid stored for the entry (an interval's first registration),
        unless the code anchored it itself."""
        if isinstance(self.schedule, interval) and self.schedule.anchor is not None:
            return self.schedule
        return self.schedule.with_anchor(anchor)

    def job(self, app: PgTasks, scheduled: datetime, now: datetime, task_id: str) -> NewJob:
        """The job of one run. The task gets ``scheduled_time=`` if its signature asks for it;
        every run carries ``scheduled_time`` and ``schedule`` in ``self.request.headers``."""
        kwargs = dict(self.kwargs)
        if self.wants_scheduled_time:
            kwargs.setdefault("scheduled_time", scheduled)
        headers = {**(self.options.get("headers") or {}),
                   "scheduled_time": scheduled.isoformat(), "schedule": self.name}
        options = {**self.options, "task_id": task_id, "headers": headers}
        return app.build_job(self.task.name, self.task, self.args, kwargs, options, now)


def _fail(name: str, problem: str) -> ScheduleError:
    return ScheduleError(f"beat_schedule entry {name!r}: {problem}")


def check_entry(app: PgTasks, name: str, entry: Any) -> Entry:
    """Validate one entry (Celery's format); every error names the entry."""
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"beat_schedule entry names must be non-empty strings, got {name!r}")
    if not isinstance(entry, Mapping):
        raise _fail(name, f"expected a dict with 'task' and 'schedule', got {entry!r}")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise _fail(name, f"unknown key(s) {', '.join(map(repr, sorted(unknown)))}; "
                          f"known: {', '.join(sorted(ENTRY_KEYS))}")
    task_name = entry.get("task")
    if not isinstance(task_name, str):
        raise _fail(name, f"'task' must be a task name, got {task_name!r}")
    task = app.tasks.get(task_name)
    if task is None:
        close = difflib.get_close_matches(task_name, list(app.tasks), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _fail(name, f"unknown task {task_name!r}{hint}: declare it in a module the app "
                          f"imports (its own, or one listed in app.conf.imports)")
    if "schedule" not in entry:
        raise _fail(name, "'schedule' is missing")
    schedule = parse_schedule(entry["schedule"], tz=app.conf.timezone, entry_name=name)
    if entry.get("relative"):
        raise _fail(name, "relative=True is not supported: interval ticks lie on a fixed grid "
                          "shared by every scheduler")
    args, kwargs = entry.get("args") or (), entry.get("kwargs") or {}
    if not isinstance(args, list | tuple):
        raise _fail(name, f"'args' must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise _fail(name, f"'kwargs' must be a dict, got {type(kwargs).__name__}")
    options = entry.get("options") or {}
    if not isinstance(options, Mapping):
        raise _fail(name, f"'options' must be a dict, got {type(options).__name__}")
    bad = set(options) & _FORBIDDEN_OPTIONS
    if bad:
        raise _fail(name, f"option(s) {', '.join(sorted(bad))} cannot be set on a schedule "
                          f"entry")
    unknown = set(options) - CALL_OPTIONS
    if unknown:
        raise _fail(name, f"unknown option(s) {', '.join(map(repr, sorted(unknown)))}; known: "
                          f"{', '.join(sorted(CALL_OPTIONS - _FORBIDDEN_OPTIONS))}")
    try:
        catch_up = validate_catch_up_policy(entry.get("catch_up", "latest"))
    except ScheduleError as exc:
        raise _fail(name, str(exc)) from None
    max_catch_up = entry.get("max_catch_up", app.conf.beat_max_catch_up)
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise _fail(name, f"max_catch_up must be an integer >= 1, got {max_catch_up!r}")
    try:
        wants = "scheduled_time" in inspect.signature(task.run).parameters
    except (TypeError, ValueError):
        wants = False
    checked = Entry(name, task, schedule, tuple(args), dict(kwargs), dict(options), catch_up,
                    max_catch_up, wants)
    now = utc_now()
    try:  # a dry run of the call: bad priorities, expiries, unserializable arguments
        checked.job(app, now, now, new_task_id())
    except PgTasksError as exc:
        raise _fail(name, str(exc)) from None
    return checked


def load_entries(app: PgTasks) -> dict[str, Entry]:
    """The app's entries, validated: ``app.conf.beat_schedule`` and ``@app.periodic`` tasks."""
    configured = app.conf.beat_schedule or {}
    if not isinstance(configured, Mapping):
        raise ScheduleError(f"beat_schedule must be a dict of entries, got "
                            f"{type(configured).__name__}")
    entries: dict[str, Entry] = {}
    for name, entry in configured.items():
        entries[name] = check_entry(app, name, entry)
    for name, entry in app.periodic_entries.items():
        if name in entries:
            raise _fail(name, "declared both in beat_schedule and with @app.periodic")
        entries[name] = check_entry(app, name, entry)
    return entries


class Beat:
    """The scheduler loop.

    ``Beat(app).run()`` registers the app's entries (disabling rows for entries the code no longer
    has) and then, until :meth:`stop`, enqueues due ticks and sleeps until the next one is due,
    at most ``beat_max_loop_interval`` seconds (so a resumed entry is noticed within that).

    ``clock`` returns the current time as an aware datetime; tests inject one and call
    :meth:`setup` and :meth:`tick` directly.
    """

    def __init__(self, app: PgTasks, *, clock: Clock | None = None,
                 max_loop_interval: float | None = None) -> None:
        self.app = app
        self.clock = clock or utc_now
        loop = app.conf.beat_max_loop_interval if max_loop_interval is None \
            else max_loop_interval
        if isinstance(loop, bool) or not isinstance(loop, int | float) or loop <= 0:
            raise ConfigurationError(f"beat_max_loop_interval must be a positive number of "
                                     f"seconds, got {loop!r}")
        self.max_loop_interval = float(loop)
        self.entries: dict[str, Entry] = {}
        self.enqueued = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._warned: set[tuple[str, str]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Validate the entries and register them in the database (raises on bad entries)."""
        self.app.import_default_modules()
        self.entries = load_entries(self.app)
        disabled = self.app.store.sync_schedules(self._connection(), [
            {"name": e.name, "task_name": e.task.name, "schedule": e.key, "catch_up": e.catch_up}
            for e in self.entries.values()
        ], self.clock())
        if disabled:
            log.warning("disabled schedule(s) no longer in the code: %s", ", ".join(disabled))
        if not self.entries:
            log.warning("beat has no schedule entries: set app.conf.beat_schedule or use "
                        "@app.periodic")
        for entry in self.entries.values():
            log.info("schedule %s: %s every %r", entry.name, entry.task.name, entry.schedule)

    def run(self) -> None:
        """Set up, then loop until :meth:`stop` (or SIGTERM/SIGINT on the main thread)."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.setup()
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run_in_background(self) -> threading.Thread:
        """Set up here (so bad entries raise in the caller), then loop on a daemon thread."""
        self.setup()
        thread = threading.Thread(target=self._loop, name="pgtasks-beat", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the loop to finish; it closes its connection as it does."""
        self._stopping.set()

    def close(self) -> None:
        """Close the database connection of a beat driven by hand (:meth:`tick`)."""
        self._disconnect()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: beat stopping", signum)
        self.stop()

    def _loop(self) -> None:
        delay = 0.05
        reconnect_max = float(self.app.conf.worker_reconnect_max_delay)
        try:
            while not self._stopping.is_set():
                try:
                    wait = self.tick()
                    delay = 0.05
                except (psycopg.Error, DatabaseError) as exc:
                    log.warning("beat lost the database (%s); retrying in %.2fs", exc, delay)
                    self._disconnect()
                    wait, delay = delay, min(delay * 2, reconnect_max)
                self._stopping.wait(wait)
        finally:
            self.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.app.store.connect()
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- ticking -----------------------------------------------------------------------------

    def tick(self) -> float:
        """Enqueue every due tick now; return the seconds until the next one is due (at most
        ``max_loop_interval``)."""
        conn = self._connection()
        now = self.clock()
        wake = now + timedelta(seconds=self.max_loop_interval)
        for row in self.app.store.list_schedules(conn):
            entry = self.entries.get(row["name"])
            if entry is None or not row["enabled"] or row["paused"]:
                continue
            if row["schedule"] != entry.key:
                self._warn_redefined(entry, row["schedule"])
                continue
            schedule = entry.anchored(row["anchor"])
            last = row["last_tick"]
            settled = latest_due_tick(schedule, last, now)
            if settled is not None:
                try:
                    self._settle(conn, entry, schedule, last, settled, now)
                except (psycopg.Error, DatabaseError):
                    raise
                except PgTasksError:
                    # A call that validated at start-up can still fail later (an expiry that is
                    # now in the past); skip this round rather than stop every other entry.
                    log.exception("schedule %s: could not enqueue its tick", entry.name)
                    continue
                last = settled
            wake = min(wake, schedule.next_tick(last))
        return max(0.0, (wake - self.clock()).total_seconds())

    def _settle(self, conn: psycopg.Connection[Any], entry: Entry, schedule: Schedule,
                last: datetime, settled: datetime, now: datetime) -> None:
        """Enqueue the ticks the entry's policy picks from (last, settled] and advance its last
        tick to ``settled``, all or nothing."""
        ticks = catch_up_ticks(schedule, last, now, entry.catch_up, entry.max_catch_up)
        jobs = [entry.job(self.app, tick, now, tick_task_id(entry.name, tick)) for tick in ticks]
        store = self.app.store
        inserted: list[NewJob] = []
        skipped: list[tuple[NewJob, DuplicateJob]] = []
        try:
            with conn.transaction():
                for job in jobs:
                    try:
                        with conn.transaction():
                            store.enqueue(job, conn=conn)
                        inserted.append(job)
                    except DuplicateJob as exc:
                        skipped.append((job, exc))
                won = store.advance_schedule(
                    conn, name=entry.name, schedule=entry.key, expected_tick=last,
                    new_tick=settled, runs=len(inserted),
                    task_id=inserted[-1].task_id if inserted else None, now=now)
                if not won:
                    raise _Settled
        except _Settled:
            log.debug("schedule %s: ticks up to %s were settled by another scheduler",
                      entry.name, settled.isoformat())
            return
        self.enqueued += len(inserted)
        for job in inserted:
            log.info("schedule %s: enqueued %s[%s]", entry.name, job.task_name, job.task_id)
        for job, problem in skipped:
            log.warning("schedule %s: tick job %s not enqueued: %s", entry.name, job.task_id,
                        problem)
        if not ticks or schedule.next_tick(last) < ticks[0]:
            log.info("schedule %s: skipped missed ticks up to %s (catch_up=%s)", entry.name,
                     settled.isoformat(), entry.catch_up)

    def _warn_redefined(self, entry: Entry, stored: str) -> None:
        if (entry.name, stored) not in self._warned:
            self._warned.add((entry.name, stored))
            log.warning("schedule %s is defined as %r in the database (synced by a scheduler "
                        "running other code) but as %r here; this scheduler leaves it alone",
                        entry.name, stored, entry.key)


class _Settled(Exception):  # noqa: N818 - control flow inside one transaction
    """Another scheduler advanced the entry first: roll back this scheduler's jobs."""


def run_now(app: PgTasks, name: str, clock: Clock = utc_now) -> str:
    """Enqueue one extra run of entry ``name`` now (its ticks are untouched); returns its task
    id. The task's ``scheduled_time`` is now."""
    entries = load_entries(app)
    entry = entries.get(name)
    if entry is None:
        raise ScheduleError(f"no schedule entry named {name!r} in the app; known: "
                            f"{', '.join(sorted(entries)) or 'none'}")
    now = clock().astimezone(UTC)
    job = entry.job(app, now, now, new_task_id())
    with app.store.connect() as conn, conn.transaction():
        app.store.enqueue(job, conn=conn)
        if not app.store.record_schedule_run(conn, name, job.task_id, now):
            raise ScheduleError(f"schedule {name!r} is not registered yet: start beat once "
                                f"(pgtasks beat) so that it is")
    return job.task_id


def set_paused(app: PgTasks, name: str, paused: bool, clock: Clock = utc_now) -> None:
    """Pause or resume an entry. Resuming skips the ticks that passed while it was paused."""
    if not app.store.set_schedule_paused(name, paused, clock()):
        known = [row["name"] for row in app.store.list_schedules()]
        raise ScheduleError(f"no schedule named {name!r}; known: {', '.join(known) or 'none'}")


def beat_service(worker: Worker) -> None:
    """Run a beat inside a worker (``pgtasks worker --beat``) until the worker stops."""
    beat = Beat(worker.app)
    beat.run_in_background()

    def stop_with_worker() -> None:
        worker.wait()
        beat.stop()

    threading.Thread(target=stop_with_worker, name="pgtasks-beat-stop", daemon=True).start()
