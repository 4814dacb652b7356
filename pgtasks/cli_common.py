"""What every ``pgtasks`` command shares: finding the app (``-A``), logging, error display."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from pgtasks.app import PgTasks
from pgtasks.errors import ConfigurationError, PgTasksError


def load_app(spec: str) -> PgTasks:
    """Find the app named by ``-A``: ``module:attribute``, or a module holding a PgTasks
    instance (``app`` first), or that module's ``pgtasks``/``tasks`` submodule."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"-A {spec}: cannot import {module_name!r}: {exc}") from exc
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, PgTasks):
            raise ConfigurationError(f"-A {spec}: {attribute!r} is not a PgTasks app")
        return found
    for candidate in (getattr(module, "app", None), getattr(module, "pgtasks", None)):
        if isinstance(candidate, PgTasks):
            return candidate
    for value in vars(module).values():
        if isinstance(value, PgTasks):
            return value
    for sub in ("pgtasks_app", "tasks"):
        try:
            submodule = importlib.import_module(f"{module_name}.{sub}")
        except ImportError:
            continue
        for value in vars(submodule).values():
            if isinstance(value, PgTasks):
                return value
    raise ConfigurationError(f"-A {spec}: no PgTasks app found in module {module_name!r}")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")


class AppGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgTasksError as exc:
            raise click.ClickException(str(exc)) from exc


APP_OPTION = click.option("-A", "--app", "app_spec", envvar="PGTASKS_APP", show_envvar=True,
                          required=True, help="The app: module or module:attribute.")


def app_from(ctx: click.Context, app_spec: str) -> PgTasks:
    app = load_app(app_spec)
    ctx.call_on_close(app.close)
    return app
