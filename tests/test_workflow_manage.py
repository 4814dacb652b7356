"""Managing workflow runs from Python and the CLI: list, get, steps, cancel, resume, restart."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pgtasks.cli import main
from pgtasks.errors import WorkflowCancelled, WorkflowError
from tests.apps import workflow_app
from tests.apps.workflow_app import app
from tests.support import scalar, wait_until


@pytest.fixture
def worker(wf: str) -> Iterator[str]:
    running = app.launch(concurrency=2)
    yield wf
    running.stop(graceful=False)
    running.wait(10)


def marks(dsn: str, label: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM marks WHERE label = %s", (label,)))


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["workflow", *args, "-A", "tests.apps.workflow_app"])
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_can_be_listed_and_inspected_step_by_step(wf: str) -> None:
    with app.workflow_id("order-1"):
        workflow_app.three_steps("m", 0.01)
    with app.workflow_id("order-2"), pytest.raises(ValueError):
        workflow_app.pays("p")

    assert [r["workflow_id"] for r in app.list_workflows(status="FAILURE")] == ["order-2"]
    assert {r["workflow_id"] for r in app.list_workflows(name=workflow_app.three_steps.name)} \
        == {"order-1"}
    info = app.get_workflow("order-1")
    assert (info["status"], info["args"], info["kwargs"], info["output"]) == (
        "SUCCESS", ["m", 0.01], {}, ["m:a", "m:b", "m:c"])
    assert "order-2" in cli("list", "--status", "failure")
    steps = json.loads(cli("steps", "order-2", "--json"))
    assert [(s["attempts"], s["error"]) for s in steps] == [
        (1, None), (3, "builtins.ValueError: card declined for p")]
    assert "card declined" in cli("get", "order-2")


def test_a_cancelled_workflow_stops_and_a_resumed_one_finishes(worker: str) -> None:
    handle = workflow_app.napper.delay("c", 3.0)
    wait_until(lambda: marks(worker, "c:before") == 1, message="the sleep to begin")

    assert app.cancel_workflow(handle.workflow_id)

    with pytest.raises(WorkflowCancelled):
        handle.get(timeout=5)
    # Cancelled while running (before its sleep suspended it), the job leaves the queue on its
    # next delivery, at once: not when its sleep would have ended.
    wait_until(lambda: scalar(worker, "SELECT count(*) FROM pgtasks.jobs") == 0, timeout=2,
               message="the cancelled workflow's job to leave the queue")
    assert app.resume_workflow(handle.workflow_id) == handle
    assert handle.get(timeout=20) == "c"
    assert (marks(worker, "c:before"), marks(worker, "c:after")) == (1, 1)


def test_a_failed_workflow_resumes_after_its_last_successful_step(worker: str) -> None:
    workflow_app.SHIFTING_ORDER[:] = ["first", "fails"]
    try:
        with app.workflow_id("fixme"), pytest.raises(ValueError):
            workflow_app.shifting()
        workflow_app.SHIFTING_ORDER[:] = ["first", "second"]

        assert app.resume_workflow("fixme").get(timeout=20) == "done"
    finally:
        workflow_app.SHIFTING_ORDER[:] = ["first", "fails"]
    assert marks(worker, "first") == 1
    assert app.get_workflow("fixme")["status"] == "SUCCESS"


def test_a_restart_from_step_n_forks_a_new_run_that_keeps_the_earlier_steps(
        worker: str) -> None:
    with app.workflow_id("original"):
        workflow_app.three_steps("r", 0.01)

    app.restart_workflow("original", from_step=1, new_workflow_id="fork")

    assert app.AsyncResult("fork").get(timeout=20) == ["r:a", "r:b", "r:c"]
    assert (marks(worker, "r:a"), marks(worker, "r:b:start"), marks(worker, "r:c")) == (1, 2, 2)
    assert app.get_workflow("fork")["forked_from"] == "original"


def test_the_cli_cancels_resumes_and_restarts_queued_runs(wf: str) -> None:
    handle = app.start_workflow(workflow_app.once, "q", workflow_id="queued-1")

    assert "cancelled queued-1" in cli("cancel", "queued-1")
    assert handle.get_status() == "CANCELLED"
    assert scalar(wf, "SELECT count(*) FROM pgtasks.jobs") == 0
    assert "resumed queued-1" in cli("resume", "queued-1")
    assert handle.get_status() == "PENDING"
    assert "started fork-1" in cli("restart", "queued-1", "--new-id", "fork-1")
    assert scalar(wf, "SELECT array_agg(task_id ORDER BY task_id) FROM pgtasks.jobs") == [
        "fork-1", "queued-1"]


def test_managing_an_unknown_workflow_is_an_error(wf: str) -> None:
    with pytest.raises(WorkflowError, match="no workflow 'ghost'"):
        app.get_workflow("ghost")
    with pytest.raises(WorkflowError, match="no workflow 'ghost'"):
        app.cancel_workflow("ghost")
    with pytest.raises(WorkflowError, match="no workflow 'ghost'"):
        app.restart_workflow("ghost")
    with pytest.raises(WorkflowError, match="unknown workflow status 'done'"):
        app.list_workflows(status="done")
