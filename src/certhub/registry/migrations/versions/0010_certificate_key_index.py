"""Certificates: the public-key index leads with the key hash.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

Every issuance checks that the device never had its new key certified before. Batches
(DPS and renewal group commits, up to 256 requests) asked for their ``(device, key hash)``
pairs with two IN lists over the ``(device_id, public_key_sha256)`` index; SQLite then
probed every combination (65,536 probes for 256 requests, ~30 % of a renewal batch's
store time). With the key hash first, ``public_key_sha256 IN (…)`` is one probe per
request, and the single-pair check (device and key) still uses the same index.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

OLD = ("ix_certificates_device_id_public_key_sha256", ["device_id", "public_key_sha256"])
NEW = ("ix_certificates_public_key_sha256_device_id", ["public_key_sha256", "device_id"])


def upgrade() -> None:
    """Replace the (device, key) index by (key, device)."""
    op.create_index(NEW[0], "certificates", NEW[1])
    op.drop_index(OLD[0], table_name="certificates")


def downgrade() -> None:
    """Back to the (device, key) index."""
    op.create_index(OLD[0], "certificates", OLD[1])
    op.drop_index(NEW[0], table_name="certificates")
