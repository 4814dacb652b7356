"""pgtasks: a Celery-compatible, durable task queue whose only dependency is Postgres."""

from pgtasks import states
from pgtasks.app import PgTasks, shared_task
from pgtasks.canvas import GroupResult, Signature, chain, chord, chunks, group, signature
from pgtasks.errors import (
    ContentDisallowed,
    DuplicateJob,
    MaxRetriesExceededError,
    NotRegistered,
    PgTasksError,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from pgtasks.result import AsyncResult, EagerResult
from pgtasks.task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "GroupResult",
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "signature",
    "ContentDisallowed",
    "DuplicateJob",
    "EagerResult",
    "MaxRetriesExceededError",
    "NotRegistered",
    "PgTasks",
    "PgTasksError",
    "Retry",
    "SoftTimeLimitExceeded",
    "Task",
    "TimeLimitExceeded",
    "shared_task",
    "states",
]
