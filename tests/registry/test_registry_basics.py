"""Settings, namespaces, timestamps and error translation basics."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from certhub.registry import AlreadyExists, Store
from certhub.registry.records import NamespaceRecord
from certhub.registry.schema import settings

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def test_settings_roundtrip_and_overwrite(store: Store) -> None:
    assert store.get_setting("id_scope") is None
    store.set_setting("id_scope", "0ne00000001")
    store.set_setting("hub_host", "hub.local")
    store.set_setting("id_scope", "0ne00000002")
    assert store.get_setting("id_scope") == "0ne00000002"
    assert store.get_setting("hub_host") == "hub.local"


def test_namespace_create_and_lookups(store: Store) -> None:
    ns = store.create_namespace("default", "0ne1", NOW)
    other = store.create_namespace("lab", "0ne2", NOW)
    assert ns == NamespaceRecord(id=ns.id, name="default", id_scope="0ne1", created_at=NOW)
    assert store.get_namespace("default") == ns
    assert store.get_namespace_by_scope("0ne2") == other
    assert store.get_namespace_by_id(ns.id) == ns
    assert store.get_namespace("missing") is None
    assert store.get_namespace_by_scope("missing") is None
    assert [n.name for n in store.list_namespaces()] == ["default", "lab"]


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        pytest.param("default", "0ne9", id="reject/duplicate-name"),
        pytest.param("other", "0ne1", id="reject/duplicate-id-scope"),
    ],
)
def test_namespace_duplicates_rejected(store: Store, name: str, scope: str) -> None:
    store.create_namespace("default", "0ne1", NOW)
    with pytest.raises(AlreadyExists) as info:
        store.create_namespace(name, scope, NOW)
    assert (info.value.kind, info.value.key) == ("namespace", name)
    assert info.value.constraint is not None


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    given = [
        dt.datetime(2025, 6, 1, 14, 30, 15, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2025, 6, 1, 12, 30, 16, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
    ]
    for i, value in enumerate(given):
        ns = store.create_namespace(f"tz{i}", f"0ne-tz{i}", value)
        for record in (ns, store.get_namespace(f"tz{i}")):
            assert record is not None
            assert record.created_at == value
            assert record.created_at.tzinfo is dt.UTC
    # The column type itself refuses naive values, whatever the caller checked.
    from certhub.registry.schema import namespaces

    with pytest.raises(sa.exc.StatementError, match="naive datetime"), store.transaction() as c:
        c.execute(
            sa.insert(namespaces).values(name="n", id_scope="s", created_at=dt.datetime(2025, 1, 1))
        )


def test_naive_datetime_rejected(offline_store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        offline_store.create_namespace("naive", "0ne-n", dt.datetime(2025, 1, 1))


def test_transaction_joins_several_steps(store: Store) -> None:
    with pytest.raises(AlreadyExists), store.transaction() as conn:
        store.set_setting("joined", "yes", conn=conn)
        store.create_namespace("a", "s1", NOW, conn=conn)
        store.create_namespace("a", "s2", NOW, conn=conn)
    assert store.get_setting("joined") is None
    assert store.get_namespace("a") is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(settings)).scalar() == 0
