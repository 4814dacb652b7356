-- The whole current pgtasks schema. The numbered files in migrations/ rebuild exactly this;
-- tests/test_migrations.py proves it. Edit both together.

CREATE SCHEMA IF NOT EXISTS pgtasks;

-- == core: jobs, results, workers ==

-- Queued and running jobs only: finished jobs leave this table (into results), so it stays small
-- and free of dead rows however long the queue has run.
CREATE TABLE pgtasks.jobs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id        text        NOT NULL,
    task_name      text        NOT NULL,
    queue          text        NOT NULL,
    priority       smallint    NOT NULL DEFAULT 0,
    state          text        NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running')),
    run_at         timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    content_type   text        NOT NULL,
    payload        bytea       NOT NULL,
    headers        jsonb,
    retries        integer     NOT NULL DEFAULT 0,
    deliveries     integer     NOT NULL DEFAULT 0,
    worker_id      bigint,
    started_at     timestamptz,
    enqueued_at    timestamptz NOT NULL DEFAULT now(),
    parent_id      text,
    root_id        text,
    dedup_key      text,
    partition_key  text,
    revoked        boolean     NOT NULL DEFAULT false,
    last_error     text,
    -- Set when something a running job waits for arrives before the job has suspended itself:
    -- its suspension (jobs.defer) then requeues it to run at once instead of at its fallback.
    wake_pending   boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX jobs_task_id ON pgtasks.jobs (task_id);
-- The claim reads only this index: ready rows, in the order they are served.
CREATE INDEX jobs_ready ON pgtasks.jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_running ON pgtasks.jobs (worker_id) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_dedup ON pgtasks.jobs (dedup_key) WHERE dedup_key IS NOT NULL;

-- Outcomes of finished jobs, kept for result_expires.
CREATE TABLE pgtasks.results (
    task_id       text        PRIMARY KEY,
    task_name     text        NOT NULL,
    queue         text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('SUCCESS', 'FAILURE', 'REVOKED')),
    content_type  text,
    result        bytea,
    exc_type      text,
    exc_message   text,
    traceback     text,
    retries       integer     NOT NULL DEFAULT 0,
    parent_id     text,
    worker        text,
    date_done     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_date_done ON pgtasks.results (date_done);

-- Live workers and their leases: a worker whose heartbeat is older than its lease is dead,
-- and the jobs it held go back to the queue.
CREATE TABLE pgtasks.workers (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL,
    hostname       text        NOT NULL,
    pid            integer     NOT NULL,
    queues         text[]      NOT NULL,
    concurrency    integer     NOT NULL,
    lease_seconds  real        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    stopping       boolean     NOT NULL DEFAULT false
);

-- == workflows (migration 0002) ==
-- One row per durable workflow run: its inputs, where it stands, and its outcome. The job that
-- runs it has task_id = workflow_id, so a workflow id is also an idempotency key for the job.
CREATE TABLE pgtasks.workflows (
    workflow_id   text        PRIMARY KEY,
    name          text        NOT NULL,
    status        text        NOT NULL DEFAULT 'PENDING'
                  CHECK (status IN ('PENDING', 'RUNNING', 'SUCCESS', 'FAILURE', 'CANCELLED')),
    queue         text        NOT NULL,
    content_type  text        NOT NULL,
    inputs        bytea       NOT NULL,
    output        bytea,
    exc_type      text,
    exc_message   text,
    traceback     text,
    forked_from   text,
    runs          integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_created ON pgtasks.workflows (created_at);
CREATE INDEX workflows_status ON pgtasks.workflows (status, created_at)
    WHERE status IN ('PENDING', 'RUNNING');
-- Finished runs in the order they are pruned (after result_expires, like task results).
CREATE INDEX workflows_finished ON pgtasks.workflows (updated_at)
    WHERE status IN ('SUCCESS', 'FAILURE', 'CANCELLED');

-- The checkpoints of a workflow: one row per finished step (or sleep, message, event, child
-- link), keyed by its position in the workflow's deterministic order of durable calls.
CREATE TABLE pgtasks.steps (
    workflow_id   text        NOT NULL REFERENCES pgtasks.workflows ON DELETE CASCADE,
    position      integer     NOT NULL,
    name          text        NOT NULL,
    content_type  text,
    inputs        bytea,
    output        bytea,
    exc_type      text,
    exc_message   text,
    traceback     text,
    attempts      integer     NOT NULL DEFAULT 1,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, position)
);

-- Key/value events a workflow publishes (app.set_event); readers poll by (workflow, key).
CREATE TABLE pgtasks.workflow_events (
    workflow_id   text        NOT NULL REFERENCES pgtasks.workflows ON DELETE CASCADE,
    key           text        NOT NULL,
    content_type  text        NOT NULL,
    value         bytea,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, key)
);

-- Messages waiting for a workflow (app.send); a recv deletes the one it takes in the same
-- transaction that checkpoints it, so each message is received exactly once.
CREATE TABLE pgtasks.workflow_messages (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   text        NOT NULL,
    topic         text        NOT NULL,
    content_type  text        NOT NULL,
    message       bytea,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_messages_inbox ON pgtasks.workflow_messages (workflow_id, topic, id);

-- Chords waiting for their header: the statement that completes a header member decrements
-- `remaining`, and the one that brings it to zero enqueues the callback's firing job, so the
-- callback is enqueued exactly once however many members finish at the same moment.
CREATE TABLE pgtasks.chords (
    chord_id      text        PRIMARY KEY,
    remaining     integer     NOT NULL,
    members       text[]      NOT NULL,
    queue         text        NOT NULL,
    content_type  text        NOT NULL,
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- (migration 0007)
-- What follows a job leaving the hot table (completed or revoked), shared by jobs.complete and
-- jobs.revoke_queued: a workflow waiting for one of them runs again now (one still running, about
-- to suspend, is flagged instead: jobs.defer honours the flag); chord members count down their
-- chord, and the count that reaches zero enqueues the callback's firing job, once. Returns how
-- many queues were notified. (= ANY of an array keeps the wake-up an index probe per waiter.)
CREATE FUNCTION pgtasks.jobs_left(wakes text[], chord_ids text[]) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH woken AS (
        UPDATE pgtasks.jobs w
        SET run_at = CASE WHEN w.state = 'queued' THEN now() ELSE w.run_at END,
            wake_pending = (w.state = 'running')
        WHERE w.task_id = ANY(wakes)
          AND ((w.state = 'queued' AND w.run_at > now()) OR w.state = 'running')
        RETURNING w.queue, w.state
    ), counted AS (
        -- The chord row's lock serializes completions of its members.
        UPDATE pgtasks.chords c SET remaining = c.remaining - d.n
        FROM (SELECT chord_id, count(*) AS n FROM unnest(chord_ids) AS chord_id
              GROUP BY chord_id) d
        WHERE c.chord_id = d.chord_id
        RETURNING c.chord_id, c.remaining, c.queue, c.content_type, c.payload
    ), fired AS (
        INSERT INTO pgtasks.jobs (task_id, task_name, queue, content_type, payload)
        SELECT 'chord:' || chord_id, 'pgtasks.chord_fire', queue, content_type, payload
        FROM counted WHERE remaining = 0
        ON CONFLICT DO NOTHING
        RETURNING queue
    )
    SELECT count(*)::integer
    FROM (SELECT pg_notify('pgtasks_jobs', queue)
          FROM (SELECT queue FROM woken WHERE state = 'queued'
                UNION SELECT queue FROM fired) q) n
$$;

-- == queues (migration 0003) ==

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

-- == schedules (migration 0004) ==
-- Beat's periodic entries and the last tick each has settled. A tick's job is enqueued in the
-- same transaction that advances last_tick by compare-and-set, so however many schedulers run,
-- each tick is enqueued once. Entries removed from the code are disabled, not deleted, so their
-- history survives a deploy that drops them for a while.
CREATE TABLE pgtasks.schedules (
    name          text        PRIMARY KEY,
    task_name     text        NOT NULL,
    schedule      text        NOT NULL,
    catch_up      text        NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
    anchor        timestamptz NOT NULL,
    last_tick     timestamptz NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    paused        boolean     NOT NULL DEFAULT false,
    last_run_at   timestamptz,
    last_task_id  text,
    total_runs    bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
