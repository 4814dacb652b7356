"""Workflow events and messages: durable, exactly once, and waking suspended workflows."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pgtasks.errors import WorkflowError
from tests.apps import workflow_app
from tests.apps.workflow_app import app
from tests.support import scalar, wait_until


@pytest.fixture
def worker(wf: str) -> Iterator[str]:
    running = app.launch(concurrency=2)
    yield wf
    running.stop(graceful=False)
    running.wait(10)


def test_a_workflow_publishes_events_and_receives_each_message_once(worker: str) -> None:
    handle = workflow_app.conversation.delay("c")

    assert app.get_event(handle.workflow_id, "status", timeout=10) == "waiting"
    app.send(handle.workflow_id, "hello", topic="chat")
    app.send(handle.workflow_id, "world", topic="chat")

    assert handle.get(timeout=20) == "hello+world"
    assert app.get_event(handle.workflow_id, "status", timeout=0) == "done"
    assert scalar(worker, "SELECT count(*) FROM pgtasks.workflow_messages") == 0
    received = [s["output"] for s in app.workflow_steps(handle.workflow_id)
                if s["name"] == "pgtasks.recv:chat"]
    assert received == ["hello", "world"]


def test_a_message_wakes_a_workflow_suspended_in_recv(worker: str) -> None:
    handle = workflow_app.conversation.delay("s")
    wait_until(lambda: scalar(worker, "SELECT state FROM pgtasks.jobs WHERE task_id = %s",
                              (handle.id,)) == "queued"
               and app.get_event(handle.workflow_id, "status", timeout=0) == "waiting",
               message="the workflow to give its slot back while it waits")

    sent = time.monotonic()
    app.send(handle.workflow_id, "a", topic="chat")
    app.send(handle.workflow_id, "b", topic="chat")

    assert handle.get(timeout=20) == "a+b"
    assert time.monotonic() - sent < 5


def test_recv_returns_none_when_nothing_comes_in_time(worker: str) -> None:
    assert workflow_app.waits_briefly.delay().get(timeout=20) is None


def test_sending_to_an_unknown_workflow_is_an_error(worker: str) -> None:
    with pytest.raises(WorkflowError, match="no workflow 'nobody'"):
        app.send("nobody", "hi")


def test_set_event_and_recv_outside_a_workflow_are_errors(worker: str) -> None:
    with pytest.raises(WorkflowError, match=r"app.set_event\(\) only works inside a workflow"):
        app.set_event("k", 1)
    with pytest.raises(WorkflowError, match=r"app.recv\(\) only works inside a workflow"):
        app.recv()
