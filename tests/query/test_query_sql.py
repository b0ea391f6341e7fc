"""SQL compilation on SQLite and PostgreSQL: semantics, paging, errors, index use."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from query_cases import CERTIFICATE_CASES, CERTIFICATES, DEVICE_CASES, FLEET
from query_fixtures import Store, certificates, devices, modules, twins

from certhub.query import (
    CollectionMapping,
    ContinuationError,
    DocumentField,
    QueryError,
    ScalarField,
    certificates_mapping,
    compile_query,
    devices_mapping,
    index_expression,
    index_guard_expression,
    parse,
)

VALID_UNTIL = "properties.reported.certificate.validUntil"


def _mismatches(store: Store, cases: list[Any]) -> list[str]:
    out = []
    for param in cases:
        text, expected = param.values
        for page_size in (None, 1, 2):
            got = store.query(text, page_size)
            if got != expected:
                out.append(f"{param.id} (page size {page_size}): {got!r} != {expected!r}")
    return out


def test_device_cases(store: Store) -> None:
    """Every hand-written case of query_cases.py gives the same result through SQL."""
    store.load(FLEET)
    assert _mismatches(store, DEVICE_CASES) == []


def test_certificate_cases(store: Store) -> None:
    store.load(FLEET, CERTIFICATES)
    assert _mismatches(store, CERTIFICATE_CASES) == []


def test_select_star_gives_twins(store: Store) -> None:
    store.load(FLEET)
    compiled = compile_query(
        parse("SELECT * FROM devices"), store.mappings["devices"], store.dialect
    )
    with store.engine.connect() as conn:
        page = compiled.page(conn.execute(compiled.statement).all())
    assert compiled.item_type == "twin"
    assert page.items == [d.document() for d in FLEET]
    assert page.continuation is None


@pytest.mark.parametrize(
    "text",
    [
        "SELECT deviceId FROM devices",
        "SELECT COUNT() FROM devices",
        "SELECT status, COUNT() FROM devices GROUP BY status",
    ],
)
def test_projections_are_raw(text: str) -> None:
    mapping = devices_mapping(devices, twins)
    assert compile_query(parse(text), mapping, "sqlite").item_type == "raw"


def _pages(store: Store, text: str, size: int) -> list[tuple[list[Any], bool]]:
    query, mapping = parse(text), store.mappings["devices"]
    pages, token = [], None
    with store.engine.connect() as conn:
        while True:
            compiled = compile_query(query, mapping, store.dialect, size, token)
            page = compiled.page(conn.execute(compiled.statement).all())
            pages.append((page.items, page.continuation is not None))
            token = page.continuation
            if token is None:
                return pages


@pytest.mark.parametrize(
    ("text", "size", "expected"),
    [
        pytest.param(
            "SELECT deviceId FROM devices",
            3,
            [
                ([{"deviceId": "d1"}, {"deviceId": "d2"}, {"deviceId": "d3"}], True),
                ([{"deviceId": "d4"}], False),
            ],
            id="keyset",
        ),
        pytest.param(
            "SELECT deviceId FROM devices",
            2,
            [
                ([{"deviceId": "d1"}, {"deviceId": "d2"}], True),
                ([{"deviceId": "d3"}, {"deviceId": "d4"}], False),
            ],
            id="exact-fit-ends-without-token",
        ),
        pytest.param(
            "SELECT TOP 3 deviceId FROM devices",
            2,
            [([{"deviceId": "d1"}, {"deviceId": "d2"}], True), ([{"deviceId": "d3"}], False)],
            id="top-across-pages",
        ),
        pytest.param(
            "SELECT version, COUNT() AS n FROM devices GROUP BY version",
            2,
            [
                ([{"version": 1, "n": 2}, {"version": 2, "n": 1}], True),
                ([{"version": 3, "n": 1}], False),
            ],
            id="groups",
        ),
    ],
)
def test_paging(store: Store, text: str, size: int, expected: list[Any]) -> None:
    store.load(FLEET)
    assert _pages(store, text, size) == expected


def _token(text: str) -> str:
    mapping = devices_mapping(devices, twins)
    compiled = compile_query(parse(text), mapping, "sqlite", 1)
    page = compiled.page([("d1", "d1"), ("d2", "d2")])
    assert page.continuation is not None
    return page.continuation


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param("!!!", "malformed continuation token", id="reject/not-base64"),
        pytest.param("bm90IGpzb24", "malformed continuation token", id="reject/not-json"),
        pytest.param(
            _token("SELECT status FROM devices"),
            "continuation token does not belong to this query",
            id="reject/other-query",
        ),
        pytest.param(
            "eyJxIjoiMCIsIm4iOjEsImsiOm51bGx9",
            "continuation token does not belong to this query",
            id="reject/forged-fingerprint",
        ),
    ],
)
def test_bad_continuation(token: str, message: str) -> None:
    mapping = devices_mapping(devices, twins)
    with pytest.raises(ContinuationError) as info:
        compile_query(parse("SELECT deviceId FROM devices"), mapping, "sqlite", 1, token)
    assert info.value.reason == "bad-continuation"
    assert info.value.message == message


def test_continuation_round_trip() -> None:
    mapping = devices_mapping(devices, twins)
    token = _token("SELECT deviceId FROM devices")
    compiled = compile_query(parse("SELECT deviceId FROM devices"), mapping, "sqlite", 1, token)
    sql = str(compiled.statement.compile(compile_kwargs={"literal_binds": True}))
    assert "devices.device_id > 'd1'" in sql


@pytest.mark.parametrize(
    ("text", "mapping", "limit", "dialect", "reason"),
    [
        pytest.param(
            "SELECT * FROM certificates",
            devices_mapping(devices, twins),
            None,
            "sqlite",
            "collection-mismatch",
            id="reject/collection-mismatch",
        ),
        pytest.param(
            "SELECT * FROM devices.modules",
            devices_mapping(devices, twins),
            None,
            "sqlite",
            "collection-mismatch",
            id="reject/modules-unmapped",
        ),
        pytest.param(
            "SELECT * FROM devices",
            devices_mapping(devices, twins),
            0,
            "sqlite",
            "bad-page-size",
            id="reject/page-size-zero",
        ),
        pytest.param(
            "SELECT * FROM devices",
            devices_mapping(devices, twins),
            None,
            "mysql",
            "unsupported-dialect",
            id="reject/dialect",
        ),
    ],
)
def test_compile_rejects(
    text: str, mapping: Any, limit: int | None, dialect: str, reason: str
) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(parse(text), mapping, dialect, limit)
    assert info.value.reason == reason


def test_composite_key_paging(store: Store) -> None:
    """devices.modules is keyed by (deviceId, moduleId): keyset paging on a row value."""
    mapping = CollectionMapping(
        collection="devices.modules",
        from_clause=modules,
        fields={
            ("deviceId",): ScalarField(column=modules.c.device_id, type="string", nullable=False),
            ("moduleId",): ScalarField(column=modules.c.module_id, type="string", nullable=False),
            ("tags",): DocumentField(column=modules.c.tags),
        },
        star_item_type="twin",
    )
    rows = [("b", "m1", 1), ("a", "m2", 2), ("a", "m1", 3), ("b", "m0", 4), ("a", "m3", 0)]
    with store.engine.begin() as conn:
        conn.execute(
            modules.insert(),
            [{"device_id": d, "module_id": m, "tags": {"n": n}} for d, m, n in rows],
        )
    query = parse("SELECT deviceId, moduleId FROM devices.modules WHERE tags.n > 0")
    seen, token = [], None
    with store.engine.connect() as conn:
        for _ in range(10):
            compiled = compile_query(query, mapping, store.dialect, 1, token)
            page = compiled.page(conn.execute(compiled.statement).all())
            seen.extend((i["deviceId"], i["moduleId"]) for i in page.items)
            if (token := page.continuation) is None:
                break
    assert seen == [("a", "m1"), ("a", "m2"), ("b", "m0"), ("b", "m1")]


def test_mapping_skips_missing_columns() -> None:
    mapping = devices_mapping(devices, twins)
    assert ("statusUpdateTime",) not in mapping.fields  # the mirrored table has no column
    assert ("lastActivityTime",) in mapping.fields
    assert certificates_mapping(certificates).key == (("serialNumber",),)


def test_mapping_key_must_be_a_column() -> None:
    with pytest.raises(ValueError, match="key deviceId must be a non-nullable ScalarField"):
        devices_mapping(devices.alias("x"), twins).__class__(
            collection="devices", from_clause=devices, fields={}
        )


# --- index use ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "value_type", "expected"),
    [
        pytest.param(
            "sqlite", "string", "json_extract(reported, '$.certificate.validUntil')", id="sqlite"
        ),
        pytest.param(
            "postgresql",
            "string",
            "(reported #>> '{certificate,validUntil}') COLLATE \"C\"",
            id="postgresql-string",
        ),
        pytest.param(
            "postgresql",
            "number",
            "(reported #> '{certificate,validUntil}')",
            id="postgresql-number",
        ),
    ],
)
def test_index_expression_text(dialect: str, value_type: Any, expected: str) -> None:
    mapping = devices_mapping(devices, twins)
    assert index_expression(mapping, VALID_UNTIL, dialect, value_type=value_type) == expected


def test_index_expression_rejects_assembled_objects() -> None:
    with pytest.raises(QueryError) as info:
        index_expression(devices_mapping(devices, twins), "properties", "sqlite")
    assert info.value.reason == "not-indexable"


def _sql(store: Store, text: str) -> str:
    compiled = compile_query(parse(text), store.mappings["devices"], store.dialect, 100)
    return str(
        compiled.statement.compile(
            dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}
        )
    )


def _fleet(n: int) -> list[Any]:
    from query_fixtures import Device

    return [
        Device(
            f"d{i:04d}",
            reported={"certificate": {"validUntil": f"2026-{1 + i % 12:02d}-01"}, "n": i},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} < '2026-02-01'",
        f"SELECT * FROM devices WHERE {VALID_UNTIL} = '2026-02-01' AND status = 'enabled'",
        f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} >= '2026-12-01'",
        f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} IN ['2026-02-01', '2026-03-01']",
    ],
)
def test_sqlite_uses_expression_index(sqlite_store: Store, text: str) -> None:
    sqlite_store.load(_fleet(300))
    expr = index_expression(sqlite_store.mappings["devices"], VALID_UNTIL, "sqlite")
    sql = _sql(sqlite_store, text)
    assert expr.replace("(reported", "(twins.reported") in sql  # the very same expression
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_valid_until ON twins({expr})"))
        plan = " | ".join(r[3] for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
    assert "USING INDEX ix_valid_until" in plan


@pytest.mark.parametrize(
    ("text", "value_type"),
    [
        (f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} < '2026-02-01'", "string"),
        (f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} = '2026-12-01'", "string"),
        ("SELECT deviceId FROM devices WHERE properties.reported.n > 250", "number"),
    ],
)
def test_postgresql_uses_expression_index(pg_store: Store, text: str, value_type: Any) -> None:
    pg_store.load(_fleet(300))
    path = VALID_UNTIL if value_type == "string" else "properties.reported.n"
    expr = index_expression(pg_store.mappings["devices"], path, "postgresql", value_type=value_type)
    sql = _sql(pg_store, text)
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_expr ON twins (({expr}))"))
        conn.execute(sa.text("ANALYZE twins"))
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = " | ".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    assert "ix_expr" in plan


# -- counts read twins alone; the type guard is an index column (migration 0009) ---------------


@pytest.mark.parametrize(
    ("text", "from_twins_alone"),
    [
        pytest.param(
            f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < 'x'", True, id="count"
        ),
        pytest.param(
            "SELECT tags.n, COUNT() AS c FROM devices GROUP BY tags.n",
            True,
            id="group-by-twin-path",
        ),
        pytest.param(
            "SELECT deviceId, COUNT() AS n FROM devices GROUP BY deviceId", True, id="key"
        ),
        pytest.param(
            "SELECT COUNT() AS n FROM devices WHERE status = 'enabled'", False, id="device-column"
        ),
        pytest.param("SELECT status, COUNT() AS n FROM devices GROUP BY status", False, id="group"),
        pytest.param(f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} < 'x'", False, id="pages"),
    ],
)
def test_aggregates_of_twin_paths_skip_the_devices_join(text: str, from_twins_alone: bool) -> None:
    compiled = compile_query(parse(text), devices_mapping(devices, twins), "sqlite")
    froms = compiled.statement.get_final_froms()
    assert (froms == [twins]) is from_twins_alone, froms


def test_migration_0009_index_texts_are_the_compilers() -> None:
    import importlib

    module = importlib.import_module("certhub.registry.migrations.versions.0009_query_guard_index")
    mapping = devices_mapping(devices, twins)
    assert {
        "sqlite": (
            index_expression(mapping, VALID_UNTIL, "sqlite"),
            index_guard_expression(mapping, VALID_UNTIL, "sqlite"),
        )
    } == module.EXPRESSIONS


def test_postgresql_guard_expression_text() -> None:
    text = index_guard_expression(devices_mapping(devices, twins), VALID_UNTIL, "postgresql")
    assert text == "coalesce(jsonb_typeof((reported #> '{certificate,validUntil}')), 'undefined')"


def test_reject_guard_expression_of_a_column() -> None:
    with pytest.raises(QueryError) as info:
        index_guard_expression(devices_mapping(devices, twins), "status", "sqlite")
    assert info.value.reason == "not-indexable"


def test_sqlite_count_reads_the_guard_from_the_index(sqlite_store: Store) -> None:
    sqlite_store.load(_fleet(300))
    mapping = sqlite_store.mappings["devices"]
    value = index_expression(mapping, VALID_UNTIL, "sqlite")
    guard = index_guard_expression(mapping, VALID_UNTIL, "sqlite")
    sql = _sql(sqlite_store, f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < '2026-03-01'")
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX ix_guarded ON twins({value}, {guard})"))
        conn.execute(sa.text("ANALYZE"))
        plan = " | ".join(r[3] for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
        count = conn.execute(sa.text(sql)).scalar()
    assert plan == "SEARCH twins USING INDEX ix_guarded (<expr><?)"
    assert count == 50  # January and February of 300 devices spread over 12 months
