"""Schema migrations: upgrade a database in place to the newest revision.

The Alembic scripts ship inside the package (``certhub/registry/migrations``), so
no ``alembic.ini`` is needed: the configuration is built here. An upgrade runs in
one write transaction (DDL is transactional on both SQLite and PostgreSQL), and on
PostgreSQL under an advisory lock, so processes starting together do not race.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from certhub.registry.engine import WRITE_OPTIONS, create_store_engine

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade",
]

#: Directory holding ``env.py`` and ``versions/``.
MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
_PG_LOCK_KEY = 0x63657274687562  # "certhub"
_Step = Callable[[Config], None]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at the packaged scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the package knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or ``None`` for a database never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url_or_engine: str | URL | Engine, revision: str = "head") -> str | None:
    """Upgrade the database to ``revision`` (default: head) and return its new revision."""
    return _run(url_or_engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url_or_engine: str | URL | Engine, revision: str) -> str | None:
    """Downgrade the database to ``revision`` (``"base"`` drops everything)."""
    return _run(url_or_engine, lambda cfg: command.downgrade(cfg, revision))


def _run(url_or_engine: str | URL | Engine, step: _Step) -> str | None:
    if isinstance(url_or_engine, Engine):
        return _run_on(url_or_engine, step)
    engine = create_store_engine(url_or_engine)
    try:
        return _run_on(engine, step)
    finally:
        engine.dispose()


def _run_on(engine: Engine, step: _Step) -> str | None:
    with engine.connect() as conn:
        writer = conn.execution_options(**WRITE_OPTIONS)
        with writer.begin():
            if writer.dialect.name == "postgresql":
                writer.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            step(alembic_config(writer))
            return MigrationContext.configure(writer).get_current_revision()
