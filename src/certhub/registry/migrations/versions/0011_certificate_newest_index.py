"""Certificates: an index that finds a device's newest certificate without a sort.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27

A device's lifecycle is decided by its newest certificate (by issue time, then serial:
:func:`certhub.registry._service.device_lifecycle_source`), looked up once per device by
the admin API's device listing and by the dashboard's fleet aggregates. With only
``ix_certificates_device_id`` each lookup read the device's certificate rows and sorted
them; ``(device_id, created_at, serial_hex)`` answers it from the index alone (SQLite,
100,000 devices: the lifecycle join 178 → 108 ms, the dashboard snapshot ~17 % faster;
docs/benchmarks.md, Dashboard).
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

NAME = "ix_certificates_device_id_created_at"


def upgrade() -> None:
    """Add the (device, issue time, serial) index."""
    op.create_index(NAME, "certificates", ["device_id", "created_at", "serial_hex"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index(NAME, table_name="certificates")
