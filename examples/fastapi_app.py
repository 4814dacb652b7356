"""The checkout workflow behind a web endpoint (FastAPI), with the worker in the same process.

    pip install fastapi uvicorn        # not dependencies of pgtasks
    uvicorn examples.fastapi_app:web
    curl -X POST localhost:8000/orders/42/checkout     # starts workflow order-42 (idempotent)
    curl localhost:8000/orders/42                      # its status and steps

Kill the server (kill -9) while an order sleeps, start it again, and the order completes without
charging twice: ``app.launch()`` runs a worker that resumes workflows whose process died.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI
except ImportError:
    sys.exit("examples/fastapi_app.py needs FastAPI, which pgtasks does not depend on:\n"
             "    pip install fastapi uvicorn")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkout import app, checkout  # noqa: E402 - after the FastAPI check and path set-up


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    worker = app.launch(concurrency=4)
    try:
        yield
    finally:
        worker.stop()
        worker.wait(30)
        app.close()


web = FastAPI(title="pgtasks checkout", lifespan=lifespan)


@web.post("/orders/{order_id}/checkout")
def start_checkout(order_id: int) -> dict[str, Any]:
    """Start (once: the workflow id is the idempotency key) the checkout of an order."""
    handle = app.start_workflow(checkout, order_id, workflow_id=f"order-{order_id}")
    return {"workflow_id": handle.workflow_id, "status": handle.get_status()}


@web.get("/orders/{order_id}")
def order_status(order_id: int) -> dict[str, Any]:
    workflow_id = f"order-{order_id}"
    info = app.get_workflow(workflow_id)
    return {"workflow_id": workflow_id, "status": info["status"], "output": info["output"],
            "error": info["error"],
            "steps": [{"position": s["position"], "name": s["name"], "output": s["output"],
                       "error": s["error"]} for s in app.workflow_steps(workflow_id)]}
