"""The ``pgtasks`` command line: parse, load the app (``-A proj``), call one library function.

Every option can also be set from the ``PGTASKS_*`` environment variable shown in ``--help``.
"""

from __future__ import annotations

import click

from pgtasks import cli_beat
from pgtasks.app import PgTasks
from pgtasks.beat import beat_service
from pgtasks.cli_common import APP_OPTION, AppGroup, app_from, setup_logging
from pgtasks.cli_workflow import workflow
from pgtasks.worker.supervisor import Supervisor


@click.group(cls=AppGroup)
@click.version_option(package_name="pgtasks")
def main() -> None:
    """pgtasks: a durable, Celery-compatible task queue on Postgres."""


@main.command()
@APP_OPTION
@click.option("-Q", "--queues", envvar="PGTASKS_QUEUES", show_envvar=True, default=None,
              help="Comma-separated queues to serve (default: task_default_queue).")
@click.option("-c", "--concurrency", envvar="PGTASKS_CONCURRENCY", show_envvar=True, type=int,
              default=None, help="Jobs run at once by this worker.")
@click.option("--pool", envvar="PGTASKS_POOL", show_envvar=True, default=None,
              type=click.Choice(["threads", "processes", "prefork"]),
              help="Run jobs in threads (default) or child processes.")
@click.option("-l", "--loglevel", envvar="PGTASKS_LOGLEVEL", show_envvar=True, default="INFO",
              help="Log level.")
@click.option("-n", "--hostname", envvar="PGTASKS_HOSTNAME", show_envvar=True, default=None,
              help="Worker name shown in status.")
@click.option("--shutdown-grace", envvar="PGTASKS_SHUTDOWN_GRACE", show_envvar=True, type=float,
              default=None, help="Seconds running jobs get to finish after SIGTERM.")
@click.option("--beat", "with_beat", envvar="PGTASKS_BEAT", show_envvar=True, is_flag=True,
              help="Also run the scheduler in this worker (safe on every worker).")
@click.option("-P", "--processes", envvar="PGTASKS_PROCESSES", show_envvar=True, type=int,
              default=1, help="Worker processes to run, each with --concurrency slots "
                              "(one per core is the recommended set-up for small jobs).")
@click.pass_context
def worker(ctx: click.Context, app_spec: str, queues: str | None, concurrency: int | None,
           pool: str | None, loglevel: str, hostname: str | None,
           shutdown_grace: float | None, with_beat: bool, processes: int) -> None:
    """Run a worker."""
    setup_logging(loglevel)
    app = app_from(ctx, app_spec)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if processes < 1:
        raise click.BadParameter(f"must be >= 1, got {processes}", param_hint="--processes")

    def run_worker() -> None:
        app.Worker(queues=queue_list, concurrency=concurrency, pool=pool, hostname=hostname,
                   shutdown_grace=shutdown_grace,
                   extra_services=[beat_service] if with_beat else ()).run()

    if processes == 1:
        run_worker()
    else:
        ctx.exit(Supervisor(processes, run_worker).run())


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("migrate")
@click.option("-A", "--app", "app_spec", envvar="PGTASKS_APP", show_envvar=True, default=None,
              help="The app whose DSN to use (else PGTASKS_DSN or the embedded server).")
@click.option("--dsn", envvar="PGTASKS_DSN", show_envvar=True, default=None,
              help="Postgres DSN.")
@click.pass_context
def db_migrate(ctx: click.Context, app_spec: str | None, dsn: str | None) -> None:
    """Apply pending schema migrations."""
    app = app_from(ctx, app_spec) if app_spec else PgTasks(dsn=dsn)
    if dsn:
        app.conf.dsn = dsn
    applied = app.migrate()
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@main.command()
@APP_OPTION
@click.pass_context
def status(ctx: click.Context, app_spec: str) -> None:
    """Queues with job counts by state, and live workers."""
    app = app_from(ctx, app_spec)
    store = app.store
    click.echo(f"{'queue':<24}{'ready':>10}{'scheduled':>11}{'running':>9}")
    for row in store.queue_counts():
        click.echo(f"{row['queue']:<24}{row['ready']:>10}{row['scheduled']:>11}"
                   f"{row['running']:>9}")
    results = store.result_counts()
    if results:
        click.echo("\nfinished (kept for result_expires):")
        for row in results:
            click.echo(f"  {row['queue']:<22}{row['state']:<10}{row['n']:>10}")
    click.echo("\nworkers:")
    workers = store.list_workers()
    for w in workers:
        click.echo(f"  {w['name']:<40} queues={','.join(w['queues'])} "
                   f"concurrency={w['concurrency']} running={w['running']} "
                   f"heartbeat={w['heartbeat_age']:.1f}s ago"
                   + (" (stopping)" if w["stopping"] else ""))
    if not workers:
        click.echo("  none")


@main.command()
@APP_OPTION
@click.option("-Q", "--queues", envvar="PGTASKS_QUEUES", show_envvar=True, default=None,
              help="Comma-separated queues to purge (default: all).")
@click.option("-f", "--force", is_flag=True, help="Don't ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, app_spec: str, queues: str | None, force: bool) -> None:
    """Delete every queued (not running) job."""
    app = app_from(ctx, app_spec)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else []
    what = ", ".join(names) if names else "all queues"
    if not force:
        click.confirm(f"Delete every queued job of {what}?", abort=True)
    click.echo(f"purged {app.store.purge(names)} jobs from {what}")


main.add_command(cli_beat.beat)
main.add_command(cli_beat.schedule)
main.add_command(workflow)
