"""``Celery``: the pgtasks app under Celery's constructor and defaults."""

from __future__ import annotations

import logging
from typing import Any

from pgtasks.app import PgTasks

log = logging.getLogger("pgtasks.compat")


class Celery(PgTasks):
    """``Celery("proj", broker=..., backend=...)`` running on Postgres.

    A ``postgresql://`` (or ``postgres://``, ``db+postgresql://``, or a libpq ``key=value``
    string) broker or backend URL becomes the DSN; Redis/AMQP URLs are ignored with a warning,
    since Postgres is both broker and result store here. The default queue is ``celery``, as in
    Celery.
    """

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, *, include: Any = None, **settings: Any) -> None:
        dsn = settings.pop("dsn", None)
        for url in (broker, backend):
            if not url:
                continue
            plain = url.removeprefix("db+").replace("postgresql+psycopg://", "postgresql://")
            if plain.startswith(("postgresql://", "postgres://")) or "://" not in plain:
                dsn = dsn or plain
            else:
                scheme = url.split("://", 1)[0]
                log.warning("ignoring the %s:// URL: pgtasks keeps jobs and results in Postgres",
                            scheme)
        settings.setdefault("task_default_queue", "celery")
        if include:
            settings["include"] = list(include)
        super().__init__(main, dsn=dsn, **settings)
