"""HTTP request to proto request and proto response to JSON, for one google.api.http binding.

The request is assembled as one proto3-JSON dict (body, then query parameters, then path
variables, which win) and parsed in a single pass (parsing.py: a compiled plan, json_format's
reading), so the fast path costs one walk of the body. Only when that parse fails does a second
walk find the exact field to name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from accrue.services.gateway.catalog import Catalog, HttpRule, RpcMethod, is_map, message_of
from accrue.services.gateway.jsonchecks import INTEGER_TEXT, JsonChecker, clean_parse_error, scalar_problem
from accrue.services.gateway.parsing import JsonParser
from accrue.services.gateway.problems import FieldViolation, Problem, bad_request
from accrue.services.gateway.rendering import JsonRenderer
from accrue.services.gateway.routing import PathTemplate, parse_template

F = FieldDescriptor
# Well-known types whose proto3 JSON form is a single scalar, so a query parameter can carry one.
_SCALAR_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.BoolValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.FloatValue",
        "google.protobuf.DoubleValue",
    }
)
_MAX_QUERY_FIELDS = 1000


class BindingError(ValueError):
    """An http rule that cannot be served (bad field path, body on a path field, ...)."""


@dataclass(frozen=True, eq=False)
class Binding:
    """One HTTP method and path template bound to one RPC, with its field paths resolved."""

    rpc: RpcMethod
    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    request_cls: type[Message]
    response_cls: type[Message]
    body_chain: tuple[FieldDescriptor, ...]
    response_chain: tuple[FieldDescriptor, ...]
    path_chains: Mapping[str, tuple[FieldDescriptor, ...]]

    @property
    def request_descriptor(self) -> Descriptor:
        return self.rpc.method.input_type

    @property
    def service(self) -> str:
        return self.rpc.service

    @property
    def route(self) -> str:
        """The template as written: the bounded-cardinality label for metrics and spans."""
        return self.template.source


def compile_binding(catalog: Catalog, rpc: RpcMethod, rule: HttpRule) -> Binding:
    """Resolve one http rule against its RPC's descriptors; raise BindingError if it is unusable."""
    method, path = rule.method, rule.path
    if not method or not path:
        raise BindingError(f"{rpc.grpc_path}: http rule without a method or path")
    where = f"{rpc.grpc_path} ({method} {path})"
    template = parse_template(path)
    request = rpc.method.input_type
    body_chain = _chain(request, rule.body, where) if rule.body not in ("", "*") else ()
    response_chain = _chain(rpc.method.output_type, rule.response_body, where) if rule.response_body else ()
    path_chains: dict[str, tuple[FieldDescriptor, ...]] = {}
    for var in template.variables:
        chain = _chain(request, var.field_path, where)
        leaf = chain[-1]
        if leaf.is_repeated or (
            leaf.type == F.TYPE_MESSAGE and message_of(leaf).full_name not in _SCALAR_WKT
        ):
            raise BindingError(f"{where}: path variable {var.field_path} must be a singular scalar")
        if body_chain and chain[: len(body_chain)] == body_chain:
            raise BindingError(f"{where}: {var.field_path} is in the path and in the body")
        path_chains[var.field_path] = chain
    return Binding(
        rpc=rpc,
        http_method=method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        request_cls=catalog.message_class(request),
        response_cls=catalog.message_class(rpc.method.output_type),
        body_chain=body_chain,
        response_chain=response_chain,
        path_chains=path_chains,
    )


def _chain(root: Descriptor, dotted: str, where: str) -> tuple[FieldDescriptor, ...]:
    chain: list[FieldDescriptor] = []
    descriptor: Descriptor | None = root
    for name in dotted.split("."):
        if descriptor is None:
            raise BindingError(f"{where}: {dotted} goes through a non-message field")
        fd = descriptor.fields_by_name.get(name)
        if fd is None:
            raise BindingError(f"{where}: {descriptor.full_name} has no field {name!r}")
        if chain and chain[-1].is_repeated:
            raise BindingError(f"{where}: {dotted} goes through a repeated field")
        chain.append(fd)
        descriptor = fd.message_type
    return tuple(chain)


class Transcoder:
    """Builds requests and renders responses for bindings of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._checks = JsonChecker(catalog)
        # Absent scalars print as their zero value ("" for strings) so clients see every field.
        self._render = JsonRenderer()
        self._parse = JsonParser()

    # -- request -------------------------------------------------------------------------------

    def request(self, binding: Binding, path_params: Mapping[str, str], query: str, body: bytes) -> Message:
        """The RPC request for an HTTP request, or a 400 Problem naming what was wrong."""
        data: dict[str, Any] = {}
        payload: Any = None
        if binding.body:
            payload = self._parse_json(body) if body.strip() else None
        if binding.body == "*":
            if payload is None:
                payload = {}
            if not isinstance(payload, dict):
                raise bad_request("The request body must be a JSON object.", "INVALID_JSON_BODY")
            data = payload
        elif binding.body and payload is not None:
            _check_body_shape(binding.body_chain[-1], payload)
            self._place(data, binding.body_chain, payload, replace=True)
        if query:
            self._apply_query(binding, data, query)
        for field_path, raw in path_params.items():
            chain = binding.path_chains[field_path]
            value = self._text_value(chain[-1], raw, field_path, "INVALID_PATH_PARAMETER", "path parameter")
            self._place(data, chain, value, replace=True)
        message = binding.request_cls()
        try:
            self._parse.parse(data, message)
        except json_format.ParseError as err:
            raise self._explain(binding, payload, err) from None
        except RecursionError:
            raise bad_request("The request body is nested too deeply.", "INVALID_JSON_BODY") from None
        return message

    @staticmethod
    def _parse_json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except json.JSONDecodeError as err:
            raise bad_request(
                f"The request body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}).",
                "MALFORMED_JSON",
            ) from None
        except (UnicodeDecodeError, RecursionError):
            raise bad_request("The request body is not valid JSON text.", "MALFORMED_JSON") from None

    def _child(self, data: dict[str, Any], fd: FieldDescriptor) -> dict[str, Any]:
        for key in (fd.name, fd.json_name):
            if key in data:
                child = data[key]
                if not isinstance(child, dict):
                    raise bad_request(f"{fd.json_name} must be a JSON object.", "INVALID_JSON_BODY")
                return child
        created: dict[str, Any] = {}
        data[fd.name] = created
        return created

    def _place(
        self, data: dict[str, Any], chain: Sequence[FieldDescriptor], value: Any, *, replace: bool
    ) -> None:
        for fd in chain[:-1]:
            data = self._child(data, fd)
        leaf = chain[-1]
        if replace:
            # The other spelling may be in a `body: "*"` payload; the path value wins, once.
            data.pop(leaf.json_name, None)
            data[leaf.name] = value
        elif leaf.is_repeated:
            data.setdefault(leaf.name, []).append(value)
        else:
            data[leaf.name] = value

    def _apply_query(self, binding: Binding, data: dict[str, Any], query: str) -> None:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
        except ValueError:
            raise bad_request(
                f"More than {_MAX_QUERY_FIELDS} query parameters.", "INVALID_QUERY_PARAMETER"
            ) from None
        seen: set[str] = set()
        for name, raw in pairs:
            chain = self._query_chain(binding, name)
            leaf = chain[-1]
            if not raw and leaf.type not in (F.TYPE_STRING, F.TYPE_BYTES):
                continue  # `?status=` from a form left blank means "no filter", not a bad value
            key = ".".join(fd.name for fd in chain)
            if key in seen and not leaf.is_repeated:
                raise _query_problem(name, "REPEATED_PARAMETER", f"{name} is not a list; give it once.")
            seen.add(key)
            value = self._text_value(leaf, raw, name, "INVALID_QUERY_PARAMETER", "query parameter")
            self._place(data, chain, value, replace=False)

    def _query_chain(self, binding: Binding, name: str) -> tuple[FieldDescriptor, ...]:
        unknown = _query_problem(name, "UNKNOWN_PARAMETER", f"{name} is not a parameter of this operation.")
        if binding.body == "*":
            raise unknown  # every field not in the path comes from the body
        chain: list[FieldDescriptor] = []
        descriptor: Descriptor | None = binding.request_descriptor
        for part in name.split("."):
            fd = self._catalog.field_named(descriptor, part) if descriptor is not None else None
            if fd is None or (chain and chain[-1].is_repeated):
                raise unknown
            chain.append(fd)
            descriptor = fd.message_type if fd.type == F.TYPE_MESSAGE else None
        as_tuple = tuple(chain)
        if binding.body_chain and as_tuple[: len(binding.body_chain)] == binding.body_chain:
            raise _query_problem(name, "UNKNOWN_PARAMETER", f"{name} is sent in the request body.")
        if any(as_tuple[: len(path)] == path for path in binding.path_chains.values()):
            raise _query_problem(name, "UNKNOWN_PARAMETER", f"{name} is set by the path.")
        leaf = chain[-1]
        if is_map(leaf):
            raise _query_problem(name, "UNSUPPORTED_PARAMETER", f"{name} is a map; send it in a body.")
        if leaf.type == F.TYPE_MESSAGE and message_of(leaf).full_name not in _SCALAR_WKT:
            raise _query_problem(
                name, "UNKNOWN_PARAMETER", f"{name} is an object; set its fields as {name}.<field>."
            )
        return as_tuple

    def _text_value(self, fd: FieldDescriptor, raw: str, name: str, reason: str, what: str) -> Any:
        """A path or query string as the proto3 JSON value of its field, checked."""
        kind = message_of(fd).full_name if fd.type == F.TYPE_MESSAGE else ""
        value: Any = raw
        if fd.type == F.TYPE_BOOL or kind == "google.protobuf.BoolValue":
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise _param_problem(name, reason, what, "expected true or false.")
            value = lowered in ("true", "1")
        elif fd.type == F.TYPE_ENUM and INTEGER_TEXT.match(raw):
            value = int(raw)
        problem = self._checks.wkt_problem(message_of(fd), value) if kind else scalar_problem(fd, value)
        if problem:
            raise _param_problem(name, reason, what, problem)
        return value

    # -- finding the field a failed parse was about ------------------------------------------

    def _explain(self, binding: Binding, payload: Any, err: json_format.ParseError) -> Problem:
        violation: FieldViolation | None = None
        if binding.body == "*":
            violation = self._checks.check_message(binding.request_descriptor, payload, "")
        elif binding.body and payload is not None:
            violation = self._checks.check_value(binding.body_chain[-1], payload, "", in_list=False)
        if violation is None:
            return bad_request(
                f"The request does not match the operation: {clean_parse_error(str(err))}",
                "INVALID_JSON_BODY",
            )
        return bad_request(
            f"{violation.field or 'The body'}: {violation.message}", "INVALID_JSON_BODY", [violation]
        )

    # -- response ------------------------------------------------------------------------------

    def response(self, binding: Binding, message: Message) -> bytes:
        """The JSON body of a successful reply: the whole response or its response_body field."""
        result: Any
        if not binding.response_chain:
            result = self._render.message(message)
        else:
            target: Any = message
            for fd in binding.response_chain[:-1]:
                target = getattr(target, fd.name)
            leaf = binding.response_chain[-1]
            absent = leaf.has_presence and leaf.type != F.TYPE_MESSAGE and not target.HasField(leaf.name)
            result = None if absent else self._render.field(leaf, getattr(target, leaf.name))
        return json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()


def _check_body_shape(target: FieldDescriptor, payload: Any) -> None:
    """A body that is one field must at least be the right kind of JSON value."""
    if target.is_repeated and not isinstance(payload, list):
        raise bad_request("The request body must be a JSON array.", "INVALID_JSON_BODY")
    if target.type == F.TYPE_MESSAGE and not target.is_repeated:
        well_known = message_of(target).full_name.startswith("google.protobuf.")
        if not well_known and not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object.", "INVALID_JSON_BODY")


def _query_problem(name: str, code: str, message: str) -> Problem:
    reason = "UNKNOWN_QUERY_PARAMETER" if code == "UNKNOWN_PARAMETER" else "INVALID_QUERY_PARAMETER"
    return bad_request(message, reason, [FieldViolation(name, code, message)])


def _param_problem(name: str, reason: str, what: str, message: str) -> Problem:
    return bad_request(
        f"Invalid {what} {name}: {message}", reason, [FieldViolation(name, "INVALID_VALUE", message)]
    )
