"""The registry's tables as SQLAlchemy Core metadata (the head revision).

The store builds its statements from these tables. Migrations do not import this
module (a revision must not change when the schema moves on); a test checks that
the head migration and this metadata agree. Constraint names are spelled out so
that both places name them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from certhub.registry import records as r
from certhub.registry._types import JSONType, UTCDateTime

__all__ = [
    "NOT_VIA_HUB",
    "audit_log",
    "cas",
    "certificates",
    "credential_operations",
    "devices",
    "enrollments",
    "metadata",
    "namespaces",
    "policies",
    "settings",
    "twins",
]

metadata = sa.MetaData()

#: 64-bit ids that are still SQLite rowid aliases.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _choice(table: str, column: str, values: Iterable[str]) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=f"ck_{table}_{column}")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("id_scope", sa.String(), nullable=False),
    _ts("created_at"),
    sa.UniqueConstraint("name", name="uq_namespaces_name"),
    sa.UniqueConstraint("id_scope", name="uq_namespaces_id_scope"),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("validity_seconds", sa.Integer(), nullable=False),
    sa.Column("key_types", JSONType, nullable=False),
    sa.Column("backdate_seconds", sa.Integer(), nullable=False),
    sa.Column("development", sa.Boolean(), nullable=False),
    sa.Column("superseded_grace_seconds", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("state", sa.String(), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("namespace_id", "name", name="uq_policies_namespace_id_name"),
    _choice("policies", "state", r.POLICY_STATES),
)

cas = sa.Table(
    "cas",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
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
    _ts("revoked_at", nullable=True),  # 0007
    sa.Column("revocation_reason", sa.String(), nullable=True),  # 0007
    sa.UniqueConstraint("sha256", name="uq_cas_sha256"),
    _choice("cas", "kind", r.CA_KINDS),
    _choice("cas", "state", r.CA_STATES),
    sa.Index("ix_cas_namespace_id_kind", "namespace_id", "kind"),
    sa.Index("ix_cas_policy_id", "policy_id"),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("attestation_type", sa.String(), nullable=False),
    sa.Column("primary_key", sa.String(), nullable=True),
    sa.Column("secondary_key", sa.String(), nullable=True),
    sa.Column("x509_certificates", JSONType, nullable=False),
    sa.Column("x509_thumbprints", JSONType, nullable=False),
    sa.Column("credential_policy_name", sa.String(), nullable=True),
    sa.Column("initial_twin", JSONType, nullable=False),
    sa.Column("provisioning_status", sa.String(), nullable=False),
    sa.Column("reprovision_policy", JSONType, nullable=False),
    sa.Column("etag", sa.String(), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint(
        "namespace_id", "kind", "name", name="uq_enrollments_namespace_id_kind_name"
    ),
    _choice("enrollments", "kind", r.ENROLLMENT_KINDS),
    _choice("enrollments", "attestation_type", r.ATTESTATION_TYPES),
    _choice("enrollments", "provisioning_status", r.DEVICE_STATUSES),
    sa.CheckConstraint(
        "attestation_type <> 'symmetricKey' OR primary_key IS NOT NULL",
        name="ck_enrollments_symmetric_key",
    ),
    sa.Index("ix_enrollments_credential_policy_name", "credential_policy_name"),  # 0002
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(), primary_key=True),
    sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
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
    _choice("devices", "status", r.DEVICE_STATUSES),
    _choice("devices", "auth_type", r.AUTH_TYPES),
    _choice("devices", "connection_state", r.CONNECTION_STATES),
    sa.CheckConstraint("length(revocation_id) = 32", name="ck_devices_revocation_id_length"),
    sa.Index("ix_devices_namespace_id", "namespace_id"),
    sa.Index("ix_devices_enrollment_id", "enrollment_id"),
    sa.Index("ix_devices_status", "status"),  # 0002
)

twins = sa.Table(
    "twins",
    metadata,
    sa.Column(
        "device_id",
        sa.String(),
        sa.ForeignKey("devices.device_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("desired", JSONType, nullable=False),
    sa.Column("reported", JSONType, nullable=False),
    sa.Column("desired_version", sa.Integer(), nullable=False),
    sa.Column("reported_version", sa.Integer(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("etag", sa.String(), nullable=False),
    sa.Column("metadata", JSONType, nullable=False),
    _ts("updated_at"),
)

#: The condition of the partial index over certificates not issued through the hub; a
#: query must carry this exact text for SQLite to use the index.
NOT_VIA_HUB = "requested_via <> 'hub'"

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial_hex", sa.String(), primary_key=True),
    sa.Column("device_id", sa.String(), nullable=False),  # not a FK: history outlives devices
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
    sa.Column("operation_id", BigId, nullable=True),
    sa.Column("cert_der", sa.LargeBinary(), nullable=False),
    _ts("created_at"),
    sa.UniqueConstraint("sha256", name="uq_certificates_sha256"),
    _choice("certificates", "requested_via", r.REQUESTED_VIA),
    _choice("certificates", "state", r.CERTIFICATE_STATES),
    # 0010: key first, so a batch looks its keys up by hash (one probe each)
    sa.Index("ix_certificates_public_key_sha256_device_id", "public_key_sha256", "device_id"),
    # 0011: each device's newest certificate from the index alone (lifecycles, dashboard)
    sa.Index("ix_certificates_device_id_created_at", "device_id", "created_at", "serial_hex"),
    sa.Index("ix_certificates_not_after", "not_after"),
    sa.Index("ix_certificates_state_not_after", "state", "not_after"),
    sa.Index("ix_certificates_issuer_ca_id", "issuer_ca_id"),
    # 0013: the renewal sync's cursor over certificates issued other than through the hub
    sa.Index(
        "ix_certificates_created_at_not_hub",
        "created_at",
        "serial_hex",
        sqlite_where=sa.text(NOT_VIA_HUB),
        postgresql_where=sa.text(NOT_VIA_HUB),
    ),
)

credential_operations = sa.Table(
    "credential_operations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(), nullable=False),
    sa.Column("rid", sa.String(), nullable=False),
    sa.Column("correlation_id", sa.String(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("csr_der", sa.LargeBinary(), nullable=False),
    sa.Column("certificate_serial", sa.String(), nullable=True),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", JSONType, nullable=True),
    sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.false()),
    _ts("expires_at"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("correlation_id", name="uq_credential_operations_correlation_id"),
    sa.UniqueConstraint("device_id", "rid", name="uq_credential_operations_device_id_rid"),
    _choice("credential_operations", "state", r.OPERATION_STATES),
    sa.Index("ix_credential_operations_state_expires_at", "state", "expires_at"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    _ts("at"),
    sa.Column("actor", sa.String(), nullable=False),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("subject_type", sa.String(), nullable=False),
    sa.Column("subject_id", sa.String(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("details", JSONType, nullable=False),
    sa.Index("ix_audit_log_subject", "subject_type", "subject_id", "id"),
)
