-- 0005: a wake-up that reaches a running job before it suspends is kept, not lost.
ALTER TABLE pgtasks.jobs ADD COLUMN wake_pending boolean NOT NULL DEFAULT false;
