"""The embedded server's postmaster as the operating system sees it: its pid file, whether it
is alive, and the lock files a killed one leaves behind."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pgtasks.errors import EmbeddedPostgresError

logger = logging.getLogger("pgtasks.db.embedded")


@dataclass(frozen=True)
class Pidfile:
    pid: int
    port: int | None
    shmid: int | None
    status: str


def process_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ("", "?", 0)
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def is_postmaster(pid: int) -> bool:
    """Whether *pid* is a live (not zombie) postgres process."""
    if Path("/proc/self/stat").exists():
        info = process_stat(pid)
        return info is not None and info[0] == "postgres" and info[1] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pidfile(pgdata: Path) -> Pidfile | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot read {pgdata / 'postmaster.pid'}: {exc}") from exc
    # Lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None  # being written
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    shm = lines[6].split() if len(lines) > 6 else []
    shmid = int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Pidfile(pid, port, shmid, status)


def _shared_memory_attached(pidfile: Pidfile) -> bool:
    """Whether processes are still attached to the old postmaster's shared memory segment."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume the worst
    for row in rows:
        fields = row.split()
        if len(fields) > 6 and fields[1] == str(pidfile.shmid):
            return int(fields[6]) > 0
    return False


def clear_stale_lock_files(pgdata: Path) -> None:
    """Remove the lock files of a dead postmaster whose pid PostgreSQL would take as alive.

    After a kill -9 the postmaster stays a zombie until init reaps it (some inits never do),
    or its pid is reused by another process: either way PostgreSQL refuses to start. The lock
    files are only removed once no process is attached to the old shared memory, which is the
    interlock PostgreSQL itself relies on.
    """
    pidfile = read_pidfile(pgdata)
    if (
        pidfile is None
        or not Path(f"/proc/{pidfile.pid}").exists()  # gone: PostgreSQL copes by itself
        or is_postmaster(pidfile.pid)
        or _shared_memory_attached(pidfile)
    ):
        return
    logger.info("removing the lock files of dead postmaster %d in %s", pidfile.pid, pgdata)
    for lock in (pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")):
        with contextlib.suppress(OSError):
            if lock.read_text().split("\n", 1)[0].strip() == str(pidfile.pid):
                lock.unlink()
