-- name: claim_limited
-- Claim up to n ready jobs of one limited queue within its limits, each with its concurrency
-- slot (pgtasks.claim_limited). A row with a NULL id only carries retry_in (see the function).
SELECT c.id, c.task_id, c.task_name, c.queue, c.priority, c.run_at, c.expires_at,
       c.content_type, c.payload, c.headers, c.retries, c.deliveries, c.parent_id, c.root_id,
       c.revoked, c.slot, c.retry_in
FROM pgtasks.claim_limited(%(queue)s, %(worker_id)s, %(n)s, %(concurrency)s, %(rate)s,
                           %(partitioned)s, %(held)s::bigint[], %(mine)s::integer[],
                           %(release)s::integer[]) c;

-- name: release_slots
-- Give back concurrency slots held by this connection (jobs that finished or went back).
SELECT count(pg_advisory_unlock(hashtext('pgtasks.slots:' || %(queue)s), s))
FROM unnest(%(slots)s::integer[]) AS s;

-- name: take_task_tokens
-- Grant claimed jobs of a rate-limited task its tokens; put the rest back for later tokens.
SELECT granted, retry_in
FROM pgtasks.take_task_tokens(%(task_name)s, %(worker_id)s, %(ids)s::bigint[], %(rate)s);

-- name: lock_queues
-- Take the claim locks of several limited queues at once, in the order given (sorted by name),
-- so that workers serving the same queues in different orders never deadlock.
SELECT pg_advisory_xact_lock(hashtext('pgtasks.queue'), hashtext(q))
FROM unnest(%(queues)s::text[]) AS q;
