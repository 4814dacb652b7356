"""``python -m benchmarks``: run the scenarios, show progress, print a markdown table.

    python -m benchmarks                      # every scenario, full sizes
    python -m benchmarks --smoke              # ~200 jobs per scenario, a few seconds (CI)
    python -m benchmarks --only drain,latency --n 50000
    python -m benchmarks --list

The DSN is ``--dsn``, else ``$PGTASKS_BENCH_DSN``, else the shared harness's Postgres
(``postgresql://postgres@127.0.0.1:55432/pgtasks_bench``, created and migrated if missing).
Every scenario starts from empty pgtasks tables; the database is otherwise left as it is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks import scenarios
from benchmarks.harness import SCENARIOS, Bench, Row, Sizes, WorkerSetup
from pgtasks.db.migrate import migrate

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:55432/pgtasks_bench"
DSN_ENV = "PGTASKS_BENCH_DSN"


def load_scenarios() -> None:
    """Import every module of ``benchmarks.scenarios``: each registers its scenario."""
    for module in pkgutil.iter_modules(scenarios.__path__):
        importlib.import_module(f"{scenarios.__name__}.{module.name}")


class Progress:
    """One status line on stderr: rewritten in place on a terminal, else every few seconds."""

    def __init__(self, stream: Any = sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.prefix = ""
        self._last = 0.0

    def scenario(self, index: int, total: int, name: str) -> None:
        self.prefix = f"[{index}/{total} {name}]"
        self.line("starting", force=True)

    def line(self, text: str, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last > 0.1:
                self.stream.write(f"\r\033[K{self.prefix} {text}")
                self.stream.flush()
                self._last = now
        elif force or now - self._last > 5.0:
            self.stream.write(f"{self.prefix} {text}\n")
            self.stream.flush()
            self._last = now

    def done(self, text: str) -> None:
        if self.quiet:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + f"{self.prefix} {text}\n")
        self.stream.flush()


def ensure_database(dsn: str, fresh_schema: bool = False) -> None:
    """Create the benchmark database if it is missing (or, with ``fresh_schema``, drop its
    pgtasks schema), then migrate it."""
    name = str(conninfo_to_dict(dsn).get("dbname") or "")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        if not name:
            raise
        admin = make_conninfo(dsn, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if fresh_schema:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS pgtasks CASCADE")
    migrate(dsn)


def server_settings(dsn: str) -> dict[str, str]:
    names = ["server_version", "fsync", "synchronous_commit", "full_page_writes",
             "wal_sync_method", "shared_buffers", "max_connections", "commit_delay"]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings "
                            "WHERE name = ANY(%s) ORDER BY name", (names,)).fetchall()
    return dict(rows)


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "pgtasks": version("pgtasks"), "psycopg": version("psycopg"),
            "kombu": version("kombu")}


def table(rows: list[Row]) -> str:
    lines = ["| scenario | metric | pgtasks | target | notes |", "|---|---|---:|---|---|"]
    for r in rows:
        if isinstance(r.value, float | int):
            value = f"{r.value:,.0f}" if r.value >= 100 else f"{r.value:,.2f}"
            value += f" {r.unit}" if r.unit else ""
        else:
            value = str(r.value) if r.value is not None else "-"
        lines.append(f"| {r.scenario} | {r.metric} | {value} | {r.target} | {r.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN),
                   help=f"Postgres DSN (env {DSN_ENV}; default {DEFAULT_DSN})")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (~200 jobs per scenario): checks the suite still works")
    p.add_argument("--only", default="", help="comma-separated scenarios to run")
    p.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--fresh-schema", action="store_true",
                   help="drop and rebuild the pgtasks schema first (after editing a migration)")
    defaults = Sizes()
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                       help=f"default {value:,}" if isinstance(value, int) else f"default {value}")
    setup = WorkerSetup()
    p.add_argument("--workers", type=int, default=setup.processes,
                   help=f"worker processes (default {setup.processes})")
    p.add_argument("--concurrency", type=int, default=setup.concurrency,
                   help=f"slots per worker process (default {setup.concurrency})")
    p.add_argument("--pool", default=setup.pool, choices=["threads", "processes"])
    p.add_argument("--json", dest="json_out", default=None, help="also write rows as JSON here")
    p.add_argument("--md", default=None, help="also write the markdown report here")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the chosen scenarios; returns their rows (a failed scenario gives an "error" row)."""
    args = parse_args(argv)
    load_scenarios()
    ordered = sorted(SCENARIOS.values(), key=lambda s: (s.order, s.name))
    if args.list:
        for s in ordered:
            print(f"{s.name:<20} {s.title}")
        return []
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(s.name for s in ordered)}")
    chosen = [s for s in ordered if (not only or s.name in only) and s.name not in skip]

    sizes = Sizes.smoke() if args.smoke else Sizes()
    for name in asdict(sizes):
        value = getattr(args, name)
        if value is not None:
            setattr(sizes, name, value)
    setup = WorkerSetup(processes=args.workers, concurrency=args.concurrency, pool=args.pool)

    ensure_database(args.dsn, args.fresh_schema)
    progress = Progress(quiet=args.quiet)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pgtasks-bench-") as work:
        bench = Bench(args.dsn, sizes, setup, Path(work), progress.line,
                      checkpoint=not args.smoke)
        try:
            for index, chosen_scenario in enumerate(chosen, 1):
                progress.scenario(index, len(chosen), chosen_scenario.name)
                t0 = time.monotonic()
                try:
                    bench.reset()
                    found = chosen_scenario.run(bench)
                except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the rest
                    traceback.print_exc()
                    found = [Row(chosen_scenario.title, "error", None,
                                 note=f"{type(exc).__name__}: {exc}")]
                rows.extend(found)
                shown = "; ".join(f"{r.metric} {r.value} {r.unit}".strip() for r in found)
                progress.done(f"{shown} ({time.monotonic() - t0:.1f}s)")
        finally:
            bench.reset()
            bench.close()

    report = "\n".join([
        "## pgtasks benchmarks", "", table(rows), "",
        "Worker set-up: " + setup.describe(), "",
        "Machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()), "",
        "Postgres: " + ", ".join(f"{k}={v}" for k, v in server_settings(args.dsn).items()),
    ])
    print(report)
    if args.md:
        Path(args.md).write_text(report + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return rows
