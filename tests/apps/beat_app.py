"""The scheduler tests' app: an every-second entry whose task records the tick it was given.

Scheduler subprocesses (``pgtasks beat -A tests.apps.beat_app``) read the DSN from
``PGTASKS_DSN``. In-process tests build apps of their own with :func:`make_app`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgtasks import PgTasks

MARKS_DDL = """
CREATE TABLE IF NOT EXISTS beat_marks (
    task_id text PRIMARY KEY, scheduled_time timestamptz NOT NULL, header text
)
"""

app = PgTasks("beat")
# catch_up="all": a scheduler stalled past a tick (a loaded test machine) must still enqueue it,
# so that a missing tick can only mean a bug.
app.conf.beat_schedule = {"every-second": {"task": "beat.tick", "schedule": 1.0,
                                           "catch_up": "all"}}


@app.task(name="beat.tick", bind=True)
def tick(self: Any, scheduled_time: datetime) -> str:
    """Record which tick this run is for, as the argument and as the request header."""
    with app.store.pool().connection() as conn:
        conn.execute("INSERT INTO beat_marks VALUES (%s, %s, %s)",
                     (self.request.id, scheduled_time, self.request.headers.get("scheduled_time")))
    return scheduled_time.isoformat()


#: An app whose schedule names a task nobody declared: beat must refuse to start.
unknown_task_app = PgTasks("beat-unknown-task")
unknown_task_app.conf.beat_schedule = {"nightly": {"task": "beat.no_such_task", "schedule": 60}}


def make_app(dsn: str, beat_schedule: dict[str, Any] | None = None, **settings: Any) -> PgTasks:
    """A fresh app on ``dsn`` with a task ``beat.report`` (which asks for its scheduled time)
    and a task ``beat.plain`` (which does not)."""
    fresh = PgTasks("beat-test", dsn=dsn, **settings)
    fresh.conf.beat_schedule = beat_schedule or {}

    @fresh.task(name="beat.report")
    def report(scheduled_time: datetime, label: str = "") -> str:
        return f"{label}{scheduled_time.isoformat()}"

    @fresh.task(name="beat.plain")
    def plain(*args: Any) -> None:
        return None

    return fresh
