"""The quick start: tasks, a worker, results, retries and a transactional enqueue.

Run it with no configuration at all and it uses an embedded Postgres kept in ./.pgtasks;
set PGTASKS_DSN to use your own server.

    python examples/quickstart.py
"""

from __future__ import annotations

import random

from pgtasks import PgTasks

app = PgTasks("quickstart")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=5, retry_backoff=0.1)
def fetch(self, url: str) -> str:
    if self.request.retries < 2 and random.random() < 0.9:
        raise ConnectionError(f"{url} timed out")  # retried with exponential backoff
    return f"fetched {url} after {self.request.retries} retries"


def main() -> None:
    worker = app.Worker(concurrency=4)
    thread = worker.run_in_background()  # `pgtasks worker -A quickstart` does this in production
    try:
        print("add.delay(2, 3).get() ->", add.delay(2, 3).get(timeout=10))
        print("fetch ->", fetch.delay("https://example.com").get(timeout=30))
        results = add.delay_many([(i, i) for i in range(1000)])  # one round trip
        print("1000 bulk-queued adds, sum of results ->", sum(r.get(timeout=30) for r in results))
        # Enqueue inside your own transaction: the job exists only if the transaction commits.
        with app.store.connect(autocommit=False) as conn, conn.transaction():
            result = add.apply_async((40, 2), connection=conn)
        print("transactional enqueue ->", result.get(timeout=10))
    finally:
        worker.stop()
        thread.join(10)
        app.close()


if __name__ == "__main__":
    main()
