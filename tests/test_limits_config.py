"""Queue declarations and rate strings: what is accepted, and clear errors for the rest."""

from __future__ import annotations

import logging

import kombu
import pytest

from pgtasks import PgTasks
from pgtasks.errors import QueueConfigError, TaskError
from pgtasks.queues import parse_rate


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("100/m", 100 / 60), ("3600/h", 1.0), ("10/sec", 10.0),
    ("5/minute", 5 / 60), ("0.5/s", 0.5), ("7", 7.0), (20, 20.0), (2.5, 2.5),
])
def test_celery_rate_strings_are_read_as_jobs_per_second(text: object,
                                                         per_second: float) -> None:
    assert parse_rate(text, "queue 'q'") == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["10/x", "-1/s", "0/s", "ten/s", "10/", "", "1e3/s", 0, -5,
                                 True, [10]])
def test_a_malformed_rate_is_an_error_naming_the_value(bad: object) -> None:
    with pytest.raises(QueueConfigError, match=r"queue 'q': rate_limit .* (not a rate|positive)")\
            as info:
        parse_rate(bad, "queue 'q'")
    assert repr(bad) in str(info.value)


def test_a_task_with_a_malformed_rate_fails_at_decoration_naming_task_and_value() -> None:
    app = PgTasks("rates")
    with pytest.raises(TaskError, match=r"task [\w.<>]+\.send: rate_limit .10/x. is not a rate"):
        @app.task(rate_limit="10/x")
        def send() -> None: ...


@pytest.mark.parametrize("bad", [0, -1, "3", 2.5, True])
def test_a_non_positive_or_non_integer_concurrency_is_an_error_naming_the_value(
        bad: object) -> None:
    app = PgTasks("limits")
    with pytest.raises(QueueConfigError,
                       match=rf"queue 'emails': concurrency must be a positive int .* got "
                             rf"{bad!r}"):
        app.queue("emails", concurrency=bad)  # type: ignore[arg-type]
    with pytest.raises(QueueConfigError, match=r"worker_concurrency must be a positive int"):
        app.queue("emails", worker_concurrency=bad)  # type: ignore[arg-type]


def test_a_partitioned_queue_needs_a_concurrency_for_each_partition() -> None:
    with pytest.raises(QueueConfigError, match="partition_by='customer' needs a concurrency"):
        PgTasks("limits").queue("per-customer", partition_by="customer")


@pytest.mark.parametrize("bad", [10, -1, "high", 1.5])
def test_a_priority_out_of_range_is_an_error_naming_the_value(bad: object) -> None:
    app = PgTasks("prio", dsn="postgresql://nowhere.invalid/none")

    @app.task
    def job() -> None: ...

    with pytest.raises(TaskError, match=rf"priority must be an int from 0 to 9 .* got {bad!r}"):
        job.apply_async(priority=bad)
    with pytest.raises(TaskError, match=rf"got {bad!r}"):
        @app.task(priority=bad)
        def other() -> None: ...


def test_task_queues_accepts_dicts_names_kombu_queues_and_json() -> None:
    app = PgTasks("conf")
    app.conf.task_queues = {"emails": {"concurrency": 5, "rate_limit": "100/m"}}
    assert app.queue_specs["emails"].concurrency == 5
    assert app.queue_specs["emails"].rate == pytest.approx(100 / 60)
    app.conf.task_queues = ["plain", {"name": "capped", "worker_concurrency": 2},
                            kombu.Queue("celery-style")]
    assert sorted(app.queue_specs) == ["capped", "celery-style", "plain"]
    assert not app.queue_specs["plain"].limited
    app.conf.task_queues = '{"from-env": {"concurrency": 3}}'
    assert app.queue_specs["from-env"].concurrency == 3
    # app.queue(...) wins over task_queues for the same name
    app.queue("from-env", concurrency=7)
    assert app.queue_specs["from-env"].concurrency == 7


@pytest.mark.parametrize(("value", "message"), [
    ({"emails": {"concurency": 5}}, r"queue 'emails': unknown option\(s\) concurency"),
    ({"emails": 5}, r"task_queues\['emails'\] must be a dict of limits, got 5"),
    ("{not json", r"task_queues '\{not json' is not JSON"),
    ([42], r"cannot read a queue from 42"),
    ({"emails": {"rate_limit": "fast"}}, r"queue 'emails': rate_limit 'fast' is not a rate"),
])
def test_bad_task_queues_settings_are_errors_naming_the_value(value: object,
                                                               message: str) -> None:
    app = PgTasks("conf")
    app.conf.task_queues = value
    with pytest.raises(QueueConfigError, match=message):
        _ = app.queue_specs


def test_a_worker_warns_about_an_unknown_queue_and_lists_the_known_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    app = PgTasks("warned", dsn="postgresql://nowhere.invalid/none")
    app.queue("emails", concurrency=2)
    app.conf.task_routes = {"warned.*": {"queue": "reports"}}

    @app.task(queue="billing")
    def charge() -> None: ...

    with caplog.at_level(logging.WARNING, logger="pgtasks.worker"):
        app.Worker(queues=["emials", "emails"])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "queue 'emials' (from -Q) is not known" in warnings[0]
    assert "Known queues: billing, default, emails, reports" in warnings[0]


def test_a_global_concurrency_above_the_lock_table_budget_is_refused() -> None:
    with pytest.raises(QueueConfigError, match="concurrency 5000 is above 1000"):
        PgTasks("limits").queue("huge", concurrency=5000)
    # per partition, nothing is locked: any limit goes
    assert PgTasks("limits").queue("wide", concurrency=5000, partition_by="customer")
