"""Which Postgres to use, and connecting to it with errors that name the server, not the secret.

The DSN comes from, in order: the explicit argument, ``$PGTASKS_DSN``, else the embedded
zero-config server (:func:`pgtasks.db.embedded.ensure_server`). Both libpq forms are accepted:
``postgresql://user:pass@host:5432/db`` URIs and ``host=... dbname=...`` key/value strings.
Passwords never appear in pgtasks' messages: :func:`redact` masks them.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgtasks.errors import ConfigurationError, DatabaseError

__all__ = ["DSN_ENV", "connect", "describe", "redact", "resolve_dsn", "validate_dsn"]

logger = logging.getLogger(__name__)

DSN_ENV = "PGTASKS_DSN"
MASK = "***"

_URI = re.compile(
    r"^(?P<scheme>postgres(?:ql)?://)(?P<authority>[^/?#]*)(?P<rest>.*)$", re.I | re.S
)
# A password in a URI query string (?password=... or &sslpassword=...).
_URI_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:ssl)?password=)(?P<value>[^&#]*)", re.I)
# A password in a key/value string: a quoted value up to its closing quote (or the end, when
# unterminated), else everything up to the next "keyword=" (so that a malformed value with
# spaces is masked whole).
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|.*?(?=\s+[A-Za-z_]+\s*=|\s*$))",
    re.I | re.S,
)
_QUOTED = re.compile(r'"([^"]*)"')


def resolve_dsn(dsn: str | None = None) -> str:
    """Return the DSN to use: *dsn*, else ``$PGTASKS_DSN``, else the embedded server's.

    An empty string counts as not given. Explicit and environment DSNs are validated.

    :raises ConfigurationError: the DSN is malformed.
    :raises EmbeddedPostgresError: no DSN was given and the embedded server cannot start.
    """
    if dsn:
        return validate_dsn(dsn)
    from_env = os.environ.get(DSN_ENV)
    if from_env:
        return validate_dsn(from_env)
    from pgtasks.db import embedded  # imported late: only the fallback needs it

    dsn = embedded.ensure_server()
    logger.info("no DSN given and %s unset: using the embedded Postgres at %s", DSN_ENV, dsn)
    return dsn


def validate_dsn(dsn: str) -> str:
    """Return *dsn* unchanged if libpq can parse it.

    :raises ConfigurationError: it cannot; the message shows the DSN with its password masked.
    """
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        error = str(exc).strip()
    else:
        return dsn
    # Raised outside the except block: libpq's own error (which may quote the password) must not
    # travel along as __context__.
    raise ConfigurationError(f"malformed Postgres DSN {redact(dsn)!r}: {_sanitize(error, dsn)}")


def redact(dsn: str) -> str:
    """Return *dsn* with any password (and sslpassword) replaced by ``***``, for logs."""
    return _redact(dsn)[0]


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection to *dsn*; *kwargs* go to :func:`psycopg.connect`.

    :raises ConfigurationError: the DSN is malformed.
    :raises DatabaseError: the server cannot be reached or refused the connection; the message
        names host, port, database and user, never the password.
    """
    validate_dsn(dsn)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        secrets = _redact(dsn)[1] + [str(v) for k, v in kwargs.items() if "password" in k and v]
        cause = _mask(str(exc).strip(), secrets)
        # libpq's connection errors never contain the password, so the cause can be chained.
        raise DatabaseError(
            f"cannot connect to Postgres at {describe(dsn, **kwargs)}: {cause}"
        ) from exc


def describe(dsn: str, **kwargs: Any) -> str:
    """``host=... port=... dbname=... user=...`` of *dsn* (with libpq's defaults), no password."""
    params = conninfo_to_dict(dsn, **kwargs)

    def pick(key: str, env: str, default: str) -> str:
        return str(params.get(key) or os.environ.get(env) or default)

    user = pick("user", "PGUSER", "(current user)")
    return (
        f"host={pick('host', 'PGHOST', '(local socket)')} port={pick('port', 'PGPORT', '5432')} "
        f"dbname={pick('dbname', 'PGDATABASE', user)} user={user}"
    )


def _redact(dsn: str) -> tuple[str, list[str]]:
    """*dsn* with passwords masked, and the raw (and decoded) secrets that were masked."""
    secrets: list[str] = []

    def hide(value: str) -> str:
        if value:
            secrets.append(value)
            decoded = unquote(value)
            if decoded != value:
                secrets.append(decoded)
            stripped = value.strip("'")
            if stripped and stripped != value:
                secrets.append(stripped)
        return MASK

    uri = _URI.match(dsn)
    if uri:
        authority = uri["authority"]
        # The last "@" ends the userinfo: a password may itself contain "@".
        userinfo, at, hosts = authority.rpartition("@")
        if at and ":" in userinfo:
            user, _, password = userinfo.partition(":")
            authority = f"{user}:{hide(password)}@{hosts}"
        rest = _URI_QUERY_SECRET.sub(lambda m: m["key"] + hide(m["value"]), uri["rest"])
        return uri["scheme"] + authority + rest, secrets
    return _KV_SECRET.sub(lambda m: m["key"] + hide(m["value"]), dsn), secrets


def _sanitize(message: str, dsn: str) -> str:
    """Mask secrets in a libpq parse error, which quotes fragments of the DSN verbatim."""
    redacted, secrets = _redact(dsn)

    def fragment(match: re.Match[str]) -> str:
        text = match[1]
        if text == dsn:
            return f'"{redacted}"'
        if text in redacted and not any(text in s or s in text for s in secrets):
            return match[0]
        return f'"{MASK}"'

    return _mask(_QUOTED.sub(fragment, message), secrets)


def _mask(message: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message
