"""The OpenAPI 3.1 document, generated from the same descriptors and bindings the router serves.

Schemas follow the proto3 JSON mapping the gateway speaks: lowerCamelCase names, 64-bit
integers as strings, Timestamp as an RFC 3339 string, enums by name. Descriptions come from the
proto comments; google.api.field_behavior gives `readOnly` (OUTPUT_ONLY) and `required`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from accrue.identity.policy import Policy
from accrue.services.gateway.catalog import Catalog, enum_of, is_map, message_of
from accrue.services.gateway.endpoint import WRITE_METHODS
from accrue.services.gateway.problems import PROBLEM_JSON
from accrue.services.gateway.transcoding import Binding

F = FieldDescriptor
Schema = dict[str, Any]
_REF = "#/components/schemas/"
_MAX_QUERY_DEPTH = 3
_OPENAPI_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"})

_SCALARS: dict[int, Schema] = {
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    F.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    # proto3 JSON writes 64-bit integers as strings (JavaScript numbers cannot hold them).
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$", "examples": ["3.5s"]},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths.",
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
}
_REQUEST_ID_HEADER: Schema = {
    "description": "The request's id: the caller's X-Request-Id when it was usable, else a new UUID.",
    "schema": {"type": "string"},
}


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[: end + 1]


class _Schemas:
    """components.schemas, filled with every message and enum an operation reaches."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.components: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor) -> Schema:
        known = _WELL_KNOWN.get(descriptor.full_name)
        if known is not None:
            return dict(known)
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder first: messages may refer to themselves
            self.components[name] = self.object_schema(descriptor)
        return {"$ref": _REF + name}

    def enum(self, descriptor: EnumDescriptor) -> Schema:
        if descriptor.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        name = descriptor.full_name
        if name not in self.components:
            lines = [self.catalog.comment(name)]
            for value in descriptor.values:
                comment = self.catalog.enum_value_comment(descriptor, value.name)
                lines.append(f"- `{value.name}`: {comment}" if comment else f"- `{value.name}`")
            self.components[name] = {
                "type": "string",
                "enum": [value.name for value in descriptor.values],
                "description": "\n".join(line for line in lines if line),
            }
        return {"$ref": _REF + name}

    def object_schema(self, descriptor: Descriptor, exclude: Iterable[str] = ()) -> Schema:
        skipped = set(exclude)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for fd in descriptor.fields:
            if fd.name in skipped:
                continue
            properties[fd.json_name] = self.field(fd)
            if self.catalog.is_required(fd) and not self.catalog.is_output_only(fd):
                required.append(fd.json_name)
        schema: Schema = {"type": "object", "properties": properties}
        comment = self.catalog.comment(descriptor.full_name)
        if comment:
            schema["description"] = comment
        if required:
            schema["required"] = required
        return schema

    def value(self, fd: FieldDescriptor) -> Schema:
        """The schema of one value of the field (an element, for repeated fields)."""
        if fd.type == F.TYPE_MESSAGE:
            return self.message(message_of(fd))
        if fd.type == F.TYPE_ENUM:
            return self.enum(enum_of(fd))
        return dict(_SCALARS[fd.type])

    def field(self, fd: FieldDescriptor, *, describe: bool = True) -> Schema:
        if is_map(fd):
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.value(message_of(fd).fields_by_name["value"]),
            }
        elif fd.is_repeated:
            schema = {"type": "array", "items": self.value(fd)}
        else:
            schema = self.value(fd)
        comment = self.catalog.comment(fd.full_name)
        if describe and comment:
            schema["description"] = comment
        if self.catalog.is_output_only(fd):
            schema["readOnly"] = True
        return schema


def build_openapi(
    catalog: Catalog,
    bindings: Sequence[Binding],
    *,
    title: str,
    version: str,
    policy: Policy,
    discovery_url: str,
) -> dict[str, Any]:
    """The whole document; deterministic for a given catalog and policy."""
    schemas = _Schemas(catalog)
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for binding in bindings:
        if binding.http_method not in _OPENAPI_METHODS:
            continue  # custom HTTP verbs have no OpenAPI spelling
        operation = _operation(schemas, binding, used_ids)
        _secure(operation, policy, binding)
        paths.setdefault(binding.template.openapi_path, {})[binding.http_method.lower()] = operation
    schemas.components["Problem"] = _problem_schema()
    schemas.components["ProblemViolation"] = _violation_schema()
    tags = sorted({b.service for b in bindings})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "REST/JSON over the Accrue gRPC services, generated from their protobuf contracts. "
                "JSON follows the proto3 mapping: lowerCamelCase names out, both spellings in; money, "
                "rates and hours are decimal strings. Errors are RFC 9457 problem details. Writes accept "
                "an Idempotency-Key header."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": tag.rsplit(".", 1)[-1], "description": catalog.comment(tag)} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Problem": {
                    "description": "An error, as RFC 9457 problem details.",
                    "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
                    "content": {PROBLEM_JSON: {"schema": {"$ref": _REF + "Problem"}}},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from the OIDC provider (`accrue token` locally).",
                },
                "oidc": {"type": "openIdConnect", "openIdConnectUrl": discovery_url},
            },
        },
        "security": [{"bearer": []}, {"oidc": []}],
    }


def _secure(operation: dict[str, Any], policy: Policy, binding: Binding) -> None:
    """Each operation's security and the roles the access policy lets call it."""
    entry = policy.entry(binding.rpc.grpc_path.lstrip("/"))
    roles = sorted(entry.roles) if entry is not None else []
    operation["security"] = [{"bearer": []}, {"oidc": roles}]
    operation["x-accrue-operation"] = binding.rpc.grpc_path.lstrip("/")
    operation["x-accrue-roles"] = roles
    if entry is not None and entry.rule is not None:
        operation["x-accrue-rule"] = policy.rules[entry.rule]
    line = f"**Roles:** {', '.join(roles) if roles else 'none (no policy entry)'}."
    if entry is not None and entry.rule is not None:
        line += f" {policy.rules[entry.rule]}"
    operation["description"] = f"{operation.get('description', '')}\n\n{line}".strip()


def _operation(schemas: _Schemas, binding: Binding, used_ids: set[str]) -> dict[str, Any]:
    catalog = schemas.catalog
    rpc = binding.rpc
    service_name = rpc.service.rsplit(".", 1)[-1]
    operation_id = rpc.method.name
    if operation_id in used_ids:
        operation_id = f"{service_name}_{rpc.method.name}"
    suffix = 2
    base = operation_id
    while operation_id in used_ids:
        operation_id, suffix = f"{base}_{suffix}", suffix + 1
    used_ids.add(operation_id)
    comment = catalog.comment(f"{rpc.service}.{rpc.method.name}")
    operation: dict[str, Any] = {"operationId": operation_id, "tags": [service_name]}
    if comment:
        operation["summary"] = _first_sentence(comment)
        operation["description"] = comment
    parameters = _path_parameters(schemas, binding)
    if binding.body != "*":
        parameters += _query_parameters(schemas, binding)
    if binding.http_method in WRITE_METHODS:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A write repeated with the same key and body gives the same result, once.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    parameters.append({"name": "X-Request-Id", "in": "header", "required": False, **_REQUEST_ID_HEADER})
    operation["parameters"] = parameters
    if binding.body:
        operation["requestBody"] = _request_body(schemas, binding)
    response_schema = (
        schemas.field(binding.response_chain[-1], describe=False)
        if binding.response_chain
        else schemas.message(rpc.method.output_type)
    )
    operation["responses"] = {
        "200": {
            "description": _first_sentence(catalog.comment(rpc.method.output_type.full_name)) or "OK",
            "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
            "content": {"application/json": {"schema": response_schema}},
        },
        "4XX": {"$ref": "#/components/responses/Problem"},
        "5XX": {"$ref": "#/components/responses/Problem"},
    }
    return operation


def _path_parameters(schemas: _Schemas, binding: Binding) -> list[dict[str, Any]]:
    parameters = []
    for field_path, chain in binding.path_chains.items():
        leaf = chain[-1]
        parameter: dict[str, Any] = {
            "name": field_path,
            "in": "path",
            "required": True,
            "schema": schemas.field(leaf, describe=False),
        }
        comment = schemas.catalog.comment(leaf.full_name)
        if comment:
            parameter["description"] = comment
        parameters.append(parameter)
    return parameters


def _query_parameters(schemas: _Schemas, binding: Binding) -> list[dict[str, Any]]:
    catalog = schemas.catalog
    excluded = {tuple(fd.full_name for fd in chain) for chain in binding.path_chains.values()}
    if binding.body_chain:
        excluded.add(tuple(fd.full_name for fd in binding.body_chain))
    parameters: list[dict[str, Any]] = []

    def walk(
        descriptor: Descriptor, prefix: str, trail: tuple[str, ...], required: bool, seen: frozenset[str]
    ) -> None:
        for fd in descriptor.fields:
            here = (*trail, fd.full_name)
            if here in excluded:
                continue
            name = f"{prefix}{fd.json_name}"
            leaf_required = required and catalog.is_required(fd)
            if is_map(fd) or catalog.is_output_only(fd):
                continue
            nested = message_of(fd) if fd.type == F.TYPE_MESSAGE else None
            if nested is not None and nested.full_name not in _WELL_KNOWN:
                if fd.is_repeated or nested.full_name in seen or len(here) >= _MAX_QUERY_DEPTH:
                    continue  # not expressible as flat query parameters
                walk(nested, f"{name}.", here, leaf_required, seen | {nested.full_name})
                continue
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": leaf_required,
                "schema": schemas.field(fd, describe=False),
            }
            comment = catalog.comment(fd.full_name)
            if comment:
                parameter["description"] = comment
            if fd.is_repeated:
                parameter["style"] = "form"
                parameter["explode"] = True
            parameters.append(parameter)

    request = binding.request_descriptor
    walk(request, "", (), True, frozenset({request.full_name}))
    return parameters


def _request_body(schemas: _Schemas, binding: Binding) -> dict[str, Any]:
    catalog = schemas.catalog
    request = binding.request_descriptor
    if binding.body == "*":
        top_level_path_fields = {chain[0].name for chain in binding.path_chains.values() if len(chain) == 1}
        if top_level_path_fields:
            schema = schemas.object_schema(request, exclude=top_level_path_fields)
        else:
            schema = schemas.message(request)
        required = any(
            catalog.is_required(fd) for fd in request.fields if fd.name not in top_level_path_fields
        )
        description = catalog.comment(request.full_name)
    else:
        leaf = binding.body_chain[-1]
        schema = schemas.field(leaf, describe=False)
        required = catalog.is_required(leaf)
        description = catalog.comment(leaf.full_name)
    body: dict[str, Any] = {"required": required, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def _problem_schema() -> Schema:
    codes = [code.name for code in grpc.StatusCode]
    return {
        "type": "object",
        "description": "RFC 9457 problem details with Accrue's extension members.",
        "required": ["type", "title", "status", "code", "requestId", "violations"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference", "description": 'Always "about:blank".'},
            "title": {"type": "string", "description": "The HTTP status phrase."},
            "status": {"type": "integer", "description": "The HTTP status code."},
            "detail": {"type": "string", "description": "What went wrong, for a person."},
            "instance": {"type": "string", "description": "The request path."},
            "code": {"type": "string", "enum": codes, "description": "The gRPC status code name."},
            "reason": {
                "type": "string",
                "description": "A stable code for the whole error, e.g. IDEMPOTENCY_KEY_REUSED.",
            },
            "requestId": {"type": "string", "description": "The X-Request-Id of the request."},
            "violations": {
                "type": "array",
                "items": {"$ref": _REF + "ProblemViolation"},
                "description": "One entry per field or rule that was not met.",
            },
        },
    }


def _violation_schema() -> Schema:
    return {
        "type": "object",
        "required": ["field", "code", "message"],
        "properties": {
            "field": {
                "type": "string",
                "description": "JSON path of the field in the request; empty for the whole request.",
            },
            "code": {
                "type": "string",
                "description": "A stable, machine-readable code, e.g. PROJECT_NOT_ACTIVE.",
            },
            "message": {"type": "string", "description": "What is wrong, for a person."},
        },
    }
