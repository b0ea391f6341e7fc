"""Certificates: a partial index for the renewal sync's cursor, hub certificates left out.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27

The renewal detection job gives a window to each live certificate issued elsewhere than
through the hub's credentials API (DPS, the CLI, the admin API) since its last run. It
walked *every* live certificate created since then, hub renewals included — with no index
on ``created_at`` SQLite read every live certificate through the state index and sorted
them, once per page of 1,000. After a minute of renewal storm that was 1.3 s of CPU in
one run (24,713 certificates walked to find 812). ``(created_at, serial_hex) WHERE
requested_via <> 'hub'`` serves the cursor directly: the hub's renewals get their window
in the transaction that issues them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

NAME = "ix_certificates_created_at_not_hub"
WHERE = "requested_via <> 'hub'"  # certhub.registry.schema.NOT_VIA_HUB at 0013


def upgrade() -> None:
    """Add the partial (created_at, serial_hex) index."""
    op.create_index(
        NAME,
        "certificates",
        ["created_at", "serial_hex"],
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index(NAME, table_name="certificates")
