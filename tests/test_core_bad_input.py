"""Bad input gets a clear error naming what was wrong, and loses nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from pgtasks import PgTasks, states
from pgtasks.errors import (
    ConfigurationError,
    ContentDisallowed,
    DatabaseError,
    PgTasksError,
    SerializationError,
    TaskError,
    UnknownTaskOption,
)
from pgtasks.worker.loop import Worker
from tests.apps import core_app
from tests.support import scalar


class Opaque:
    pass


def test_an_unserializable_argument_is_named_at_delay(app: PgTasks):
    with pytest.raises(SerializationError, match=r"argument 1 \('y'\) of type Opaque"):
        core_app.add.delay(1, Opaque())
    with pytest.raises(SerializationError, match=r"keyword argument 'y'"):
        core_app.add.delay(1, y=Opaque())
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_a_task_the_worker_does_not_know_fails_with_that_reason(app: PgTasks, worker: Worker):
    result = app.send_task("nobody.knows.this", args=(1,))
    with pytest.raises(PgTasksError, match="'nobody.knows.this' is not registered"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_a_malformed_dsn_is_an_error_without_the_password():
    broken = PgTasks("broken", dsn="postgresql://user:s3cret@localhost/db?no_such_option=1")
    with pytest.raises(ConfigurationError) as caught:
        core_app_task = broken.task(name="broken.t")(lambda: None)
        core_app_task.delay()
    assert "s3cret" not in str(caught.value)


def test_an_unreachable_postgres_at_enqueue_is_an_error_never_a_silent_drop():
    gone = PgTasks("gone", dsn="postgresql://postgres@127.0.0.1:1/postgres")
    task = gone.task(name="gone.t")(lambda: None)
    with pytest.raises(DatabaseError, match="127.0.0.1"):
        task.delay()


def test_content_not_in_accept_content_is_refused(dsn: str):
    with pytest.raises(ContentDisallowed, match="accept_content"):
        PgTasks("picky", dsn=dsn, task_serializer="pickle").serializer  # noqa: B018
    sender = PgTasks("sender", dsn=dsn, task_serializer="pickle",
                     accept_content=["json", "pickle"])
    receiver = PgTasks("receiver", dsn=dsn)
    try:
        sender.send_task("tests.apps.core_app.add", args=(1, 2))
        job = scalar(dsn, "SELECT payload FROM pgtasks.jobs")
        with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
            receiver.serializer.loads(job, "application/x-python-serialize")
    finally:
        sender.close()
        receiver.close()


def test_a_worker_refuses_a_job_whose_content_it_does_not_accept(app: PgTasks, dsn: str,
                                                                 worker: Worker):
    sender = PgTasks("sender", dsn=dsn, task_serializer="pickle",
                     accept_content=["json", "pickle"])
    try:
        result = sender.send_task("tests.apps.core_app.add", args=(1, 2))
        with pytest.raises(ContentDisallowed):
            core_app.app.AsyncResult(result.id).get(timeout=10)
    finally:
        sender.close()


def test_a_negative_countdown_is_refused(app: PgTasks):
    with pytest.raises(TaskError, match="countdown must be a number of seconds >= 0"):
        core_app.add.apply_async((1, 2), countdown=-5)


def test_an_already_expired_expires_is_refused(app: PgTasks):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with pytest.raises(TaskError, match="already in the past"):
        core_app.add.apply_async((1, 2), expires=past)
    with pytest.raises(TaskError, match="not after the planned start"):
        core_app.add.apply_async((1, 2), countdown=60, expires=10)
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_a_job_that_expires_in_the_queue_is_revoked_not_run(app: PgTasks):
    result = core_app.record.apply_async(("too-late",), expires=0.2)
    import time

    time.sleep(0.4)
    running = app.Worker(concurrency=1)
    thread = running.run_in_background()
    try:
        with pytest.raises(PgTasksError, match="expired"):
            result.get(timeout=10)
    finally:
        running.stop()
        thread.join(10)
    assert result.state == states.REVOKED
    assert scalar(app.dsn, "SELECT count(*) FROM marks") == 0


def test_unknown_task_options_raise_at_decoration_time(app: PgTasks):
    with pytest.raises(UnknownTaskOption, match="'max_retires' \\(did you mean 'max_retries'"):
        @app.task(max_retires=3)
        def typo():
            pass


def test_unknown_call_options_are_refused(app: PgTasks):
    with pytest.raises(UnknownTaskOption, match="'countdwon'"):
        core_app.add.apply_async((1, 2), countdwon=3)


def test_a_priority_out_of_range_is_refused(app: PgTasks):
    with pytest.raises(TaskError, match="priority must be an int from 0 to 9"):
        core_app.add.apply_async((1, 2), priority=42)


def test_a_task_id_already_queued_is_refused(app: PgTasks):
    core_app.add.apply_async((1, 2), task_id="twice")
    with pytest.raises(PgTasksError, match="'twice' is already queued"):
        core_app.add.apply_async((1, 2), task_id="twice")
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs") == 1


def test_every_error_derives_from_pgtaskserror():
    import pgtasks.errors as errors

    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == \
                errors.__name__:
            assert issubclass(value, PgTasksError), value
