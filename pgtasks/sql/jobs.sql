-- name: enqueue
-- Insert one job and wake the workers of its queue, in one statement (one round trip, one commit).
-- Returns no row when a job with the same deduplication key is already queued or running.
WITH ins AS (
    INSERT INTO pgtasks.jobs (task_id, task_name, queue, priority, run_at, expires_at,
                              content_type, payload, headers, parent_id, root_id,
                              dedup_key, partition_key)
    VALUES (%(task_id)s, %(task_name)s, %(queue)s, %(priority)s, coalesce(%(run_at)s, now()),
            %(expires_at)s, %(content_type)s, %(payload)s, %(headers)s, %(parent_id)s,
            %(root_id)s, %(dedup_key)s, %(partition_key)s)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id, queue, run_at
), woken AS (
    SELECT pg_notify('pgtasks_jobs', queue) FROM ins WHERE run_at <= now()
)
SELECT id, (SELECT count(*) FROM woken) AS woken FROM ins;

-- name: enqueue_many
-- Insert many jobs from parallel arrays in one statement, with one notification per queue.
-- The arrays travel in binary format: no per-element quoting and escaping on either side.
WITH ins AS (
    INSERT INTO pgtasks.jobs (task_id, task_name, queue, priority, run_at, expires_at,
                              content_type, payload, headers, parent_id, root_id,
                              dedup_key, partition_key)
    SELECT t.task_id, t.task_name, t.queue, t.priority, coalesce(t.run_at, now()), t.expires_at,
           t.content_type, t.payload, t.headers, t.parent_id, t.root_id, t.dedup_key,
           t.partition_key
    FROM unnest(%(task_ids)b::text[], %(task_names)b::text[], %(queues)b::text[],
                %(priorities)b::smallint[], %(run_ats)b::timestamptz[],
                %(expires_ats)b::timestamptz[], %(content_types)b::text[],
                %(payloads)b::bytea[], %(headers)b::jsonb[], %(parent_ids)b::text[],
                %(root_ids)b::text[], %(dedup_keys)b::text[], %(partition_keys)b::text[])
         AS t(task_id, task_name, queue, priority, run_at, expires_at, content_type, payload,
              headers, parent_id, root_id, dedup_key, partition_key)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING task_id, queue, run_at
), woken AS (
    SELECT pg_notify('pgtasks_jobs', queue) FROM ins WHERE run_at <= now() GROUP BY queue
)
SELECT task_id, (SELECT count(*) FROM woken) AS woken FROM ins;

-- name: job_by_dedup_key
-- The task id of the queued or running job holding a deduplication key.
SELECT task_id FROM pgtasks.jobs WHERE dedup_key = %(dedup_key)s;

-- name: claim_session
-- Set up a worker's claim connection: a claim's commit need not wait for its WAL flush. A claim
-- lost in a server crash leaves its job queued, as the reaper would anyway; and the completion
-- (a synchronous commit) flushes the WAL up to and including the claim it follows.
SET synchronous_commit = off;

-- name: claim
-- Take up to n ready jobs of the given queues for one worker, queue by queue in the order given,
-- each in its serving order (higher priority first, then oldest). Locked rows are skipped.
WITH picked AS (
    SELECT p.id
    FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(name, ord),
         LATERAL (
             SELECT j.id
             FROM pgtasks.jobs j
             WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= now()
             ORDER BY j.priority DESC, j.run_at, j.id
             LIMIT %(n)s
             FOR UPDATE SKIP LOCKED
         ) p
    ORDER BY q.ord
    LIMIT %(n)s
)
UPDATE pgtasks.jobs j
SET state = 'running', worker_id = %(worker_id)s, started_at = now(),
    deliveries = j.deliveries + 1
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.task_id, j.task_name, j.queue, j.priority, j.run_at, j.expires_at,
          j.content_type, j.payload, j.headers, j.retries, j.deliveries, j.parent_id,
          j.root_id, j.revoked;

-- name: complete
-- Finish a batch of this worker's jobs: move them out of the hot table into results (when their
-- result is kept) and tell result waiters, all in one statement. Jobs that are no longer held by
-- this worker (its lease expired and another worker took them) are left alone.
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)b::bigint[], %(states)b::text[], %(content_types)b::text[],
                %(results)b::bytea[], %(exc_types)b::text[], %(exc_messages)b::text[],
                %(tracebacks)b::text[], %(store)b::boolean[])
         AS o(id, state, content_type, result, exc_type, exc_message, traceback, store)
), done AS (
    DELETE FROM pgtasks.jobs j
    USING outcome o
    WHERE j.id = o.id AND j.worker_id = %(worker_id)s AND j.state = 'running'
    RETURNING j.task_id, j.task_name, j.queue, j.retries, j.parent_id, j.revoked,
              j.headers->>'wake' AS wake, j.headers->>'chord' AS chord_id, o.*
), saved AS (
    INSERT INTO pgtasks.results AS r (task_id, task_name, queue, state, content_type, result,
                                      exc_type, exc_message, traceback, retries, parent_id,
                                      worker)
    SELECT task_id, task_name, queue,
           CASE WHEN revoked THEN 'REVOKED' ELSE state END,
           content_type, result, exc_type, exc_message, traceback, retries, parent_id,
           %(worker_name)s
    FROM done
    WHERE store OR revoked OR state <> 'SUCCESS'
    ON CONFLICT (task_id) DO UPDATE
    SET task_name = excluded.task_name, queue = excluded.queue, state = excluded.state,
        content_type = excluded.content_type, result = excluded.result,
        exc_type = excluded.exc_type, exc_message = excluded.exc_message,
        traceback = excluded.traceback, retries = excluded.retries,
        parent_id = excluded.parent_id, worker = excluded.worker, date_done = now()
    RETURNING task_id
), told AS (
    SELECT pg_notify('pgtasks_results',
                     CASE WHEN length(ids) < 7900 THEN ids ELSE '*' END)
    FROM (SELECT string_agg(task_id, ',') AS ids FROM saved) s
    WHERE ids IS NOT NULL
), after AS (
    SELECT pgtasks.jobs_left(ARRAY(SELECT wake FROM done WHERE wake IS NOT NULL),
                             ARRAY(SELECT chord_id FROM done WHERE chord_id IS NOT NULL))
           AS nudged
)
SELECT d.id, (SELECT count(*) FROM told) + (SELECT nudged FROM after) AS told FROM done d;

-- name: retry
-- Put one of this worker's jobs back in the queue to run again after a delay, counting a retry.
-- A job revoked while it ran is due at once instead: its next delivery records it REVOKED.
UPDATE pgtasks.jobs
SET state = 'queued', worker_id = NULL, started_at = NULL, retries = retries + 1,
    run_at = CASE WHEN revoked THEN now() ELSE now() + make_interval(secs => %(delay)s) END,
    last_error = %(error)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND state = 'running'
RETURNING id;

-- name: defer
-- Put one of this worker's jobs back in the queue until a given time without counting a retry
-- (a durable sleep or a wait that should not hold a worker slot); at once, if what it waits for
-- arrived while it was still running, or if it was revoked meanwhile (its next delivery records
-- it REVOKED).
WITH deferred AS (
    UPDATE pgtasks.jobs
    SET state = 'queued', worker_id = NULL, started_at = NULL, wake_pending = false,
        run_at = CASE WHEN wake_pending OR revoked THEN now()
                      ELSE greatest(now(), %(run_at)s) END
    WHERE id = %(id)s AND worker_id = %(worker_id)s AND state = 'running'
    RETURNING id, queue, run_at <= now() AS ready
)
SELECT id, (SELECT count(*) FROM (SELECT pg_notify('pgtasks_jobs', queue) FROM deferred
                                  WHERE ready) n) AS woken
FROM deferred;

-- name: release
-- Give unfinished jobs back to the queue on shutdown, as if they had never been delivered.
WITH released AS (
    UPDATE pgtasks.jobs
    SET state = 'queued', worker_id = NULL, started_at = NULL,
        deliveries = greatest(deliveries - 1, 0)
    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'
    RETURNING queue
)
SELECT pg_notify('pgtasks_jobs', queue) FROM released GROUP BY queue;

-- name: release_unheld
-- After a claim whose reply was lost: give back the running jobs recorded as this worker's that
-- it does not hold (it never received them), as if they had never been delivered.
WITH released AS (
    UPDATE pgtasks.jobs
    SET state = 'queued', worker_id = NULL, started_at = NULL,
        deliveries = greatest(deliveries - 1, 0)
    WHERE worker_id = %(worker_id)s AND state = 'running' AND NOT (id = ANY(%(keep)s::bigint[]))
    RETURNING queue
), woken AS (
    SELECT pg_notify('pgtasks_jobs', queue) FROM released GROUP BY queue
)
SELECT (SELECT count(*) FROM released) AS released, (SELECT count(*) FROM woken) AS woken;

-- name: job_status
-- What the hot table knows of a task: queued, waiting to retry, or running.
SELECT state, retries, last_error, revoked, task_name, queue FROM pgtasks.jobs
WHERE task_id = %(task_id)s;

-- name: revoke_queued
-- Revoke a job that has not started: remove it and record it as REVOKED. Like a completion, it
-- counts down its chord (firing it when it was the last member) and wakes a waiting workflow.
WITH gone AS (
    DELETE FROM pgtasks.jobs
    WHERE task_id = %(task_id)s AND state = 'queued'
    RETURNING task_id, task_name, queue, retries, parent_id, headers->>'wake' AS wake,
              headers->>'chord' AS chord_id
), saved AS (
    INSERT INTO pgtasks.results AS r (task_id, task_name, queue, state, retries, parent_id,
                                      exc_type, exc_message)
    SELECT task_id, task_name, queue, 'REVOKED', retries, parent_id,
           'pgtasks.errors.TaskRevokedError', %(reason)s
    FROM gone
    ON CONFLICT (task_id) DO UPDATE SET state = 'REVOKED', date_done = now()
    RETURNING task_id
)
SELECT task_id, pg_notify('pgtasks_results', task_id),
       pgtasks.jobs_left(ARRAY(SELECT wake FROM gone WHERE wake IS NOT NULL),
                         ARRAY(SELECT chord_id FROM gone WHERE chord_id IS NOT NULL)) AS nudged
FROM saved;

-- name: waited_for
-- The queued jobs a workflow waits for (its chain links), to revoke when it is cancelled.
SELECT task_id FROM pgtasks.jobs WHERE headers->>'wake' = %(workflow_id)s AND state = 'queued';

-- name: revoke_running
-- Mark a running job revoked: its outcome will be recorded as REVOKED.
UPDATE pgtasks.jobs SET revoked = true WHERE task_id = %(task_id)s RETURNING worker_id;

-- name: purge
-- Delete every queued job of the given queues (all queues when the list is empty).
DELETE FROM pgtasks.jobs
WHERE state = 'queued' AND (cardinality(%(queues)s::text[]) = 0 OR queue = ANY(%(queues)s::text[]));

-- name: queue_counts
-- Jobs per queue by state: ready, scheduled for later, running.
SELECT queue,
       count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS ready,
       count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE state = 'running') AS running
FROM pgtasks.jobs
GROUP BY queue
ORDER BY queue;

-- name: result_counts
-- Finished jobs per queue by outcome.
SELECT queue, state, count(*) AS n FROM pgtasks.results GROUP BY queue, state ORDER BY queue, state;
