"""The worker's lease: heartbeats, the reaper of dead workers, and periodic maintenance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from pgtasks.errors import PgTasksError

if TYPE_CHECKING:
    from pgtasks.app import PgTasks

log = logging.getLogger("pgtasks.worker")


class Lease(threading.Thread):
    """Keeps a worker's lease alive and, from every worker, requeues the jobs of dead ones.

    If the worker finds it was declared dead (a long network partition or database outage),
    ``on_lost`` is called so that the worker registers again; the jobs it held were requeued.
    """

    def __init__(self, app: PgTasks, worker_id: Callable[[], int], stopping: Callable[[], bool],
                 on_lost: Callable[[], None], on_tick: Callable[[Any], None] | None = None) -> None:
        super().__init__(name="pgtasks-lease", daemon=True)
        self.app = app
        self.worker_id = worker_id
        self.stopping = stopping
        self.on_lost = on_lost
        self.on_tick = on_tick
        self.interval = float(app.conf.worker_heartbeat_interval)
        self.maintenance_interval = float(app.conf.worker_maintenance_interval)
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        last_maintenance = 0.0
        while not self._halt.wait(self.interval):
            try:
                if conn is None or conn.closed:
                    conn = self.app.store.connect()
                store = self.app.store
                if not store.heartbeat(conn, self.worker_id(), self.stopping()):
                    log.warning("worker lease was lost (declared dead): registering again")
                    self.on_lost()
                dead, requeued = store.reap(conn)
                if dead or requeued:
                    log.warning("requeued %d jobs of %d dead workers", requeued, dead)
                if self.on_tick is not None:
                    self.on_tick(conn)
                now = time.monotonic()
                if now - last_maintenance >= self.maintenance_interval:
                    last_maintenance = now
                    pruned = store.prune_results(conn, float(self.app.conf.result_expires))
                    if pruned:
                        log.info("pruned %d results older than result_expires", pruned)
            except (psycopg.Error, PgTasksError) as exc:
                log.warning("lease: database unavailable (%s); retrying", exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
