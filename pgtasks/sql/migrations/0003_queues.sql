-- 0003: queue limits: rate buckets, the limited claim (concurrency slots), task rates.

-- Token buckets of the global rate limits, one row per rate-limited queue ('queue:<name>') or
-- task ('task:<name>'). A row is written once per granted batch, under that queue's or task's
-- advisory lock; tokens refill lazily from updated_at.
CREATE TABLE pgtasks.rate_buckets (
    key         text             PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz      NOT NULL
);

-- Claim up to p_n ready jobs of one limited queue for one worker, within its limits.
--
-- Concurrency: the slots of a queue of concurrency N are the session advisory locks
-- (hashtext('pgtasks.slots:' || queue), 1..N), held by the worker's claim connection for as long
-- as a job of the queue runs there: this call first unlocks p_release (the slots of the worker's
-- finished jobs), then locks free slots other than p_mine (those it holds), one per job claimed.
-- Nothing is written: no hot row, no bloat, no claim ever waits for another, and the slots of a
-- worker that dies return the moment its connection closes.
--
-- A rate limit, or a concurrency per partition (p_partitioned), is checked under the queue's
-- transaction advisory lock: claimers take turns, and each statement reads a fresh snapshot
-- taken after the lock, so it sees every earlier claim. A partition's running jobs are counted;
-- this worker's that are not in p_held have finished and only await their completion write.
--
-- Each job comes with its slot (NULL without one). A row with a NULL id carries retry_in instead:
-- seconds until the next rate token when the rate stopped the claim, or 0 when the queue is full
-- while ready jobs may wait (nothing announces a slot freed elsewhere: poll again soon).
CREATE FUNCTION pgtasks.claim_limited(
    p_queue text, p_worker_id bigint, p_n integer, p_concurrency integer,
    p_rate double precision, p_partitioned boolean, p_held bigint[], p_mine integer[],
    p_release integer[])
RETURNS TABLE (id bigint, task_id text, task_name text, queue text, priority smallint,
               run_at timestamptz, expires_at timestamptz, content_type text, payload bytea,
               headers jsonb, retries integer, deliveries integer, parent_id text,
               root_id text, revoked boolean, slot integer, retry_in double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_slot_key integer := hashtext('pgtasks.slots:' || p_queue);
    v_room integer := p_n;
    v_now timestamptz;
    v_tokens double precision;
    v_slots integer[];
    v_taken integer := 0;
    v_full boolean := false;
BEGIN
    PERFORM pg_advisory_unlock(v_slot_key, s) FROM unnest(p_release) AS s;
    IF p_concurrency IS NOT NULL AND NOT p_partitioned AND v_room > 0 THEN
        v_slots := ARRAY(
            SELECT k FROM generate_series(1, p_concurrency) AS k
            WHERE CASE WHEN k = ANY(p_mine) THEN false
                       ELSE pg_try_advisory_lock(v_slot_key, k) END
            LIMIT v_room);
        v_full := cardinality(v_slots) < v_room;
        v_room := cardinality(v_slots);
    END IF;
    IF p_rate IS NOT NULL OR p_partitioned THEN
        PERFORM pg_advisory_xact_lock(hashtext('pgtasks.queue'), hashtext(p_queue));
    END IF;
    v_now := clock_timestamp();
    IF p_rate IS NOT NULL AND v_room > 0 THEN
        INSERT INTO pgtasks.rate_buckets AS b (key, tokens, updated_at)
        VALUES ('queue:' || p_queue, 1, v_now)
        ON CONFLICT (key) DO NOTHING;
        SELECT least(1.0, b.tokens + extract(epoch FROM v_now - b.updated_at) * p_rate)
        INTO v_tokens FROM pgtasks.rate_buckets b WHERE b.key = 'queue:' || p_queue;
        v_room := least(v_room, floor(v_tokens)::integer);
    END IF;
    IF v_room > 0 AND NOT p_partitioned THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM pgtasks.jobs j
            WHERE j.state = 'queued' AND j.queue = p_queue AND j.run_at <= v_now
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT v_room
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE pgtasks.jobs j
            SET state = 'running', worker_id = p_worker_id, started_at = v_now,
                deliveries = j.deliveries + 1
            FROM picked
            WHERE j.id = picked.id
            RETURNING j.*
        )
        SELECT c.id, c.task_id, c.task_name, c.queue, c.priority, c.run_at, c.expires_at,
               c.content_type, c.payload, c.headers, c.retries, c.deliveries, c.parent_id,
               c.root_id, c.revoked,
               v_slots[row_number() OVER (ORDER BY c.priority DESC, c.run_at, c.id)]::integer,
               NULL::double precision
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;  -- the pool starts them in this order
        GET DIAGNOSTICS v_taken = ROW_COUNT;
        v_full := v_full AND v_taken = v_room;
    ELSIF v_room > 0 THEN
        -- Per partition: look at the first ready jobs of partitions that have room, and take
        -- from each partition only as many as its room allows.
        RETURN QUERY
        WITH busy AS (
            SELECT coalesce(j.partition_key, '') AS pk, count(*) AS n
            FROM pgtasks.jobs j
            WHERE j.state = 'running' AND j.queue = p_queue
              AND (j.worker_id IS DISTINCT FROM p_worker_id OR j.id = ANY(p_held))
            GROUP BY 1
        ), candidates AS (
            SELECT j.id, coalesce(j.partition_key, '') AS pk, j.priority, j.run_at
            FROM pgtasks.jobs j
            WHERE j.state = 'queued' AND j.queue = p_queue AND j.run_at <= v_now
              AND coalesce((SELECT b.n FROM busy b
                            WHERE b.pk = coalesce(j.partition_key, '')), 0) < p_concurrency
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT greatest(v_room * 10, 1000)
        ), ranked AS (
            SELECT c.id, c.priority, c.run_at,
                   row_number() OVER (PARTITION BY c.pk ORDER BY c.priority DESC, c.run_at, c.id)
                   + coalesce((SELECT b.n FROM busy b WHERE b.pk = c.pk), 0) AS place
            FROM candidates c
        ), picked AS (
            SELECT r.id FROM ranked r
            WHERE r.place <= p_concurrency
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT v_room
        ), claimed AS (
            UPDATE pgtasks.jobs j
            SET state = 'running', worker_id = p_worker_id, started_at = v_now,
                deliveries = j.deliveries + 1
            FROM picked
            WHERE j.id = picked.id AND j.state = 'queued'
            RETURNING j.*
        )
        SELECT c.id, c.task_id, c.task_name, c.queue, c.priority, c.run_at, c.expires_at,
               c.content_type, c.payload, c.headers, c.retries, c.deliveries, c.parent_id,
               c.root_id, c.revoked, NULL::integer, NULL::double precision
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
        v_full := v_taken < v_room;
    END IF;
    PERFORM pg_advisory_unlock(v_slot_key, s) FROM unnest(v_slots[v_taken + 1:]) AS s;
    IF p_rate IS NOT NULL AND v_tokens IS NOT NULL THEN
        IF v_taken > 0 THEN
            UPDATE pgtasks.rate_buckets b SET tokens = v_tokens - v_taken, updated_at = v_now
            WHERE b.key = 'queue:' || p_queue;
        END IF;
        IF v_taken >= floor(v_tokens) AND v_taken < p_n THEN
            RETURN QUERY SELECT NULL::bigint, NULL, NULL, NULL, NULL::smallint, NULL::timestamptz,
                NULL::timestamptz, NULL, NULL::bytea, NULL::jsonb, NULL::integer, NULL::integer,
                NULL, NULL, NULL::boolean, NULL::integer, (1.0 - (v_tokens - v_taken)) / p_rate;
        END IF;
    END IF;
    IF v_full AND EXISTS (
        SELECT 1 FROM pgtasks.jobs j
        WHERE j.state = 'queued' AND j.queue = p_queue AND j.run_at <= v_now) THEN
        RETURN QUERY SELECT NULL::bigint, NULL, NULL, NULL, NULL::smallint, NULL::timestamptz,
            NULL::timestamptz, NULL, NULL::bytea, NULL::jsonb, NULL::integer, NULL::integer,
            NULL, NULL, NULL::boolean, NULL::integer, 0.0::double precision;
    END IF;
END
$$;

-- Admit claimed jobs of a rate-limited task: grant the first ones the task's tokens and put the
-- others back in their queue (as if never delivered), each timed for a coming token.
-- Returns the granted ids and, when some were refused, the seconds until the next token.
CREATE FUNCTION pgtasks.take_task_tokens(
    p_task text, p_worker_id bigint, p_ids bigint[], p_rate double precision)
RETURNS TABLE (granted bigint[], retry_in double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_tokens double precision;
    v_take integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtasks.task'), hashtext(p_task));
    v_now := clock_timestamp();
    INSERT INTO pgtasks.rate_buckets (key, tokens, updated_at)
    VALUES ('task:' || p_task, 1, v_now)
    ON CONFLICT (key) DO NOTHING;
    SELECT least(1.0, b.tokens + extract(epoch FROM v_now - b.updated_at) * p_rate)
    INTO v_tokens FROM pgtasks.rate_buckets b WHERE b.key = 'task:' || p_task;
    v_take := least(cardinality(p_ids), floor(v_tokens)::integer);
    IF v_take > 0 THEN
        UPDATE pgtasks.rate_buckets b SET tokens = v_tokens - v_take, updated_at = v_now
        WHERE b.key = 'task:' || p_task;
        UPDATE pgtasks.jobs j SET started_at = v_now
        WHERE j.id = ANY(p_ids[1:v_take]) AND j.worker_id = p_worker_id;
    END IF;
    IF v_take < cardinality(p_ids) THEN
        UPDATE pgtasks.jobs j
        SET state = 'queued', worker_id = NULL, started_at = NULL,
            deliveries = greatest(j.deliveries - 1, 0),
            run_at = v_now + make_interval(
                secs => ((1.0 - (v_tokens - v_take)) + (r.ord - 1)) / p_rate)
        FROM unnest(p_ids[v_take + 1:]) WITH ORDINALITY AS r(id, ord)
        WHERE j.id = r.id AND j.worker_id = p_worker_id AND j.state = 'running';
        RETURN QUERY SELECT p_ids[1:v_take], (1.0 - (v_tokens - v_take)) / p_rate;
    ELSE
        RETURN QUERY SELECT p_ids[1:v_take], NULL::double precision;
    END IF;
END
$$;
