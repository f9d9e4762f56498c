"""The contracts as the gateway sees them: descriptors, HTTP rules, comments and field behaviour.

Everything is read from the FileDescriptorSet that `accrue.contracts` ships, into a private
DescriptorPool, so the gateway never imports a generated `_pb2` module and any service added to
the contracts is served without a code change here. Even the google.api options are read through
that pool's own descriptor.proto and extension descriptors, so they resolve however the set was
parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

# Field numbers inside descriptor.proto, used to read SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


@dataclass(frozen=True)
class HttpRule:
    """One google.api.http binding (additional_bindings are flattened into rules of their own)."""

    method: str
    path: str
    body: str = ""
    response_body: str = ""


@dataclass(frozen=True)
class RpcMethod:
    """One unary RPC of a public service and the HTTP rules that expose it."""

    service: str
    method: MethodDescriptor
    rules: tuple[HttpRule, ...]

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"


@dataclass
class Catalog:
    """Descriptors of every contract plus what the generated descriptors do not expose."""

    pool: descriptor_pool.DescriptorPool
    methods: list[RpcMethod]
    # Full name (message, field, enum, "Enum.VALUE", service, "Service.Method") -> comment.
    comments: dict[str, str] = field(default_factory=dict)
    # Field full name -> its google.api.field_behavior value names (REQUIRED, OUTPUT_ONLY, ...).
    behaviors: dict[str, frozenset[str]] = field(default_factory=dict)
    _classes: dict[str, type[Message]] = field(default_factory=dict)
    _names: dict[str, dict[str, FieldDescriptor]] = field(default_factory=dict)

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        """The (cached) Python class for a message type of this pool."""
        cls = self._classes.get(descriptor.full_name)
        if cls is None:
            cls = self._classes[descriptor.full_name] = message_factory.GetMessageClass(descriptor)
        return cls

    def field_named(self, descriptor: Descriptor, name: str) -> FieldDescriptor | None:
        """A field by its proto name or its JSON (lowerCamelCase) name; JSON accepts both."""
        names = self._names.get(descriptor.full_name)
        if names is None:
            names = {}
            for fd in descriptor.fields:
                names[fd.json_name] = fd
                names[fd.name] = fd
            self._names[descriptor.full_name] = names
        return names.get(name)

    def comment(self, full_name: str) -> str:
        return self.comments.get(full_name, "")

    def is_required(self, fd: FieldDescriptor) -> bool:
        return "REQUIRED" in self.behaviors.get(fd.full_name, frozenset())

    def is_output_only(self, fd: FieldDescriptor) -> bool:
        return "OUTPUT_ONLY" in self.behaviors.get(fd.full_name, frozenset())

    def enum_value_comment(self, enum: EnumDescriptor, value_name: str) -> str:
        return self.comments.get(f"{enum.full_name}.{value_name}", "")


def message_of(fd: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    if fd.message_type is None:
        raise TypeError(f"{fd.full_name} is not a message field")
    return fd.message_type


def enum_of(fd: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    if fd.enum_type is None:
        raise TypeError(f"{fd.full_name} is not an enum field")
    return fd.enum_type


def is_map(fd: FieldDescriptor) -> bool:
    """Whether the field is a map (a repeated synthetic *Entry message)."""
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


# Well-known types whose proto3 JSON is a string (an RFC 3339 instant, "1.5s", "a,b").
STRING_WKT = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})
# 64-bit integer kinds: a decimal string in proto3 JSON.
INT64_KINDS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def has_enum_value_options(descriptor: Descriptor) -> bool:
    """Whether an enum field's values carry options (e.g. a JSON name) that only json_format
    reads: the compiled JSON plans leave such messages to it."""
    return any(
        fd.type == FieldDescriptor.TYPE_ENUM and any(v.has_options for v in enum_of(fd).values)
        for fd in descriptor.fields
    )


def load_catalog(files: descriptor_pb2.FileDescriptorSet, services: Sequence[str]) -> Catalog:
    """Build the pool from a FileDescriptorSet and collect the named services' HTTP rules."""
    pool = descriptor_pool.DescriptorPool()
    for file in _dependency_order(files.file):
        pool.Add(file)
    options = _OptionReader(pool)
    catalog = Catalog(pool=pool, methods=[])
    for file in files.file:
        _collect_comments(file, catalog.comments)
        _collect_behaviors(file, options, catalog.behaviors)
    wanted = set(services)
    for file in files.file:
        for service in file.service:
            full = f"{file.package}.{service.name}" if file.package else service.name
            if full not in wanted:
                continue
            descriptor = pool.FindServiceByName(full)
            for proto in service.method:
                if proto.client_streaming or proto.server_streaming:
                    continue  # REST has no streaming mapping here; unary only.
                rules = options.http_rules(proto.options)
                if rules:
                    catalog.methods.append(RpcMethod(full, descriptor.methods_by_name[proto.name], rules))
    return catalog


class _OptionReader:
    """Reads google.api options with the pool's own option classes and extension descriptors."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._method_options = _class_or_none(pool, "google.protobuf.MethodOptions")
        self._field_options = _class_or_none(pool, "google.protobuf.FieldOptions")
        self._http = _extension_or_none(pool, "google.api.http")
        self._behavior = _extension_or_none(pool, "google.api.field_behavior")

    def http_rules(self, options: descriptor_pb2.MethodOptions) -> tuple[HttpRule, ...]:
        if self._method_options is None or self._http is None:
            return ()
        parsed = self._method_options.FromString(options.SerializeToString())
        if not parsed.HasExtension(self._http):
            return ()
        rule = json_format.MessageToDict(parsed.Extensions[self._http], preserving_proto_field_name=True)
        # additional_bindings may not nest further (http.proto), so one level is all there is.
        return (_rule(rule), *(_rule(extra) for extra in rule.get("additional_bindings", ())))

    def behaviors(self, options: descriptor_pb2.FieldOptions) -> frozenset[str]:
        if self._field_options is None or self._behavior is None:
            return frozenset()
        parsed = self._field_options.FromString(options.SerializeToString())
        names: dict[int, str] = {v.number: v.name for v in self._behavior.enum_type.values}
        return frozenset(names.get(number, str(number)) for number in parsed.Extensions[self._behavior])


def _class_or_none(pool: descriptor_pool.DescriptorPool, name: str) -> type[Message] | None:
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        return None


def _extension_or_none(pool: descriptor_pool.DescriptorPool, name: str) -> Any:
    # Any: the stubs type extension handles for generated code, not for a pool's own descriptors.
    try:
        return pool.FindExtensionByName(name)
    except KeyError:
        return None  # the contracts use no google.api annotations: no routes, no behaviours


def _rule(rule: dict[str, Any]) -> HttpRule:
    body = str(rule.get("body", ""))
    response_body = str(rule.get("response_body", ""))
    for method in _HTTP_METHODS:
        if method in rule:
            return HttpRule(method.upper(), str(rule[method]), body, response_body)
    custom = rule.get("custom")
    if isinstance(custom, dict):
        return HttpRule(str(custom.get("kind", "")).upper(), str(custom.get("path", "")), body, response_body)
    raise ValueError(f"http rule without a pattern: {rule}")


def _dependency_order(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> list[descriptor_pb2.FileDescriptorProto]:
    by_name = {f.name: f for f in files}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for dep in by_name[name].dependency:
            visit(dep)
        ordered.append(by_name[name])

    for name in by_name:
        visit(name)
    return ordered


def _clean(comment: str) -> str:
    """A proto comment as Markdown: wrapped lines rejoined, paragraphs and list items kept."""
    text = ""
    for raw in comment.strip("\n").split("\n"):
        line = raw[1:] if raw.startswith(" ") else raw
        if not line.strip():
            text = text.rstrip(" ") + "\n\n"
        elif not text or text.endswith("\n"):
            text += line
        elif _LIST_ITEM.match(line) or line.startswith(" "):
            text += "\n" + line
        else:
            text += " " + line.strip()
    return text.strip()


def _collect_comments(file: descriptor_pb2.FileDescriptorProto, out: dict[str, str]) -> None:
    by_path = {
        tuple(loc.path): _clean(loc.leading_comments)
        for loc in file.source_code_info.location
        if loc.leading_comments.strip()
    }
    prefix = f"{file.package}." if file.package else ""

    def enum(proto: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}{proto.name}"
        if path in by_path:
            out[full] = by_path[path]
        for i, value in enumerate(proto.value):
            text = by_path.get((*path, _ENUM_VALUE, i))
            if text:
                out[f"{full}.{value.name}"] = text

    def message(proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}{proto.name}"
        if path in by_path:
            out[full] = by_path[path]
        for i, fd in enumerate(proto.field):
            text = by_path.get((*path, _MESSAGE_FIELD, i))
            if text:
                out[f"{full}.{fd.name}"] = text
        for i, nested in enumerate(proto.nested_type):
            message(nested, (*path, _MESSAGE_NESTED, i), f"{full}.")
        for i, nested_enum in enumerate(proto.enum_type):
            enum(nested_enum, (*path, _MESSAGE_ENUM, i), f"{full}.")

    for i, msg in enumerate(file.message_type):
        message(msg, (_FILE_MESSAGE, i), prefix)
    for i, top_enum in enumerate(file.enum_type):
        enum(top_enum, (_FILE_ENUM, i), prefix)
    for i, service in enumerate(file.service):
        full = f"{prefix}{service.name}"
        if (_FILE_SERVICE, i) in by_path:
            out[full] = by_path[(_FILE_SERVICE, i)]
        for j, method in enumerate(service.method):
            text = by_path.get((_FILE_SERVICE, i, _SERVICE_METHOD, j))
            if text:
                out[f"{full}.{method.name}"] = text


def _collect_behaviors(
    file: descriptor_pb2.FileDescriptorProto, options: _OptionReader, out: dict[str, frozenset[str]]
) -> None:
    def message(proto: descriptor_pb2.DescriptorProto, scope: str) -> None:
        full = f"{scope}{proto.name}"
        for fd in proto.field:
            if fd.HasField("options"):
                values = options.behaviors(fd.options)
                if values:
                    out[f"{full}.{fd.name}"] = values
        for nested in proto.nested_type:
            message(nested, f"{full}.")

    prefix = f"{file.package}." if file.package else ""
    for msg in file.message_type:
        message(msg, prefix)
