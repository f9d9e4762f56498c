"""The access policy (policy.toml next to this file): role x operation, plus named resource rules.

Loaded once; both the services (which enforce it on every call) and the gateway (which prints
each operation's roles in the OpenAPI document) read this same table. A rule named here is a
sentence for the reader; the code that enforces it lives in the use case that owns the data, and
each rule's tests name it.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from accrue.runtime.errors import PermissionDenied
from accrue.runtime.identity import Principal

__all__ = ["Entry", "Policy", "load_policy"]


@dataclass(frozen=True)
class Entry:
    """Who may call one operation."""

    operation: str  # "accrue.billing.v1.BillingService/PostInvoice"
    roles: frozenset[str]
    rule: str | None = None


@dataclass(frozen=True)
class Policy:
    roles: Mapping[str, str]  # role -> what it is for
    rules: Mapping[str, str]  # rule -> the sentence it enforces
    entries: Mapping[str, Entry]  # operation -> entry

    def entry(self, operation: str) -> Entry | None:
        return self.entries.get(operation)

    def check(self, operation: str, principal: Principal) -> Entry:
        """The entry for operation if principal may call it; PERMISSION_DENIED naming it if not."""
        entry = self.entries.get(operation)
        if entry is None:
            # Fail closed: an operation nobody wrote a policy for is nobody's.
            raise PermissionDenied(
                f"{operation} has no entry in the access policy; nobody may call it",
                reason="NO_POLICY",
            )
        if not principal.has_any(entry.roles):
            needed = ", ".join(sorted(entry.roles))
            raise PermissionDenied(
                f"permission {operation} needs one of the roles: {needed}",
                reason="MISSING_ROLE",
            )
        return entry


def parse_policy(text: str) -> Policy:
    data = tomllib.loads(text)
    roles = dict(data["roles"])
    rules = dict(data["rules"])
    entries: dict[str, Entry] = {}
    for service, operations in data["operations"].items():
        for method, spec in operations.items():
            unknown_roles = set(spec["roles"]) - set(roles)
            if unknown_roles:
                raise ValueError(f"{service}/{method}: unknown roles {sorted(unknown_roles)}")
            rule = spec.get("rule")
            if rule is not None and rule not in rules:
                raise ValueError(f"{service}/{method}: unknown rule {rule!r}")
            name = f"{service}/{method}"
            entries[name] = Entry(name, frozenset(spec["roles"]), rule)
    return Policy(roles, rules, entries)


@functools.cache
def load_policy() -> Policy:
    """The policy shipped with Accrue."""
    return parse_policy(resources.files("accrue.identity").joinpath("policy.toml").read_text("utf-8"))
