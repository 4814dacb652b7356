-- name: lock
-- Serialize migrators: one advisory lock for the whole run (released at commit).
SELECT pg_advisory_xact_lock(hashtext('pgtasks.migrate'));

-- name: create_tracking
-- The tracking table of applied migrations.
CREATE SCHEMA IF NOT EXISTS pgtasks;
CREATE TABLE IF NOT EXISTS pgtasks.migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied
-- Versions already applied.
SELECT version FROM pgtasks.migrations ORDER BY version;

-- name: record
-- Record one applied migration.
INSERT INTO pgtasks.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: installed
-- Whether the tracking table exists (pgtasks was installed in this database).
SELECT to_regclass('pgtasks.migrations') IS NOT NULL AS installed;
