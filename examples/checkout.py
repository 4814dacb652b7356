"""A durable checkout: kill the process half-way, run it again, and it finishes without
charging twice.

    python examples/checkout.py --crash   # charges order 42, then dies (kill -9) mid-sleep
    python examples/checkout.py           # resumes order 42: ships it, does not charge again

The workflow runs inline, in this process (``checkout(42)``), while ``app.launch()`` runs a
worker on background threads. When the first process dies, its lease expires; the worker of the
second process requeues the orphaned workflow and resumes it from its last checkpoint. The
durable sleep only sleeps what is left of its 3 seconds. Uses PGTASKS_DSN, or an embedded
Postgres kept in ./.pgtasks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from pgtasks import PgTasks

app = PgTasks("checkout")
# Short leases so that a crashed run is picked up within seconds (production default: 30 s).
app.conf.worker_lease_seconds = 3
app.conf.worker_heartbeat_interval = 0.5


@app.step(retries=3, retry_delay=0.5, retry_backoff=2.0)
def charge(order_id: int) -> str:
    print(f"  charging the card for order {order_id}")
    return f"receipt-{order_id}"


@app.step()
def ship(order_id: int, receipt: str) -> str:
    print(f"  shipping order {order_id} ({receipt})")
    return f"parcel-{order_id}"


@app.workflow()
def checkout(order_id: int) -> dict[str, str]:
    receipt = charge(order_id)
    app.sleep(3)  # durable: a restart sleeps only what remains
    parcel = ship(order_id, receipt)
    return {"receipt": receipt, "parcel": parcel}


def main() -> None:
    crash = "--crash" in sys.argv
    worker = app.launch(concurrency=2)  # resumes workflows whose process died
    if crash:
        # Die (kill -9: no cleanup at all) one second into the durable sleep.
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()
    print("checkout of order 42 (workflow id order-42):")
    with app.workflow_id("order-42"):
        # A second run with the same id waits for (or returns) the first run's outcome.
        print("  done:", checkout(42))
    for step in app.workflow_steps("order-42"):
        print(f"  step {step['position']}: {step['name']} -> {step['output']!r}")
    worker.stop()
    worker.wait(10)
    app.close()


if __name__ == "__main__":
    main()
