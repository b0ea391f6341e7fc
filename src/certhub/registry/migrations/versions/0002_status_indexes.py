"""Index devices by status and enrollments by credential policy name.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the two lookup indexes."""
    op.create_index("ix_devices_status", "devices", ["status"])
    op.create_index(
        "ix_enrollments_credential_policy_name", "enrollments", ["credential_policy_name"]
    )


def downgrade() -> None:
    """Drop the two lookup indexes."""
    op.drop_index("ix_enrollments_credential_policy_name", table_name="enrollments")
    op.drop_index("ix_devices_status", table_name="devices")
