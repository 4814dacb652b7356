"""Durable workflows: checkpointed steps, replay, durable sleep, idempotent ids, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psycopg
import pytest

from pgtasks.errors import (
    NonDeterministicWorkflowError,
    SerializationError,
    TaskError,
    UnknownTaskOption,
    WorkflowConflictError,
    WorkflowError,
)
from tests.apps import workflow_app
from tests.apps.workflow_app import app
from tests.support import FAST_SETTINGS, REPO, WorkerProcess, rows, scalar, wait_until


def marks(dsn: str, label: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM marks WHERE label = %s", (label,)))


def test_an_inline_workflow_checkpoints_each_step_and_returns_its_result(wf: str) -> None:
    assert workflow_app.three_steps("t", 0.01) == ["t:a", "t:b", "t:c"]

    steps = app.workflow_steps(scalar(wf, "SELECT workflow_id FROM pgtasks.workflows"))
    assert [s["name"].rsplit(".", 1)[-1] for s in steps] == ["record", "slow", "record"]
    assert [s["output"] for s in steps] == ["t:a", "t:b", "t:c"]
    assert steps[1]["inputs"] == [["t:b", 0.01], {}]
    assert scalar(wf, "SELECT status FROM pgtasks.workflows") == "SUCCESS"
    assert scalar(wf, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_a_workflow_killed_during_a_step_resumes_at_that_step(wf: str) -> None:
    first = WorkerProcess(wf, "tests.apps.workflow_app", "-c", "2")
    try:
        handle = workflow_app.three_steps.delay("k", 1.0)
        wait_until(lambda: marks(wf, "k:b:start") == 1, message="step b to start")
        first.kill()
        second = WorkerProcess(wf, "tests.apps.workflow_app", "-c", "2")
        try:
            assert handle.get(timeout=30) == ["k:a", "k:b", "k:c"]
        finally:
            second.stop()
    finally:
        first.stop()
    assert (marks(wf, "k:a"), marks(wf, "k:b:start"), marks(wf, "k:b:end"),
            marks(wf, "k:c")) == (1, 2, 1, 1)


def test_a_durable_sleep_interrupted_by_a_restart_ends_n_seconds_after_it_began(
        wf: str) -> None:
    # The first worker sleeps in place (a huge inline threshold) and is killed mid-sleep; the
    # second must sleep only what remains, not the whole 4 s again.
    env = {"PGTASKS_WORKFLOW_SLEEP_INLINE_THRESHOLD": "60"}
    first = WorkerProcess(wf, "tests.apps.workflow_app", "-c", "2", env=env)
    try:
        handle = workflow_app.napper.delay("n", 4.0)
        wait_until(lambda: marks(wf, "n:before") == 1, message="the sleep to begin")
        first.kill()
    finally:
        first.stop()
    second = WorkerProcess(wf, "tests.apps.workflow_app", "-c", "2")
    try:
        assert handle.get(timeout=30) == "n"
    finally:
        second.stop()
    at = {label: float(t) for label, t in rows(
        wf, "SELECT label, extract(epoch FROM max(at)) FROM marks GROUP BY label")}
    resumed = at["n:run"]  # the last run's start: after the restart
    assert resumed > at["n:before"] + 1.5  # the job waited for the dead worker's lease
    # Ends N seconds after the sleep began (or at once, if the restart came later than that);
    # sleeping N seconds again would end at resumed + 4.
    assert at["n:before"] + 3.9 <= at["n:after"] <= max(at["n:before"] + 4, resumed) + 1.0


def test_a_long_sleep_gives_the_worker_slot_back_until_it_wakes(wf: str) -> None:
    worker = app.launch(concurrency=1)
    try:
        handle = workflow_app.napper.delay("long", 30.0)
        wait_until(lambda: scalar(wf, "SELECT state FROM pgtasks.jobs WHERE task_id = %s",
                                  (handle.id,)) == "queued", message="the job to be deferred")
        wake = scalar(wf, "SELECT extract(epoch FROM run_at - now()) FROM pgtasks.jobs "
                          "WHERE task_id = %s", (handle.id,))
        assert 25 < float(wake) <= 30
        assert workflow_app.once.delay("meanwhile").get(timeout=20) == "meanwhile"
    finally:
        worker.stop(graceful=False)
        worker.wait(10)


def test_twenty_concurrent_starts_of_one_workflow_id_run_it_once(wf: str) -> None:
    handles: list[object] = []
    barrier = threading.Barrier(20)

    def start() -> None:
        barrier.wait()
        handles.append(app.start_workflow(workflow_app.once, "only", workflow_id="order-42"))

    threads = [threading.Thread(target=start) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    worker = app.launch(concurrency=4)
    try:
        assert {h.get(timeout=20) for h in handles} == {"only"}  # type: ignore[attr-defined]
    finally:
        worker.stop()
        worker.wait(10)
    assert {h.workflow_id for h in handles} == {"order-42"}  # type: ignore[attr-defined]
    assert marks(wf, "only") == 1


def test_twenty_concurrent_inline_runs_of_one_workflow_id_run_it_once(wf: str) -> None:
    results: list[list[str]] = []
    barrier = threading.Barrier(20)

    def run() -> None:
        barrier.wait()
        with app.workflow_id("inline-7"):
            results.append(workflow_app.three_steps("i", 0.2))

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [["i:a", "i:b", "i:c"]] * 20
    assert (marks(wf, "i:a"), marks(wf, "i:b:start"), marks(wf, "i:c")) == (1, 1, 1)


def test_a_workflow_id_reused_with_different_arguments_is_an_error(wf: str) -> None:
    app.start_workflow(workflow_app.once, "x", workflow_id="dup")

    with pytest.raises(WorkflowConflictError, match=r"'dup'.*once\('x'\).*once\('y'\)"):
        app.start_workflow(workflow_app.once, "y", workflow_id="dup")


def test_a_step_that_exhausts_its_retries_fails_the_workflow_with_its_error(wf: str) -> None:
    with app.workflow_id("declined-1"), pytest.raises(ValueError, match="card declined for d"):
        workflow_app.pays("d")

    assert marks(wf, "d") == 3
    info = app.get_workflow("declined-1")
    assert info["status"] == "FAILURE"
    assert info["error"] == "builtins.ValueError: card declined for d"
    failed = app.workflow_steps("declined-1")[-1]
    assert (failed["attempts"], failed["error"]) == (3, info["error"])
    with pytest.raises(ValueError, match="card declined"):
        workflow_app.pays.apply_async(("d",), workflow_id="declined-1").get(timeout=5)


def test_a_replay_that_no_longer_matches_the_recorded_steps_is_reported(wf: str) -> None:
    workflow_app.SHIFTING_ORDER[:] = ["first", "fails"]
    with app.workflow_id("shifty"), pytest.raises(ValueError):
        workflow_app.shifting()
    workflow_app.SHIFTING_ORDER[:] = ["second", "first"]
    worker = app.launch(concurrency=1)
    try:
        handle = app.resume_workflow("shifty")
        with pytest.raises(NonDeterministicWorkflowError,
                           match=r"position 0 was recorded as 'tests.apps.workflow_app.record'"
                                 r" but the code now calls 'tests.apps.workflow_app.echo'"):
            handle.get(timeout=20)
    finally:
        worker.stop()
        worker.wait(10)
        workflow_app.SHIFTING_ORDER[:] = ["first", "fails"]


@app.workflow(name="tests.passes_an_object")
def passes_an_object() -> object:
    return workflow_app.echo(object())


@app.step(name="tests.makes_a_lock")
def makes_a_lock() -> object:
    return threading.Lock()


@app.workflow(name="tests.returns_a_lock")
def returns_a_lock() -> None:
    makes_a_lock()


def test_unserializable_step_arguments_name_the_step(wf: str) -> None:
    with pytest.raises(SerializationError, match=r"step 'tests.apps.workflow_app.echo' "
                                                 r"\(position 0\): argument 0 \('value'\) of "
                                                 r"type object cannot be serialized"):
        passes_an_object()


def test_an_unserializable_step_result_names_the_step(wf: str) -> None:
    with pytest.raises(SerializationError, match=r"step 'tests.makes_a_lock' \(position 0\) "
                                                 r"of type lock cannot be stored"):
        returns_a_lock()
    assert app.list_workflows(status="failure")[0]["name"] == "tests.returns_a_lock"


def test_app_sleep_outside_a_workflow_is_an_error(wf: str) -> None:
    with pytest.raises(WorkflowError, match=r"app.sleep\(\).*only works inside a workflow"):
        app.sleep(1)


def test_a_step_outside_a_workflow_is_a_plain_call(wf: str) -> None:
    assert workflow_app.record("plain") == "plain"
    assert marks(wf, "plain") == 1
    assert scalar(wf, "SELECT count(*) FROM pgtasks.steps") == 0


def test_unknown_workflow_and_step_options_fail_at_decoration(wf: str) -> None:
    with pytest.raises(UnknownTaskOption, match="did you mean 'queue'"):
        app.workflow(queu="x")
    with pytest.raises(UnknownTaskOption, match="unknown step option 'retry'"):
        app.step(retry=3)


def test_an_inline_workflow_whose_process_dies_is_finished_by_a_worker(wf: str) -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", "from tests.apps.workflow_app import app, three_steps\n"
                               "with app.workflow_id('web-1'):\n"
                               "    three_steps('w', 30.0)\n"],
        cwd=REPO, env={**os.environ, **FAST_SETTINGS, "PGTASKS_DSN": wf})
    try:
        wait_until(lambda: marks(wf, "w:b:start") == 1, message="the inline run to reach b")
        assert scalar(wf, "SELECT state FROM pgtasks.jobs WHERE task_id = 'web-1'") == "running"
    finally:
        caller.kill()
        caller.wait(10)
    worker = WorkerProcess(wf, "tests.apps.workflow_app", "-c", "2")
    try:
        wait_until(lambda: marks(wf, "w:b:start") == 2, message="a worker to resume step b")
        assert (marks(wf, "w:a"), marks(wf, "w:c")) == (1, 0)
    finally:
        worker.stop()


def test_a_workflow_started_in_a_rolled_back_transaction_never_existed(wf: str) -> None:
    with psycopg.connect(wf) as conn:
        workflow_app.once.apply_async(("tx",), workflow_id="in-tx", connection=conn)
        conn.rollback()

    assert scalar(wf, "SELECT count(*) FROM pgtasks.workflows") == 0
    assert scalar(wf, "SELECT count(*) FROM pgtasks.jobs") == 0


def test_bad_step_options_name_the_step_and_the_value(wf: str) -> None:
    with pytest.raises(TaskError, match=r"@step tests.bad: retries must be an int >= 0, got -1"):
        app.step(name="tests.bad", retries=-1)(lambda: None)
    with pytest.raises(TaskError, match=r"retry_on must hold exception classes, got 'oops'"):
        app.step(name="tests.bad", retry_on=("oops",))(lambda: None)
    with pytest.raises(WorkflowError, match=r"app.sleep\(\) takes a number of seconds >= 0"):
        app.sleep(-1)
