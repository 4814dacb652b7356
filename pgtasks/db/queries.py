"""Named SQL queries, loaded from the ``.sql`` files in ``pgtasks/sql/``.

Each file holds queries headed by ``-- name: <name>`` and a one-line comment saying what the query
does. Python code refers to queries by ``<file>.<name>`` and never builds SQL text itself.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _parse(text: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        queries[match.group("name")] = body
    return queries


@functools.cache
def _file(stem: str) -> dict[str, str]:
    text = resources.files("pgtasks.sql").joinpath(f"{stem}.sql").read_text(encoding="utf-8")
    return _parse(text)


def query(qualified: str) -> str:
    """The text of the query ``<file>.<name>``, e.g. ``jobs.claim``."""
    stem, _, name = qualified.partition(".")
    try:
        return _file(stem)[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in pgtasks/sql/{stem}.sql") from None


def script(relative_path: str) -> str:
    """The whole text of an SQL file under ``pgtasks/sql/`` (schema, migrations)."""
    node = resources.files("pgtasks.sql")
    for part in relative_path.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def migration_files() -> list[tuple[int, str]]:
    """The ordered migrations as (version, file name)."""
    folder = resources.files("pgtasks.sql").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.name))
    return sorted(found)
