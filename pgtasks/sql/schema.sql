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
    last_error     text
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

-- == queues (migration 0003) ==

-- == schedules (migration 0004) ==
