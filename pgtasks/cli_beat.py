"""The scheduler's commands: ``pgtasks beat`` and ``pgtasks schedule list|pause|resume|run-now``."""

from __future__ import annotations

from datetime import datetime

import click

from pgtasks.beat import Beat, load_entries, run_now, set_paused, utc_now
from pgtasks.cli_common import APP_OPTION, app_from, setup_logging


@click.command()
@APP_OPTION
@click.option("-l", "--loglevel", envvar="PGTASKS_LOGLEVEL", show_envvar=True, default="INFO",
              help="Log level.")
@click.option("--max-interval", envvar="PGTASKS_BEAT_MAX_LOOP_INTERVAL", show_envvar=True,
              type=float, default=None,
              help="Longest sleep between looks at the schedules, in seconds "
                   "(default: beat_max_loop_interval).")
@click.pass_context
def beat(ctx: click.Context, app_spec: str, loglevel: str, max_interval: float | None) -> None:
    """Run the scheduler: enqueue each tick of the app's schedules once, however many run."""
    setup_logging(loglevel)
    Beat(app_from(ctx, app_spec), max_loop_interval=max_interval).run()


@click.group()
def schedule() -> None:
    """Inspect and control the periodic schedules."""


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@schedule.command("list")
@APP_OPTION
@click.pass_context
def schedule_list(ctx: click.Context, app_spec: str) -> None:
    """Every registered schedule: its state, last tick, next tick and runs."""
    app = app_from(ctx, app_spec)
    entries = load_entries(app)
    rows = app.store.list_schedules()
    if not rows:
        click.echo("no schedules registered (beat registers the app's entries when it starts)")
        return
    click.echo(f"{'name':<28}{'state':<10}{'catch_up':<10}{'last tick':<27}{'next tick':<27}"
               f"{'runs':>6}  schedule")
    for row in rows:
        state = "disabled" if not row["enabled"] else "paused" if row["paused"] else "active"
        entry = entries.get(row["name"])
        following = None
        if entry is not None and row["enabled"] and not row["paused"]:
            following = entry.anchored(row["anchor"]).next_tick(row["last_tick"])
        click.echo(f"{row['name']:<28}{state:<10}{row['catch_up']:<10}"
                   f"{_when(row['last_tick']):<27}{_when(following):<27}{row['total_runs']:>6}  "
                   f"{row['schedule']} -> {row['task_name']}")


@schedule.command("pause")
@APP_OPTION
@click.argument("name")
@click.pass_context
def schedule_pause(ctx: click.Context, app_spec: str, name: str) -> None:
    """Stop enqueuing NAME's ticks until it is resumed."""
    set_paused(app_from(ctx, app_spec), name, True)
    click.echo(f"paused {name}")


@schedule.command("resume")
@APP_OPTION
@click.argument("name")
@click.pass_context
def schedule_resume(ctx: click.Context, app_spec: str, name: str) -> None:
    """Resume NAME from now (the ticks missed while paused are skipped)."""
    set_paused(app_from(ctx, app_spec), name, False)
    click.echo(f"resumed {name}")


@schedule.command("run-now")
@APP_OPTION
@click.argument("name")
@click.pass_context
def schedule_run_now(ctx: click.Context, app_spec: str, name: str) -> None:
    """Enqueue one extra run of NAME now, leaving its schedule as it is."""
    task_id = run_now(app_from(ctx, app_spec), name, utc_now)
    click.echo(f"enqueued {name}: {task_id}")
