"""Create the registry: settings, namespaces, CAs, policies, enrollments, devices,
twins, certificates, credential operations and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose (no imports from the live schema), so this revision
builds the same database whatever the code later becomes.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

JSON_ = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_APPEND_ONLY = """
CREATE FUNCTION certhub_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""


def _choice(table: str, column: str, values: Iterable[str]) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=f"ck_{table}_{column}")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _ns_fk() -> sa.Column[object]:
    return sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False)


def _create_core() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("id_scope", sa.String(), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("name", name="uq_namespaces_name"),
        sa.UniqueConstraint("id_scope", name="uq_namespaces_id_scope"),
    )


def _create_pki() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ns_fk(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("validity_seconds", sa.Integer(), nullable=False),
        sa.Column("key_types", JSON_, nullable=False),
        sa.Column("backdate_seconds", sa.Integer(), nullable=False),
        sa.Column("development", sa.Boolean(), nullable=False),
        sa.Column("superseded_grace_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("state", sa.String(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("namespace_id", "name", name="uq_policies_namespace_id_name"),
        _choice("policies", "state", ("active", "deleted")),
    )
    op.create_table(
        "cas",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ns_fk(),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id"), nullable=True),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_pem_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("serial_hex", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        _ts("not_before"),
        _ts("not_after"),
        sa.Column("state", sa.String(), nullable=False),
        _ts("created_at"),
        _ts("retired_at", nullable=True),
        sa.UniqueConstraint("sha256", name="uq_cas_sha256"),
        _choice("cas", "kind", ("root", "issuing", "server", "onboarding")),
        _choice("cas", "state", ("active", "successor", "retired", "revoked")),
    )
    op.create_index("ix_cas_namespace_id_kind", "cas", ["namespace_id", "kind"])
    op.create_index("ix_cas_policy_id", "cas", ["policy_id"])


def _create_enrollments() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ns_fk(),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("attestation_type", sa.String(), nullable=False),
        sa.Column("primary_key", sa.String(), nullable=True),
        sa.Column("secondary_key", sa.String(), nullable=True),
        sa.Column("x509_certificates", JSON_, nullable=False),
        sa.Column("x509_thumbprints", JSON_, nullable=False),
        sa.Column("credential_policy_name", sa.String(), nullable=True),
        sa.Column("initial_twin", JSON_, nullable=False),
        sa.Column("provisioning_status", sa.String(), nullable=False),
        sa.Column("reprovision_policy", JSON_, nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint(
            "namespace_id", "kind", "name", name="uq_enrollments_namespace_id_kind_name"
        ),
        _choice("enrollments", "kind", ("group", "individual")),
        _choice("enrollments", "attestation_type", ("symmetricKey", "x509")),
        _choice("enrollments", "provisioning_status", ("enabled", "disabled")),
        sa.CheckConstraint(
            "attestation_type <> 'symmetricKey' OR primary_key IS NOT NULL",
            name="ck_enrollments_symmetric_key",
        ),
    )


def _create_devices() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(), primary_key=True),
        _ns_fk(),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("auth_type", sa.String(), nullable=False),
        sa.Column("primary_key", sa.String(), nullable=True),
        sa.Column("secondary_key", sa.String(), nullable=True),
        sa.Column("primary_thumbprint", sa.String(), nullable=True),
        sa.Column("secondary_thumbprint", sa.String(), nullable=True),
        sa.Column("revocation_id", sa.LargeBinary(), nullable=False),
        sa.Column("generation_id", sa.String(), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("policy_name", sa.String(), nullable=True),
        sa.Column(
            "enrollment_id",
            sa.Integer(),
            sa.ForeignKey("enrollments.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("connection_state", sa.String(), nullable=False, server_default="Disconnected"),
        _ts("connection_state_updated_at", nullable=True),
        _ts("last_activity_at", nullable=True),
        _ts("status_updated_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _choice("devices", "status", ("enabled", "disabled")),
        _choice("devices", "auth_type", ("certificateAuthority", "selfSigned", "sas", "none")),
        _choice("devices", "connection_state", ("Connected", "Disconnected")),
        sa.CheckConstraint("length(revocation_id) = 32", name="ck_devices_revocation_id_length"),
    )
    op.create_index("ix_devices_namespace_id", "devices", ["namespace_id"])
    op.create_index("ix_devices_enrollment_id", "devices", ["enrollment_id"])
    op.create_table(
        "twins",
        sa.Column(
            "device_id",
            sa.String(),
            sa.ForeignKey("devices.device_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tags", JSON_, nullable=False),
        sa.Column("desired", JSON_, nullable=False),
        sa.Column("reported", JSON_, nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("reported_version", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("metadata", JSON_, nullable=False),
        _ts("updated_at"),
    )


def _create_certificates() -> None:
    op.create_table(
        "certificates",
        sa.Column("serial_hex", sa.String(), primary_key=True),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policies.id"), nullable=False),
        sa.Column("issuer_ca_id", sa.Integer(), sa.ForeignKey("cas.id"), nullable=False),
        _ts("not_before"),
        _ts("not_after"),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("sha1", sa.String(), nullable=False),
        sa.Column("public_key_sha256", sa.String(), nullable=False),
        sa.Column("key_type", sa.String(), nullable=False),
        sa.Column("revocation_id", sa.LargeBinary(), nullable=False),
        sa.Column("requested_via", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        _ts("revoked_at", nullable=True),
        sa.Column("revocation_reason", sa.String(), nullable=True),
        _ts("first_used_at", nullable=True),
        sa.Column("operation_id", BIG_ID, nullable=True),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("sha256", name="uq_certificates_sha256"),
        _choice("certificates", "requested_via", ("dps", "hub", "cli", "api")),
        _choice("certificates", "state", ("issued", "active", "superseded", "revoked", "expired")),
    )
    for name, columns in (
        ("ix_certificates_device_id", ["device_id"]),
        ("ix_certificates_device_id_public_key_sha256", ["device_id", "public_key_sha256"]),
        ("ix_certificates_not_after", ["not_after"]),
        ("ix_certificates_state_not_after", ["state", "not_after"]),
        ("ix_certificates_issuer_ca_id", ["issuer_ca_id"]),
    ):
        op.create_index(name, "certificates", columns)


def _create_operations() -> None:
    op.create_table(
        "credential_operations",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("rid", sa.String(), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_serial", sa.String(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON_, nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        _ts("expires_at"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("correlation_id", name="uq_credential_operations_correlation_id"),
        sa.UniqueConstraint("device_id", "rid", name="uq_credential_operations_device_id_rid"),
        _choice(
            "credential_operations",
            "state",
            ("pending", "completed", "failed", "replaced", "expired"),
        ),
    )
    op.create_index(
        "ix_credential_operations_state_expires_at",
        "credential_operations",
        ["state", "expires_at"],
    )


def _create_audit_log() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        _ts("at"),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("subject_type", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", JSON_, nullable=False),
    )
    op.create_index("ix_audit_log_subject", "audit_log", ["subject_type", "subject_id", "id"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log"
            " FOR EACH ROW EXECUTE FUNCTION certhub_audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
            " FOR EACH STATEMENT EXECUTE FUNCTION certhub_audit_log_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log"
                f" BEGIN SELECT RAISE(ABORT, 'audit_log is append-only ({verb} refused)'); END"
            )


def upgrade() -> None:
    """Create every table, index and trigger of the first schema."""
    _create_core()
    _create_pki()
    _create_enrollments()
    _create_devices()
    _create_certificates()
    _create_operations()
    _create_audit_log()


def downgrade() -> None:
    """Drop everything revision 0001 created."""
    for table in (
        "audit_log",
        "credential_operations",
        "certificates",
        "twins",
        "devices",
        "enrollments",
        "cas",
        "policies",
        "namespaces",
        "settings",
    ):
        op.drop_table(table)
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION certhub_audit_log_append_only()")
