"""Schedules for beat: Celery-style :class:`crontab` and fixed-grid :class:`interval` schedules.

Pure logic, no database: beat stores each entry's :meth:`Schedule.key` (to notice a changed
schedule) and last enqueued tick, and asks :func:`catch_up_ticks` what to enqueue now. Datetimes
go in timezone-aware and come out in UTC; "after" is strict; ranges are ``(start, end]``.

A crontab is matched against the wall clock of its timezone (``app.conf.timezone``, default UTC).
When that clock jumps, the rules are Vixie cron's:

* A job pinned to hours (its hour field is not every hour, e.g. a daily ``30 2 * * *``) runs once
  per matching wall-clock time. A time skipped by spring-forward runs once, at the first instant
  after the gap (02:30 runs at 03:00 local that day); a time repeated by fall-back runs once, at
  its first occurrence.
* A job whose hour field matches all 24 hours (``0 * * * *``, ``*/15 * * * *``) follows elapsed
  time: it runs in both passes of a repeated hour and not in a skipped one, so an hourly job stays
  an hour apart (25 runs on the fall-back day, 23 on spring-forward) and a 15-minute job never
  pauses or bunches up.

croniter only finds the next matching *wall-clock* time; turning those into instants happens here,
because croniter alone runs a daily job twice in a repeated hour.
"""

from __future__ import annotations

import copy
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from itertools import groupby
from numbers import Real
from typing import Final, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from pgtasks.errors import ScheduleError

CronField: TypeAlias = "int | str | Iterable[int | str] | None"
ScheduleLike: TypeAlias = "Schedule | str | float | timedelta"
CatchUpPolicy: TypeAlias = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: Final[tuple[CatchUpPolicy, ...]] = ("latest", "all", "none")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO: Final = timedelta(0)
_MICROSECOND: Final = timedelta(microseconds=1)
# How far ahead to look for a fall-back that could repeat a wall-clock time already passed.
_FALL_BACK_HORIZON: Final = timedelta(days=2)


class Schedule(ABC):
    """When a beat entry is due: a rule that yields ticks (instants) in increasing order."""

    @abstractmethod
    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (timezone-aware), as a UTC datetime."""

    @abstractmethod
    def key(self) -> str:
        """A stable text naming this schedule; beat stores it to notice that an entry changed.

        Two schedules with the same key tick at the same times (for an interval, given the same
        anchor). Changing the format changes every stored key, so keep it stable.
        """

    @abstractmethod
    def __repr__(self) -> str: ...

    def with_anchor(self, anchor: datetime) -> Schedule:
        """This schedule anchored at ``anchor``: a no-op for schedules without a grid."""
        return self

    def ticks_between(
        self, start_exclusive: datetime, end_inclusive: datetime, limit: int
    ) -> list[datetime]:
        """The first ``limit`` ticks in ``(start_exclusive, end_inclusive]``, in order."""
        cursor = _utc(start_exclusive, "start_exclusive")
        end = _utc(end_inclusive, "end_inclusive")
        _check_count(limit, "limit", minimum=0)
        ticks: list[datetime] = []
        while len(ticks) < limit:
            cursor = self.next_tick(cursor)
            if cursor > end:
                break
            ticks.append(cursor)
        return ticks

    def latest_tick(self, start_exclusive: datetime, end_inclusive: datetime) -> datetime | None:
        """The last tick in ``(start_exclusive, end_inclusive]``, or None if there is none.

        Cheap however long the range: a bisection over :meth:`next_tick`, not a walk.
        """
        end = _utc(end_inclusive, "end_inclusive")
        found = self.next_tick(_utc(start_exclusive, "start_exclusive"))
        if found > end:
            return None
        # Invariant: `found` is a tick <= high, and no tick lies in (high, end].
        high = end
        while True:
            following = self.next_tick(found)
            if following > high:
                return found
            found = following
            middle = found + (high - found) / 2
            probe = self.next_tick(middle)
            if probe <= high:
                found = probe
            else:
                high = middle


# --- crontab -------------------------------------------------------------------------------------


class _BadField(Exception):
    """A crontab field could not be parsed; the message says why."""


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int  # the top of '*'
    top: int  # the largest number accepted (7 for day_of_week: 7 is Sunday again)
    names: Mapping[str, int] = field(default_factory=dict)
    named: str = ""  # what the names name, for error messages

    @property
    def every(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))

    def number(self, text: str) -> int:
        if not text:
            raise _BadField("a number is missing")
        if text.isascii() and text.isdigit():
            value = int(text)
        elif text.lower() in self.names:
            value = self.names[text.lower()]
        else:
            named = f" or a {self.named} name" if self.named else ""
            raise _BadField(f"{text!r} is not a number{named}")
        if not self.low <= value <= self.top:
            raise _BadField(f"{value} is out of range {self.low}-{self.top}")
        return value


def _names(*spellings: str, first: int) -> dict[str, int]:
    names: dict[str, int] = {}
    for number, full in enumerate(spellings, start=first):
        names[full] = names[full[:3]] = number
    return names


_WEEKDAYS: Final = _names(
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", first=0
)
_MONTHS: Final = _names(
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", first=1,
)  # fmt: skip
# In cron order: minute hour day_of_month month_of_year day_of_week.
_SPECS: Final = (
    _FieldSpec("minute", 0, 59, 59),
    _FieldSpec("hour", 0, 23, 23),
    _FieldSpec("day_of_month", 1, 31, 31),
    _FieldSpec("month_of_year", 1, 12, 12, _MONTHS, "month"),
    _FieldSpec("day_of_week", 0, 6, 7, _WEEKDAYS, "weekday"),
)
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MACROS: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip


def _parse_part(spec: _FieldSpec, part: str) -> list[int]:
    if not part:
        raise _BadField("a list item is empty")
    body, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise _BadField(f"step {step_text!r} is not a positive integer")
        step = int(step_text)
    if body == "*":
        ordered = list(range(spec.low, spec.high + 1))
    else:
        first_text, dash, last_text = body.partition("-")
        first = spec.number(first_text)
        # 'a/n' is cron shorthand for 'a-<top>/n'.
        last = spec.number(last_text) if dash else spec.high if slash else first
        if first <= last:
            ordered = list(range(first, last + 1))
        else:  # Celery wraps a reversed range around the end: 'fri-mon' is fri sat sun mon.
            ordered = list(range(first, spec.high + 1)) + list(range(spec.low, last + 1))
    return [value % 7 if spec.name == "day_of_week" else value for value in ordered[::step]]


def _parse_field(spec: _FieldSpec, value: object) -> frozenset[int]:
    if value is None:  # Celery reads None as '*'
        return spec.every
    if isinstance(value, bool):
        raise _BadField("expected an int, a string or a collection of them, not a bool")
    if isinstance(value, int):
        if not spec.low <= value <= spec.top:
            raise _BadField(f"{value} is out of range {spec.low}-{spec.top}")
        return frozenset([value % 7 if spec.name == "day_of_week" else value])
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise _BadField("it is empty")
        return frozenset(v for part in text.split(",") for v in _parse_part(spec, part.strip()))
    if isinstance(value, Iterable):
        items = list(value)
        if not items:
            raise _BadField("it is empty")
        if not all(isinstance(item, int | str) for item in items):
            raise _BadField("expected a collection of ints or strings")
        return frozenset().union(*(_parse_field(spec, item) for item in items))
    raise _BadField(
        f"expected an int, a string or a collection of them, not {type(value).__name__}"
    )


def _parse_fields(raw: Mapping[str, object]) -> tuple[frozenset[int], ...]:
    """Parse the five fields (cron order), raising _BadField naming the field and its value."""
    parsed: list[frozenset[int]] = []
    for spec in _SPECS:
        value = raw[spec.name]
        try:
            parsed.append(_parse_field(spec, value))
        except _BadField as exc:
            raise _BadField(f"{spec.name}={value!r}: {exc}") from None
    days, months = parsed[2], parsed[3]
    if not any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months):
        raise _BadField(
            f"day_of_month={raw['day_of_month']!r} never occurs in "
            f"month_of_year={raw['month_of_year']!r}, so the schedule would never run"
        )
    return tuple(parsed)


def _compress(values: frozenset[int], spec: _FieldSpec) -> str:
    """Canonical text for a field: '*', or sorted numbers with runs written as ranges."""
    if values == spec.every:
        return "*"
    runs = []
    for _, run in groupby(enumerate(sorted(values)), key=lambda pair: pair[1] - pair[0]):
        first, *rest = (value for _, value in run)
        runs.append(f"{first}-{rest[-1]}" if rest else str(first))
    return ",".join(runs)


class crontab(Schedule):  # noqa: N801 - Celery's name
    """A Celery ``crontab``: runs when the wall clock of its timezone matches every field.

    A field is an int, a string, a collection of them, or None (``*``). Strings use cron syntax:
    ``*``, ``5``, ``1-5``, ``*/15``, ``0-30/10``, ``10/15``, ``0,30``; a reversed range wraps
    (``fri-mon``). As in Celery, ``day_of_week`` counts from Sunday = 0 (7 is Sunday too) and takes
    names (``mon``, ``monday``), as does ``month_of_year``; and a day must match both
    ``day_of_month`` and ``day_of_week`` (Vixie cron would take either). Fields are validated here:
    a malformed one raises :class:`ScheduleError` naming the field and value.

    ``tz`` is the zone the fields are read in; when None, :func:`parse_schedule` binds
    ``app.conf.timezone``, and an unbound crontab runs in UTC.
    """

    def __init__(
        self,
        minute: CronField = "*",
        hour: CronField = "*",
        day_of_week: CronField = "*",
        day_of_month: CronField = "*",
        month_of_year: CronField = "*",
        *,
        tz: str | tzinfo | None = None,
    ) -> None:
        raw = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
        }
        try:
            parsed = _parse_fields(raw)
        except _BadField as exc:
            raise ScheduleError(f"invalid crontab: {exc}") from None
        self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week = parsed
        self.tz: tzinfo | None = None if tz is None else _zone(tz)
        self._expr = " ".join(
            _compress(values, spec) for values, spec in zip(parsed, _SPECS, strict=True)
        )
        # As written, for repr; collections (possibly one-shot iterators) in canonical form.
        self._spelling = " ".join(
            str(value).strip() if isinstance(value, int | str) else _compress(values, spec)
            for value, values, spec in zip(raw.values(), parsed, _SPECS, strict=True)
        )
        self._every_hour = self.hour == _SPECS[1].every

    @classmethod
    def from_string(cls, expr: str, tz: str | tzinfo | None = None) -> crontab:
        """A crontab from a cron line ``"minute hour day_of_month month_of_year day_of_week"``.

        Fields mean what they mean in :class:`crontab` (Celery's). ``@hourly``, ``@daily``,
        ``@weekly``, ``@monthly``, ``@yearly`` are understood; seconds and year fields are not.
        """
        if not isinstance(expr, str):
            raise ScheduleError(f"a cron expression must be a string, not {type(expr).__name__}")
        text = expr.strip()
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                known = ", ".join(_MACROS)
                raise ScheduleError(f"invalid cron expression {expr!r}: unknown macro ({known})")
            text = _MACROS[text.lower()]
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(
                f"invalid cron expression {expr!r}: expected 5 fields "
                f"(minute hour day_of_month month_of_year day_of_week), got {len(fields)}"
            )
        raw = dict(zip((spec.name for spec in _SPECS), fields, strict=True))
        try:
            _parse_fields(raw)
        except _BadField as exc:
            raise ScheduleError(f"invalid cron expression {expr!r}: {exc}") from None
        return cls(**raw, tz=tz)

    @property
    def zone(self) -> tzinfo:
        """The timezone the fields are read in: ``tz``, or UTC when unbound."""
        return self.tz if self.tz is not None else UTC

    def with_tz(self, tz: str | tzinfo) -> crontab:
        """This crontab read in another timezone."""
        bound = copy.copy(self)
        bound.tz = _zone(tz)
        return bound

    def key(self) -> str:
        return f"crontab {self._expr} {_zone_name(self.zone)}"

    def __repr__(self) -> str:
        zone = "" if self.tz is None else f" {_zone_name(self.tz)}"
        return f"<crontab: {self._spelling} (m/h/dM/MY/d){zone}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def next_tick(self, after: datetime) -> datetime:
        after = _utc(after, "after")
        zone = self.zone
        lookback = _fall_back_ahead(after, zone)
        # Start the wall-clock search a little early when a fall-back is imminent: the second pass
        # of a repeated hour can make a wall time already passed fire again after `after`.
        start = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - lookback
        # Whole minutes keep croniter, which works on float timestamps, clear of rounding.
        walls = croniter(self._expr, start, day_or=False)
        best: datetime | None = None
        horizon: datetime | None = None
        while True:
            try:
                wall: datetime = walls.get_next(datetime)
            except CroniterError as exc:  # only if a valid schedule outran croniter's search
                raise ScheduleError(f"{self!r} has no tick after {after.isoformat()}") from exc
            if best is not None and horizon is not None and wall > horizon:
                return best
            for instant in self._instants(wall):
                if instant > after and (best is None or instant < best):
                    best = instant
            if best is not None and horizon is None:
                if not lookback:
                    return best
                horizon = wall + lookback

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The instants at which the wall-clock time ``wall`` (naive, in our zone) runs."""
        zone = self.zone
        first = wall.replace(tzinfo=zone).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first < second:  # the clock fell back: this wall time happens twice
            return (first, second) if self._every_hour else (first,)
        # The clock sprang forward over this wall time: it never happens.
        return () if self._every_hour else (_gap_end(wall, zone),)


def cron(expr: str, tz: str | tzinfo | None = None) -> crontab:
    """A crontab from a 5-field cron line; the same as :meth:`crontab.from_string`."""
    return crontab.from_string(expr, tz=tz)


def _fall_back_ahead(after: datetime, zone: tzinfo) -> timedelta:
    """How much the clock of ``zone`` falls back soon after ``after``, if it does."""
    offset = _offset(after, zone)
    drop = offset - _offset(after + _FALL_BACK_HORIZON, zone)
    # Only a fall-back within `drop` of `after` can repeat a wall time at or before `after`'s.
    if drop > _ZERO and _offset(after + drop, zone) < offset:
        return drop
    return _ZERO


def _offset(instant: datetime, zone: tzinfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or _ZERO


@lru_cache(maxsize=256)
def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """The instant the clock of ``zone`` jumps over the nonexistent wall time ``wall``."""
    # For a time in a gap, fold=1 reads it with the offset after the jump (an instant before the
    # jump) and fold=0 with the offset before it (an instant after the jump).
    low = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = math.ceil(wall.replace(tzinfo=zone, fold=0).timestamp())
    after_jump = _offset(datetime.fromtimestamp(high, UTC), zone)
    while high - low > 1:  # zoneinfo transitions fall on whole seconds
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == after_jump:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


# --- interval ------------------------------------------------------------------------------------


class interval(Schedule):  # noqa: N801 - lower case like crontab
    """Every ``seconds`` (a number or a timedelta, exact to the microsecond).

    Ticks lie on a fixed grid, ``anchor + k * period`` for every integer k, so every scheduler
    process computes the same tick times however often or late it looks. Beat passes the time the
    entry was first registered as ``anchor`` (see :meth:`with_anchor`); without one the grid is
    anchored at the Unix epoch. The anchor is beat's state, not part of :meth:`key`.
    """

    def __init__(self, seconds: float | timedelta, *, anchor: datetime | None = None) -> None:
        self.period = _period(seconds)
        self.anchor: datetime | None = None if anchor is None else _utc(anchor, "anchor")

    def with_anchor(self, anchor: datetime) -> interval:
        return interval(self.period, anchor=anchor)

    def key(self) -> str:
        return f"interval {_format_seconds(self.period)}s"

    def __repr__(self) -> str:
        anchor = "" if self.anchor is None else f" from {self.anchor.isoformat()}"
        return f"<interval: every {_format_seconds(self.period)}s{anchor}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, interval):
            return NotImplemented
        return (self.period, self.anchor) == (other.period, other.anchor)

    def __hash__(self) -> int:
        return hash((self.period, self.anchor))

    def _grid(self) -> datetime:
        return _EPOCH if self.anchor is None else self.anchor

    def next_tick(self, after: datetime) -> datetime:
        grid = self._grid()
        return grid + ((_utc(after, "after") - grid) // self.period + 1) * self.period

    def latest_tick(self, start_exclusive: datetime, end_inclusive: datetime) -> datetime | None:
        grid = self._grid()
        tick = grid + ((_utc(end_inclusive, "end_inclusive") - grid) // self.period) * self.period
        return tick if tick > _utc(start_exclusive, "start_exclusive") else None

    def ticks_between(
        self, start_exclusive: datetime, end_inclusive: datetime, limit: int
    ) -> list[datetime]:
        _check_count(limit, "limit", minimum=0)
        first = self.next_tick(start_exclusive)
        end = _utc(end_inclusive, "end_inclusive")
        count = 0 if first > end else (end - first) // self.period + 1
        return [first + k * self.period for k in range(min(count, limit))]


def _period(seconds: object) -> timedelta:
    if isinstance(seconds, bool) or not isinstance(seconds, timedelta | Real):
        raise ScheduleError(f"an interval must be seconds or a timedelta, not {seconds!r}")
    try:
        period = seconds if isinstance(seconds, timedelta) else timedelta(seconds=float(seconds))
    except (OverflowError, ValueError):  # inf, nan, or beyond timedelta's range
        raise ScheduleError(
            f"an interval must be a finite number of seconds, not {seconds!r}"
        ) from None
    if period <= _ZERO:
        raise ScheduleError(
            f"an interval must be positive (at least 1 microsecond), not {seconds!r}"
        )
    return period


def _format_seconds(period: timedelta) -> str:
    whole, micros = divmod(period // _MICROSECOND, 1_000_000)
    return str(whole) if not micros else f"{whole}.{micros:06d}".rstrip("0")


# --- building schedules from configuration -------------------------------------------------------


def as_schedule(value: object, *, tz: str | tzinfo | None = None) -> Schedule:
    """``value`` as a Schedule: a Schedule, a 5-field cron string, seconds, or a timedelta.

    ``tz`` is bound to crontabs (and cron strings) that do not name their own timezone.
    """
    zone = None if tz is None else _zone(tz)
    if isinstance(value, crontab):
        return value.with_tz(zone) if value.tz is None and zone is not None else value
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        return crontab.from_string(value, tz=zone)
    if isinstance(value, timedelta):
        return interval(value)
    if isinstance(value, Real) and not isinstance(value, bool):
        return interval(float(value))
    raise ScheduleError(
        f"unsupported schedule {value!r}: expected a crontab, a 5-field cron string, "
        "a number of seconds or a timedelta"
    )


def parse_schedule(
    value: object,
    *,
    tz: str | tzinfo | None = None,
    entry_name: str,
    anchor: datetime | None = None,
) -> Schedule:
    """The schedule of the ``beat_schedule`` entry ``entry_name``, validated.

    ``tz`` is ``app.conf.timezone`` (None means UTC) and is bound to crontabs without their own;
    ``anchor`` anchors an interval's grid (see :class:`interval`). Every error names the entry:
    ``beat_schedule entry 'nightly-report': invalid cron expression ...``.
    """
    try:
        zone = _zone(tz)
        schedule = as_schedule(value, tz=zone)
        return schedule if anchor is None else schedule.with_anchor(_utc(anchor, "anchor"))
    except ScheduleError as exc:
        raise ScheduleError(f"beat_schedule entry {entry_name!r}: {exc}") from None


# --- catching up ---------------------------------------------------------------------------------


def validate_catch_up_policy(policy: str) -> CatchUpPolicy:
    """``policy`` if it is one of :data:`CATCH_UP_POLICIES`; otherwise ScheduleError naming it."""
    for known in CATCH_UP_POLICIES:
        if policy == known:
            return known
    expected = ", ".join(repr(name) for name in CATCH_UP_POLICIES)
    raise ScheduleError(f"unknown catch-up policy {policy!r}: expected one of {expected}")


def baseline(schedule: ScheduleLike, now: datetime) -> datetime:
    """What beat stores as the last tick of an entry first seen at ``now``: ``now`` (in UTC).

    Nothing before registration is due, so the first run is the schedule's first tick after
    ``now``. Use the same instant as an interval's anchor.
    """
    as_schedule(schedule)
    return _utc(now, "now")


def latest_due_tick(
    schedule: ScheduleLike, last_tick: datetime | None, now: datetime
) -> datetime | None:
    """The most recent tick in ``(last_tick, now]``, or None (also for a new entry).

    Beat can store it as the entry's new last tick whatever :func:`catch_up_ticks` chose to run:
    ticks a policy skipped are settled too.
    """
    if last_tick is None:
        return None
    return as_schedule(schedule).latest_tick(_utc(last_tick, "last_tick"), _utc(now, "now"))


def catch_up_ticks(
    schedule: ScheduleLike,
    last_tick: datetime | None,
    now: datetime,
    policy: str = "latest",
    max_catch_up: int = 100,
    *,
    grace: float = 1.0,
) -> list[datetime]:
    """The ticks to enqueue at ``now``, oldest first, given the last tick already enqueued.

    The due ticks are those in ``(last_tick, now]``. ``policy`` decides which of them run:

    * ``"latest"``: only the most recent one. A beat that was down runs the job once, not once
      per missed tick.
    * ``"all"``: each of them in order, at most ``max_catch_up``, keeping the most recent ones.
    * ``"none"``: missed ticks are skipped; only a tick at most ``grace`` seconds old runs.

    ``last_tick`` None means a new entry: nothing is due yet (return ``[]``); beat stores
    :func:`baseline` and the first run is the first tick after it. After enqueuing, store
    :func:`latest_due_tick` (the last of the returned ticks when any are returned).
    """
    checked = validate_catch_up_policy(policy)
    _check_count(max_catch_up, "max_catch_up", minimum=1)
    if isinstance(grace, bool) or not isinstance(grace, Real) or not 0 <= grace < math.inf:
        raise ScheduleError(f"grace must be a non-negative number of seconds, not {grace!r}")
    resolved = as_schedule(schedule)
    end = _utc(now, "now")
    if last_tick is None:
        return []
    start = _utc(last_tick, "last_tick")
    if checked == "all":
        return _most_recent_ticks(resolved, start, end, max_catch_up)
    latest = resolved.latest_tick(start, end)
    if latest is None or (checked == "none" and end - latest > timedelta(seconds=float(grace))):
        return []
    return [latest]


def _most_recent_ticks(
    schedule: Schedule, start: datetime, end: datetime, count: int
) -> list[datetime]:
    """The last ``count`` ticks in ``(start, end]``, without walking the whole range."""
    ticks = schedule.ticks_between(start, end, count + 1)
    if len(ticks) <= count:
        return ticks
    # Too many were missed: search windows ending at `end`, widening from the span of `count`
    # ticks (schedules repeat, so the last window rarely needs widening).
    window = ticks[-1] - ticks[0]
    while True:
        low = start if window >= end - start else end - window
        recent = schedule.ticks_between(low, end, sys.maxsize)
        if len(recent) >= count or low == start:
            return recent[-count:]
        window *= 2


# --- shared checks -------------------------------------------------------------------------------


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ScheduleError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ScheduleError(f"{name} must be timezone-aware, not naive {value.isoformat()}")
    return value.astimezone(UTC)


def _check_count(value: int, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScheduleError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ScheduleError(f"unknown timezone {tz!r}") from None
    if isinstance(tz, ZoneInfo | timezone):
        return tz
    raise ScheduleError(f"a timezone must be a zoneinfo name or a ZoneInfo, not {tz!r}")


def _zone_name(zone: tzinfo) -> str:
    if isinstance(zone, ZoneInfo):
        return zone.key if zone.key is not None else repr(zone)
    return str(zone)
