"""The test database harness: one Postgres server per session, a fresh database per test.

The server is, in order: ``$PGTASKS_TEST_DSN``; a local server on 127.0.0.1:5432 if one accepts a
connection within a second; else the embedded server in ``/tmp/pgtasks-test-embedded`` (stopped
at the end of the session if the session started it). So the suite needs no running Postgres.

A template database is migrated once per session; each test then gets its own database copied
from it with ``CREATE DATABASE ... TEMPLATE``, which is much cheaper than migrating every time.
Names carry the pid and a random token, so sessions running at the same time against the same
server (several checkouts, several engineers) never touch each other's databases.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtasks.db import embedded

#: Shared fixtures: the core app (``app``, ``worker``), the limits and workflow apps.
pytest_plugins = ["tests.core_fixtures", "tests.feature_fixtures"]

TEST_DSN_ENV = "PGTASKS_TEST_DSN"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_ROOT = "/tmp/pgtasks-test-embedded"

_SESSION = f"{os.getpid()}_{secrets.token_hex(3)}"
_counter = itertools.count(1)


def _local_server_answers(dsn: str, timeout: float = 1.0) -> bool:
    params = conninfo_to_dict(dsn)
    try:
        # libpq's connect_timeout cannot go below 2 s: probe the port first.
        socket.create_connection((str(params["host"]), int(str(params["port"]))), timeout).close()
        psycopg.connect(dsn, connect_timeout=2).close()
    except (OSError, psycopg.Error):
        return False
    return True


def _admin(server: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server, autocommit=True)


def _database_dsn(server: str, name: str) -> str:
    return make_conninfo(server, dbname=name)


def _create_database(server: str, template: str) -> str:
    name = f"pgtasks_test_{_SESSION}_{next(_counter)}"
    with _admin(server) as conn:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if conn.info.server_version >= 150000:
            # Copying files beats WAL-logging every page for a small database (and makes the
            # drop cheaper too).
            statement += sql.SQL(" STRATEGY FILE_COPY")
        conn.execute(statement)
    return name


def _drop_database(server: str, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def embedded_root() -> Iterator[Path]:
    """A fresh data root for an embedded server of the test's own; stopped and removed after.

    Use it rather than ``tmp_path``: pytest makes that private to its user, so as root the
    server (which runs as ``nobody``) would be moved to ``/tmp/pgtasks-<hash>`` and left there.
    """
    root = Path(tempfile.mkdtemp(prefix="pgtasks-embedded-test-"))
    root.chmod(0o755)
    yield root
    embedded.stop_server(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """The maintenance DSN (database ``postgres``) of the session's server."""
    explicit = os.environ.get(TEST_DSN_ENV)
    if explicit:
        yield explicit
    elif _local_server_answers(LOCAL_SERVER):
        yield LOCAL_SERVER
    else:
        already_running = embedded.running_dsn(EMBEDDED_ROOT) is not None
        dsn = embedded.ensure_server(EMBEDDED_ROOT)
        # A throwaway server: durability against OS crashes is not worth the ~10x slower
        # CREATE DATABASE per test.
        with _admin(dsn) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
        yield dsn
        if not already_running:
            embedded.stop_server(EMBEDDED_ROOT)


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """The name of this session's migrated template database."""
    from pgtasks.db.migrate import migrate

    name = f"pgtasks_test_template_{_SESSION}"
    _drop_database(server_dsn, name)
    with _admin(server_dsn) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    migrate(_database_dsn(server_dsn, name))
    # Copying needs the template to have no connections: make sure no test opens one by mistake.
    with _admin(server_dsn) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
    yield name
    _drop_database(server_dsn, name)


@pytest.fixture
def dsn(server_dsn: str, template_database: str) -> Iterator[str]:
    """The DSN of a fresh, migrated database of its own, dropped after the test."""
    name = _create_database(server_dsn, template_database)
    yield _database_dsn(server_dsn, name)
    _drop_database(server_dsn, name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """The DSN of a fresh database with no pgtasks schema (for migration tests)."""
    name = _create_database(server_dsn, "template0")
    yield _database_dsn(server_dsn, name)
    _drop_database(server_dsn, name)
