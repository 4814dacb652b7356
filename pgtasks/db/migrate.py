"""Apply the ordered migrations in ``pgtasks/sql/migrations/`` under an advisory lock."""

from __future__ import annotations

import logging

import psycopg

from pgtasks.db.connect import connect
from pgtasks.db.queries import migration_files, query, script
from pgtasks.errors import MigrationError

log = logging.getLogger("pgtasks.migrate")


def pending(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """Migrations not yet applied to the database behind ``conn``."""
    row = conn.execute(query("migrate.installed")).fetchone()
    if not row or not row[0]:
        return migration_files()
    done = {r[0] for r in conn.execute(query("migrate.applied"))}
    return [(v, name) for v, name in migration_files() if v not in done]


def migrate(dsn: str) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied.

    Concurrent migrators are safe: all of them take one advisory lock in the same transaction
    that applies the migrations, so the second one finds nothing left to do.
    """
    with connect(dsn) as conn:
        if not pending(conn):
            return []
        applied: list[str] = []
        try:
            with conn.transaction():
                conn.execute(query("migrate.lock"))
                conn.execute(query("migrate.create_tracking"))
                for version, name in pending(conn):
                    conn.execute(script(f"migrations/{name}").encode())
                    conn.execute(query("migrate.record"), {"version": version, "name": name})
                    applied.append(name)
        except psycopg.Error as exc:
            raise MigrationError(f"migration failed: {exc}") from exc
        for name in applied:
            log.info("applied migration %s", name)
        return applied
