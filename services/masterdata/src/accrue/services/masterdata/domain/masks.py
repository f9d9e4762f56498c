"""Partial updates: which fields a PATCH changes (AIP-134) and the record that results.

- No mask: every field the patch sets (a non-empty value) is changed; nothing is cleared.
- "*": every writable field takes the patch's value, so a field the patch leaves unset is cleared.
- Named paths: exactly those top-level fields change; a named field the patch leaves unset is
  cleared. Repeated fields (rate-card rates, contract lines, holidays) are replaced as a whole.

A `*_ref` path stands for its id field: the id is cleared and resolved from the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from accrue.runtime.validation import Violations
from accrue.services.masterdata.domain.kinds import SERVER_FIELDS, Kind


def writable_fields(kind: Kind) -> tuple[str, ...]:
    """Top-level fields a client may change (not the server's, not the *_ref inputs)."""
    fixed = set(SERVER_FIELDS) | set(kind.server_managed) | set(kind.all_ref_fields)
    return tuple(f.name for f in kind.message.DESCRIPTOR.fields if f.name not in fixed)


def _is_set(message: Any, field: Any) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return bool(message.HasField(field.name))
    return bool(getattr(message, field.name))


def mask_paths(kind: Kind, patch: Message, paths: Sequence[str], v: Violations) -> list[str]:
    """The fields to change, checked: unknown or read-only paths are violations of update_mask."""
    if not paths:
        names = writable_fields(kind) + kind.all_ref_fields
        fields = kind.message.DESCRIPTOR.fields_by_name
        return [name for name in names if _is_set(patch, fields[name])]
    if list(paths) == ["*"]:
        return [*writable_fields(kind), *(r for r in kind.all_ref_fields if _is_set_ref(patch, r))]
    allowed = set(writable_fields(kind)) | set(kind.all_ref_fields)
    result: list[str] = []
    for path in paths:
        if path == "*":
            v.add("update_mask", "INVALID_FIELD_MASK", '"*" cannot be combined with other paths')
        elif path in SERVER_FIELDS or path in kind.server_managed:
            v.add("update_mask", "INVALID_FIELD_MASK", f"{path} is set by the server and cannot be updated")
        elif path not in allowed:
            v.add(
                "update_mask",
                "INVALID_FIELD_MASK",
                f"{kind.title} has no updatable field {path!r} (nested paths are not supported; "
                "name the top-level field)",
            )
        elif path not in result:
            result.append(path)
    return result


def _is_set_ref(message: Any, ref_field: str) -> bool:
    ref = getattr(message, ref_field)
    return bool(ref.system or ref.id)


def apply_mask(kind: Kind, current: Message, patch: Message, paths: Sequence[str]) -> Message:
    """A copy of current with the named fields taken from patch (see the module docstring)."""
    result = kind.message()
    result.CopyFrom(current)
    ref_to_id = {r.ref_field: r.id_field for r in kind.refs}
    for path in paths:
        result.ClearField(path)
        value = getattr(patch, path)
        field = kind.message.DESCRIPTOR.fields_by_name[path]
        if field.is_repeated:
            getattr(result, path).extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if patch.HasField(path):
                getattr(result, path).CopyFrom(value)
        elif not field.has_presence or patch.HasField(path):
            setattr(result, path, value)
        if path in ref_to_id:
            # The reference is resolved into the id field; a stale id must not win over it.
            result.ClearField(ref_to_id[path])
    return result
