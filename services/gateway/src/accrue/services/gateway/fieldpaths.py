"""Field paths between the two spellings: proto paths from backends, JSON paths for clients.

Backends name fields as proto paths (`time_entry.hours`, `time_entries[3].hours`); a client sent
lowerCamelCase JSON, possibly as the body of one field of the request, and must see the path in
its own terms (`hours`, `timeEntries[3].hours`).
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from accrue.services.gateway.catalog import Catalog, is_map


def json_name(proto_name: str) -> str:
    """protoc's json_name rule: drop each '_' and upper-case the letter after it."""
    out: list[str] = []
    upper = False
    for ch in proto_name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def split_path(path: str) -> list[tuple[str, str]]:
    """`a.b[0].c["k.x"]` -> [("a", ""), ("b", "[0]"), ("c", '["k.x"]')]: names with their index suffix."""
    segments: list[tuple[str, str]] = []
    name, suffix, depth = "", "", 0
    for ch in path:
        if ch == "[":
            depth += 1
        if depth:
            suffix += ch
            if ch == "]":
                depth -= 1
        elif ch == ".":
            segments.append((name, suffix))
            name, suffix = "", ""
        else:
            name += ch
    if name or suffix:
        segments.append((name, suffix))
    return segments


def _step(fd: FieldDescriptor, indexed: bool) -> Descriptor | None:
    if fd.message_type is None:
        return None
    if is_map(fd):
        value = fd.message_type.fields_by_name["value"]
        return value.message_type if indexed else None
    return fd.message_type


def to_json_path(catalog: Catalog, root: Descriptor | None, segments: Sequence[tuple[str, str]]) -> str:
    """Each known segment to its JSON name; unknown ones by the json_name rule."""
    out: list[str] = []
    descriptor = root
    for name, suffix in segments:
        fd = catalog.field_named(descriptor, name) if descriptor is not None else None
        if fd is None:
            out.append(json_name(name) + suffix)
            descriptor = None
        else:
            out.append(fd.json_name + suffix)
            descriptor = _step(fd, bool(suffix))
    return ".".join(out)


def client_field_path(
    catalog: Catalog, request: Descriptor, body_chain: Sequence[FieldDescriptor], backend_path: str
) -> str:
    """A backend's violation path as the client sees it.

    When the body is one field of the request (`body: "time_entry"`) the client sent that
    message whole, so its prefix is stripped. A path a backend wrote relative to that message
    already (`hours`) is resolved there when the request itself has no such field.
    """
    segments = split_path(backend_path)
    if body_chain:
        names = [fd.name for fd in body_chain]
        head = [name for name, _ in segments[: len(names)]]
        body_root = body_chain[-1].message_type
        if head == names and not any(suffix for _, suffix in segments[: len(names)]):
            return to_json_path(catalog, body_root, segments[len(names) :])
        first = segments[0][0] if segments else ""
        unknown_on_request = catalog.field_named(request, first) is None
        if unknown_on_request and body_root is not None and catalog.field_named(body_root, first) is not None:
            return to_json_path(catalog, body_root, segments)
    return to_json_path(catalog, request, segments)
