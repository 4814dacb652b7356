-- 0002: durable workflows: runs, step checkpoints, events, messages, chord counters.

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
