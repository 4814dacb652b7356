"""The scheduler's command line: start-up errors, and schedule list|pause|resume|run-now."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pgtasks import PgTasks
from pgtasks.beat import Beat
from pgtasks.cli import main
from tests.apps import beat_app
from tests.support import scalar


@pytest.fixture
def app(dsn: str) -> Iterator[PgTasks]:
    """The test app on this test's database, with its entries registered by a beat."""
    before = beat_app.app.conf.dsn
    beat_app.app.conf.dsn = dsn
    beat = Beat(beat_app.app)
    beat.setup()
    beat.close()
    yield beat_app.app
    beat_app.app.close()
    beat_app.app.conf.dsn = before


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_beat_refuses_to_start_with_a_schedule_naming_an_unknown_task():
    code, output = cli("beat", "-A", "tests.apps.beat_app:unknown_task_app")

    assert code == 1
    assert "beat_schedule entry 'nightly': unknown task 'beat.no_such_task'" in output


def test_schedules_are_listed_paused_resumed_and_run_on_demand(dsn: str, app: PgTasks):
    code, output = cli("schedule", "list", "-A", "tests.apps.beat_app")
    assert code == 0, output
    line = next(line for line in output.splitlines() if line.startswith("every-second"))
    assert "active" in line and "interval 1s -> beat.tick" in line

    assert cli("schedule", "pause", "every-second", "-A", "tests.apps.beat_app")[0] == 0
    assert "paused" in cli("schedule", "list", "-A", "tests.apps.beat_app")[1]

    code, output = cli("schedule", "run-now", "every-second", "-A", "tests.apps.beat_app")
    assert code == 0, output
    task_id = output.split(": ")[-1].strip()
    assert scalar(dsn, "SELECT task_name FROM pgtasks.jobs WHERE task_id = %s",
                  (task_id,)) == "beat.tick"

    assert cli("schedule", "resume", "every-second", "-A", "tests.apps.beat_app")[0] == 0
    assert scalar(dsn, "SELECT NOT paused AND total_runs = 1 FROM pgtasks.schedules")


def test_pausing_a_schedule_that_does_not_exist_fails_naming_it(app: PgTasks):
    code, output = cli("schedule", "pause", "every-sec", "-A", "tests.apps.beat_app")

    assert code == 1
    assert "no schedule named 'every-sec'; known: every-second" in output
