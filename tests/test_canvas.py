"""The canvas on workflows: chains resume from their last finished link, chords fire once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgtasks import GroupResult, chain, chord, group, signature
from pgtasks.errors import ChordError, TaskError
from tests.apps import workflow_app
from tests.apps.workflow_app import add, app, fail, linger, mul, note, noted_failure, tsum
from tests.support import WorkerProcess, scalar, wait_until


@pytest.fixture
def canvas(wf: str) -> str:
    return wf


@pytest.fixture
def worker(canvas: str) -> Iterator[object]:
    running = app.launch(concurrency=4)
    yield running
    running.stop()
    running.wait(10)


def marks(dsn: str, label: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM marks WHERE label = %s", (label,)))


def test_a_chain_passes_each_result_to_the_next_link(worker: object) -> None:
    result = chain(add.s(1, 2), mul.s(10), add.s(5)).apply_async()

    assert result.get(timeout=20) == 35
    assert result.parent.get(timeout=1) == 30
    assert result.parent.parent.get(timeout=1) == 3
    assert result.parent.parent.parent is None


def test_an_immutable_link_ignores_its_parents_result(worker: object) -> None:
    assert (add.s(1, 1) | add.si(10, 10) | mul.s(2)).apply_async().get(timeout=20) == 40


def test_a_chain_killed_during_its_middle_link_resumes_there_and_earlier_links_ran_once(
        canvas: str) -> None:
    first = WorkerProcess(canvas, "tests.apps.workflow_app", "-c", "4")
    try:
        result = chain(note.si("one"), linger.s("two", 1.0), note.si("three")).apply_async()
        wait_until(lambda: marks(canvas, "two:start") == 1, message="the middle link to start")
        first.kill()
        second = WorkerProcess(canvas, "tests.apps.workflow_app", "-c", "4")
        try:
            assert result.get(timeout=30) == "three"
        finally:
            second.stop()
    finally:
        first.stop()
    assert (marks(canvas, "one"), marks(canvas, "two:start"), marks(canvas, "two:end"),
            marks(canvas, "three")) == (1, 2, 1, 1)
    assert result.parent.get(timeout=1) == "one"


def test_a_failed_link_fails_the_links_after_it_and_calls_the_errback(worker: object) -> None:
    result = chain(add.s(1, 1), fail.s(), add.s(3)).apply_async(
        link_error=noted_failure.s("errback"))

    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=20)
    failed_id = result.parent.id
    wait_until(lambda: marks(app.conf.dsn, f"errback:{failed_id}") == 1,
               message="the errback to run")
    assert result.parent.parent.get(timeout=1) == 2


def test_link_calls_the_callback_with_the_result(worker: object) -> None:
    result = add.apply_async((2, 3), link=note.s("linked"))

    assert result.get(timeout=20) == 5
    wait_until(lambda: scalar(app.conf.dsn, "SELECT count(*) FROM marks WHERE label = '5'"),
               message="the callback, given the result as its first argument")


def test_a_group_returns_its_members_results_in_order(worker: object) -> None:
    result = group(add.s(i, i) for i in range(10)).apply_async()

    assert isinstance(result, GroupResult)
    assert result.get(timeout=20) == [i + i for i in range(10)]
    assert result.ready() and result.successful() and result.completed_count() == 10


def test_a_group_in_a_chain_gives_the_next_link_a_list(worker: object) -> None:
    result = (add.s(1, 1) | group(mul.s(2), mul.s(3)) | tsum.s()).apply_async()

    assert result.get(timeout=20) == 10


def test_a_500_member_chords_callback_runs_exactly_once(canvas: str) -> None:
    workers = [WorkerProcess(canvas, "tests.apps.workflow_app", "-c", "8") for _ in range(2)]
    try:
        result = chord(add.s(i, 1) for i in range(500))(tsum.s())
        assert result.get(timeout=60) == sum(range(1, 501))
    finally:
        for process in workers:
            process.stop()
    assert marks(canvas, "tsum:500") == 1
    assert scalar(canvas, "SELECT count(*) FROM pgtasks.chords") == 0
    assert len(result.parent) == 500


def test_a_failed_chord_member_fails_the_callback_with_a_chord_error(worker: object) -> None:
    callback = tsum.s()
    callback.link_error(noted_failure.s("chord-errback"))
    result = chord([add.s(1, 1), fail.s(), add.s(2, 2)], callback).apply_async()

    with pytest.raises(ChordError, match=rf"Dependency {result.parent[1].id} raised "
                                         r"builtins.KeyError"):
        result.get(timeout=20)
    wait_until(lambda: marks(app.conf.dsn, f"chord-errback:{result.id}") == 1,
               message="the chord's errback to run")
    assert marks(app.conf.dsn, "tsum:3") == 0


def test_chunks_starmap_and_map_run_many_calls_in_few_tasks(worker: object) -> None:
    assert add.chunks([(i, i) for i in range(10)], 4).apply_async().get(timeout=20) == [
        [0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=20) == [3, 7]
    assert tsum.map([[1, 2], [3]]).apply_async().get(timeout=20) == [3, 3]


def test_signatures_round_trip_through_their_dict_form(canvas: str) -> None:
    sig = add.s(2).set(countdown=5, queue="fast")

    again = signature(dict(sig), app=app)

    assert (again.name, again.args, again.options) == (add.name, (2,), sig.options)
    assert again.clone((1,)).args == (1, 2)
    assert add.si(1).clone((99,)).args == (1,)
    assert repr(add.s(1) | mul.s(2)).count("|") == 1


def test_a_chain_of_a_task_that_ignores_its_result_is_refused(canvas: str) -> None:
    with pytest.raises(TaskError, match="ignores its result"):
        chain(add.s(1, 1).set(ignore_result=True), add.s(1)).apply_async()


def test_a_workflow_can_be_a_link_of_a_chain(worker: object) -> None:
    result = chain(workflow_app.echoes.s(5), add.s(1)).apply_async()

    assert result.get(timeout=20) == 6
    assert app.get_workflow(result.parent.id)["status"] == "SUCCESS"


def test_with_task_always_eager_the_canvas_and_workflows_run_in_the_caller(
        canvas: str) -> None:
    app.conf.task_always_eager = True
    try:
        assert (add.s(1, 2) | mul.s(10)).apply_async().get() == 30
        assert group(add.s(i, i) for i in range(3)).apply_async().get() == [0, 2, 4]
        assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async().get() == 6
        assert workflow_app.echoes.delay(7).get() == 7
    finally:
        app.conf.task_always_eager = False
    assert app.get_workflow(scalar(canvas, "SELECT workflow_id FROM pgtasks.workflows"))[
        "status"] == "SUCCESS"
