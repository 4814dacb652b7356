"""Concurrency slots, claim by claim: two claim plans standing in for two workers."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgtasks import PgTasks
from pgtasks.queues import ClaimPlan, declare
from tests.support import scalar


@pytest.fixture
def app(dsn: str) -> Iterator[PgTasks]:
    limited = PgTasks("slots", dsn=dsn)
    limited.queue("pair", concurrency=2)
    limited.queue("paced-pair", concurrency=2, rate_limit="1/h")
    yield limited
    limited.close()


class FakeWorker:
    """A worker's claiming side: its id, the jobs it runs, and its claim plan."""

    def __init__(self, app: PgTasks, queue: str) -> None:
        self.app = app
        with app.store.connect() as conn:
            self.id = app.store.register_worker(conn, name=queue, hostname="h", pid=1,
                                                queues=[queue], concurrency=8,
                                                lease_seconds=30)
        self.running: list[int] = []
        plan = ClaimPlan.for_worker([queue], app.queue_specs, {}, lambda: self.running,
                                    lambda: None)
        assert plan is not None
        self.plan = plan

    def claim(self, n: int = 8) -> list[str]:
        jobs = self.plan.claim(self.app.store, self.id, n)
        self.running += [j.id for j in jobs]
        return [j.task_id for j in jobs]


def enqueue(app: PgTasks, queue: str, count: int) -> list[str]:
    return [app.send_task("slots.job", queue=queue).id for _ in range(count)]


def test_a_queue_of_concurrency_two_gives_two_slots_in_all_and_takes_them_back(
        app: PgTasks) -> None:
    ids = enqueue(app, "pair", 5)
    first, second = FakeWorker(app, "pair"), FakeWorker(app, "pair")
    # Two slots in all: the first worker takes both, the second none
    assert first.claim() == ids[:2]
    assert second.claim() == []
    # A finished job's slot goes back with its worker's next claim, to whoever claims next
    first.running.pop(0)
    assert first.claim(n=0) == []
    assert second.claim() == [ids[2]]
    assert first.claim() == []


def test_a_dead_workers_slots_return_when_its_connection_closes(app: PgTasks) -> None:
    ids = enqueue(app, "pair", 3)
    doomed, survivor = FakeWorker(app, "pair"), FakeWorker(app, "pair")
    assert doomed.claim() == ids[:2]
    assert survivor.claim() == []
    assert doomed.plan._conn is not None
    doomed.plan._conn.close()  # what a kill -9 does to it
    assert survivor.claim() == [ids[2]]


def test_a_rate_limit_and_a_concurrency_on_one_queue_both_hold(app: PgTasks) -> None:
    ids = enqueue(app, "paced-pair", 3)
    worker = FakeWorker(app, "paced-pair")
    # One token (1/h) and two slots: one job; the unused slot is given back
    assert worker.claim() == [ids[0]]
    assert worker.claim() == []
    other = FakeWorker(app, "paced-pair")
    assert other.claim() == []
    assert scalar(app.dsn, "SELECT count(*) FROM pgtasks.jobs WHERE state = 'running'") == 1


def test_a_worker_without_limited_queues_or_rate_limited_tasks_claims_the_plain_way() -> None:
    specs = {"emails": declare("emails", concurrency=2)}
    assert ClaimPlan.for_worker(["default", "other"], specs, {}, list, lambda: None) is None
    assert ClaimPlan.for_worker(["default", "emails"], specs, {}, list, lambda: None)
    assert ClaimPlan.for_worker(["default"], {}, {"proj.send": 10.0}, list, lambda: None)


def test_a_lost_claim_connection_gives_back_its_slots_and_the_next_claim_reconnects(
        app: PgTasks) -> None:
    ids = enqueue(app, "pair", 4)
    worker, other = FakeWorker(app, "pair"), FakeWorker(app, "pair")
    assert worker.claim() == ids[:2]
    assert worker.plan._conn is not None
    # Given the worker's claim connection is cut by the server
    scalar(app.dsn, "SELECT pg_terminate_backend(%s)", (worker.plan._conn.info.backend_pid,))
    # When it next claims, the claim fails (the worker loop retries it), and its slots are gone:
    # its two jobs run on without slots, the documented cost of a lost connection
    with pytest.raises(psycopg.OperationalError):
        worker.claim()
    assert other.claim() == ids[2:4]
    # Then the next claim reconnects, and finds the queue full
    assert worker.claim() == []
