"""proto3-JSON objects to proto messages, compiled once per message type.

`json_format.ParseDict` re-inspects descriptors for every field of every message; for a batch of
1,000 time entries or 500 master-data rows that is most of the gateway's CPU per request. Here
each message type gets a plan (a setter per accepted key) built on first use, and the common
case — known keys, canonically typed values — is a loop of dict lookups and setattr calls.

The fast path only accepts what it is sure `ParseDict` would accept and read the same way. On
anything else (unknown or duplicated keys, nulls, two members of a oneof, enum numbers, numbers
as strings other than int64, bytes, maps, well-known types other than Timestamp, Duration and
FieldMask, out-of-range values) it gives up, the message is cleared and `ParseDict` parses it
from scratch: its result, and its error, are the contract. A unit test checks that both paths
give the same message over every contract's request types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
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
# Sets one field of a message from one JSON value, or raises _GiveUp.
Setter = Callable[[Any, Any], None]
# Fills a message from a JSON object, or raises _GiveUp.
Filler = Callable[[Any, Any], None]

_INT32 = frozenset({F.TYPE_INT32, F.TYPE_UINT32, F.TYPE_SINT32, F.TYPE_FIXED32, F.TYPE_SFIXED32})
_DIGITS = re.compile(r"-?[0-9]+", re.ASCII)
_FLOAT_MAX = 3.4028234663852886e38


class _GiveUp(Exception):
    """The fast path cannot be sure of ParseDict's reading: let ParseDict do it."""


def _give_up(*_: Any) -> None:
    raise _GiveUp


class JsonParser:
    """Parses JSON objects into messages of any pool; plans are cached by message full name."""

    def __init__(self) -> None:
        self._fillers: dict[str, Filler] = {}

    def parse(self, data: Any, message: Message) -> None:
        """Fill `message` from a JSON object exactly as `json_format.ParseDict` would.

        Raises json_format.ParseError for input ParseDict rejects (from ParseDict itself).
        """
        try:
            if type(data) is not dict:
                raise _GiveUp
            self._filler(cast(Descriptor, message.DESCRIPTOR))(data, message)
        except (_GiveUp, TypeError, ValueError, OverflowError, AttributeError):
            message.Clear()
            json_format.ParseDict(data, message)

    def _filler(self, descriptor: Descriptor) -> Filler:
        filler = self._fillers.get(descriptor.full_name)
        if filler is None:
            filler = self._fillers[descriptor.full_name] = self._compile(descriptor)
        return filler

    def _compile(self, descriptor: Descriptor) -> Filler:
        name = descriptor.full_name
        if name.startswith("google.protobuf.") and name != "google.protobuf.Empty":
            return _give_up  # wrappers, Struct, Value, Any... and the string WKTs as objects
        if has_enum_value_options(descriptor):
            return _give_up  # enum values may carry options (a JSON name) only json_format reads
        # JSON key -> (field number, setter); both the proto name and the JSON name are accepted.
        setters: dict[str, tuple[int, Setter]] = {}
        # Field number -> its real oneof's index: two members of one oneof is an error.
        oneof_of = {
            fd.number: index
            for index, oneof in enumerate(descriptor.oneofs)
            if not _is_synthetic(oneof)
            for fd in oneof.fields
        }

        def fill(data: dict[str, Any], message: Any) -> None:
            numbers = []
            for key, value in data.items():
                found = setters.get(key)
                if found is None or value is None:
                    raise _GiveUp  # unknown key, or null (which clears): ParseDict's rules
                numbers.append(found[0])
                found[1](message, value)
            if len(set(numbers)) != len(numbers):
                raise _GiveUp  # the same field under its proto and its JSON name
            if oneof_of:
                groups = [oneof_of[n] for n in numbers if n in oneof_of]
                if len(set(groups)) != len(groups):
                    raise _GiveUp

        # Registered before the fields are planned, so a message that contains itself resolves.
        self._fillers[name] = fill
        for fd in descriptor.fields:
            setter = self._setter(fd)
            setters[fd.name] = setters[fd.json_name] = (fd.number, setter)
        return fill

    def _setter(self, fd: FieldDescriptor) -> Setter:
        name = fd.name
        if is_map(fd) or fd.type == F.TYPE_BYTES:
            return _give_up
        if fd.type == F.TYPE_MESSAGE:
            descriptor = message_of(fd)
            if descriptor.full_name in STRING_WKT:
                read: Callable[[Any, Any], None] = _from_json_string
            else:
                read = lambda value, sub: self._object(descriptor, value, sub)  # noqa: E731
            if fd.is_repeated:

                def set_messages(message: Any, values: Any) -> None:
                    if type(values) is not list:
                        raise _GiveUp
                    container = getattr(message, name)
                    for value in values:
                        read(value, container.add())

                return set_messages

            def set_message(message: Any, value: Any) -> None:
                sub = getattr(message, name)
                sub.SetInParent()  # {} still makes the field present
                read(value, sub)

            return set_message
        convert = self._scalar(fd)
        if fd.is_repeated:

            def set_scalars(message: Any, values: Any) -> None:
                if type(values) is not list:
                    raise _GiveUp
                getattr(message, name).extend([convert(value) for value in values])

            return set_scalars

        def set_scalar(message: Any, value: Any) -> None:
            setattr(message, name, convert(value))

        return set_scalar

    def _object(self, descriptor: Descriptor, value: Any, message: Any) -> None:
        if type(value) is not dict:
            raise _GiveUp
        self._filler(descriptor)(value, message)

    @staticmethod
    def _scalar(fd: FieldDescriptor) -> Callable[[Any], Any]:
        kind = fd.type
        if kind == F.TYPE_STRING:
            return _exact(str)
        if kind == F.TYPE_BOOL:
            return _exact(bool)
        if kind in _INT32:
            return _exact(int)  # setattr checks the range (ValueError: give up)
        if kind in INT64_KINDS:
            return _int64
        if kind == F.TYPE_DOUBLE:
            return _double
        if kind == F.TYPE_FLOAT:
            return _float
        if kind == F.TYPE_ENUM:
            numbers = {value.name: value.number for value in enum_of(fd).values}

            def enum(value: Any) -> int:
                if type(value) is not str or value not in numbers:
                    raise _GiveUp  # numbers, unknown names: ParseDict decides
                return numbers[value]

            return enum
        return _give_up


def _exact(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise _GiveUp
        return value

    return check


def _int64(value: Any) -> int:
    if type(value) is int:
        return value
    # int64 travels as a decimal string in proto3 JSON; only plain digits take the fast path.
    if type(value) is str and _DIGITS.fullmatch(value):
        return int(value)
    raise _GiveUp


def _double(value: Any) -> float:
    # json.loads reads NaN and Infinity literals, which ParseDict rejects; strings are its too.
    if (type(value) is float and math.isfinite(value)) or type(value) is int:
        return value
    raise _GiveUp


def _float(value: Any) -> float:
    number = _double(value)
    if abs(number) > _FLOAT_MAX:
        raise _GiveUp  # ParseDict: "Float value too large"
    return number


def _from_json_string(value: Any, message: Any) -> None:
    if type(value) is not str:
        raise _GiveUp
    message.FromJsonString(value)


def _is_synthetic(oneof: Any) -> bool:
    # proto3 `optional` fields sit in a one-member "synthetic" oneof named after them.
    fields = oneof.fields
    return len(fields) == 1 and fields[0].has_presence and oneof.name == f"_{fields[0].name}"
