"""Durable workflows (DBOS-style): checkpointed steps, durable sleep, events and messages.

Modules: ``core`` (workflows, steps, sleep, starting and replaying runs), ``context`` (the running
workflow and its positions), ``messages`` (events, messages), ``children`` (enqueueing and
awaiting child jobs), ``chains`` and ``chords`` (the canvas on top), ``manage`` (list, cancel,
resume, restart), ``owner`` (the lease of inline runs), ``store`` (the SQL boundary).
"""

from pgtasks.workflow.core import Step, Workflow, WorkflowHandle

__all__ = ["Step", "Workflow", "WorkflowHandle"]
