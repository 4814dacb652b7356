"""Payload serialization through kombu's serializer registry.

JSON is the default and the only content accepted unless the app lists more in
``accept_content``; kombu's JSON keeps ``datetime``, ``date``, ``time``, ``UUID`` and ``Decimal``
intact. msgpack, pickle and yaml are used only when the user opts in.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kombu import serialization as kombu_serialization
from kombu.exceptions import ContentDisallowed as KombuContentDisallowed
from kombu.exceptions import DecodeError, EncodeError
from kombu.utils import json as kombu_json

from pgtasks.errors import ContentDisallowed, SerializationError

_NAME_BY_CONTENT_TYPE = {
    "application/json": "json",
    "application/x-msgpack": "msgpack",
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
}


# kombu's JSON codec, called directly: the registry's dispatch and a new encoder/decoder object
# per call cost more than encoding a small payload. Used only while "json" is still kombu's own
# codec (an application may register another one under that name).
_JSON_ENCODER = kombu_json.JSONEncoder()
_JSON_DECODER = json.JSONDecoder(object_hook=kombu_json.object_hook)


def _kombu_json_codec() -> bool:
    registry = kombu_serialization.registry
    codec = registry._encoders.get("json")
    return (codec is not None and codec.encoder is kombu_json.dumps
            and registry._decoders.get("application/json") is kombu_json.loads)


def content_type_of(serializer: str) -> str:
    """The MIME type kombu registers for a serializer name (``"json"`` → ``application/json``)."""
    try:
        return kombu_serialization.registry.name_to_type[serializer]
    except KeyError:
        known = ", ".join(sorted(kombu_serialization.registry.name_to_type))
        raise SerializationError(
            f"unknown serializer {serializer!r}; known serializers: {known}"
        ) from None


class Serializer:
    """Encodes and decodes payloads with one serializer, accepting only ``accept`` on decode."""

    def __init__(self, name: str = "json", accept: Iterable[str] = ("json",)) -> None:
        self.name = name
        self.content_type = content_type_of(name)
        self.accept = frozenset(
            a if "/" in a else content_type_of(a) for a in accept
        )
        if self.content_type not in self.accept:
            raise ContentDisallowed(
                f"task_serializer {name!r} ({self.content_type}) is not in accept_content "
                f"{sorted(self.accept)}: add it there to use it"
            )

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raises :class:`SerializationError` naming the value's type."""
        if self.name == "json" and _kombu_json_codec():
            try:
                return _JSON_ENCODER.encode(value).encode("utf-8")
            except Exception as exc:  # noqa: BLE001 - as kombu's dumps: any error is EncodeError
                raise SerializationError(
                    f"a value of type {type(value).__name__} cannot be serialized "
                    f"with json: {exc}"
                ) from exc
        try:
            _ctype, _enc, data = kombu_serialization.dumps(value, serializer=self.name)
        except (EncodeError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"a value of type {type(value).__name__} cannot be serialized "
                f"with {self.name}: {exc}"
            ) from exc
        return data if isinstance(data, bytes) else data.encode("utf-8")

    def loads(self, data: bytes, content_type: str) -> Any:
        """Decode ``data``; refuses content types not in ``accept_content``."""
        if content_type not in self.accept:
            raise ContentDisallowed(
                f"refusing to decode content of type {content_type!r}: it is not in "
                f"accept_content {sorted(self.accept)}"
            )
        if content_type == "application/json" and data and _kombu_json_codec():
            try:
                return _JSON_DECODER.decode(bytes(data).decode("utf-8"))
            except Exception as exc:  # noqa: BLE001 - as kombu's loads: any error is DecodeError
                raise SerializationError(f"cannot decode {content_type} payload: {exc}") from exc
        try:
            return kombu_serialization.loads(
                bytes(data), content_type, "utf-8", accept=self.accept
            )
        except KombuContentDisallowed as exc:
            raise ContentDisallowed(str(exc)) from exc
        except (DecodeError, ValueError, TypeError) as exc:
            raise SerializationError(f"cannot decode {content_type} payload: {exc}") from exc

    def dumps_call(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        func: Callable[..., Any] | None = None,
    ) -> bytes:
        """Encode a call's arguments, naming the offending argument when one can't be encoded."""
        try:
            return self.dumps([list(args), dict(kwargs)])
        except SerializationError:
            raise self._explain(task_name, args, kwargs, func) from None

    def _explain(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        func: Callable[..., Any] | None,
    ) -> SerializationError:
        names: list[str] = []
        if func is not None:
            try:
                names = [
                    p.name
                    for p in inspect.signature(func).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
            except (TypeError, ValueError):
                names = []
        for i, value in enumerate(args):
            problem = self._problem(value)
            if problem:
                label = f"argument {i} ({names[i]!r})" if i < len(names) else f"argument {i}"
                return SerializationError(
                    f"{task_name}: {label} of type {type(value).__name__} cannot be serialized "
                    f"with {self.name}: {problem}"
                )
        for key, value in kwargs.items():
            problem = self._problem(value)
            if problem:
                return SerializationError(
                    f"{task_name}: keyword argument {key!r} of type {type(value).__name__} "
                    f"cannot be serialized with {self.name}: {problem}"
                )
        return SerializationError(f"{task_name}: the arguments cannot be serialized")

    def _problem(self, value: Any) -> str | None:
        try:
            self.dumps(value)
        except SerializationError as exc:
            return str(exc.__cause__ or exc)
        return None


def serializer_name(content_type: str) -> str:
    """The serializer name for a content type, for messages."""
    return _NAME_BY_CONTENT_TYPE.get(content_type, content_type)
