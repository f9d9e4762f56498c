"""The compiled renderer and parser read and write proto3 JSON exactly as json_format does,
for every contract message."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from accrue.contracts import PUBLIC_SERVICES, descriptor_set
from accrue.services.gateway.catalog import Catalog, load_catalog
from accrue.services.gateway.parsing import JsonParser
from accrue.services.gateway.rendering import JsonRenderer

F = FieldDescriptor
P = descriptor_pb2.FieldDescriptorProto


def _kinds_file() -> descriptor_pb2.FileDescriptorProto:
    """A message with every field kind the contracts could grow into."""
    file = descriptor_pb2.FileDescriptorProto(
        name="test/kinds/v1/kinds.proto",
        package="test.kinds.v1",
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/any.proto",
            "google/protobuf/field_mask.proto",
            "google/protobuf/empty.proto",
        ],
    )
    color = file.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"]):
        color.value.add(name=name, number=number)
    kinds = file.message_type.add(name="Kinds")
    scalar_types = [
        ("a_double", P.TYPE_DOUBLE),
        ("a_float", P.TYPE_FLOAT),
        ("an_int64", P.TYPE_INT64),
        ("a_uint64", P.TYPE_UINT64),
        ("an_int32", P.TYPE_INT32),
        ("a_uint32", P.TYPE_UINT32),
        ("a_sint64", P.TYPE_SINT64),
        ("a_fixed64", P.TYPE_FIXED64),
        ("a_bool", P.TYPE_BOOL),
        ("a_string", P.TYPE_STRING),
        ("some_bytes", P.TYPE_BYTES),
    ]
    number = 0
    for name, kind in scalar_types:
        number += 1
        kinds.field.add(name=name, number=number, type=kind, label=P.LABEL_OPTIONAL)
        number += 1
        kinds.field.add(name=f"many_{name}", number=number, type=kind, label=P.LABEL_REPEATED)
    messages = [
        ("color", P.TYPE_ENUM, ".test.kinds.v1.Color"),
        ("when", P.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("how_long", P.TYPE_MESSAGE, ".google.protobuf.Duration"),
        ("extra", P.TYPE_MESSAGE, ".google.protobuf.Struct"),
        ("anything", P.TYPE_MESSAGE, ".google.protobuf.Value"),
        ("maybe_text", P.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        ("maybe_count", P.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        ("mask", P.TYPE_MESSAGE, ".google.protobuf.FieldMask"),
        ("nothing", P.TYPE_MESSAGE, ".google.protobuf.Empty"),
        ("child", P.TYPE_MESSAGE, ".test.kinds.v1.Kinds"),
    ]
    for name, kind, type_name in messages:
        number += 1
        kinds.field.add(name=name, number=number, type=kind, type_name=type_name, label=P.LABEL_OPTIONAL)
    number += 1
    kinds.field.add(
        name="children",
        number=number,
        type=P.TYPE_MESSAGE,
        type_name=".test.kinds.v1.Kinds",
        label=P.LABEL_REPEATED,
    )
    number += 1
    kinds.field.add(
        name="colors",
        number=number,
        type=P.TYPE_ENUM,
        type_name=".test.kinds.v1.Color",
        label=P.LABEL_REPEATED,
    )
    number += 1
    optional = kinds.field.add(name="maybe_flag", number=number, type=P.TYPE_BOOL, label=P.LABEL_OPTIONAL)
    optional.proto3_optional = True
    optional.oneof_index = 1  # synthetic oneofs come after real ones
    kinds.oneof_decl.add(name="choice")
    kinds.oneof_decl.add(name="_maybe_flag")
    for name, kind in (("choice_text", P.TYPE_STRING), ("choice_number", P.TYPE_INT64)):
        number += 1
        kinds.field.add(name=name, number=number, type=kind, label=P.LABEL_OPTIONAL, oneof_index=0)
    for entry_name, key_kind, value_kind, value_type in (
        ("LabelsEntry", P.TYPE_STRING, P.TYPE_STRING, ""),
        ("ByIdEntry", P.TYPE_INT64, P.TYPE_MESSAGE, ".test.kinds.v1.Kinds"),
        ("FlagsEntry", P.TYPE_BOOL, P.TYPE_ENUM, ".test.kinds.v1.Color"),
    ):
        entry = kinds.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key_kind, label=P.LABEL_OPTIONAL)
        value = entry.field.add(name="value", number=2, type=value_kind, label=P.LABEL_OPTIONAL)
        if value_type:
            value.type_name = value_type
        number += 1
        field_name = {"LabelsEntry": "labels", "ByIdEntry": "by_id", "FlagsEntry": "flags"}[entry_name]
        kinds.field.add(
            name=field_name,
            number=number,
            type=P.TYPE_MESSAGE,
            type_name=f".test.kinds.v1.Kinds.{entry_name}",
            label=P.LABEL_REPEATED,
        )
    return file


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    files = descriptor_pb2.FileDescriptorSet()
    files.CopyFrom(descriptor_set())
    from google.protobuf import any_pb2, duration_pb2, empty_pb2, field_mask_pb2, struct_pb2, wrappers_pb2

    known = {f.name for f in files.file}
    for module in (duration_pb2, struct_pb2, wrappers_pb2, any_pb2, field_mask_pb2, empty_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if proto.name not in known:
            files.file.append(proto)
    files.file.append(_kinds_file())
    return load_catalog(files, PUBLIC_SERVICES)


def _fill(catalog: Catalog, message: Message, depth: int, seed: int) -> None:
    """Set every field to something non-default (lists of two, nesting to a depth)."""
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    for fd in descriptor.fields:
        in_real_oneof = fd.containing_oneof is not None and not fd.containing_oneof.name.startswith("_")
        if in_real_oneof and fd.name != "choice_number":
            continue  # one member of the oneof is enough
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target = getattr(message, fd.name)
            value_fd = fd.message_type.fields_by_name["value"]
            key_type = fd.message_type.fields_by_name["key"].type
            keys: list[Any] = {F.TYPE_STRING: ["a", "b"], F.TYPE_INT64: [1, -2], F.TYPE_BOOL: [True, False]}[
                key_type
            ]
            for key in keys:
                if value_fd.type == F.TYPE_MESSAGE:
                    if depth > 0:
                        _fill(catalog, target[key], depth - 1, seed + 1)
                else:
                    target[key] = _scalar(value_fd, seed)
            continue
        if fd.type == F.TYPE_MESSAGE:
            if depth <= 0:
                continue
            if fd.is_repeated:
                for i in range(2):
                    _fill_message(catalog, getattr(message, fd.name).add(), depth - 1, seed + i)
            else:
                _fill_message(catalog, getattr(message, fd.name), depth - 1, seed)
            continue
        if fd.is_repeated:
            getattr(message, fd.name).extend([_scalar(fd, seed), _scalar(fd, seed + 1)])
        else:
            setattr(message, fd.name, _scalar(fd, seed))


def _fill_message(catalog: Catalog, message: Any, depth: int, seed: int) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.FromSeconds(1_700_000_000 + seed)
        message.nanos = 500_000_000
    elif name == "google.protobuf.Duration":
        message.FromMilliseconds(1500 + seed)
    elif name == "google.protobuf.Struct":
        message.update({"k": seed, "nested": {"x": [1, "two", None, True]}})
    elif name == "google.protobuf.Value":
        message.string_value = f"v{seed}"
    elif name == "google.protobuf.FieldMask":
        message.paths.extend(["a_string", "child.a_bool"])
    elif name == "google.protobuf.Empty":
        message.SetInParent()
    elif name.startswith("google.protobuf.") and name.endswith("Value"):
        message.value = type(message.value)(seed + 1) if not isinstance(message.value, str) else f"w{seed}"
    else:
        _fill(catalog, message, depth, seed)
        message.SetInParent()


def _scalar(fd: FieldDescriptor, seed: int) -> Any:
    kind = fd.type
    if kind == F.TYPE_ENUM:
        numbers = [v.number for v in fd.enum_type.values]  # type: ignore[union-attr]
        return numbers[(seed % (len(numbers) - 1)) + 1] if len(numbers) > 1 else 7
    if kind == F.TYPE_STRING:
        return f"s{seed}é"
    if kind == F.TYPE_BYTES:
        return bytes([seed % 256, 255, 0, 1])
    if kind == F.TYPE_BOOL:
        return seed % 2 == 0
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return [0.1, 1.5e300 if kind == F.TYPE_DOUBLE else 3.4e38, -2.25, math.inf, math.nan][seed % 5]
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32, F.TYPE_UINT64, F.TYPE_FIXED64):
        return 2**31 + seed if kind in (F.TYPE_UINT32, F.TYPE_FIXED32) else 2**63 + seed
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return -(2**62) - seed
    return -(2**30) + seed


def _same(renderer: JsonRenderer, message: Message) -> None:
    expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    actual = renderer.message(message)
    # NaN != NaN, so compare the JSON text (NaN is rendered as the string "NaN" by both).
    assert json_format.json.dumps(actual, sort_keys=True) == json_format.json.dumps(expected, sort_keys=True)


def _all_messages(catalog: Catalog) -> list[Descriptor]:
    found: list[Descriptor] = []

    def visit(descriptor: Descriptor) -> None:
        if descriptor.GetOptions().map_entry:
            return
        found.append(descriptor)
        for nested in descriptor.nested_types:
            visit(nested)

    for file in descriptor_set().file:
        if file.package.startswith("accrue."):
            for name in file.message_type:
                visit(catalog.pool.FindMessageTypeByName(f"{file.package}.{name.name}"))
    visit(catalog.pool.FindMessageTypeByName("test.kinds.v1.Kinds"))
    return found


def test_every_contract_message_renders_like_json_format_when_empty(catalog: Catalog) -> None:
    renderer = JsonRenderer()
    messages = _all_messages(catalog)
    assert len(messages) > 50
    for descriptor in messages:
        _same(renderer, catalog.message_class(descriptor)())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_every_contract_message_renders_like_json_format_when_filled(catalog: Catalog, seed: int) -> None:
    renderer = JsonRenderer()
    for descriptor in _all_messages(catalog):
        message = catalog.message_class(descriptor)()
        _fill(catalog, message, depth=3, seed=seed)
        _same(renderer, message)


def test_the_kinds_message_really_has_every_kind_set(catalog: Catalog) -> None:
    message = catalog.message_class(catalog.pool.FindMessageTypeByName("test.kinds.v1.Kinds"))()
    _fill(catalog, message, depth=2, seed=1)

    rendered = JsonRenderer().message(message)

    assert rendered["anInt64"] == str(-(2**62) - 1)
    assert rendered["aUint64"] == str(2**63 + 1)
    assert rendered["someBytes"] == "Af8AAQ=="
    assert rendered["when"] == "2023-11-14T22:13:21.500Z"
    assert rendered["howLong"] == "1.501s"
    assert rendered["maybeText"] == "w1"
    assert rendered["byId"]["-2"]["aString"] == "s2é"
    assert rendered["flags"] == {"true": "COLOR_BLUE", "false": "COLOR_BLUE"}
    assert rendered["choiceNumber"] == str(-(2**62) - 1)
    assert "choiceText" not in rendered
    assert rendered["maybeFlag"] is False
    assert rendered["mask"] == "aString,child.aBool"
    assert rendered["nothing"] == {}


def test_unknown_enum_numbers_render_as_numbers(catalog: Catalog) -> None:
    message = catalog.message_class(catalog.pool.FindMessageTypeByName("test.kinds.v1.Kinds"))()
    message.color = 42
    message.colors.extend([1, 99])

    rendered = JsonRenderer().message(message)

    assert rendered["color"] == 42
    assert rendered["colors"] == ["COLOR_RED", 99]
    _same(JsonRenderer(), message)


# -- parsing -----------------------------------------------------------------------------------


def _kinds(catalog: Catalog) -> Message:
    return catalog.message_class(catalog.pool.FindMessageTypeByName("test.kinds.v1.Kinds"))()


def _parsed_both_ways(catalog: Catalog, descriptor: Descriptor, data: Any) -> tuple[Message, Message]:
    fast, reference = catalog.message_class(descriptor)(), catalog.message_class(descriptor)()
    JsonParser().parse(data, fast)
    json_format.ParseDict(data, reference)
    return fast, reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("names", ["json", "proto"])
def test_every_contract_message_parses_like_json_format(catalog: Catalog, seed: int, names: str) -> None:
    for descriptor in _all_messages(catalog):
        message = catalog.message_class(descriptor)()
        _fill(catalog, message, depth=3, seed=seed)
        text = json_format.MessageToJson(message, preserving_proto_field_name=names == "proto")
        fast, reference = _parsed_both_ways(catalog, descriptor, json.loads(text))
        assert fast.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True)
        if "NaN" not in text and "Infinity" not in text:
            assert fast == message


def test_a_batch_of_time_entries_takes_the_fast_path(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    descriptor = catalog.pool.FindMessageTypeByName("accrue.timekeeping.v1.BatchSubmitTimeEntriesRequest")
    body = {
        "timeEntries": [
            {
                "consultantId": f"c-{n}",
                "projectId": "p-1",
                "workDate": "2026-11-02",
                "hours": "7.5",
                "notes": f"item {n}",
                "externalRef": {"system": "jira", "id": f"X-{n}"},
            }
            for n in range(3)
        ]
    }
    expected = catalog.message_class(descriptor)()
    json_format.ParseDict(body, expected)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("fell back to json_format")

    monkeypatch.setattr("accrue.services.gateway.parsing.json_format.ParseDict", refuse)
    message = catalog.message_class(descriptor)()
    JsonParser().parse(body, message)

    assert message == expected
    assert message.time_entries[2].external_ref.id == "X-2"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        {"anInt32": "5"},  # numbers as strings
        {"anInt32": 5.0},
        {"aDouble": "NaN"},
        {"aDouble": "1.5"},
        {"color": 2},  # enum numbers, known and unknown (open enums keep them)
        {"color": 42},
        {"colors": ["COLOR_RED", 1]},
        {"aString": None, "child": None, "manyAString": None},  # null means default
        {"someBytes": "Af8AAQ=="},
        {"labels": {"a": "b"}, "flags": {"true": "COLOR_RED"}, "byId": {"3": {"aBool": True}}},
        {"when": "2026-11-25T10:00:00+01:00", "howLong": "1.5s", "mask": "aString,child.aBool"},
        {"maybeText": "x", "extra": {"k": [1, None]}, "anything": 3},
        {"child": {}, "nothing": {}, "children": [{}, {"child": {"aBool": False}}]},
        {"maybeFlag": False, "choiceText": ""},
        {"anInt64": "-0012", "aUint64": 18446744073709551615, "aSint64": "1e3"},
        {"aString": "a", "a_string": "b"},  # one field under both its names
        {"child": []},
    ],
)
def test_accepted_non_canonical_input_reads_as_json_format_reads_it(catalog: Catalog, data: Any) -> None:
    fast, reference = _parsed_both_ways(catalog, _kinds(catalog).DESCRIPTOR, data)  # type: ignore[arg-type]
    # Compared as bytes: NaN is not equal to itself.
    assert fast.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    "data",
    [
        {"noSuchField": 1},
        {"choiceText": "a", "choiceNumber": "1"},  # two members of a oneof
        {"color": "COLOR_GREEN"},
        {"aString": 5},
        {"aBool": "true"},
        {"anInt32": 2**31},
        {"anInt32": 1.5},
        {"aFloat": 1e39},
        {"aDouble": math.nan},
        {"manyAString": "not a list"},
        {"manyAString": ["a", None]},
        {"children": [None]},
        {"child": {"child": {"noSuchField": True}}},
        {"when": "yesterday"},
        {"when": 1700000000},
    ],
)
def test_rejected_input_fails_with_json_format_s_own_error(catalog: Catalog, data: Any) -> None:
    descriptor: Descriptor = _kinds(catalog).DESCRIPTOR  # type: ignore[assignment]
    with pytest.raises(json_format.ParseError) as reference:
        json_format.ParseDict(data, catalog.message_class(descriptor)())
    with pytest.raises(json_format.ParseError) as fast:
        JsonParser().parse(data, catalog.message_class(descriptor)())
    assert str(fast.value) == str(reference.value)
