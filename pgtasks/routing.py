"""Routing: which queue a task goes to, from ``task_routes`` in the forms Celery accepts.

``task_routes`` may be a dict (exact names or glob patterns → options), a router function
``(name, args, kwargs, options, task=None, **kw) -> dict | str | None``, or a list/tuple of those,
tried in order. A route may be a queue name string or a dict with ``queue`` (and ``priority``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pgtasks.errors import ConfigurationError

Route = Mapping[str, Any]


def _as_route(value: Any, source: str) -> Route | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    if isinstance(value, Mapping):
        return value
    raise ConfigurationError(f"task_routes: {source} returned {value!r}; expected a dict or a str")


def _match_map(routes: Mapping[Any, Any], name: str) -> Route | None:
    if name in routes:
        return _as_route(routes[name], f"route for {name!r}")
    for pattern, route in routes.items():
        if isinstance(pattern, re.Pattern):
            if pattern.match(name):
                return _as_route(route, f"route {pattern.pattern!r}")
        elif isinstance(pattern, str) and fnmatch.fnmatchcase(name, pattern):
            return _as_route(route, f"route {pattern!r}")
    return None


def route(
    routes: Any,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Route | None:
    """The first route that matches ``name``, or ``None``."""
    if not routes:
        return None
    routers: Sequence[Any] = routes if isinstance(routes, list | tuple) else [routes]
    for router in routers:
        if isinstance(router, Mapping):
            found = _match_map(router, name)
        elif callable(router):
            fn: Callable[..., Any] = router
            found = _as_route(fn(name, args, kwargs, options), getattr(fn, "__name__", "router"))
        else:
            raise ConfigurationError(
                f"task_routes entry {router!r} is neither a dict nor a router function"
            )
        if found is not None:
            return found
    return None
