"""Several worker processes under one command: ``pgtasks worker --processes N``.

One Python process runs its tasks under one GIL, so on an N-core machine the recommended set-up
is N worker processes. The supervisor forks them, restarts one that dies unexpectedly (with a
growing delay if it keeps dying), and passes SIGTERM/SIGINT on: the first signal asks every
worker to finish gracefully, a second one to give everything back at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("pgtasks.worker")


class Supervisor:
    """Keeps ``processes`` children running ``run_worker()`` until a signal stops them."""

    def __init__(self, processes: int, run_worker: Callable[[], None]) -> None:
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}")
        self.processes = processes
        self.run_worker = run_worker
        self.children: dict[int, int] = {}  # pid -> slot
        self.signals = 0
        self.restart_delay = [0.0] * processes

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: a plain worker, with the default signal handlers back
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                self.run_worker()
            except BaseException:  # noqa: BLE001 - reported, then the child exits non-zero
                log.exception("worker process failed")
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = slot

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self) -> int:
        """Run until every child has exited after a signal; returns the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            status = 0
            while self.children:
                try:
                    pid, raw = os.wait()
                except InterruptedError:
                    continue
                if pid not in self.children:
                    continue
                slot = self.children.pop(pid)
                code = os.waitstatus_to_exitcode(raw)
                if self.signals:
                    status = status or (code if code > 0 else 0)
                    continue
                delay = self.restart_delay[slot]
                log.warning("worker process %d exited (%d); starting another in %.1fs",
                            pid, code, delay)
                time.sleep(delay)
                self.restart_delay[slot] = min(max(1.0, delay * 2), 30.0)
                if not self.signals:
                    self._spawn(slot)
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
