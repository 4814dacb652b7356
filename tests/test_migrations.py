"""The migrations build exactly schema.sql, and concurrent migrators are safe."""

from __future__ import annotations

import threading

import psycopg

from pgtasks.db.migrate import migrate, pending
from pgtasks.db.queries import script

CATALOG = """
SELECT 'column', c.table_name || '.' || c.column_name || ' ' || c.data_type || ' ' ||
       c.is_nullable || ' ' || coalesce(c.column_default, '') || ' ' || c.is_identity
FROM information_schema.columns c WHERE c.table_schema = 'pgtasks' AND c.table_name <> 'migrations'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes
WHERE schemaname = 'pgtasks' AND tablename <> 'migrations'
UNION ALL
SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = 'pgtasks'::regnamespace AND conrelid <> 'pgtasks.migrations'::regclass
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_arguments(p.oid) || ') ' ||
       md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace = 'pgtasks'::regnamespace
UNION ALL
SELECT 'trigger', tgrelid::regclass || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'pgtasks.%'
ORDER BY 1, 2
"""


def catalog(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return [(kind, text) for kind, text in conn.execute(CATALOG)]


def test_the_migrations_build_exactly_schema_sql(empty_dsn: str, dsn: str):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(script("schema.sql").encode())
        conn.execute("CREATE TABLE pgtasks.migrations (version int PRIMARY KEY, name text "
                     "NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    from_schema = catalog(empty_dsn)
    from_migrations = catalog(dsn)
    assert from_schema == from_migrations
    assert len(from_schema) > 20


def test_migrating_twice_applies_nothing_the_second_time(empty_dsn: str):
    first = migrate(empty_dsn)
    assert first and first[0].startswith("0001")
    assert migrate(empty_dsn) == []
    with psycopg.connect(empty_dsn) as conn:
        assert pending(conn) == []


def test_concurrent_migrators_are_safe(empty_dsn: str):
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            applied.append(migrate(empty_dsn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(a) for a in applied) == len(max(applied, key=len))
    with psycopg.connect(empty_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM pgtasks.migrations")]
    assert len(versions) == len(set(versions))
