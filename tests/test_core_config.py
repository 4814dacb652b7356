"""Configuration and discovery: Celery's ways of setting an app up."""

from __future__ import annotations

import pytest

from pgtasks import PgTasks
from pgtasks.config import Config
from pgtasks.errors import ConfigurationError


def test_shared_tasks_found_by_autodiscovery_register_with_every_app(dsn: str):
    app = PgTasks("discovering", dsn=dsn)
    app.autodiscover_tasks(["tests.apps.discovered"])
    other = PgTasks("other", dsn=dsn)
    try:
        assert "discovered.double" in app.tasks
        assert "discovered.double" in other.tasks
        assert app.tasks["discovered.double"](4) == 8
    finally:
        app.close()
        other.close()


def test_autodiscovery_skips_packages_without_a_tasks_module(dsn: str):
    app = PgTasks("discovering", dsn=dsn)
    app.autodiscover_tasks(["tests.apps"])
    assert not any(name.startswith("tests.apps.tasks") for name in app.tasks)


def test_config_from_object_reads_a_module_by_path():
    app = PgTasks("configured")
    app.config_from_object("tests.apps.settings_module")
    assert app.conf.task_default_queue == "from-module"
    assert app.conf.result_expires == 120
    assert "os" not in app.conf


def test_a_missing_configuration_module_is_a_clear_error():
    app = PgTasks("configured")
    with pytest.raises(ConfigurationError, match="no_such_settings"):
        app.config_from_object("no_such_settings")


def test_settings_fall_back_to_pgtasks_environment_variables(monkeypatch):
    monkeypatch.setenv("PGTASKS_RESULT_EXPIRES", "42")
    monkeypatch.setenv("PGTASKS_ACCEPT_CONTENT", "json,msgpack")
    conf = Config()
    assert conf.result_expires == 42.0
    assert conf.accept_content == ["json", "msgpack"]


def test_a_malformed_environment_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("PGTASKS_WORKER_LEASE_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="PGTASKS_WORKER_LEASE_SECONDS='soon'"):
        Config()


def test_conf_reads_as_attributes_and_items():
    app = PgTasks("conf")
    app.conf.task_default_queue = "q"
    assert app.conf["task_default_queue"] == "q"
    with pytest.raises(AttributeError, match="no setting named 'nope'"):
        app.conf.nope  # noqa: B018
