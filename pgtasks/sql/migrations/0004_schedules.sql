-- 0004: beat schedules and their last settled tick.

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
