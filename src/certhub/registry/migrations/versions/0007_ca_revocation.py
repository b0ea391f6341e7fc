"""Record when and why a CA was revoked (the root's CRL lists revoked issuing CAs).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

``cas.revoked_at`` and ``cas.revocation_reason`` mirror the certificate columns of the
same names; ``retired_at`` keeps meaning "stopped being trusted" for both retired and
revoked CAs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the two nullable columns (existing revoked CAs get their ``retired_at``)."""
    op.add_column("cas", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cas", sa.Column("revocation_reason", sa.String(), nullable=True))
    op.execute("UPDATE cas SET revoked_at = retired_at WHERE state = 'revoked'")


def downgrade() -> None:
    """Drop the two columns (plain ALTER TABLE: a batch copy would drop the SQLite triggers)."""
    op.execute("ALTER TABLE cas DROP COLUMN revocation_reason")
    op.execute("ALTER TABLE cas DROP COLUMN revoked_at")
