"""Issued certificates: the issuance hot path, lookups and state changes.

Every certificate signed is recorded by ``record_issuances`` (a batch, in the issuing
transaction) or ``record_issuance`` (one): two prebuilt INSERTs through the driver
(:mod:`certhub.registry._issuance`).
State changes are single ``UPDATE … WHERE state IN (allowed sources) RETURNING``
statements, so a forbidden transition costs no extra round trip when it succeeds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, record
from certhub.registry._issuance import IssuanceWriter
from certhub.registry._types import UTCDateTime
from certhub.registry.errors import Conflict, NotFound
from certhub.registry.records import (
    CERTIFICATE_STATES,
    AuditEvent,
    CertificateRecord,
    CertificateState,
    NewCertificate,
    check_aware,
    check_choice,
)
from certhub.registry.schema import certificates

__all__ = ["CertificateMixin"]

_T = certificates
_NEW_FIELDS = tuple(f.name for f in fields(NewCertificate))
_LIVE = ("issued", "active", "superseded")
#: target state -> states it may be reached from (a state may always be "set" again).
_SOURCES: dict[str, tuple[str, ...]] = {
    "issued": ("issued",),
    "active": ("issued", "active"),
    "superseded": ("issued", "active", "superseded"),
    "revoked": (*_LIVE, "expired", "revoked"),
    "expired": (*_LIVE, "expired"),
}


class CertificateMixin(StoreBase):
    """Certificate methods of the store."""

    _issuance: IssuanceWriter  # set by Store.__init__

    def record_issuance(
        self, cert: NewCertificate, audit: AuditEvent, *, conn: Connection | None = None
    ) -> CertificateRecord:
        """Insert the certificate row and its audit entry atomically.

        Raises AlreadyExists if the serial or SHA-256 is taken, Conflict if the policy
        or issuer CA does not exist. If the audit entry fails, no certificate remains.
        """
        self._issuance.write(cert, audit, conn)
        params = {name: getattr(cert, name) for name in _NEW_FIELDS}
        return CertificateRecord(
            **params, revoked_at=None, revocation_reason=None, first_used_at=None
        )

    def record_issuances(
        self, entries: Sequence[tuple[NewCertificate, AuditEvent]], *, conn: Connection
    ) -> None:
        """:meth:`record_issuance` for many certificates at once, in ``conn``'s
        transaction (two ``executemany``: a renewal turn records a hundred at a time)."""
        self._issuance.write_many(entries, conn)

    def get_certificate(
        self, serial_hex: str, conn: Connection | None = None
    ) -> CertificateRecord | None:
        """The certificate with this serial, or None."""
        return self._one_certificate(_T.c.serial_hex == serial_hex, conn)

    def get_certificate_by_sha256(
        self, sha256: str, conn: Connection | None = None
    ) -> CertificateRecord | None:
        """The certificate with this SHA-256 fingerprint (lower-case hex), or None."""
        return self._one_certificate(_T.c.sha256 == sha256, conn)

    def public_key_seen(
        self, device_id: str, public_key_sha256: str, conn: Connection | None = None
    ) -> bool:
        """Whether a certificate for this device was ever issued for this public key."""
        stmt = (
            sa.select(sa.literal(1))
            .where(_T.c.device_id == device_id, _T.c.public_key_sha256 == public_key_sha256)
            .limit(1)
        )
        with self._read(conn) as c:
            return c.execute(stmt).first() is not None

    def seen_public_keys(
        self, pairs: Sequence[tuple[str, str]], conn: Connection | None = None
    ) -> set[tuple[str, str]]:
        """Which ``(device_id, public_key_sha256)`` pairs were ever certified (one query)."""
        if not pairs:
            return set()
        # One probe per key hash (index 0010: key first), pairs matched here. Two IN
        # lists (device, hash) made SQLite probe every combination — 65,536 probes for a
        # batch of 256 — and a row-value IN made it scan the whole index.
        wanted = set(pairs)
        stmt = sa.select(_T.c.device_id, _T.c.public_key_sha256).where(
            _T.c.public_key_sha256.in_(sorted({k for _, k in wanted}))
        )
        with self._read(conn) as c:
            return {(d, k) for d, k in c.execute(stmt) if (d, k) in wanted}

    def list_certificates(
        self,
        device_id: str | None = None,
        state: CertificateState | None = None,
        expiring_before: dt.datetime | None = None,
        limit: int = 100,
        after_serial: str | None = None,
        conn: Connection | None = None,
    ) -> list[CertificateRecord]:
        """Certificates ordered by serial; page with ``after_serial``."""
        stmt = sa.select(_T).order_by(_T.c.serial_hex).limit(limit)
        if device_id is not None:
            stmt = stmt.where(_T.c.device_id == device_id)
        if state is not None:
            stmt = stmt.where(_T.c.state == state)
        if expiring_before is not None:
            stmt = stmt.where(_T.c.not_after < expiring_before)
        if after_serial is not None:
            stmt = stmt.where(_T.c.serial_hex > after_serial)
        with self._read(conn) as c:
            return [_cert(row) for row in c.execute(stmt)]

    def set_certificate_state(
        self,
        serial_hex: str,
        state: CertificateState,
        now: dt.datetime,
        reason: str | None = None,
        conn: Connection | None = None,
    ) -> CertificateRecord:
        """Move a certificate to ``state``.

        ``active`` records the first use; ``revoked`` records time and reason.
        Raises NotFound, or Conflict("invalid-transition") e.g. out of ``revoked``.
        """
        check_choice("state", state, CERTIFICATE_STATES)
        check_aware("now", now)
        at = sa.literal(now, UTCDateTime())
        values: dict[str, Any] = {"state": state}
        if state == "active":
            values["first_used_at"] = sa.func.coalesce(_T.c.first_used_at, at)
        if state == "revoked":
            values["revoked_at"] = sa.func.coalesce(_T.c.revoked_at, at)
            values["revocation_reason"] = sa.func.coalesce(
                _T.c.revocation_reason, sa.literal(reason, sa.String())
            )
        where = _T.c.serial_hex == serial_hex
        stmt = (
            sa.update(_T)
            .where(where, _T.c.state.in_(_SOURCES[state]))
            .values(values)
            .returning(*_T.c)
        )
        with self._write(conn, "certificate", serial_hex) as c:
            row = c.execute(stmt).first()
            if row is None:
                current = c.execute(sa.select(_T.c.state).where(where)).scalar_one_or_none()
                if current is None:
                    raise NotFound("certificate", serial_hex)
                raise Conflict(
                    "certificate", serial_hex, "invalid-transition", f"{current}->{state}"
                )
            return _cert(row)

    def revoke_device_certificates(
        self, device_id: str, now: dt.datetime, reason: str, conn: Connection | None = None
    ) -> list[str]:
        """Revoke every live (issued/active/superseded) certificate of a device.

        Returns the revoked serials, sorted (for the CRL).
        """
        values = {"state": "revoked", "revoked_at": now, "revocation_reason": reason}
        where = sa.and_(_T.c.device_id == device_id, _T.c.state.in_(_LIVE))
        return self._bulk_state(where, values, device_id, conn)

    def supersede_device_certificates(
        self, device_id: str, keep_serial: str, now: dt.datetime, conn: Connection | None = None
    ) -> list[str]:
        """Mark the device's other issued/active certificates superseded; returns their serials.

        Call when ``keep_serial`` is first seen in use; ``now`` is accepted for symmetry.
        """
        check_aware("now", now)
        where = sa.and_(
            _T.c.device_id == device_id,
            _T.c.state.in_(("issued", "active")),
            _T.c.serial_hex != keep_serial,
        )
        return self._bulk_state(where, {"state": "superseded"}, device_id, conn)

    def expire_certificates(self, now: dt.datetime, conn: Connection | None = None) -> list[str]:
        """Mark live certificates whose ``not_after`` is at or before ``now`` expired."""
        where = sa.and_(_T.c.state.in_(_LIVE), _T.c.not_after <= now)
        return self._bulk_state(where, {"state": "expired"}, "*", conn)

    def _bulk_state(
        self,
        where: sa.ColumnElement[bool],
        values: dict[str, Any],
        key: str,
        conn: Connection | None,
    ) -> list[str]:
        stmt = sa.update(_T).where(where).values(values).returning(_T.c.serial_hex)
        with self._write(conn, "certificate", key) as c:
            return sorted(c.execute(stmt).scalars())

    def _one_certificate(
        self, where: sa.ColumnElement[bool], conn: Connection | None
    ) -> CertificateRecord | None:
        with self._read(conn) as c:
            return record(CertificateRecord, c.execute(sa.select(_T).where(where)).first())


def _cert(row: sa.Row[Any]) -> CertificateRecord:
    return CertificateRecord(**row._mapping)
