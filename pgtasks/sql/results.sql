-- name: get_result
-- The stored outcome of a task.
SELECT state, content_type, result, exc_type, exc_message, traceback, retries, parent_id,
       task_name, date_done
FROM pgtasks.results WHERE task_id = %(task_id)s;

-- name: forget_result
-- Delete a task's stored outcome.
DELETE FROM pgtasks.results WHERE task_id = %(task_id)s;

-- name: prune_results
-- Delete up to a bounded number of outcomes older than the cutoff (called repeatedly).
DELETE FROM pgtasks.results
WHERE task_id IN (SELECT task_id FROM pgtasks.results
                  WHERE date_done < now() - make_interval(secs => %(max_age)s)
                  ORDER BY date_done LIMIT %(limit)s);

-- name: listen_results
-- Subscribe to "these tasks finished" notifications.
LISTEN pgtasks_results;

-- name: prune_workflows
-- Delete up to a bounded number of finished workflow runs older than the cutoff, with their
-- steps and events (ON DELETE CASCADE), and messages nobody took before the cutoff.
WITH runs AS (
    DELETE FROM pgtasks.workflows
    WHERE workflow_id IN (SELECT workflow_id FROM pgtasks.workflows
                          WHERE status IN ('SUCCESS', 'FAILURE', 'CANCELLED')
                            AND updated_at < now() - make_interval(secs => %(max_age)s)
                          ORDER BY updated_at LIMIT %(limit)s)
    RETURNING 1
), messages AS (
    DELETE FROM pgtasks.workflow_messages
    WHERE id IN (SELECT id FROM pgtasks.workflow_messages
                 WHERE created_at < now() - make_interval(secs => %(max_age)s)
                 LIMIT %(limit)s)
    RETURNING 1
)
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM messages) AS messages;
