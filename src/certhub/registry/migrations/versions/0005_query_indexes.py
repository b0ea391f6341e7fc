"""Expression indexes for the IoT Hub query language.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-27

The query compiler (:mod:`certhub.query`) emits, for a filter on a twin path, exactly
the text of :func:`certhub.query.index_expression` for that path; SQLite uses an index
on an expression only when the query's expression matches it, and PostgreSQL only
when expression and collation match. The texts below are that function's output for
the store's mapping (a test compares them), written out so that this revision never
changes when the code moves on:

* twins ``properties.reported.certificate.validUntil`` (fleet expiry queries);
* PostgreSQL only: ``status``, ``device_id`` and the certificates' ``serial_hex`` under
  the ``"C"`` collation the compiler compares and orders strings with (the plain
  indexes carry the database's default collation, which the planner does not match).
  SQLite's plain ``ix_devices_status`` (0002) and primary keys already serve these.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0003"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

#: (index name, table, expression) per dialect.
INDEXES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "sqlite": (
        (
            "ix_twins_reported_valid_until",
            "twins",
            "json_extract(reported, '$.certificate.validUntil')",
        ),
    ),
    "postgresql": (
        (
            "ix_twins_reported_valid_until",
            "twins",
            "(reported #>> '{certificate,validUntil}') COLLATE \"C\"",
        ),
        ("ix_devices_status_c", "devices", 'status COLLATE "C"'),
        ("ix_devices_device_id_c", "devices", 'device_id COLLATE "C"'),
        ("ix_certificates_serial_hex_c", "certificates", 'serial_hex COLLATE "C"'),
    ),
}


def _wrap(expression: str, dialect: str) -> str:
    # PostgreSQL wants an expression in its own parentheses; SQLite takes it bare.
    return f"({expression})" if dialect == "postgresql" else expression


def upgrade() -> None:
    """Create the expression indexes of the current dialect."""
    dialect = op.get_bind().dialect.name
    for name, table, expression in INDEXES.get(dialect, ()):
        op.execute(f"CREATE INDEX {name} ON {table} ({_wrap(expression, dialect)})")


def downgrade() -> None:
    """Drop them."""
    dialect = op.get_bind().dialect.name
    for name, _table, _expression in INDEXES.get(dialect, ()):
        op.execute(f"DROP INDEX IF EXISTS {name}")
