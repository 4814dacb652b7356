"""A tasks module found by ``app.autodiscover_tasks(["tests.apps.discovered"])``."""

from pgtasks import shared_task


@shared_task(name="discovered.double")
def double(x: int) -> int:
    return 2 * x
