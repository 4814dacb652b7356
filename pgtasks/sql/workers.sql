-- name: register_worker
-- Record a live worker; its id is the owner recorded on the jobs it claims.
INSERT INTO pgtasks.workers (name, hostname, pid, queues, concurrency, lease_seconds)
VALUES (%(name)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(lease_seconds)s)
RETURNING id;

-- name: heartbeat
-- Extend a worker's lease. No row back means the worker was declared dead and its jobs requeued.
UPDATE pgtasks.workers SET heartbeat_at = now(), stopping = %(stopping)s WHERE id = %(id)s
RETURNING id;

-- name: unregister_worker
-- Remove a worker that stops cleanly, giving back anything it still holds.
WITH gone AS (
    DELETE FROM pgtasks.workers WHERE id = %(id)s RETURNING id
), released AS (
    UPDATE pgtasks.jobs SET state = 'queued', worker_id = NULL, started_at = NULL
    WHERE worker_id = %(id)s AND state = 'running'
    RETURNING queue
)
SELECT pg_notify('pgtasks_jobs', queue) FROM released GROUP BY queue;

-- name: reap
-- Declare workers whose lease expired dead and requeue every running job held by a worker that is
-- no longer alive. Safe to run from every worker at once.
WITH dead AS (
    DELETE FROM pgtasks.workers
    WHERE heartbeat_at + make_interval(secs => lease_seconds) < now()
    RETURNING id
), requeued AS (
    UPDATE pgtasks.jobs j
    SET state = 'queued', worker_id = NULL, started_at = NULL
    WHERE j.state = 'running'
      AND (j.worker_id IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM pgtasks.workers w WHERE w.id = j.worker_id))
    RETURNING j.queue
), woken AS (
    SELECT pg_notify('pgtasks_jobs', queue) FROM requeued GROUP BY queue
)
SELECT (SELECT count(*) FROM dead) AS dead_workers, (SELECT count(*) FROM requeued) AS requeued,
       (SELECT count(*) FROM woken) AS woken;

-- name: list_workers
-- Live workers with the age of their last heartbeat.
SELECT id, name, hostname, pid, queues, concurrency, started_at,
       extract(epoch FROM now() - heartbeat_at) AS heartbeat_age, lease_seconds, stopping,
       (SELECT count(*) FROM pgtasks.jobs j WHERE j.worker_id = w.id AND j.state = 'running')
           AS running
FROM pgtasks.workers w ORDER BY id;

-- name: listen_jobs
-- Subscribe to "jobs are ready in queue X" notifications.
LISTEN pgtasks_jobs;
