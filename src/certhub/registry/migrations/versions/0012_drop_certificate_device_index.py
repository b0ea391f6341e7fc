"""Certificates: drop ``ix_certificates_device_id``, which 0011's index makes redundant.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27

``(device_id, created_at, serial_hex)`` (0011) answers every lookup by ``device_id``
that ``(device_id)`` answered, so the single-column index only cost an index entry per
certificate issued. Every query by device was checked against the plans after the drop
(tests/registry/test_registry_migrations.py): SQLite now reads the 0011 index.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

NAME = "ix_certificates_device_id"


def upgrade() -> None:
    """Drop the single-column index."""
    op.drop_index(NAME, table_name="certificates")


def downgrade() -> None:
    """Create it again."""
    op.create_index(NAME, "certificates", ["device_id"])
