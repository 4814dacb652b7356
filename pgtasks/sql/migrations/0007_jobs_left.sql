-- 0007: the side effects of a job leaving the hot table, in one function that both the
-- completing statement and the revoke use.
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
