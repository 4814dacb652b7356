"""Queue limits: declarations, Celery's rate strings, and the claim plan that enforces them.

``app.queue("emails", concurrency=5, worker_concurrency=2, rate_limit="100/m")`` or the same
options under ``app.conf.task_queues``. Every limit holds across all workers on all machines,
because each claim asks Postgres, which sees every worker's running jobs:

- ``concurrency``: jobs of the queue running at once, over all workers. With ``partition_by``
  it caps each partition key instead (a job's ``partition=`` option, else its ``partition_by``
  keyword argument), so partitions run in parallel with each other.
- ``worker_concurrency``: jobs of the queue running at once on one worker.
- ``rate_limit``: jobs of the queue started per second/minute/hour, over all workers.
- ``@app.task(rate_limit=...)``: the same for one task, whatever queue its jobs are in.

Rates are token buckets of capacity one, kept in Postgres: "20/s" starts one job every 50 ms,
evenly spaced, so no one-second window ever holds more than 20 starts. Celery's ``rate_limit``
is the same bucket but kept in each worker's memory, so Celery's "20/s" on three workers allows
60/s; here it allows 20/s in total, however many workers run.

A queue's ``concurrency`` slots are Postgres session advisory locks, numbered 1..N, held by
the connection each worker claims on while it runs the queue's jobs. Taking and giving back slots
writes nothing (no hot row, no bloat, no claim waits for another), and a worker that dies,
even by ``kill -9``, gives its slots back the moment Postgres sees its connection close, without
waiting for its lease to expire (its jobs are requeued at lease expiry, as always). A job
waiting in a worker's prefetch buffer holds a slot too: it has been claimed.

Rate limits and per-partition limits need to see other claims: those claims of one queue take
turns on a per-queue transaction advisory lock, held for one batch claim. Queues without limits
use the plain claim, untouched.

Priorities (``priority=0..9`` on a task, a call or a route) order each queue's ready jobs:
higher runs first, then oldest first, in the claim itself, so a priority-9 job enqueued behind a
backlog runs next. That is RabbitMQ's and AMQP's direction (and Celery's on RabbitMQ), and the
natural reading of a number called priority; Celery's Redis transport is the reverse (0 is the
highest there, an artefact of emulating priorities with one Redis list per level). Code
written for Celery on Redis maps its priorities with ``9 - p``.

Known limits: slots need session-level connections, as LISTEN/NOTIFY does (no pooler in
transaction mode). If a worker's claim connection is lost (a database restart), the jobs it
runs go on without slots and the queue may briefly exceed its concurrency. A finished job's
slot goes back with its worker's next claim, so a worker that stops claiming (shutting down, or
its pool full of other queues' jobs) keeps it a little longer than needed: never too short.
Partitioned claims look at the first thousand or so ready jobs of partitions with room, so a
deep backlog in one full partition makes each claim of that queue scan past it.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.errors import QueueConfigError

if TYPE_CHECKING:
    from pgtasks.db.store import ClaimedJob, Store

log = logging.getLogger("pgtasks.worker")

#: Seconds per rate unit; Celery reads only the unit's first letter ("10/sec", "5/minute").
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([A-Za-z]+)\s*)?")
_UNIT_WORDS = {"s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes",
               "h", "hr", "hrs", "hour", "hours"}

#: The largest global ``concurrency``: its slots are entries of Postgres' shared lock table
#: (``max_locks_per_transaction`` x ``max_connections``, 6,400 by default).
MAX_CONCURRENCY = 1000

QUEUE_OPTIONS = frozenset({"concurrency", "worker_concurrency", "rate_limit", "partition_by"})


def parse_rate(value: Any, owner: str, error: type[Exception] = QueueConfigError) -> float | None:
    """Jobs per second from a Celery rate (``"10/s"``, ``"100/m"``, ``"1000/h"``, or a number
    of jobs per second); ``None`` for no limit. Anything else raises ``error`` naming ``owner``
    and the value."""
    if value is None:
        return None
    expected = ("expected 'N/s', 'N/m' or 'N/h' (or a number of jobs per second) "
                "with N > 0")
    if isinstance(value, bool):
        raise error(f"{owner}: rate_limit {value!r} is not a rate; {expected}")
    if isinstance(value, int | float):
        per_second = float(value)
    elif isinstance(value, str):
        m = _RATE.fullmatch(value)
        unit = (m.group(2) or "s").lower() if m else ""
        if m is None or unit not in _UNIT_WORDS:
            raise error(f"{owner}: rate_limit {value!r} is not a rate; {expected}")
        per_second = float(m.group(1)) / _UNITS[unit[0]]
    else:
        raise error(f"{owner}: rate_limit {value!r} is not a rate; {expected}")
    if not per_second > 0 or per_second == float("inf"):
        raise error(f"{owner}: rate_limit {value!r} must be positive; {expected}")
    return per_second


def _positive_int(value: Any, label: str, queue: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise QueueConfigError(f"queue {queue!r}: {label} must be a positive int or None, "
                               f"got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A declared queue and its limits (``None``: no limit)."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: str | float | None = None
    partition_by: str | None = None
    rate: float | None = None  # jobs per second, parsed from rate_limit

    @property
    def limited(self) -> bool:
        return (self.concurrency is not None or self.worker_concurrency is not None
                or self.rate is not None)


def declare(name: Any, concurrency: Any = None, worker_concurrency: Any = None,
            rate_limit: Any = None, partition_by: Any = None) -> QueueSpec:
    """Validate a queue declaration; errors name the queue and the bad value."""
    if not isinstance(name, str) or not name:
        raise QueueConfigError(f"a queue name must be a non-empty str, got {name!r}")
    if partition_by is not None and (not isinstance(partition_by, str) or not partition_by):
        raise QueueConfigError(f"queue {name!r}: partition_by must be a keyword argument name, "
                               f"got {partition_by!r}")
    spec = QueueSpec(
        name=name,
        concurrency=_positive_int(concurrency, "concurrency", name),
        worker_concurrency=_positive_int(worker_concurrency, "worker_concurrency", name),
        rate_limit=rate_limit,
        partition_by=partition_by,
        rate=parse_rate(rate_limit, f"queue {name!r}"),
    )
    if partition_by is None and spec.concurrency is not None \
            and spec.concurrency > MAX_CONCURRENCY:
        raise QueueConfigError(
            f"queue {name!r}: concurrency {spec.concurrency} is above {MAX_CONCURRENCY}; each "
            f"running job of a limited queue holds an entry of Postgres' shared lock table, "
            f"so a limit that high is better left out (no limit)")
    if partition_by is not None and spec.concurrency is None:
        raise QueueConfigError(f"queue {name!r}: partition_by={partition_by!r} needs a "
                               f"concurrency (the limit for each partition)")
    return spec


def _from_conf_entry(entry: Any) -> QueueSpec:
    if isinstance(entry, QueueSpec):
        return entry
    if isinstance(entry, str):
        return declare(entry)
    if isinstance(entry, Mapping):
        options = dict(entry)
        name = options.pop("name", None)
        return declare(name, **_known_options(options, name))
    # kombu.Queue (Celery's form): only the name means something here.
    name = getattr(entry, "name", None)
    if isinstance(name, str):
        return declare(name)
    raise QueueConfigError(f"task_queues: cannot read a queue from {entry!r}; give a name, a "
                           f"dict with 'name', or a kombu.Queue")


def _known_options(options: Mapping[str, Any], name: Any) -> dict[str, Any]:
    unknown = set(options) - QUEUE_OPTIONS
    if unknown:
        raise QueueConfigError(f"queue {name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(QUEUE_OPTIONS))}")
    return dict(options)


def queue_specs(conf_queues: Any, declared: Mapping[str, QueueSpec]) -> dict[str, QueueSpec]:
    """All declared queues: ``task_queues`` (a {name: options} dict, a list of names, dicts or
    kombu Queues, or that as JSON text), overridden by ``app.queue(...)`` declarations."""
    if not conf_queues:
        return dict(declared)
    if isinstance(conf_queues, str):
        # From the environment: PGTASKS_TASK_QUEUES='{"emails": {"concurrency": 5}}'.
        try:
            conf_queues = json.loads(conf_queues)
        except ValueError as exc:
            raise QueueConfigError(f"task_queues {conf_queues!r} is not JSON: {exc}") from None
    specs: dict[str, QueueSpec] = {}
    if isinstance(conf_queues, Mapping):
        for name, options in conf_queues.items():
            if options is not None and not isinstance(options, Mapping):
                raise QueueConfigError(f"task_queues[{name!r}] must be a dict of limits, "
                                       f"got {options!r}")
            specs[name] = declare(name, **_known_options(options or {}, name))
    elif isinstance(conf_queues, Iterable) and not isinstance(conf_queues, str | bytes):
        for entry in conf_queues:
            spec = _from_conf_entry(entry)
            specs[spec.name] = spec
    else:
        raise QueueConfigError(f"task_queues must be a dict or a list of queues, "
                               f"got {conf_queues!r}")
    specs.update(declared)
    return specs


def partition_for(spec: QueueSpec | None, partition: Any, args: Sequence[Any],
                  kwargs: Mapping[str, Any], fun: Callable[..., Any] | None, bound: bool,
                  owner: str) -> str | None:
    """A job's partition key: its ``partition=`` option, else the argument named by the queue's
    ``partition_by`` (by keyword, or by position when the task's function is known here)."""
    if partition is None and spec is not None and spec.partition_by is not None:
        partition = _argument(spec.partition_by, args, kwargs, fun, bound)
    if partition is None:
        return None
    if isinstance(partition, bool) or not isinstance(partition, str | int):
        raise QueueConfigError(f"{owner}: a partition key must be a str or an int, "
                               f"got {partition!r}")
    return str(partition)


def _argument(name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
              fun: Callable[..., Any] | None, bound: bool) -> Any:
    if name in kwargs or fun is None:
        return kwargs.get(name)
    try:
        # A bound task's function takes the task first; its value does not matter here.
        call = inspect.signature(fun).bind_partial(*((None,) if bound else ()), *args, **kwargs)
    except (TypeError, ValueError):
        return None
    return call.arguments.get(name)


def known_queues(default_queue: str, specs: Mapping[str, QueueSpec], task_queues: Iterable[Any],
                 routes: Any) -> set[str]:
    """Queues the app knows of: declared, the default, tasks' own and dict routes' targets."""
    known = {default_queue, *specs, *(q for q in task_queues if q)}
    routers = routes if isinstance(routes, list | tuple) else [routes] if routes else []
    for router in routers:
        if isinstance(router, Mapping):
            for target in router.values():
                if isinstance(target, str):
                    known.add(target)
                elif isinstance(target, Mapping) and isinstance(target.get("queue"), str):
                    known.add(target["queue"])
    return known


def warn_unknown_queues(served: Sequence[str], known: set[str], app_name: str) -> list[str]:
    """Log a warning for each served queue the app does not know (likely a typo in ``-Q``)."""
    unknown = [q for q in served if q not in known]
    for name in unknown:
        log.warning("queue %r (from -Q) is not known to app %s; serving it anyway. "
                    "Known queues: %s", name, app_name, ", ".join(sorted(known)))
    return unknown


class Alarm:
    """Calls ``wake`` at a requested time: when a rate limit's next token is due."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._cond = threading.Condition()
        self._due: float | None = None
        self._thread: threading.Thread | None = None

    def ring_in(self, seconds: float) -> None:
        due = time.monotonic() + max(0.0, seconds)
        with self._cond:
            if self._due is None or due < self._due:
                self._due = due
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pgtasks-rate-alarm",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._due is None:
                    self._cond.wait()
                remaining = self._due - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._due = None
            self._wake()


class ClaimPlan:
    """How one worker claims from its queues when some have limits or some tasks rate limits.

    Queues are visited in the worker's order; runs of unlimited queues share one plain claim,
    each limited queue gets the limited claim. The plan claims on a connection of its own,
    because that connection holds the concurrency slots of the jobs this worker runs (advisory
    locks, see ``pgtasks.claim_limited``): they go back with the next claim after a job
    finished, or all at once when the connection closes. Jobs of rate-limited tasks then take
    their task's tokens; those that get none go back to their queue, timed for coming tokens.
    """

    #: First wait before claiming again from a full queue (doubling up to the poll interval).
    FULL_BACKOFF = 0.005

    def __init__(self, queues: Sequence[str], specs: Mapping[str, QueueSpec],
                 task_rates: Mapping[str, float], held: Callable[[], list[int]],
                 wake: Callable[[], None], poll_interval: float = 1.0) -> None:
        self.task_rates = dict(task_rates)
        self.held = held
        self.alarm = Alarm(wake)
        self.poll_interval = poll_interval
        self.steps: list[list[str] | QueueSpec] = []
        for name in queues:
            spec = specs.get(name)
            if spec is not None and spec.limited:
                self.steps.append(spec)
            elif self.steps and isinstance(self.steps[-1], list):
                self.steps[-1].append(name)
            else:
                self.steps.append([name])
        self.locked = sorted(s.name for s in self.steps if isinstance(s, QueueSpec)
                             and (s.rate is not None or s.partition_by is not None))
        self.atomic = len(self.steps) == 1 and not self.task_rates
        self._backoff = self.FULL_BACKOFF
        self._running: dict[int, str] = {}  # job id -> queue, for jobs of limited queues
        self._slots: dict[int, int] = {}  # job id -> the concurrency slot it holds
        self._conn: psycopg.Connection[Any] | None = None

    @classmethod
    def for_worker(cls, queues: Sequence[str], specs: Mapping[str, QueueSpec],
                   task_rates: Mapping[str, float], held: Callable[[], list[int]],
                   wake: Callable[[], None], poll_interval: float = 1.0) -> ClaimPlan | None:
        """A plan, or ``None`` when nothing is limited (the plain claim is all there is)."""
        if not task_rates and not any(specs.get(q) and specs[q].limited for q in queues):
            return None
        return cls(queues, specs, task_rates, held, wake, poll_interval)

    def claim(self, store: Store, worker_id: int, n: int) -> list[ClaimedJob]:
        """Claim up to ``n`` jobs. When a rate limit stopped short, ring for its next token;
        when a full queue did, ring soon: slots freed by other workers announce nothing."""
        held = self.held()
        release = self._finished(set(held))
        if self._conn is None or self._conn.closed:
            self._conn = store.connect()
            # Closed when the plan goes (a worker in this process), else at exit.
            weakref.finalize(self, self._conn.close)
            self._slots.clear()  # the locks went with the old connection
            release.clear()
        conn = self._conn
        claim = _Claim()
        try:
            if self.atomic:
                wait = self._claim_steps(store, conn, worker_id, n, held, release, claim)
            else:
                # One transaction, so that a failure half-way cannot strand jobs already claimed.
                with conn.transaction():
                    if len(self.locked) > 1:
                        # The same order in every worker: no deadlock between -Q a,b and -Q b,a.
                        store.lock_queues(conn, self.locked)
                    wait = self._claim_steps(store, conn, worker_id, n, held, release, claim)
                    if self.task_rates:
                        wait = _earliest(wait, self._admit(store, conn, worker_id, claim))
            for queue, slots in release.items():
                if slots:  # finished jobs of queues the claim did not reach
                    store.release_slots(conn, queue, slots)
        except BaseException:
            # Advisory locks outlive a rolled-back transaction: close the connection, which
            # drops every slot it held, rather than guess which ones this claim took. The jobs
            # still running here run on without slots; the worker loop retries the claim.
            conn.close()
            self._slots.clear()
            raise
        self._running.update(claim.running)
        self._slots.update(claim.slots)
        if wait == 0:
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.poll_interval)
        elif claim.jobs:
            self._backoff = self.FULL_BACKOFF
        if wait is not None:
            self.alarm.ring_in(wait)
        return claim.jobs

    def _finished(self, held: set[int]) -> dict[str, list[int]]:
        """Forget the jobs that are no longer running here; returns their slots by queue."""
        release: dict[str, list[int]] = {}
        for job_id in [j for j in self._running if j not in held]:
            queue = self._running.pop(job_id)
            slot = self._slots.pop(job_id, None)
            if slot is not None:
                release.setdefault(queue, []).append(slot)
        return release

    def _claim_steps(self, store: Store, conn: psycopg.Connection[Any], worker_id: int, n: int,
                     held: list[int], release: dict[str, list[int]],
                     claim: _Claim) -> float | None:
        wait: float | None = None
        for step in self.steps:
            room = n - len(claim.jobs)
            if room <= 0:
                break
            if isinstance(step, list):
                claim.jobs.extend(store.claim(conn, worker_id, step, room))
                continue
            name = step.name
            if step.worker_concurrency is not None:
                running_here = sum(1 for q in self._running.values() if q == name)
                room = min(room, step.worker_concurrency - running_here)
                if room <= 0:
                    continue  # this worker's own jobs finishing will wake it
            mine = [s for j, s in self._slots.items() if self._running[j] == name]
            got, retry_in = store.claim_limited(conn, worker_id, step, room, held, mine,
                                                release.pop(name, []))
            wait = _earliest(wait, retry_in)
            for job, slot in got:
                claim.jobs.append(job)
                claim.running[job.id] = name
                if slot is not None:
                    claim.slots[job.id] = slot
        return wait

    def _admit(self, store: Store, conn: psycopg.Connection[Any], worker_id: int,
               claim: _Claim) -> float | None:
        limited: dict[str, list[ClaimedJob]] = {}
        for job in claim.jobs:
            if job.task_name in self.task_rates:
                limited.setdefault(job.task_name, []).append(job)
        if not limited:
            return None
        refused: set[int] = set()
        wait: float | None = None
        for task_name in sorted(limited):  # one lock order in every worker
            group = sorted(limited[task_name], key=lambda j: (-j.priority, j.run_at, j.id))
            granted, retry_in = store.take_task_tokens(
                conn, worker_id, task_name, [j.id for j in group], self.task_rates[task_name])
            refused.update(j.id for j in group if j.id not in granted)
            wait = _earliest(wait, retry_in)
        for job_id in refused:
            # Back in its queue: its slot goes back at once.
            queue = claim.running.pop(job_id, None)
            slot = claim.slots.pop(job_id, None)
            if queue is not None and slot is not None:
                store.release_slots(conn, queue, [slot])
        claim.jobs = [j for j in claim.jobs if j.id not in refused]
        return wait


class _Claim:
    """What one claim took so far: its jobs, and the queue and slot of limited queues' jobs."""

    def __init__(self) -> None:
        self.jobs: list[ClaimedJob] = []
        self.running: dict[int, str] = {}
        self.slots: dict[int, int] = {}


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
