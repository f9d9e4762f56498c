"""The audit chain's shape and what verification says, without a database."""

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from accrue.db.audit import (
    CHAIN_TABLE_NAME,
    AuditSealer,
    BrokenLink,
    ChainHead,
    Unsealed,
    Verification,
    audit_table,
    chain_table_of,
)

AT = dt.datetime(2027, 2, 28, 13, 40, tzinfo=dt.UTC)


def test_the_events_carry_no_link_and_the_chain_table_refuses_forks_and_double_seals() -> None:
    metadata = sa.MetaData(schema="billing")
    events = audit_table(metadata)
    chain = chain_table_of(events)
    assert chain.fullname == f"billing.{CHAIN_TABLE_NAME}"
    assert {"prev_hash", "hash"}.isdisjoint(events.c.keys())  # an append is a plain insert
    assert [c.name for c in chain.primary_key] == ["legal_entity_id", "position"]
    unique = {tuple(c.name for c in i.columns) for i in chain.indexes if i.unique}
    assert unique == {("event_seq",), ("legal_entity_id", "prev_hash")}


def test_a_chain_table_of_another_name_is_found_next_to_its_events() -> None:
    events = audit_table(sa.MetaData(), "trail", "trail_links")
    assert chain_table_of(events).name == "trail_links"


def test_each_broken_link_says_where_and_why() -> None:
    changed = BrokenLink("le-uk", 42, "hash", b"\x01" * 32, b"\x02" * 32, position=7)
    assert str(changed).startswith("legal entity 'le-uk': event seq 42 (link 7): hash is 0202")
    assert "changed after it was sealed" in str(changed)
    gone = BrokenLink("le-uk", 43, "event", position=8, detail="no such event")
    assert str(gone) == (
        "legal entity 'le-uk': event seq 43 (link 8): no such event "
        "(the event it seals is missing or belongs to another legal entity)"
    )
    waiting = BrokenLink(
        "", 44, "unsealed", detail="3 unsealed, the oldest since 2027-02-28T13:40:00.000000Z"
    )
    assert "(link" not in str(waiting)
    assert "is a sealer down" in str(waiting)


def test_unsealed_events_alone_are_not_a_failure_and_are_counted() -> None:
    result = Verification(
        rows=5,
        heads={"le-uk": ChainHead(9, b"h" * 32, 5)},
        broken={},
        unsealed={"le-uk": Unsealed(2, 10, AT), "": Unsealed(1, 11, AT)},
    )
    assert result.ok
    assert result.pending == 3


def test_the_sealers_floor_trails_by_settle_and_its_sweep_reaches_back_to_the_horizon() -> None:
    # The pacing alone (no database): which seqs a round and a sweep may skip as surely sealed.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connects
    sealer = AuditSealer(engine, audit_table(sa.MetaData()), settle=10, horizon=600)
    for second in range(0, 700):
        sealer._advance(float(second), top=second * 100)  # seq grows by 100 a second
        if second == 5:
            assert sealer._floor == 0  # nothing seen 10 s ago yet: every round looks at everything
            assert sealer._seen_before(5.0, 600) == 0  # a sweep looks at the whole table
    assert sealer._floor == 689 * 100  # what was the top 10 s ago
    assert sealer._seen_before(699.0, 600) == 99 * 100  # a sweep: back to 600 s ago, not further
    assert len(sealer._seen) <= 602  # one a second, no older than the horizon needs
