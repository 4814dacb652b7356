"""Tables don't grow forever: finished work is pruned after result_expires."""

from __future__ import annotations

import psycopg

from tests.apps import workflow_app
from tests.support import scalar


def test_finished_workflows_are_pruned_with_their_steps_after_result_expires(wf: str):
    workflow_app.echoes("kept")
    workflow_app.echoes("old")
    with psycopg.connect(wf, autocommit=True) as conn:
        conn.execute("UPDATE pgtasks.workflows SET updated_at = now() - interval '2 days' "
                     "WHERE convert_from(inputs, 'UTF8') LIKE '%old%'")
        assert scalar(wf, "SELECT count(*) FROM pgtasks.steps") == 2
        pruned = workflow_app.app.store.prune_results(conn, max_age=86400)
    assert pruned == 1
    assert scalar(wf, "SELECT count(*) FROM pgtasks.workflows") == 1
    assert scalar(wf, "SELECT count(*) FROM pgtasks.steps") == 1


def test_a_running_workflow_is_never_pruned(wf: str):
    workflow_app.echoes("running")
    with psycopg.connect(wf, autocommit=True) as conn:
        conn.execute("UPDATE pgtasks.workflows SET status = 'RUNNING', "
                     "updated_at = now() - interval '30 days'")
        workflow_app.app.store.prune_results(conn, max_age=86400)
    assert scalar(wf, "SELECT count(*) FROM pgtasks.workflows") == 1
