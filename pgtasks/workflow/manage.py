"""Managing workflow runs: list, inspect, cancel, resume, and restart from a step (fork)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pgtasks.db.store import NewJob
from pgtasks.errors import DuplicateJob, WorkflowError
from pgtasks.workflow.core import WorkflowHandle, workflows_of

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

STATUSES = ("PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED")


def _decode(app: PgTasks, data: bytes | None, content_type: str | None, loads: Any) -> Any:
    if data is None or content_type is None:
        return None
    try:
        return loads(bytes(data), content_type)
    except Exception as exc:  # noqa: BLE001 - shown, not raised: inspection must not fail
        return f"<undecodable {content_type}: {exc}>"


def list_workflows(app: PgTasks, status: str | None = None, name: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
    """Workflow runs, newest first, optionally of one status and/or one workflow name."""
    if status is not None and status.upper() not in STATUSES:
        raise WorkflowError(f"unknown workflow status {status!r}; one of {', '.join(STATUSES)}")
    if not isinstance(limit, int) or limit < 1:
        raise WorkflowError(f"limit must be a positive int, got {limit!r}")
    return workflows_of(app).list_workflows(status.upper() if status else None, name, limit)


def get_workflow(app: PgTasks, workflow_id: str) -> dict[str, Any]:
    """One run with its decoded arguments and outcome; raises if there is no such run."""
    row = workflows_of(app).get_workflow(workflow_id)
    if row is None:
        raise WorkflowError(f"there is no workflow {workflow_id!r}")
    call = _decode(app, row["inputs"], row["content_type"], app.serializer.loads)
    args, kwargs = (call if isinstance(call, list | tuple) and len(call) == 2 else ([], {}))
    output = _decode(app, row["output"], app.result_serializer.content_type,
                     app.result_serializer.loads)
    return {"workflow_id": row["workflow_id"], "name": row["name"], "status": row["status"],
            "queue": row["queue"], "args": list(args), "kwargs": dict(kwargs),
            "output": output, "error": _error(row), "forked_from": row["forked_from"],
            "runs": row["runs"], "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def _error(row: dict[str, Any]) -> str | None:
    if row.get("exc_type") is None:
        return None
    return f"{row['exc_type']}: {row['exc_message']}"


def workflow_steps(app: PgTasks, workflow_id: str) -> list[dict[str, Any]]:
    """Each checkpoint's position, name, inputs, output, error, attempts and timing."""
    found = []
    for row in workflows_of(app).list_steps(workflow_id):
        call = _decode(app, row["inputs"], app.serializer.content_type, app.serializer.loads)
        found.append({
            "position": row["position"], "name": row["name"],
            "inputs": call,
            "output": _decode(app, row["output"], row["content_type"],
                              app.result_serializer.loads),
            "error": _error(row), "attempts": row["attempts"],
            "started_at": row["started_at"], "finished_at": row["finished_at"],
            "seconds": (row["finished_at"] - row["started_at"]).total_seconds(),
        })
    return found


def cancel_workflow(app: PgTasks, workflow_id: str) -> bool:
    """Cancel an unfinished run: a queued or suspended one never runs again; a running one
    stops at its next checkpoint; the queued jobs it waits for (chain links) are revoked.
    False if it had already finished."""
    cancelled = workflows_of(app).cancel_workflow(workflow_id)
    if cancelled:
        app.store.revoke(workflow_id, "workflow cancelled")
        app.store.revoke_waited_for(workflow_id, f"workflow {workflow_id} was cancelled")
    elif workflows_of(app).get_workflow(workflow_id) is None:
        raise WorkflowError(f"there is no workflow {workflow_id!r}")
    return cancelled


def resume_workflow(app: PgTasks, workflow_id: str) -> WorkflowHandle:
    """Run a cancelled or failed workflow again from its last successful step (its failed
    steps run again). A pending or running workflow is left as it is."""
    store = workflows_of(app)
    try:
        with store.transaction() as conn:
            row = store.reopen_workflow(workflow_id, conn)
            if row is not None:
                app.store.enqueue(NewJob(
                    task_id=workflow_id, task_name=row["name"], queue=row["queue"],
                    content_type=row["content_type"], payload=bytes(row["inputs"])), conn=conn)
    except DuplicateJob:
        raise WorkflowError(f"workflow {workflow_id!r} cannot be resumed yet: its job is still "
                            f"running (it stops at its next checkpoint); try again") from None
    if row is None:
        current = store.get_workflow(workflow_id)
        if current is None:
            raise WorkflowError(f"there is no workflow {workflow_id!r}")
        if current["status"] == "SUCCESS":
            raise WorkflowError(f"workflow {workflow_id!r} succeeded; restart_workflow() runs "
                                f"it again as a new workflow")
        return WorkflowHandle(workflow_id, app, current["name"])
    return WorkflowHandle(workflow_id, app, row["name"])


def restart_workflow(app: PgTasks, workflow_id: str, from_step: int = 0,
                     new_workflow_id: str | None = None) -> WorkflowHandle:
    """Fork: run a workflow again as a new workflow with the same arguments, keeping the
    checkpoints of its steps before position ``from_step`` (0: run everything again)."""
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise WorkflowError(f"from_step must be a position >= 0, got {from_step!r}")
    store = workflows_of(app)
    row = store.get_workflow(workflow_id)
    if row is None:
        raise WorkflowError(f"there is no workflow {workflow_id!r}")
    new_id = new_workflow_id or str(uuid.uuid4())
    job = NewJob(task_id=new_id, task_name=row["name"], queue=row["queue"],
                 content_type=row["content_type"], payload=bytes(row["inputs"]))
    with store.transaction() as conn:
        if not store.insert_workflow(new_id, row["name"], "PENDING", job, conn,
                                     forked_from=workflow_id):
            raise WorkflowError(f"workflow id {new_id!r} is already taken")
        store.copy_steps(workflow_id, new_id, from_step, conn)
        app.store.enqueue(job, conn=conn)
    return WorkflowHandle(new_id, app, row["name"])

