"""The tasks every app registers for the canvas: the chain workflow, the chord trigger, and
Celery's map/starmap helpers. Their names start with ``pgtasks.``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgtasks.app import PgTasks


def register_builtins(app: PgTasks) -> None:
    from pgtasks.workflow.chains import CHAIN_TASK, run_chain
    from pgtasks.workflow.chords import FIRE_TASK, fire
    from pgtasks.workflow.core import Workflow

    app.register_task(Workflow(app, run_chain, {"name": CHAIN_TASK}))

    def chord_fire(chord_id: str, body: dict[str, Any], member_ids: list[str]) -> None:
        fire(app, chord_id, body, member_ids)

    def xmap(task: str, items: Sequence[Any]) -> list[Any]:
        fun = app.get_task(task)
        return [fun(item) for item in items]

    def xstarmap(task: str, items: Sequence[Sequence[Any]]) -> list[Any]:
        fun = app.get_task(task)
        return [fun(*item) for item in items]

    app.task(name=FIRE_TASK, ignore_result=True)(chord_fire)
    app.task(name="pgtasks.map")(xmap)
    app.task(name="pgtasks.starmap")(xstarmap)
