"""``pgtasks workflow list|get|steps|cancel|resume|restart``: manage durable workflow runs."""

from __future__ import annotations

import json
from typing import Any

import click

from pgtasks.cli_common import APP_OPTION, app_from

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, indent=2))


@click.group()
def workflow() -> None:
    """Durable workflow runs: list, inspect, cancel, resume, restart."""


@workflow.command("list")
@APP_OPTION
@click.option("--status", default=None, envvar="PGTASKS_WORKFLOW_STATUS", show_envvar=True,
              type=click.Choice(["PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED"],
                                case_sensitive=False), help="Only runs in this status.")
@click.option("--name", default=None, envvar="PGTASKS_WORKFLOW_NAME", show_envvar=True,
              help="Only runs of this workflow.")
@click.option("--limit", default=50, type=int, envvar="PGTASKS_WORKFLOW_LIMIT",
              show_envvar=True, help="At most this many runs, newest first.")
@JSON_OPTION
@click.pass_context
def list_(ctx: click.Context, app_spec: str, status: str | None, name: str | None, limit: int,
          as_json: bool) -> None:
    """List workflow runs, newest first."""
    found = app_from(ctx, app_spec).list_workflows(status=status, name=name, limit=limit)
    if as_json:
        _echo_json(found)
        return
    click.echo(f"{'workflow id':<38}{'status':<11}{'steps':>6}  {'created':<20}name")
    for row in found:
        click.echo(f"{row['workflow_id']:<38}{row['status']:<11}{row['steps']:>6}  "
                   f"{row['created_at']:%Y-%m-%d %H:%M:%S}  {row['name']}")


@workflow.command()
@APP_OPTION
@click.argument("workflow_id")
@JSON_OPTION
@click.pass_context
def get(ctx: click.Context, app_spec: str, workflow_id: str, as_json: bool) -> None:
    """Show one run: status, arguments, output or error."""
    info = app_from(ctx, app_spec).get_workflow(workflow_id)
    if as_json:
        _echo_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key + ':':<14}{value}")


@workflow.command()
@APP_OPTION
@click.argument("workflow_id")
@JSON_OPTION
@click.pass_context
def steps(ctx: click.Context, app_spec: str, workflow_id: str, as_json: bool) -> None:
    """Show a run's checkpoints: inputs, output or error, attempts, timing."""
    found = app_from(ctx, app_spec).workflow_steps(workflow_id)
    if as_json:
        _echo_json(found)
        return
    click.echo(f"{'pos':>4}  {'name':<36}{'tries':>6}{'secs':>8}  outcome")
    for step in found:
        outcome = f"error {step['error']}" if step["error"] else _short(step["output"])
        click.echo(f"{step['position']:>4}  {step['name']:<36}{step['attempts']:>6}"
                   f"{step['seconds']:>8.2f}  {outcome}")
        if step["inputs"] is not None:
            click.echo(f"{'':>6}inputs {_short(step['inputs'], 70)}")


@workflow.command()
@APP_OPTION
@click.argument("workflow_id")
@click.pass_context
def cancel(ctx: click.Context, app_spec: str, workflow_id: str) -> None:
    """Cancel an unfinished run (it stops at its next checkpoint)."""
    done = app_from(ctx, app_spec).cancel_workflow(workflow_id)
    click.echo(f"cancelled {workflow_id}" if done else f"{workflow_id} had already finished")


@workflow.command()
@APP_OPTION
@click.argument("workflow_id")
@click.pass_context
def resume(ctx: click.Context, app_spec: str, workflow_id: str) -> None:
    """Resume a cancelled or failed run from its last successful step."""
    handle = app_from(ctx, app_spec).resume_workflow(workflow_id)
    click.echo(f"resumed {handle.workflow_id}")


@workflow.command()
@APP_OPTION
@click.argument("workflow_id")
@click.option("--from-step", default=0, type=int, show_default=True,
              envvar="PGTASKS_WORKFLOW_FROM_STEP", show_envvar=True,
              help="Keep the checkpoints before this position; run the rest again.")
@click.option("--new-id", default=None, help="The new run's workflow id (default: a uuid).")
@click.pass_context
def restart(ctx: click.Context, app_spec: str, workflow_id: str, from_step: int,
            new_id: str | None) -> None:
    """Run a workflow again as a new run (a fork), from step N."""
    handle = app_from(ctx, app_spec).restart_workflow(workflow_id, from_step, new_id)
    click.echo(f"started {handle.workflow_id} (forked from {workflow_id} at step {from_step})")
