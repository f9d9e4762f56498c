"""Which RPCs the audit trail treats as reads: exactly those marked NO_SIDE_EFFECTS in the protos.

The audit interceptor records every call of a method *without* the mark, so a read left unmarked
floods the trail and a write marked by mistake goes unrecorded. The names tell which is which.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from accrue.contracts import descriptor_set

READ_PREFIXES = ("Get", "List", "Summarize", "Resolve", "Convert", "Compare", "Verify")
# Named like a read, but each changes state: resolving a billing exception bills, writes off
# or retries the work.
WRITES_NAMED_LIKE_READS = {"accrue.billing.v1.BillingService/ResolveBillingException"}
NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def _methods() -> dict[str, descriptor_pb2.MethodDescriptorProto]:
    found = {}
    for file in descriptor_set().file:
        if not file.package.startswith("accrue."):
            continue
        for service in file.service:
            for method in service.method:
                found[f"{file.package}.{service.name}/{method.name}"] = method
    return found


def test_every_read_is_marked_and_nothing_else() -> None:
    methods = _methods()
    assert len(methods) > 100  # every service's contract is in the descriptor set
    expected = {
        name
        for name in methods
        if name.rpartition("/")[2].startswith(READ_PREFIXES) and name not in WRITES_NAMED_LIKE_READS
    }
    marked = {name for name, m in methods.items() if m.options.idempotency_level == NO_SIDE_EFFECTS}
    assert sorted(expected - marked) == [], "reads not marked NO_SIDE_EFFECTS"
    assert sorted(marked - expected) == [], "marked NO_SIDE_EFFECTS but named like a write"


def test_the_writes_named_like_reads_exist_and_are_audited() -> None:
    methods = _methods()
    for name in WRITES_NAMED_LIKE_READS:
        assert methods[name].options.idempotency_level != NO_SIDE_EFFECTS
