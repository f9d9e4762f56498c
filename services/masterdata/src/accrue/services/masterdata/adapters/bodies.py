"""Records to their stored JSON body, fast.

The body is `json_format.MessageToDict(record, preserving_proto_field_name=True)`: proto3 JSON
with field names, default values left out. MessageToDict inspects every field's descriptor on
every call, which is a third of the cost of a batch upsert; here each message type gets a plan
(its fields and a converter for each) built once, and a record costs a loop of getattr calls.
A unit test checks the output equals MessageToDict for every master-data type.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor
Converter = Callable[[Any], Any]
_INT64 = frozenset({F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64})
_WELL_KNOWN_STRINGS = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})

# (name, converter, repeated, has presence)
_Field = tuple[str, Converter, bool, bool]
_plans: dict[str, list[_Field]] = {}


def _identity(value: Any) -> Any:
    return value


def _scalar(field: Any) -> Converter:
    if field.type == F.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda number: names.get(number, number)
    if field.type in _INT64:
        return str
    if field.type == F.TYPE_BYTES:
        return lambda raw: base64.b64encode(raw).decode("ascii")
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        # Exact values are decimal strings; a float here would be a contract bug.
        raise NotImplementedError(f"{field.full_name}: floats are not used by master data")
    return _identity


def _message(descriptor: Any) -> Converter:
    if descriptor.full_name in _WELL_KNOWN_STRINGS:
        return lambda m: m.ToJsonString()
    if descriptor.full_name.startswith("google.protobuf."):
        return lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
    return to_body


def _plan(descriptor: Any) -> list[_Field]:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = []
        for field in descriptor.fields:
            is_message = field.type == F.TYPE_MESSAGE
            if is_message and field.message_type.GetOptions().map_entry:
                raise NotImplementedError(f"{field.full_name}: maps are not used by master data")
            convert = _message(field.message_type) if is_message else _scalar(field)
            plan.append((field.name, convert, field.is_repeated, field.has_presence))
        _plans[descriptor.full_name] = plan
    return plan


def to_body(message: Message) -> dict[str, Any]:
    """The proto3 JSON object of message with field names (as MessageToDict gives it)."""
    result: dict[str, Any] = {}
    for name, convert, repeated, presence in _plan(message.DESCRIPTOR):
        if repeated:
            values = getattr(message, name)
            if len(values):
                result[name] = [convert(v) for v in values]
        elif presence:
            if message.HasField(name):
                result[name] = convert(getattr(message, name))
        else:
            value = getattr(message, name)
            if value:
                result[name] = convert(value)
    return result
