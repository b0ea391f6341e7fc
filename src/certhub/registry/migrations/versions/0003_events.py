"""The change feed: table ``events`` and the triggers that append to it.

Revision ID: 0003
Revises: 0004
Create Date: 2025-01-03

Triggers write the events in the same transaction as the change, whoever makes it (the
store, the CLI, another node). SQLite gets one trigger per (table, change); PostgreSQL
one PL/pgSQL function per table, which also NOTIFYs channel ``certhub_events``.
Self-contained on purpose (no imports from the live schema). It follows 0004 (DPS),
which landed first, so that the history stays linear.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision: str | None = "0004"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

JSON_ = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# -- SQLite ---------------------------------------------------------------------------

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
_AUTH_COLUMNS = ("auth_type", "primary_key", "secondary_key", "primary_thumbprint",
                 "secondary_thumbprint")  # fmt: skip


def _sqlite_trigger(
    name: str, when: str, condition: str | None, kind: str, device: str, payload: str
) -> str:
    where = f" WHEN {condition}" if condition else ""
    return (
        f"CREATE TRIGGER {name} {when} FOR EACH ROW{where} BEGIN"
        f" INSERT INTO events (at, kind, device_id, payload)"
        f" VALUES ({_SQLITE_NOW}, '{kind}', {device}, {payload}); END"
    )


_AUTH_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _AUTH_COLUMNS)
_X509 = "'x509'"

_SQLITE_TRIGGERS = {
    "trg_events_device_status": (
        "AFTER UPDATE OF status ON devices", "OLD.status IS NOT NEW.status", "device.status",
        "NEW.device_id", "json_object('status', NEW.status, 'previous', OLD.status)",
    ),
    "trg_events_device_revocation": (
        "AFTER UPDATE OF revocation_id ON devices", "OLD.revocation_id IS NOT NEW.revocation_id",
        "device.revocation", "NEW.device_id", "json_object()",
    ),
    "trg_events_device_auth": (
        f"AFTER UPDATE OF {', '.join(_AUTH_COLUMNS)} ON devices", _AUTH_CHANGED, "device.auth",
        "NEW.device_id", "json_object()",
    ),
    "trg_events_device_deleted": (
        "AFTER DELETE ON devices", None, "device.deleted", "OLD.device_id", "json_object()",
    ),
    "trg_events_certificate_revoked": (
        "AFTER UPDATE OF state ON certificates",
        "NEW.state = 'revoked' AND OLD.state IS NOT 'revoked'", "certificate.revoked",
        "NEW.device_id", "json_object('serial', NEW.serial_hex)",
    ),
    "trg_events_ca_insert": (
        "AFTER INSERT ON cas", None, "ca.changed", "NULL",
        "json_object('id', NEW.id, 'kind', NEW.kind, 'state', NEW.state)",
    ),
    "trg_events_ca_state": (
        "AFTER UPDATE OF state ON cas", "OLD.state IS NOT NEW.state", "ca.changed", "NULL",
        "json_object('id', NEW.id, 'kind', NEW.kind, 'state', NEW.state)",
    ),
    "trg_events_ca_delete": (
        "AFTER DELETE ON cas", None, "ca.changed", "NULL",
        "json_object('id', OLD.id, 'kind', OLD.kind, 'state', 'deleted')",
    ),
    "trg_events_policy_state": (
        "AFTER UPDATE OF state ON policies", "OLD.state IS NOT NEW.state", "policy.changed",
        "NULL", "json_object('id', NEW.id, 'state', NEW.state)",
    ),
    "trg_events_enrollment_insert": (
        "AFTER INSERT ON enrollments", f"NEW.attestation_type = {_X509}", "enrollment.changed",
        "NULL", "json_object('id', NEW.id)",
    ),
    "trg_events_enrollment_update": (
        "AFTER UPDATE ON enrollments",
        f"NEW.attestation_type = {_X509} OR OLD.attestation_type = {_X509}",
        "enrollment.changed", "NULL", "json_object('id', NEW.id)",
    ),
    "trg_events_enrollment_delete": (
        "AFTER DELETE ON enrollments", f"OLD.attestation_type = {_X509}", "enrollment.changed",
        "NULL", "json_object('id', OLD.id)",
    ),
}  # fmt: skip

# -- PostgreSQL -------------------------------------------------------------------------

_PG_APPEND = """
CREATE FUNCTION certhub_append_event(p_kind text, p_device text, p_payload jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (at, kind, device_id, payload)
        VALUES (clock_timestamp(), p_kind, p_device, p_payload);
    PERFORM pg_notify('certhub_events', p_kind);
END
$$
"""

_PG_FUNCTIONS = {
    "devices": """
    IF TG_OP = 'DELETE' THEN
        PERFORM certhub_append_event('device.deleted', OLD.device_id, '{}'::jsonb);
        RETURN OLD;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM certhub_append_event('device.status', NEW.device_id,
            jsonb_build_object('status', NEW.status, 'previous', OLD.status));
    END IF;
    IF NEW.revocation_id IS DISTINCT FROM OLD.revocation_id THEN
        PERFORM certhub_append_event('device.revocation', NEW.device_id, '{}'::jsonb);
    END IF;
    IF (NEW.auth_type, NEW.primary_key, NEW.secondary_key, NEW.primary_thumbprint,
        NEW.secondary_thumbprint) IS DISTINCT FROM (OLD.auth_type, OLD.primary_key,
        OLD.secondary_key, OLD.primary_thumbprint, OLD.secondary_thumbprint) THEN
        PERFORM certhub_append_event('device.auth', NEW.device_id, '{}'::jsonb);
    END IF;
    RETURN NEW;""",
    "certificates": """
    IF NEW.state = 'revoked' AND OLD.state IS DISTINCT FROM 'revoked' THEN
        PERFORM certhub_append_event('certificate.revoked', NEW.device_id,
            jsonb_build_object('serial', NEW.serial_hex));
    END IF;
    RETURN NEW;""",
    "cas": """
    IF TG_OP = 'DELETE' THEN
        PERFORM certhub_append_event('ca.changed', NULL,
            jsonb_build_object('id', OLD.id, 'kind', OLD.kind, 'state', 'deleted'));
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM certhub_append_event('ca.changed', NULL,
            jsonb_build_object('id', NEW.id, 'kind', NEW.kind, 'state', NEW.state));
    END IF;
    RETURN NEW;""",
    "policies": """
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM certhub_append_event('policy.changed', NULL,
            jsonb_build_object('id', NEW.id, 'state', NEW.state));
    END IF;
    RETURN NEW;""",
    "enrollments": """
    IF TG_OP = 'DELETE' THEN
        IF OLD.attestation_type = 'x509' THEN
            PERFORM certhub_append_event('enrollment.changed', NULL,
                jsonb_build_object('id', OLD.id));
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.attestation_type = 'x509'
        OR (TG_OP = 'UPDATE' AND OLD.attestation_type = 'x509') THEN
        PERFORM certhub_append_event('enrollment.changed', NULL,
            jsonb_build_object('id', NEW.id));
    END IF;
    RETURN NEW;""",
}
_PG_OPERATIONS = {
    "devices": "UPDATE OR DELETE",
    "certificates": "UPDATE",
    "cas": "INSERT OR UPDATE OR DELETE",
    "policies": "UPDATE",
    "enrollments": "INSERT OR UPDATE OR DELETE",
}


def _pg_upgrade() -> None:
    op.execute(_PG_APPEND)
    for table, body in _PG_FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION certhub_{table}_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN{body}\nEND\n$$"
        )
        op.execute(
            f"CREATE TRIGGER trg_events_{table} AFTER {_PG_OPERATIONS[table]} ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION certhub_{table}_events()"
        )


def _pg_downgrade() -> None:
    for table in _PG_FUNCTIONS:
        op.execute(f"DROP TRIGGER IF EXISTS trg_events_{table} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS certhub_{table}_events()")
    op.execute("DROP FUNCTION IF EXISTS certhub_append_event(text, text, jsonb)")


def upgrade() -> None:
    """Create ``events`` and its triggers."""
    op.create_table(
        "events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=True),
        sa.Column("payload", JSON_, nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        _pg_upgrade()
        return
    for name, args in _SQLITE_TRIGGERS.items():
        op.execute(_sqlite_trigger(name, *args))


def downgrade() -> None:
    """Drop the triggers and ``events``."""
    if op.get_bind().dialect.name == "postgresql":
        _pg_downgrade()
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_events_at", table_name="events")
    op.drop_table("events")
