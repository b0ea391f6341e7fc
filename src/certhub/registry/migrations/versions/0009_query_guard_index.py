"""SQLite: the ``validUntil`` index also holds the JSON type guard (counts read no row).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27

IoT Hub compares only values of the same type, so the query compiler guards a string
comparison on a twin path with the JSON type of the value
(:func:`certhub.query.index_guard_expression`). With 0005's one-expression index each
matching twin was read back to evaluate that guard (a JSON parse per row, ~2 µs); here
``ix_twins_reported_valid_until`` is rebuilt (same name) on two expressions —
the compared value (:func:`certhub.query.index_expression`) and its type — so both
conditions are index conditions. It still serves everything the old index served (its
first column is the same). The texts are written out, as in 0005, so this revision
never changes when the code moves on; a test compares them with the compiler's.

SQLite only. On PostgreSQL the same two-column index made a 1 % count ~1.5x faster
(1,000,000 twins) but, since ANALYZE then knows how selective the guard is, the planner
switched ``SELECT deviceId … WHERE validUntil < X`` (first page) to a walk of all devices
in id order, 2x slower; the 0005 index stays there (docs/benchmarks.md, Query).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

NAME = "ix_twins_reported_valid_until"

#: dialect -> (value expression, type-guard expression); the value one is 0005's.
EXPRESSIONS: dict[str, tuple[str, str]] = {
    "sqlite": (
        "json_extract(reported, '$.certificate.validUntil')",
        "coalesce(json_type(reported, '$.certificate.validUntil'), 'undefined')",
    ),
}


def _create(expressions: tuple[str, ...]) -> None:
    op.execute(f"CREATE INDEX {NAME} ON twins ({', '.join(expressions)})")


def upgrade() -> None:
    """Rebuild the index on (value, type guard)."""
    dialect = op.get_bind().dialect.name
    if dialect in EXPRESSIONS:
        op.execute(f"DROP INDEX IF EXISTS {NAME}")
        _create(EXPRESSIONS[dialect])


def downgrade() -> None:
    """Back to 0005's index on the value alone."""
    dialect = op.get_bind().dialect.name
    if dialect in EXPRESSIONS:
        op.execute(f"DROP INDEX IF EXISTS {NAME}")
        _create(EXPRESSIONS[dialect][:1])
