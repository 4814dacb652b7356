"""A Celery-style project runs on pgtasks through the compatibility layer."""

from __future__ import annotations

import sys

import pytest

import compat
from tests.support import scalar


@pytest.fixture
def celery_module():
    saved = {k: v for k, v in sys.modules.items() if k == "celery" or k.startswith("celery.")}
    compat.install()
    yield sys.modules["celery"]
    for key in [k for k in sys.modules if k == "celery" or k.startswith("celery.")]:
        del sys.modules[key]
    sys.modules.update(saved)


def test_a_celery_project_queues_and_runs_unchanged(dsn: str, celery_module):
    from celery import (
        Celery,  # resolved to the shim
        chain,
    )
    from celery.exceptions import MaxRetriesExceededError

    app = Celery("proj", broker=dsn, backend="redis://localhost:6379/0")
    try:
        @app.task(bind=True, max_retries=1)
        def mul(self, x, y):
            return x * y

        result = mul.delay(6, 7)
        assert scalar(dsn, "SELECT queue FROM pgtasks.jobs") == "celery"
        chained = chain(mul.s(2, 3), mul.s(10)).apply_async()
        worker = app.Worker(queues=["celery"], concurrency=2)
        thread = worker.run_in_background()
        try:
            assert result.get(timeout=10) == 42
            assert chained.get(timeout=20) == 60
        finally:
            worker.stop()
            thread.join(10)
        assert issubclass(MaxRetriesExceededError, Exception)
    finally:
        app.close()


def test_a_django_style_namespace_config_is_read(dsn: str):
    class Settings:
        CELERY_TASK_DEFAULT_QUEUE = "django"
        CELERY_RESULT_EXPIRES = 60
        DEBUG = True

    app = compat.Celery("proj", broker=dsn)
    app.config_from_object(Settings, namespace="CELERY")
    assert app.conf.task_default_queue == "django"
    assert app.conf.result_expires == 60
    assert "debug" not in app.conf
