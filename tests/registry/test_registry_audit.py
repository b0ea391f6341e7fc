"""The audit log: append, list, page, and append-only enforcement in the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from certhub.registry import Store
from certhub.registry.records import AuditEvent


def test_append_and_list(store: Store, audit_event: Callable[..., AuditEvent]) -> None:
    first = store.append_audit(audit_event("dev-1", reason="initial"))
    second = store.append_audit(audit_event("dev-2", actor="cli", action="device.disabled"))
    third = store.append_audit(audit_event("dev-1", subject_type="certificate"))
    assert first < second < third
    newest = store.list_audit()
    assert [a.id for a in newest] == [third, second, first]
    assert newest[2].reason == "initial" and newest[2].details == {"policy": "default"}
    assert newest[2].at.tzinfo is dt.UTC
    assert [a.id for a in store.list_audit(subject_id="dev-1")] == [third, first]
    assert [a.id for a in store.list_audit(subject_type="device", subject_id="dev-1")] == [first]
    assert [a.actor for a in store.list_audit(subject_type="device")] == ["cli", "dps"]

    ids = [first, second, third] + [store.append_audit(audit_event(f"d{i}")) for i in range(4)]
    seen: list[int] = []
    before: int | None = None
    while page := store.list_audit(limit=3, before_id=before):
        seen += [a.id for a in page]
        before = page[-1].id
    assert seen == ids[::-1]


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("UPDATE audit_log SET actor = 'mallory'", id="reject/update"),
        pytest.param("DELETE FROM audit_log", id="reject/delete"),
    ],
)
def test_audit_log_is_append_only(
    store: Store, audit_event: Callable[..., AuditEvent], sql: str
) -> None:
    entry = store.append_audit(audit_event())
    refused = pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only")
    with refused as info, store.engine.begin() as conn:
        conn.exec_driver_sql(sql)
    if store.dialect_name == "postgresql":
        assert info.value.orig.sqlstate == "23001"  # type: ignore[union-attr]
    else:
        assert info.value.orig.sqlite_errorname == "SQLITE_CONSTRAINT_TRIGGER"  # type: ignore[union-attr]
    [kept] = store.list_audit()
    assert (kept.id, kept.actor) == (entry, "dps")


def test_truncate_is_refused_on_postgresql(
    pg_url: str, audit_event: Callable[..., AuditEvent]
) -> None:
    with Store.open(pg_url) as store:
        store.append_audit(audit_event())
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as c:
            c.exec_driver_sql("TRUNCATE audit_log")
        assert len(store.list_audit()) == 1
