"""Proto message to proto3-JSON objects, compiled once per message type.

`json_format.MessageToDict` re-inspects every field's descriptor on every call; for a batch reply
of 1000 time entries that is most of the gateway's time. Here each message type gets a field
plan (names, presence, a converter per kind) built on first use, so rendering is a loop of
getattr calls. The output equals `MessageToDict(m, always_print_fields_with_no_presence=True)`
(a unit test checks this over every contract message); types without a plain field mapping
(Any, Struct, Value, wrappers) are handed to json_format itself.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from accrue.services.gateway.catalog import (
    INT64_KINDS,
    STRING_WKT,
    enum_of,
    has_enum_value_options,
    is_map,
    message_of,
)

F = FieldDescriptor
Converter = Callable[[Any], Any]

_SINGULAR, _REPEATED, _MAP = 0, 1, 2


def _double(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _float(value: float) -> Any:
    if math.isnan(value) or math.isinf(value):
        return _double(value)
    return type_checkers.ToShortestFloat(value)


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _via_json_format(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _to_json_string(message: Any) -> Any:
    return message.ToJsonString()


class JsonRenderer:
    """Renders messages of any pool; plans are cached by message full name."""

    def __init__(self) -> None:
        self._plans: dict[str, Converter] = {}

    def message(self, message: Message) -> Any:
        """The proto3 JSON object (dict, or a string for Timestamp and the like) of a message."""
        return self._converter(cast(Descriptor, message.DESCRIPTOR))(message)

    def field(self, fd: FieldDescriptor, value: Any) -> Any:
        """The JSON value of one field's value (a list for repeated fields, a dict for maps)."""
        kind, convert = self._field_plan(fd)
        return _apply(kind, convert, value)

    def _converter(self, descriptor: Descriptor) -> Converter:
        convert = self._plans.get(descriptor.full_name)
        if convert is None:
            convert = self._plans[descriptor.full_name] = self._compile(descriptor)
        return convert

    def _compile(self, descriptor: Descriptor) -> Converter:
        name = descriptor.full_name
        if name in STRING_WKT:
            return _to_json_string
        if name.startswith("google.protobuf.") and name != "google.protobuf.Empty":
            return _via_json_format  # wrappers, Struct, Value, ListValue, Any
        if has_enum_value_options(descriptor):
            return _via_json_format  # enum values may carry options (a JSON name) only json_format reads
        plan: list[tuple[str, str, bool, int, Converter | None]] = []

        def convert(message: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for field_name, json_name, presence, kind, value_converter in plan:
                if presence and not message.HasField(field_name):
                    continue
                out[json_name] = _apply(kind, value_converter, getattr(message, field_name))
            return out

        # Registered before the fields are planned, so a message that contains itself resolves.
        self._plans[name] = convert
        for fd in descriptor.fields:
            kind, value_converter = self._field_plan(fd)
            plan.append((fd.name, fd.json_name, fd.has_presence, kind, value_converter))
        return convert

    def _field_plan(self, fd: FieldDescriptor) -> tuple[int, Converter | None]:
        if is_map(fd):
            return _MAP, self._value_converter(message_of(fd).fields_by_name["value"])
        return (_REPEATED if fd.is_repeated else _SINGULAR), self._value_converter(fd)

    def _value_converter(self, fd: FieldDescriptor) -> Converter | None:
        kind = fd.type
        if kind == F.TYPE_MESSAGE:
            descriptor = message_of(fd)
            return lambda value: self._converter(descriptor)(value)
        if kind == F.TYPE_ENUM:
            enum = enum_of(fd)
            if enum.full_name == "google.protobuf.NullValue":
                return lambda _: None
            names = {value.number: value.name for value in enum.values}
            return lambda number: names.get(number, number)  # open enums keep unknown numbers
        if kind in INT64_KINDS:
            return str
        if kind == F.TYPE_DOUBLE:
            return _double
        if kind == F.TYPE_FLOAT:
            return _float
        if kind == F.TYPE_BYTES:
            return _bytes
        return None  # strings, bools and 32-bit integers are their own JSON


def _apply(kind: int, convert: Converter | None, value: Any) -> Any:
    if kind == _SINGULAR:
        return value if convert is None else convert(value)
    if kind == _REPEATED:
        return list(value) if convert is None else [convert(item) for item in value]
    if convert is None:
        return {_map_key(key): item for key, item in value.items()}
    return {_map_key(key): convert(item) for key, item in value.items()}
