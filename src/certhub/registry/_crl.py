"""Published CRLs and what they are built from.

Why settings rows: a CRL is one blob per CA plus a few numbers, read far more often
than written, so it lives in the ``settings`` table (no migration) under two keys —
``crl.{ca_id}.meta`` (JSON: number, thisUpdate, nextUpdate, fingerprint) and
``crl.{ca_id}.der`` (base64) — written together in one transaction. Every server
process serves the bytes stored here, so all of them publish the same CRL.

The CRL number only grows: :meth:`CrlMixin.lock_crl` takes the CA's meta row for
update (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write transactions are already
exclusive), and a publisher writes ``number + 1`` only if nobody published in between
(see :mod:`certhub.service.pki_http`).

A *fingerprint* — ``"{count}:{newest revocation time}"`` of everything revoked under a
CA — tells cheaply (one aggregate over an indexed column) whether the stored CRL is
still current, without reading the entries.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase
from certhub.registry.records import check_aware
from certhub.registry.schema import cas, certificates, settings

__all__ = ["CrlMixin", "RevokedRow", "StoredCrl", "fingerprint_of"]

_C = certificates


class RevokedRow(NamedTuple):
    """One revoked certificate (leaf or issuing CA) as a CRL needs it (a tuple: 100k fast)."""

    serial_hex: str
    revoked_at: dt.datetime
    reason: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredCrl:
    """A published CRL; ``der`` is None when only the metadata was read."""

    ca_id: int
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    fingerprint: str
    der: bytes | None = None

    def meta_json(self) -> str:
        return json.dumps(
            {
                "number": self.number,
                "thisUpdate": self.this_update.isoformat(),
                "nextUpdate": self.next_update.isoformat(),
                "fingerprint": self.fingerprint,
            }
        )


def fingerprint_of(count: int, newest: dt.datetime | None) -> str:
    """The fingerprint of a set of revocations: its size and newest revocation time."""
    return f"{count}:{'-' if newest is None else newest.astimezone(dt.UTC).isoformat()}"


def _meta_key(ca_id: int) -> str:
    return f"crl.{ca_id}.meta"


def _der_key(ca_id: int) -> str:
    return f"crl.{ca_id}.der"


def _parse_meta(ca_id: int, value: str | None) -> StoredCrl | None:
    data = json.loads(value) if value else {}
    if "number" not in data:
        return None
    return StoredCrl(
        ca_id=ca_id,
        number=int(data["number"]),
        this_update=dt.datetime.fromisoformat(data["thisUpdate"]),
        next_update=dt.datetime.fromisoformat(data["nextUpdate"]),
        fingerprint=str(data["fingerprint"]),
    )


class CrlMixin(StoreBase):
    """CRL methods of the store."""

    # -- what a CRL lists ---------------------------------------------------------------

    def revoked_leaves(
        self, ca_id: int, listed_from: dt.datetime | None = None, conn: Connection | None = None
    ) -> list[RevokedRow]:
        """The revoked certificates the CA issued, in one query.

        ``listed_from`` drops those that expired before it (None keeps all). Read the
        fingerprint *before* the entries (PostgreSQL reads each statement at its own
        snapshot): a revocation in between then only makes the next check rebuild.
        """
        raw = self.dialect_name == "sqlite"  # ISO text parsed below: 3x faster than Core's
        when = sa.func.coalesce(_C.c.revoked_at, _C.c.not_before)
        revoked_at = sa.type_coerce(when, sa.String() if raw else _C.c.revoked_at.type)
        stmt = sa.select(_C.c.serial_hex, revoked_at, _C.c.revocation_reason)
        stmt = stmt.where(_C.c.issuer_ca_id == ca_id, _C.c.state == "revoked")
        if listed_from is not None:
            check_aware("listed_from", listed_from)
            stmt = stmt.where(_C.c.not_after >= listed_from)
        with self._read(conn) as c:
            rows = c.execute(stmt).all()
        if not raw:
            return [RevokedRow(*row) for row in rows]
        times: dict[str, dt.datetime] = {}
        out = []
        for serial, text, why in rows:
            at = times.get(text)
            if at is None:
                at = times[text] = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            out.append(RevokedRow(serial, at, why))
        return out

    def revoked_leaves_fingerprint(self, ca_id: int, conn: Connection | None = None) -> str:
        """The fingerprint of :meth:`revoked_leaves` (one aggregate query)."""
        stmt = sa.select(sa.func.count(), sa.func.max(_C.c.revoked_at)).where(
            _C.c.issuer_ca_id == ca_id, _C.c.state == "revoked"
        )
        with self._read(conn) as c:
            count, newest = c.execute(stmt).one()
        return fingerprint_of(int(count), newest)

    def revoked_issuing_cas(
        self,
        namespace_id: int,
        listed_from: dt.datetime | None = None,
        conn: Connection | None = None,
    ) -> list[tuple[RevokedRow, str]]:
        """Revoked issuing CAs of a namespace with their certificate PEM (to match the root)."""
        # ``revoked_at``/``revocation_reason`` came with migration 0007; ``retired_at`` is
        # also set when a CA is revoked, so it stands in for rows revoked before it.
        revoked_at = sa.func.coalesce(cas.c.revoked_at, cas.c.retired_at, cas.c.not_before)
        stmt = sa.select(
            cas.c.serial_hex,
            sa.type_coerce(revoked_at, cas.c.not_before.type),
            cas.c.revocation_reason,
            cas.c.cert_pem,
        ).where(
            cas.c.namespace_id == namespace_id, cas.c.kind == "issuing", cas.c.state == "revoked"
        )
        if listed_from is not None:
            check_aware("listed_from", listed_from)
            stmt = stmt.where(cas.c.not_after >= listed_from)
        with self._read(conn) as c:
            rows = c.execute(stmt).all()
        return [(RevokedRow(s, r, why), pem) for s, r, why, pem in rows]

    # -- published CRLs -----------------------------------------------------------------

    def get_crl(
        self, ca_id: int, *, with_der: bool = True, conn: Connection | None = None
    ) -> StoredCrl | None:
        """The CA's published CRL (metadata, and the DER unless ``with_der`` is False)."""
        keys = [_meta_key(ca_id)] + ([_der_key(ca_id)] if with_der else [])
        stmt = sa.select(settings.c.key, settings.c.value).where(settings.c.key.in_(keys))
        with self._read(conn) as c:  # one statement: meta and DER from one snapshot
            values = {key: value for key, value in c.execute(stmt)}
        meta = _parse_meta(ca_id, values.get(keys[0]))
        if meta is None or not with_der:
            return meta
        der = values.get(_der_key(ca_id))
        if der is None:
            return None
        return StoredCrl(
            ca_id=ca_id,
            number=meta.number,
            this_update=meta.this_update,
            next_update=meta.next_update,
            fingerprint=meta.fingerprint,
            der=base64.b64decode(der),
        )

    def lock_crl(self, ca_id: int, conn: Connection) -> StoredCrl | None:
        """Inside a write transaction: lock the CA's CRL row and return its metadata."""
        key = _meta_key(ca_id)
        conn.execute(self._insert_ignore(), {"key": key, "value": "{}"})
        stmt = sa.select(settings.c.value).where(settings.c.key == key).with_for_update()
        return _parse_meta(ca_id, conn.execute(stmt).scalar_one())

    def save_crl(self, crl: StoredCrl, conn: Connection) -> None:
        """Inside the transaction of :meth:`lock_crl`: store a newly signed CRL."""
        if crl.der is None:
            raise ValueError("save_crl needs the DER")
        check_aware("this_update", crl.this_update)
        check_aware("next_update", crl.next_update)
        upsert = self._upsert()
        conn.execute(
            upsert, {"key": _der_key(crl.ca_id), "value": base64.b64encode(crl.der).decode()}
        )
        conn.execute(upsert, {"key": _meta_key(crl.ca_id), "value": crl.meta_json()})

    def crl_ca_ids(self, conn: Connection | None = None) -> list[int]:
        """Ids of the CAs that have a published CRL."""
        stmt = sa.select(settings.c.key).where(settings.c.key.like("crl.%.meta"))
        with self._read(conn) as c:
            return sorted(int(k.split(".")[1]) for k in c.execute(stmt).scalars())

    def _insert_ignore(self) -> Any:
        return _dialect_insert(self.dialect_name).on_conflict_do_nothing(
            index_elements=[settings.c.key]
        )

    def _upsert(self) -> Any:
        stmt = _dialect_insert(self.dialect_name)
        return stmt.on_conflict_do_update(
            index_elements=[settings.c.key], set_={"value": stmt.excluded.value}
        )


def _dialect_insert(dialect_name: str) -> Any:
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(settings)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(settings)
