"""Why a JSON value does not fit a proto field: the slow path that names the field in a 400.

`json_format` reports the first problem as nested prose; the gateway walks the same value along
the descriptors instead, so the client gets the JSON path of the offending field and a stable
code. Only called once a parse has failed (or for the few path and query values).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from accrue.services.gateway.catalog import Catalog, enum_of, is_map, message_of
from accrue.services.gateway.problems import FieldViolation

F = FieldDescriptor
_INT_RANGE: Mapping[int, tuple[int, int]] = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = frozenset({F.TYPE_FLOAT, F.TYPE_DOUBLE})
INTEGER_TEXT = re.compile(r"^-?\d+$")


def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class JsonChecker:
    """Checks JSON values against the message types of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def wkt_problem(self, descriptor: Descriptor, value: Any) -> str | None:
        try:
            json_format.ParseDict(value, self._catalog.message_class(descriptor)())
        except json_format.ParseError as err:
            return clean_parse_error(str(err))
        return None

    def check_message(self, descriptor: Descriptor, value: Any, path: str) -> FieldViolation | None:
        if descriptor.full_name.startswith("google.protobuf."):
            problem = self.wkt_problem(descriptor, value)
            return FieldViolation(path, "INVALID_VALUE", problem) if problem else None
        if not isinstance(value, dict):
            return FieldViolation(path, "INVALID_VALUE", f"expected a JSON object, got {_json_type(value)}.")
        for key, item in value.items():
            fd = self._catalog.field_named(descriptor, key)
            if fd is None:
                return FieldViolation(
                    join_path(path, key), "UNKNOWN_FIELD", f"{descriptor.name} has no field {key!r}."
                )
            found = self.check_value(fd, item, join_path(path, fd.json_name), in_list=False)
            if found is not None:
                return found
        return None

    def check_value(
        self, fd: FieldDescriptor, value: Any, path: str, *, in_list: bool
    ) -> FieldViolation | None:
        if value is None:
            return FieldViolation(path, "INVALID_VALUE", "null is not allowed here.") if in_list else None
        if is_map(fd):
            if not isinstance(value, dict):
                return FieldViolation(
                    path, "INVALID_VALUE", f"expected a JSON object, got {_json_type(value)}."
                )
            value_fd = message_of(fd).fields_by_name["value"]
            for key, item in value.items():
                found = self.check_value(value_fd, item, f"{path}[{json.dumps(key)}]", in_list=True)
                if found is not None:
                    return found
            return None
        if fd.is_repeated and not in_list:
            if not isinstance(value, list):
                return FieldViolation(
                    path, "INVALID_VALUE", f"expected a JSON array, got {_json_type(value)}."
                )
            for i, item in enumerate(value):
                found = self.check_value(fd, item, f"{path}[{i}]", in_list=True)
                if found is not None:
                    return found
            return None
        if fd.type == F.TYPE_MESSAGE:
            return self.check_message(message_of(fd), value, path)
        problem = scalar_problem(fd, value)
        return FieldViolation(path, "INVALID_VALUE", problem) if problem else None


def scalar_problem(fd: FieldDescriptor, value: Any) -> str | None:
    """Why a JSON value cannot be this (non-message) field's value, or None when it can."""
    kind = fd.type
    if kind == F.TYPE_STRING:
        return None if isinstance(value, str) else f"expected a string, got {_json_type(value)}."
    if kind == F.TYPE_BOOL:
        return None if isinstance(value, bool) else f"expected true or false, got {_json_type(value)}."
    if kind == F.TYPE_BYTES:
        if not isinstance(value, str):
            return f"expected a base64 string, got {_json_type(value)}."
        try:
            base64.b64decode(
                value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            return "expected a base64 string."
        return None
    if kind == F.TYPE_ENUM:
        if isinstance(value, int) and not isinstance(value, bool):
            return None  # proto3 enums are open: unknown numbers are kept
        if isinstance(value, str) and value in enum_of(fd).values_by_name:
            return None
        names = ", ".join(v.name for v in enum_of(fd).values)
        return f"expected one of {names}; got {json.dumps(value)}."
    if kind in _FLOATS:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return f"expected a number, got {json.dumps(value)}."
            return None
        return f"expected a number, got {_json_type(value)}."
    low, high = _INT_RANGE[kind]
    number = _as_integer(value)
    if number is None:
        shown = json.dumps(value) if isinstance(value, str) else _json_type(value)
        return f"expected an integer, got {shown}."
    if not low <= number <= high:
        return f"{number} is out of range [{low}, {high}]."
    return None


def _as_integer(value: Any) -> int | None:
    """The integer a proto3 JSON value denotes: a number without fraction, or its decimal text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and INTEGER_TEXT.match(value.strip()):
        return int(value)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def clean_parse_error(message: str) -> str:
    # json_format nests "Failed to parse x field: " prefixes; the innermost part is the reason.
    return message.rsplit("field: ", 1)[-1].strip().rstrip(".") + "."
