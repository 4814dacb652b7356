"""Revoking a member of a chord or a link of a chain never leaves the rest waiting forever."""

from __future__ import annotations

import pytest

from pgtasks import PgTasks, chain, chord, group, states
from pgtasks.errors import ChordError
from pgtasks.worker.loop import Worker
from tests.apps import core_app
from tests.support import scalar, wait_until


def test_revoking_a_queued_chord_member_fails_the_chord_instead_of_hanging(app: PgTasks):
    header = [core_app.add.s(1, 1), core_app.add.s(2, 2).set(countdown=60)]
    result = chord(header, core_app.record.s())()
    members = result.parent.results
    members[1].revoke()
    assert members[1].state == states.REVOKED
    worker = app.Worker(concurrency=2)
    thread = worker.run_in_background()
    try:
        with pytest.raises(ChordError, match=f"Dependency {members[1].id}"):
            result.get(timeout=15)
    finally:
        worker.stop()
        thread.join(10)


def test_a_chord_whose_members_all_succeed_still_fires_once(app: PgTasks, worker: Worker):
    result = chord(group(core_app.add.s(i, i) for i in range(5)), core_app.record.s())()
    assert result.get(timeout=15) == [0, 2, 4, 6, 8]


def test_cancelling_a_chain_revokes_its_queued_link(app: PgTasks, worker: Worker):
    chain(core_app.add.s(1, 1), core_app.record.si("never").set(countdown=60)).apply_async(
        chain_id="to-cancel")
    wait_until(lambda: scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs "
                              "WHERE task_name = 'tests.apps.core_app.record'") == 1,
               message="the second link to be queued")
    assert app.cancel_workflow("to-cancel")
    link_state = scalar(app.dsn, "SELECT state FROM pgtasks.results "
                        "WHERE task_name = 'tests.apps.core_app.record'")
    assert link_state == states.REVOKED
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs "
                  "WHERE task_name = 'tests.apps.core_app.record'") == 0
