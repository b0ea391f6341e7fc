"""``POST /devices/query`` on the real schema: paging, item types, errors, index use."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from service_support import Harness

from certhub.query import index_expression
from certhub.service.query import compile_page, mappings

VALID_UNTIL = "properties.reported.certificate.validUntil"


def _migration_indexes() -> dict[str, tuple[tuple[str, str, str], ...]]:
    import importlib

    module = importlib.import_module("certhub.registry.migrations.versions.0005_query_indexes")
    indexes: dict[str, tuple[tuple[str, str, str], ...]] = module.INDEXES
    return indexes


def _fleet(api: Harness, n: int) -> None:
    for i in range(n):
        api.create_device(f"d{i:03d}", status="disabled" if i % 4 == 0 else "enabled")
        month = 1 + i % 12
        reported = {"certificate": {"validUntil": f"2026-{month:02d}-01T00:00:00Z"}, "n": i}
        api.store.replace_twin_sections(f"d{i:03d}", now=api.clock.now(), reported=reported)


def _query(api: Harness, text: str, **headers: str) -> Any:
    return api.call("POST", "/devices/query", json={"query": text}, headers=headers)


def test_paged_query_follows_continuation_tokens(api: Harness) -> None:
    _fleet(api, 25)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        extra = {"x-ms-max-item-count": "10"}
        if token:
            extra["x-ms-continuation"] = token
        response = _query(api, f"SELECT * FROM devices WHERE {VALID_UNTIL} < '2026-07-01'", **extra)
        assert response.status_code == 200, response.text
        assert response.headers["x-ms-item-type"] == "twin"
        seen += [item["deviceId"] for item in response.json()]
        pages += 1
        token = response.headers.get("x-ms-continuation")
        if not token:
            break
    expected = [f"d{i:03d}" for i in range(25) if 1 + i % 12 < 7]
    assert seen == expected
    assert pages == 2


def test_projection_and_group_by_are_raw(sqlite_api: Harness) -> None:
    _fleet(sqlite_api, 8)
    one = _query(
        sqlite_api, "SELECT deviceId, properties.reported.n FROM devices WHERE deviceId = 'd003'"
    )
    assert one.headers["x-ms-item-type"] == "raw"
    assert one.json() == [{"deviceId": "d003", "n": 3}]
    groups = _query(sqlite_api, "SELECT status, COUNT() AS n FROM devices GROUP BY status").json()
    assert groups == [{"status": "disabled", "n": 2}, {"status": "enabled", "n": 6}]


def test_certificates_collection_names_policy_and_issue_path(api: Harness) -> None:
    api.create_device("c1")
    leaf = api.issue("c1")
    items = _query(
        api, "SELECT serialNumber, policy, issuedVia, state FROM certificates WHERE deviceId = 'c1'"
    ).json()
    assert items == [
        {
            "serialNumber": leaf.serial_hex,
            "policy": "default",
            "issuedVia": "api",
            "state": "issued",
        }
    ]


@pytest.mark.parametrize(
    ("text", "headers", "reason", "needle"),
    [
        pytest.param(
            "SELECT * FROM devices WHERE",
            {},
            "query-syntax",
            "(line 1, column 28)",
            id="reject/syntax-end",
        ),
        pytest.param(
            "SELECT *\nFROM devices WHER status = 'x'",
            {},
            "query-syntax",
            "line 2, column",
            id="reject/syntax-line-2",
        ),
        pytest.param(
            "SELECT * FROM devices.modules",
            {},
            "unsupported-collection",
            "devices.modules",
            id="reject/modules",
        ),
        pytest.param(
            "SELECT * FROM devices",
            {"x-ms-continuation": "garbage!"},
            "query-bad-continuation",
            "continuation",
            id="reject/bad-continuation",
        ),
        pytest.param(
            "SELECT * FROM devices",
            {"x-ms-max-item-count": "0"},
            "bad-page-size",
            "x-ms-max-item-count",
            id="reject/page-size-zero",
        ),
        pytest.param(
            "SELECT * FROM devices",
            {"x-ms-max-item-count": "ten"},
            "bad-page-size",
            "integer",
            id="reject/page-size-not-a-number",
        ),
    ],
)
def test_bad_queries_are_400(
    sqlite_api: Harness, text: str, headers: dict[str, str], reason: str, needle: str
) -> None:
    response = _query(sqlite_api, text, **headers)
    assert response.status_code == 400, response.text
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert response.headers["certhub-reason"] == reason
    assert needle in response.json()["Message"]


def test_a_token_of_another_query_is_refused(sqlite_api: Harness) -> None:
    _fleet(sqlite_api, 3)
    first = _query(sqlite_api, "SELECT * FROM devices", **{"x-ms-max-item-count": "1"})
    token = first.headers["x-ms-continuation"]
    other = _query(sqlite_api, "SELECT deviceId FROM devices", **{"x-ms-continuation": token})
    assert other.status_code == 400
    assert other.headers["certhub-reason"] == "query-bad-continuation"


# -- the expression indexes of migration 0005 ------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_index_texts_are_the_compilers(dialect: str) -> None:
    by_path = {
        "ix_twins_reported_valid_until": ("devices", VALID_UNTIL),
        "ix_devices_status_c": ("devices", "status"),
        "ix_devices_device_id_c": ("devices", "deviceId"),
        "ix_certificates_serial_hex_c": ("certificates", "serialNumber"),
    }
    for name, _table, text in _migration_indexes()[dialect]:
        collection, path = by_path[name]
        assert text == index_expression(mappings()[collection], path, dialect), name


def _plan(api: Harness, text: str, *settings: str) -> str:
    _, statement = compile_page(text, api.store.dialect_name, 100, None)
    dialect = api.store.engine.dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    with api.store.engine.begin() as conn:
        if api.store.dialect_name == "sqlite":
            conn.execute(sa.text("ANALYZE"))
            rows = conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql))
            return " | ".join(str(r[3]) for r in rows)
        conn.execute(sa.text("ANALYZE"))
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        for setting in settings:
            conn.execute(sa.text(f"SET LOCAL {setting}"))
        return " | ".join(str(r[0]) for r in conn.execute(sa.text("EXPLAIN " + sql)))


@pytest.mark.parametrize(
    ("text", "index"),
    [
        pytest.param(
            f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < '2026-03-01'",
            "ix_twins_reported_valid_until",
            id="valid-until-count",
        ),
        pytest.param(
            f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} >= '2026-11-01'",
            "ix_twins_reported_valid_until",
            id="valid-until-ids",
        ),
    ],
)
def test_valid_until_filters_use_the_expression_index(api: Harness, text: str, index: str) -> None:
    _fleet(api, 60)
    assert index in _plan(api, text)


def test_status_filter_uses_a_status_index(api: Harness) -> None:
    _fleet(api, 60)
    expected = (
        "ix_devices_status_c" if api.store.dialect_name == "postgresql" else "ix_devices_status"
    )
    assert expected in _plan(api, "SELECT COUNT() AS n FROM devices WHERE status = 'disabled'")


def test_postgresql_pages_in_key_order_from_an_index(pg_api: Harness) -> None:
    _fleet(pg_api, 60)
    plan = _plan(pg_api, "SELECT deviceId FROM devices", "enable_sort = off")
    assert "ix_devices_device_id_c" in plan
    assert "Sort  " not in plan


def test_text_a_store_cannot_hold_is_refused_not_a_server_error(api: Harness) -> None:
    response = _query(api, "SELECT * FROM devices WHERE deviceId = 'a\\u0000b'")
    if api.store.dialect_name == "postgresql":
        assert response.status_code == 400, response.text
        assert response.headers["certhub-reason"] == "invalid-value"
    else:
        assert response.status_code == 200 and response.json() == []


def test_page_sizes_above_the_maximum_are_capped(sqlite_api: Harness) -> None:
    _fleet(sqlite_api, 3)
    response = _query(sqlite_api, "SELECT deviceId FROM devices", **{"x-ms-max-item-count": "5000"})
    assert response.status_code == 200 and len(response.json()) == 3
