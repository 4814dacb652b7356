"""Settings, named as Celery names them, with ``PGTASKS_*`` environment fallbacks.

``app.conf`` behaves like Celery's: a mapping with attribute access, filled from defaults, from
the environment, from ``app.config_from_object`` and from plain assignment. pgtasks' own settings
(leases, polling, batching) sit beside Celery's under the same rules.
"""

from __future__ import annotations

import importlib
import os
import types
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from pgtasks.errors import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # Celery's names
    "task_default_queue": "default",
    "task_default_priority": 0,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": None,
    "result_expires": 86400.0,
    "timezone": "UTC",
    "enable_utc": True,
    "task_routes": None,
    "task_annotations": None,
    "task_ignore_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_acks_late": True,
    "task_always_eager": False,
    "task_eager_propagates": True,
    "task_default_retry_delay": 180.0,
    "task_max_retries": 3,
    "task_queues": None,
    "beat_schedule": {},
    "imports": (),
    "include": (),
    "worker_concurrency": None,
    # An upper bound: the pool holds waiting jobs only while jobs are short (worker/pool.py).
    "worker_prefetch_multiplier": 32,
    "worker_pool": "threads",
    # pgtasks' own
    "dsn": None,
    "auto_migrate": True,
    "pool_max_size": 10,
    "worker_lease_seconds": 30.0,
    "worker_heartbeat_interval": 5.0,
    "worker_poll_interval": 1.0,
    "worker_shutdown_grace": 30.0,
    "worker_claim_batch": 256,
    "worker_complete_batch": 512,
    "worker_maintenance_interval": 60.0,
    "worker_reconnect_max_delay": 5.0,
    "workflow_sleep_inline_threshold": 1.0,
    # A workflow waiting for child jobs or messages holds its slot this long, then gives it back
    # and is woken by their completion (workflow_wait_poll_interval: the longest fallback poll).
    "workflow_wait_inline": 0.1,
    "workflow_wait_poll_interval": 10.0,
    "beat_max_catch_up": 100,
    "beat_max_loop_interval": 30.0,
}

_ENV_PREFIX = "PGTASKS_"
_LIST_KEYS = {"accept_content", "result_accept_content", "imports", "include"}


def _coerce(key: str, raw: str) -> Any:
    default = DEFAULTS.get(key)
    if key in _LIST_KEYS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{_ENV_PREFIX}{key.upper()}={raw!r}: expected true or false")
    if isinstance(default, int | float) and not isinstance(default, bool):
        try:
            return type(default)(raw)
        except ValueError:
            raise ConfigurationError(
                f"{_ENV_PREFIX}{key.upper()}={raw!r}: expected a number"
            ) from None
    return raw


class Config(MutableMapping[str, Any]):
    """Celery-style settings: ``conf.task_default_queue`` or ``conf["task_default_queue"]``."""

    def __init__(self, **overrides: Any) -> None:
        object.__setattr__(self, "_data", dict(DEFAULTS))
        for key in DEFAULTS:
            raw = os.environ.get(_ENV_PREFIX + key.upper())
            if raw is not None:
                self._data[key] = _coerce(key, raw)
        self._data.update(overrides)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"no setting named {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Copy settings from a module, a module path or an object (Celery's rules).

        With ``namespace="CELERY"`` only ``CELERY_``-prefixed upper-case names are read
        (``CELERY_TASK_DEFAULT_QUEUE`` → ``task_default_queue``), as in a Django settings file.
        """
        if isinstance(obj, str):
            try:
                obj = importlib.import_module(obj)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import configuration module {obj!r}: {exc}") from exc
        items: Mapping[str, Any] = obj if isinstance(obj, Mapping) else {
            name: getattr(obj, name) for name in dir(obj) if not name.startswith("_")
        }
        prefix = f"{namespace}_" if namespace else None
        for name, value in items.items():
            if prefix is not None:
                if name.startswith(prefix):
                    self._data[name[len(prefix):].lower()] = value
            elif name.islower() and not isinstance(value, types.ModuleType):
                self._data[name] = value

    def update_many(self, values: Mapping[str, Any]) -> None:
        self._data.update(values)
