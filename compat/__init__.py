"""The Celery compatibility layer: run a Celery project on pgtasks almost unchanged.

``compat.install()`` (call it once, before the project imports ``celery``) makes ``celery``,
``celery.exceptions``, ``celery.states``, ``celery.result``, ``celery.canvas`` and
``celery.schedules`` resolve to
pgtasks' equivalents, so ``from celery import Celery, shared_task`` keeps working. Or import
:class:`compat.celery.Celery` directly.
"""

from __future__ import annotations

import sys
import types

from compat.celery import Celery


def install() -> None:
    """Make ``import celery`` (and its common submodules) load the pgtasks shim."""
    import pgtasks
    import pgtasks.canvas as canvas
    import pgtasks.errors as errors
    import pgtasks.result as result
    import pgtasks.states as states

    root = types.ModuleType("celery", "pgtasks' Celery compatibility shim")
    root.Celery = Celery  # type: ignore[attr-defined]
    root.shared_task = pgtasks.shared_task  # type: ignore[attr-defined]
    root.Task = pgtasks.Task  # type: ignore[attr-defined]
    root.states = states  # type: ignore[attr-defined]
    for name in ("chain", "chord", "chunks", "group", "signature", "Signature"):
        setattr(root, name, getattr(canvas, name))
    exceptions = types.ModuleType("celery.exceptions")
    for name in ("Retry", "MaxRetriesExceededError", "SoftTimeLimitExceeded",
                 "TimeLimitExceeded", "NotRegistered", "TimeoutError", "TaskRevokedError",
                 "ChordError"):
        setattr(exceptions, name, getattr(errors, name))
    root.exceptions = exceptions  # type: ignore[attr-defined]
    modules = {"celery": root, "celery.exceptions": exceptions, "celery.states": states,
               "celery.result": result, "celery.canvas": canvas}
    try:
        import pgtasks.schedules as schedules

        modules["celery.schedules"] = schedules
        root.schedules = schedules  # type: ignore[attr-defined]
    except ImportError:
        pass
    sys.modules.update(modules)


__all__ = ["Celery", "install"]
