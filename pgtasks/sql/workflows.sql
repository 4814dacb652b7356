-- name: insert_workflow
-- Create a workflow run unless its id is taken; no row back means the id already exists.
INSERT INTO pgtasks.workflows (workflow_id, name, status, queue, content_type, inputs,
                               forked_from)
VALUES (%(workflow_id)s, %(name)s, %(status)s, %(queue)s, %(content_type)s, %(inputs)s,
        %(forked_from)s)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id;

-- name: insert_running_job
-- The job of a workflow run inline by its caller: already running, owned by the caller's lease,
-- so that the reaper hands it to a worker if the caller dies.
INSERT INTO pgtasks.jobs (task_id, task_name, queue, priority, content_type, payload, state,
                          worker_id, started_at, deliveries, parent_id, root_id)
VALUES (%(task_id)s, %(task_name)s, %(queue)s, %(priority)s, %(content_type)s, %(payload)s,
        'running', %(worker_id)s, now(), 1, %(parent_id)s, %(root_id)s)
RETURNING id;

-- name: get_workflow
-- One workflow run.
SELECT workflow_id, name, status, queue, content_type, inputs, output, exc_type, exc_message,
       traceback, forked_from, runs, created_at, updated_at
FROM pgtasks.workflows WHERE workflow_id = %(workflow_id)s;

-- name: begin_run
-- Mark a workflow running (once more); no row back means it already finished or was cancelled.
UPDATE pgtasks.workflows SET status = 'RUNNING', runs = runs + 1, updated_at = now()
WHERE workflow_id = %(workflow_id)s AND status IN ('PENDING', 'RUNNING')
RETURNING runs;

-- name: load_steps
-- Every checkpoint of a workflow, in order: what a replay returns instead of running again.
SELECT position, name, content_type, output, exc_type, exc_message, traceback, finished_at
FROM pgtasks.steps WHERE workflow_id = %(workflow_id)s ORDER BY position;

-- name: load_step
-- One checkpoint (after losing a race to record it).
SELECT position, name, content_type, output, exc_type, exc_message, traceback, finished_at
FROM pgtasks.steps WHERE workflow_id = %(workflow_id)s AND position = %(position)s;

-- name: record_step
-- Checkpoint one step and report the workflow's status (a cancelled workflow stops at its next
-- checkpoint). inserted = 0 means another run of the same workflow recorded this position first.
WITH ins AS (
    INSERT INTO pgtasks.steps (workflow_id, position, name, content_type, inputs, output,
                               exc_type, exc_message, traceback, attempts, started_at)
    VALUES (%(workflow_id)s, %(position)s, %(name)s, %(content_type)s, %(inputs)s, %(output)s,
            %(exc_type)s, %(exc_message)s, %(traceback)s, %(attempts)s,
            coalesce(%(started_at)s, now()))
    ON CONFLICT (workflow_id, position) DO NOTHING
    RETURNING position
)
SELECT (SELECT count(*) FROM ins) AS inserted, status
FROM pgtasks.workflows WHERE workflow_id = %(workflow_id)s;

-- name: finish_workflow
-- Record a workflow's outcome (a cancellation that came first is kept).
UPDATE pgtasks.workflows
SET status = %(status)s, output = %(output)s, exc_type = %(exc_type)s,
    exc_message = %(exc_message)s, traceback = %(traceback)s, updated_at = now()
WHERE workflow_id = %(workflow_id)s AND status <> 'CANCELLED';

-- name: results_of
-- The stored outcomes of some tasks (chain links, group and chord members).
SELECT task_id, state, content_type, result, exc_type, exc_message, traceback
FROM pgtasks.results WHERE task_id = ANY(%(task_ids)s::text[]);

-- name: fail_results
-- Record tasks that will never run (the links after a failed one) as failed with that error.
INSERT INTO pgtasks.results (task_id, task_name, queue, state, exc_type, exc_message, traceback,
                             parent_id)
SELECT t.task_id, t.task_name, %(queue)s, 'FAILURE', %(exc_type)s, %(exc_message)s,
       %(traceback)s, %(parent_id)s
FROM unnest(%(task_ids)s::text[], %(task_names)s::text[]) AS t(task_id, task_name)
ON CONFLICT (task_id) DO NOTHING
RETURNING pg_notify('pgtasks_results', task_id);

-- name: insert_chord
-- Register a chord before its header is enqueued (same transaction).
INSERT INTO pgtasks.chords (chord_id, remaining, members, queue, content_type, payload)
VALUES (%(chord_id)s, %(remaining)s, %(members)s, %(queue)s, %(content_type)s, %(payload)s);

-- name: take_chord
-- Claim a fired chord for its callback: the row goes with the transaction that enqueues it.
DELETE FROM pgtasks.chords WHERE chord_id = %(chord_id)s AND remaining <= 0 RETURNING chord_id;

-- name: set_event
-- Publish (or overwrite) a workflow's event.
INSERT INTO pgtasks.workflow_events (workflow_id, key, content_type, value)
VALUES (%(workflow_id)s, %(key)s, %(content_type)s, %(value)s)
ON CONFLICT (workflow_id, key) DO UPDATE
SET content_type = excluded.content_type, value = excluded.value, updated_at = now();

-- name: get_event
-- A workflow's event, if published.
SELECT content_type, value FROM pgtasks.workflow_events
WHERE workflow_id = %(workflow_id)s AND key = %(key)s;

-- name: send_message
-- Leave a message for a workflow and wake it if it is suspended waiting (for it or anything).
WITH sent AS (
    INSERT INTO pgtasks.workflow_messages (workflow_id, topic, content_type, message)
    VALUES (%(workflow_id)s, %(topic)s, %(content_type)s, %(message)s)
    RETURNING id
), woken AS (
    -- A running workflow (about to suspend in recv) is flagged so its suspension sees this.
    UPDATE pgtasks.jobs
    SET run_at = CASE WHEN state = 'queued' THEN now() ELSE run_at END,
        wake_pending = (state = 'running')
    WHERE task_id = %(workflow_id)s
      AND ((state = 'queued' AND run_at > now()) OR state = 'running')
    RETURNING queue, state
)
SELECT (SELECT id FROM sent), (SELECT count(*) FROM (SELECT pg_notify('pgtasks_jobs', queue)
                                                    FROM woken WHERE state = 'queued') n);

-- name: take_message
-- Take the oldest message of a topic (the caller checkpoints it in the same transaction).
DELETE FROM pgtasks.workflow_messages
WHERE id = (SELECT id FROM pgtasks.workflow_messages
            WHERE workflow_id = %(workflow_id)s AND topic = %(topic)s
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING content_type, message;

-- name: list_workflows
-- Workflow runs, newest first, filtered by status and name (null: any).
SELECT workflow_id, name, status, queue, forked_from, runs, exc_type, exc_message, created_at,
       updated_at,
       (SELECT count(*) FROM pgtasks.steps s WHERE s.workflow_id = w.workflow_id) AS steps
FROM pgtasks.workflows w
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
ORDER BY created_at DESC, workflow_id
LIMIT %(limit)s;

-- name: list_steps
-- A workflow's checkpoints with their inputs, outputs, errors, attempts and timing.
SELECT position, name, content_type, inputs, output, exc_type, exc_message, traceback, attempts,
       started_at, finished_at
FROM pgtasks.steps WHERE workflow_id = %(workflow_id)s ORDER BY position;

-- name: cancel_workflow
-- Cancel a workflow that has not finished; it stops at its next checkpoint.
UPDATE pgtasks.workflows SET status = 'CANCELLED', updated_at = now()
WHERE workflow_id = %(workflow_id)s AND status IN ('PENDING', 'RUNNING')
RETURNING workflow_id;

-- name: reopen_workflow
-- Make a cancelled or failed workflow runnable again: forget its failed checkpoints and its old
-- outcome, so that it resumes after its last successful step.
WITH reopened AS (
    UPDATE pgtasks.workflows
    SET status = 'PENDING', output = NULL, exc_type = NULL, exc_message = NULL,
        traceback = NULL, updated_at = now()
    WHERE workflow_id = %(workflow_id)s AND status IN ('CANCELLED', 'FAILURE')
    RETURNING workflow_id, name, queue, content_type, inputs
), failed_steps AS (
    DELETE FROM pgtasks.steps s USING reopened r
    WHERE s.workflow_id = r.workflow_id AND s.exc_type IS NOT NULL
), old_result AS (
    DELETE FROM pgtasks.results res USING reopened r WHERE res.task_id = r.workflow_id
)
SELECT workflow_id, name, queue, content_type, inputs FROM reopened;

-- name: copy_steps
-- Fork: copy a workflow's successful checkpoints before a position to a new workflow.
INSERT INTO pgtasks.steps (workflow_id, position, name, content_type, inputs, output, exc_type,
                           exc_message, traceback, attempts, started_at, finished_at)
SELECT %(new_id)s, position, name, content_type, inputs, output, exc_type, exc_message,
       traceback, attempts, started_at, finished_at
FROM pgtasks.steps
WHERE workflow_id = %(workflow_id)s AND position < %(before)s;
