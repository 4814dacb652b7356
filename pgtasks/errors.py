"""The error tree: every error pgtasks raises derives from :class:`PgTasksError`.

Celery-named errors (``Retry``, ``MaxRetriesExceededError``, ``SoftTimeLimitExceeded``,
``TimeLimitExceeded``) keep Celery's names so that code written for Celery catches them unchanged.
"""

from __future__ import annotations

from typing import Any


class PgTasksError(Exception):
    """A pgtasks error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigurationError(PgTasksError):
    """The configuration is invalid."""


class DatabaseError(PgTasksError):
    """The database could not be reached or refused an operation."""


class EmbeddedPostgresError(DatabaseError):
    """The embedded Postgres server could not be started."""


class MigrationError(DatabaseError):
    """The schema could not be migrated."""


class SerializationError(PgTasksError):
    """A value could not be serialized or deserialized."""


class ContentDisallowed(SerializationError):
    """A message's content type is not in ``accept_content``."""


class TaskError(PgTasksError):
    """A task was declared or called incorrectly."""


class UnknownTaskOption(TaskError):
    """A task was declared with an option pgtasks does not know."""


class NotRegistered(TaskError):
    """No task is registered under that name."""


class DuplicateJob(PgTasksError):
    """A job with the same deduplication id is already queued or running."""

    def __init__(self, message: str, existing_task_id: str | None = None) -> None:
        super().__init__(message)
        self.existing_task_id = existing_task_id


class TimeoutError(PgTasksError):  # noqa: A001 - Celery's name, kept for drop-in compatibility
    """The operation timed out."""


class TaskRevokedError(PgTasksError):
    """The task was revoked."""


class Retry(PgTasksError):  # noqa: N818 - Celery's name
    """The task asked to be retried."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
    ) -> None:
        super().__init__(message or (f"Retry in {when}s" if when is not None else "Retry"))
        self.exc = exc
        self.when = when


class MaxRetriesExceededError(PgTasksError):
    """The task exhausted its retries."""


class SoftTimeLimitExceeded(PgTasksError):  # noqa: N818 - Celery's name
    """The task ran past its soft time limit."""


class TimeLimitExceeded(PgTasksError):  # noqa: N818 - Celery's name
    """The task ran past its hard time limit and was stopped."""


class WorkerLostError(PgTasksError):
    """The process running a task exited before reporting an outcome."""


class WorkflowError(PgTasksError):
    """A durable workflow failed or was used incorrectly."""


class NonDeterministicWorkflowError(WorkflowError):
    """A workflow's recorded steps do not match the code being replayed."""


class WorkflowConflictError(WorkflowError):
    """A workflow id was reused with different arguments."""


class WorkflowCancelled(WorkflowError):  # noqa: N818
    """The workflow was cancelled."""


class ChordError(TaskError):
    """A chord's header member failed, so its callback did not run."""


class ScheduleError(ConfigurationError):
    """A schedule entry is invalid."""


class QueueConfigError(ConfigurationError):
    """A queue declaration or limit is invalid."""


class RemoteError(PgTasksError):
    """A task failed with an exception that could not be rebuilt locally.

    Carries the remote type name, message and traceback.
    """

    def __init__(self, exc_type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.exc_message = message
        self.remote_traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.exc_type, self.exc_message, self.remote_traceback))
