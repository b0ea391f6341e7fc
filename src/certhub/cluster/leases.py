"""Named leases with expiry, in a table: the same code on SQLite and PostgreSQL.

Why a table rather than PostgreSQL advisory locks: an advisory lock lives as long as one
pooled connection, which a pool recycles and a network blip drops silently; a row with
an expiry is visible (``SELECT * FROM cluster_leases``), works on SQLite too, and a dead
holder's lease simply runs out. The price is clock agreement between nodes: a lease is
taken over ``ttl`` after its last renewal by the holder's clock, so keep node clocks
within a fraction of ``ttl`` (NTP does).

Acquire and renew are one statement each (a conditional UPDATE, then an INSERT that
loses quietly on conflict), so two nodes racing for a free lease cannot both win.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from certhub.cluster._schema import cluster_leases
from certhub.cluster.errors import LeaseError
from certhub.registry.engine import WRITE_OPTIONS

__all__ = ["LeaseRecord", "LeaseStore"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseRecord:
    """Who holds lease ``name`` and until when."""

    name: str
    holder: str
    acquired_at: dt.datetime
    expires_at: dt.datetime


class LeaseStore:
    """Acquire, renew, release and list leases (blocking; call from an executor)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**WRITE_OPTIONS)
        """Write transactions take SQLite's write lock at BEGIN (queueing on the busy
        timeout) instead of failing when a read inside them meets a newer commit."""

    def acquire(self, name: str, holder: str, ttl: dt.timedelta, now: dt.datetime) -> bool:
        """Take or renew lease ``name`` for ``holder`` until ``now + ttl``; True if held.

        Succeeds when the lease is free, expired, or already ``holder``'s.
        """
        _check(name, ttl)
        expires = now + ttl
        lease = cluster_leases.c
        take = (
            sa.update(cluster_leases)
            .where(lease.name == name)
            .where(sa.or_(lease.holder == holder, lease.expires_at <= now))
            .values(holder=holder, expires_at=expires, acquired_at=_acquired(holder, now))
        )
        with self._writer.begin() as conn:
            if conn.execute(take).rowcount == 1:
                return True
            insert = (
                _insert_ignore(conn.dialect.name)
                .values(name=name, holder=holder, acquired_at=now, expires_at=expires)
                .returning(cluster_leases.c.name)
            )
            return conn.execute(insert).first() is not None

    def release(self, name: str, holder: str) -> bool:
        """Give up ``name`` if ``holder`` holds it; True if it did."""
        stmt = sa.delete(cluster_leases).where(
            cluster_leases.c.name == name, cluster_leases.c.holder == holder
        )
        with self._writer.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def get(self, name: str) -> LeaseRecord | None:
        """The lease row, expired or not (None: never taken or released)."""
        stmt = sa.select(cluster_leases).where(cluster_leases.c.name == name)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else LeaseRecord(**row._mapping)

    def holder(self, name: str, now: dt.datetime) -> str | None:
        """Who holds ``name`` at ``now`` (None when free or expired)."""
        lease = self.get(name)
        return lease.holder if lease is not None and lease.expires_at > now else None


def _acquired(holder: str, now: dt.datetime) -> sa.ColumnElement[dt.datetime]:
    """Keep ``acquired_at`` on a renewal, reset it on a takeover."""
    return sa.case(
        (cluster_leases.c.holder == holder, cluster_leases.c.acquired_at),
        else_=sa.literal(now, cluster_leases.c.acquired_at.type),
    )


def _insert_ignore(dialect: str) -> sa.Insert:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(cluster_leases).on_conflict_do_nothing(index_elements=["name"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(cluster_leases).on_conflict_do_nothing(index_elements=["name"])


def _check(name: str, ttl: dt.timedelta) -> None:
    if not name:
        raise LeaseError(name, "empty-name")
    if ttl <= dt.timedelta(0):
        raise LeaseError(name, "bad-ttl")
