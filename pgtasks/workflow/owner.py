"""The lease of a process that runs workflows inline (``checkout(42)`` in a web handler).

An inline workflow's job row is inserted already running, owned by a worker row that stands for
this process and is kept alive by the same :class:`~pgtasks.worker.lease.Lease` thread workers
use. If the process dies, the lease expires and the reaper of any worker requeues the job, so a
worker resumes the workflow from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING

from pgtasks.worker.lease import Lease

if TYPE_CHECKING:
    from pgtasks.app import PgTasks


class InlineOwner:
    """A worker row for this process's inline workflows (no queues, no slots), registered on
    first use."""

    def __init__(self, app: PgTasks) -> None:
        self.app = app
        self.pid = os.getpid()
        self.name = f"inline@{socket.gethostname()}:{self.pid}"
        self.worker_id = 0
        self._lock = threading.Lock()
        self._lease: Lease | None = None

    def id(self) -> int:
        with self._lock:
            if self._lease is None:
                self._register()
                self._lease = Lease(self.app, lambda: self.worker_id, lambda: False,
                                    self._on_lost)
                self._lease.start()
            return self.worker_id

    def _on_lost(self) -> None:
        # A heartbeat in flight while stop() unregisters must not register the process again.
        if self._lease is not None:
            self._register()

    def _register(self) -> None:
        with self.app.store.connect() as conn:
            self.worker_id = self.app.store.register_worker(
                conn, name=self.name, hostname=socket.gethostname(), pid=os.getpid(),
                queues=[], concurrency=0,
                lease_seconds=float(self.app.conf.worker_lease_seconds))

    def stop(self) -> None:
        """Stop heartbeating and unregister (giving back any inline job still held)."""
        with self._lock:
            if self._lease is None:
                return
            self._lease.stop()
            self._lease = None
            with self.app.store.connect() as conn:
                self.app.store.unregister_worker(conn, self.worker_id)
