"""Migrations: from empty, in place from 0001 with data, and agreement with the schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from certhub.cluster._schema import cluster_leases, cluster_nodes
from certhub.registry import Store
from certhub.registry.engine import create_store_engine
from certhub.registry.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from certhub.registry.schema import metadata

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TABLES = {
    "settings",
    "namespaces",
    "cas",
    "policies",
    "enrollments",
    "devices",
    "twins",
    "certificates",
    "credential_operations",
    "audit_log",
}


HEAD = head_revision()


def test_scripts_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    scripts = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert scripts[:2] == ["0001_initial.py", "0002_status_indexes.py"]
    # Revisions are numbered in order; the newest file is the head.
    assert head_revision() == scripts[-1].split("_", 1)[0]


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    with Store.open(db_url, migrate=False) as store:
        assert current_revision(store.engine) is None  # open(migrate=False) leaves it alone
    assert upgrade(db_url) == HEAD  # a URL works as well as an engine
    engine = create_store_engine(db_url)
    try:
        assert current_revision(engine) == HEAD
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
        assert upgrade(engine) == HEAD  # idempotent
    finally:
        engine.dispose()


def _everything() -> sa.MetaData:
    """The store's tables and the cluster's (which live on their own metadata)."""
    combined = sa.MetaData()
    for table in (*metadata.tables.values(), cluster_leases, cluster_nodes):
        table.to_metadata(combined)
    return combined


def test_head_matches_the_schema_metadata(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, _everything()) == []
    finally:
        engine.dispose()


def _seed_at_0001(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO namespaces (id, name, id_scope, created_at) "
                "VALUES (1, 'default', '0ne1', :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO enrollments (namespace_id, kind, name, attestation_type, primary_key,"
                " x509_certificates, x509_thumbprints, credential_policy_name, initial_twin,"
                " provisioning_status, reprovision_policy, etag, created_at, updated_at) VALUES"
                " (1, 'group', 'g1', 'symmetricKey', 'k', '[]', '[]', 'default', '{}',"
                " 'enabled', '{}', 'e1', :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO devices (device_id, namespace_id, status, auth_type, revocation_id,"
                " generation_id, etag, connection_state, created_at, updated_at)"
                " VALUES ('dev-1', 1, 'enabled', 'certificateAuthority', :r, 'g', 'e', "
                "'Disconnected', :t, :t)"
            ),
            {"t": NOW, "r": b"\x01" * 32},
        )
        conn.execute(
            sa.text(
                "INSERT INTO twins (device_id, tags, desired, reported, desired_version,"
                " reported_version, version, etag, metadata, updated_at) VALUES"
                " ('dev-1', '{\"site\": \"a\"}', '{}', '{}', 1, 1, 1, 't', '{}', :t)"
            ),
            {"t": NOW},
        )


def _index_names(engine: sa.Engine, table: str) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(engine).get_indexes(table)}


def test_upgrade_in_place_from_0001_keeps_data(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        assert upgrade(engine, "0001") == "0001"
        assert "ix_devices_status" not in _index_names(engine, "devices")
        _seed_at_0001(engine)

        assert upgrade(engine) == HEAD

        assert "ix_devices_status" in _index_names(engine, "devices")
        assert "ix_enrollments_credential_policy_name" in _index_names(engine, "enrollments")
    finally:
        engine.dispose()
    with Store.open(db_url) as store:
        device = store.get_device("dev-1")
        assert device is not None and device.revocation_id == b"\x01" * 32
        assert device.created_at == NOW
        assert store.get_twin("dev-1").tags == {"site": "a"}
        ns = store.get_namespace("default")
        assert ns is not None
        enrollment = store.get_enrollment(ns.id, "group", "g1")
        assert enrollment is not None and enrollment.credential_policy_name == "default"


def test_downgrade_to_base_removes_everything(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        upgrade(engine)
        assert downgrade(engine, "base") is None
        assert not TABLES & set(sa.inspect(engine).get_table_names())
        assert upgrade(engine) == HEAD
    finally:
        engine.dispose()


def test_alembic_config_needs_no_ini() -> None:
    config = alembic_config()
    assert config.config_file_name is None
    assert config.get_main_option("script_location") == str(MIGRATIONS_DIR)


def test_0012_drops_the_device_index_and_lookups_by_device_use_0011s(tmp_path: Any) -> None:
    """After 0012 a device's certificates are found through the (device, created_at,
    serial) index of 0011 — searched, not scanned; 0012's downgrade brings it back."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'certhub.db'}")
    try:
        upgrade(engine)
        assert "ix_certificates_device_id" not in _index_names(engine, "certificates")
        queries = [
            "SELECT * FROM certificates WHERE device_id = ?",
            "SELECT * FROM certificates WHERE device_id = ? AND state IN ('issued', 'active')",
            "SELECT serial_hex FROM certificates WHERE device_id IN (?, ?) ORDER BY created_at",
        ]
        with engine.connect() as conn:
            for sql in queries:
                params = ("dev-1",) if sql.count("?") == 1 else ("dev-1", "dev-2")
                plan = " | ".join(
                    str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
                )
                assert "ix_certificates_device_id_created_at (device_id=?)" in plan, plan
        assert downgrade(engine, "0011") == "0011"
        assert "ix_certificates_device_id" in _index_names(engine, "certificates")
    finally:
        engine.dispose()
