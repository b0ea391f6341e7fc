"""DPS registration state: registration records and register operations.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-27

Self-contained (no imports from the live schema); mirrors
``certhub.registry._dps.dps_registrations`` / ``dps_operations``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

JSON_ = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create ``dps_registrations`` and ``dps_operations``."""
    op.create_table(
        "dps_registrations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
        sa.Column("registration_id", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column(
            "enrollment_id",
            sa.Integer(),
            sa.ForeignKey("enrollments.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("attestation_type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("substatus", sa.String(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.String(), nullable=True),
        sa.Column("assigned_hub", sa.String(), nullable=True),
        sa.Column("attestation", JSON_, nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        _ts("first_assigned_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint(
            "namespace_id",
            "registration_id",
            name="uq_dps_registrations_namespace_id_registration_id",
        ),
        sa.CheckConstraint(
            "status IN ('assigned', 'failed', 'disabled')", name="ck_dps_registrations_status"
        ),
    )
    op.create_index("ix_dps_registrations_device_id", "dps_registrations", ["device_id"])
    op.create_table(
        "dps_operations",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("operation_id", sa.String(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), sa.ForeignKey("namespaces.id"), nullable=False),
        sa.Column("registration_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("request_sha256", sa.String(), nullable=True),
        sa.Column("certificate_serial", sa.String(), nullable=True),
        sa.Column("response", JSON_, nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.UniqueConstraint("operation_id", name="uq_dps_operations_operation_id"),
        sa.CheckConstraint(
            "status IN ('assigning', 'assigned', 'failed', 'disabled')",
            name="ck_dps_operations_status",
        ),
    )
    op.create_index(
        "ix_dps_operations_registration",
        "dps_operations",
        ["namespace_id", "registration_id", "id"],
    )
    op.create_index("ix_dps_operations_expires_at", "dps_operations", ["expires_at"])


def downgrade() -> None:
    """Drop the two DPS tables."""
    op.drop_table("dps_operations")
    op.drop_table("dps_registrations")
