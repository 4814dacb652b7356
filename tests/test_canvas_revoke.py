"""Revoking a member of a chord or a link of a chain never leaves the rest waiting forever."""

from __future__ import annotations

import pytest

from pgtasks import PgTasks, chord, group, states
from pgtasks.errors import ChordError
from pgtasks.worker.loop import Worker
from tests.apps import core_app


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
