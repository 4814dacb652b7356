-- name: sync_schedules
-- Register beat's entries (parallel arrays, sorted by name so concurrent schedulers lock rows in
-- the same order). A new entry, one whose schedule changed, or one coming back after it was
-- removed starts from now: only ticks after it are due. Otherwise its last tick is kept.
INSERT INTO pgtasks.schedules AS s (name, task_name, schedule, catch_up, anchor, last_tick)
SELECT e.name, e.task_name, e.schedule, e.catch_up, %(now)s, %(now)s
FROM unnest(%(names)s::text[], %(task_names)s::text[], %(schedules)s::text[],
            %(catch_ups)s::text[]) AS e(name, task_name, schedule, catch_up)
ORDER BY e.name
ON CONFLICT (name) DO UPDATE
SET task_name = excluded.task_name,
    catch_up = excluded.catch_up,
    schedule = excluded.schedule,
    enabled = true,
    anchor = CASE WHEN s.schedule = excluded.schedule THEN s.anchor ELSE excluded.anchor END,
    last_tick = CASE WHEN s.schedule = excluded.schedule AND s.enabled THEN s.last_tick
                     ELSE greatest(s.last_tick, excluded.last_tick) END;

-- name: disable_missing_schedules
-- Disable the entries no longer in the code, keeping their rows and history.
UPDATE pgtasks.schedules SET enabled = false
WHERE enabled AND NOT (name = ANY(%(names)s::text[]))
RETURNING name;

-- name: list_schedules
-- Every schedule with its state, by name.
SELECT name, task_name, schedule, catch_up, anchor, last_tick, enabled, paused, last_run_at,
       last_task_id, total_runs
FROM pgtasks.schedules
ORDER BY name;

-- name: advance_schedule
-- Compare-and-set an entry's last tick: no row back means another scheduler settled these ticks
-- first (or the entry was paused, disabled or redefined meanwhile), and nothing must be enqueued.
UPDATE pgtasks.schedules
SET last_tick = %(new_tick)s,
    last_run_at = CASE WHEN %(runs)s::int > 0 THEN %(now)s ELSE last_run_at END,
    last_task_id = coalesce(%(task_id)s, last_task_id),
    total_runs = total_runs + %(runs)s::int
WHERE name = %(name)s AND last_tick = %(expected_tick)s AND schedule = %(schedule)s
  AND enabled AND NOT paused
RETURNING name;

-- name: record_schedule_run
-- Record an extra run (run-now) without touching the entry's ticks.
UPDATE pgtasks.schedules
SET last_run_at = %(now)s, last_task_id = %(task_id)s, total_runs = total_runs + 1
WHERE name = %(name)s
RETURNING name;

-- name: pause_schedule
-- Stop enqueuing an entry's ticks until it is resumed.
UPDATE pgtasks.schedules SET paused = true WHERE name = %(name)s RETURNING name;

-- name: resume_schedule
-- Resume an entry from now: ticks that passed while it was paused are skipped, not caught up.
UPDATE pgtasks.schedules
SET paused = false, last_tick = CASE WHEN paused THEN greatest(last_tick, %(now)s) ELSE last_tick END
WHERE name = %(name)s
RETURNING name;
