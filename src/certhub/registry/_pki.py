"""CA certificates and credential policies.

A policy's current issuing CA is the newest ``cas`` row with kind ``issuing``, that
``policy_id`` and state ``active``; a rotation adds a newer active row and the older one
is retired once drained (:mod:`certhub.issuer_lifecycle`), so CAs are never updated in
place except for their state (and, when revoked, ``revoked_at``/``revocation_reason``,
which the root's CRL lists). :meth:`PkiMixin.list_expiring_cas` reports trusted CAs
nearing their notAfter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certhub.registry._base import StoreBase, record, update_one
from certhub.registry._types import UTCDateTime
from certhub.registry.errors import Conflict
from certhub.registry.records import (
    CA_STATES,
    POLICY_STATES,
    CaKind,
    CaRecord,
    CaState,
    NewCa,
    PolicyRecord,
    PolicyState,
    check_aware,
    check_choice,
)
from certhub.registry.schema import cas, certificates, policies

__all__ = ["PkiMixin"]

_LIVE = ("issued", "active", "superseded")
_TRUSTED = ("active", "successor")
_NEW_CA_FIELDS = (
    "namespace_id",
    "kind",
    "name",
    "cert_pem",
    "subject",
    "serial_hex",
    "sha256",
    "not_before",
    "not_after",
    "created_at",
    "key_pem_encrypted",
    "policy_id",
    "state",
)


class PkiMixin(StoreBase):
    """CA and policy methods of the store."""

    def add_ca(self, ca: NewCa, conn: Connection | None = None) -> CaRecord:
        """Store a CA; AlreadyExists if its SHA-256 is already stored."""
        values = {name: getattr(ca, name) for name in _NEW_CA_FIELDS}
        stmt = sa.insert(cas).values(values).returning(*cas.c)
        with self._write(conn, "ca", ca.name) as c:
            return CaRecord(**c.execute(stmt).one()._mapping)

    def get_ca(self, ca_id: int, conn: Connection | None = None) -> CaRecord | None:
        """The CA with this id, or None."""
        with self._read(conn) as c:
            return record(CaRecord, c.execute(sa.select(cas).where(cas.c.id == ca_id)).first())

    def get_ca_by_sha256(self, sha256: str, conn: Connection | None = None) -> CaRecord | None:
        """The CA whose certificate has this SHA-256 (lower-case hex), or None."""
        with self._read(conn) as c:
            row = c.execute(sa.select(cas).where(cas.c.sha256 == sha256)).first()
            return record(CaRecord, row)

    def list_cas(
        self,
        namespace_id: int,
        kind: CaKind | None = None,
        policy_id: int | None = None,
        state: CaState | None = None,
        conn: Connection | None = None,
    ) -> list[CaRecord]:
        """CAs of a namespace, oldest first, optionally filtered."""
        stmt = sa.select(cas).where(cas.c.namespace_id == namespace_id).order_by(cas.c.id)
        for column, value in (("kind", kind), ("policy_id", policy_id), ("state", state)):
            if value is not None:
                stmt = stmt.where(cas.c[column] == value)
        with self._read(conn) as c:
            return [CaRecord(**row._mapping) for row in c.execute(stmt)]

    def set_ca_state(
        self,
        ca_id: int,
        state: CaState,
        now: dt.datetime,
        conn: Connection | None = None,
        reason: str | None = None,
    ) -> CaRecord:
        """Change a CA's state; retiring or revoking records ``retired_at``.

        Revoking also records ``revoked_at`` and ``revocation_reason`` (first time wins,
        as for certificates). Raises NotFound, or Conflict("invalid-transition") to leave
        ``revoked``.
        """
        check_choice("state", state, CA_STATES)
        check_aware("now", now)
        at = sa.literal(now, UTCDateTime())
        values: dict[str, Any] = {"state": state}
        if state in ("retired", "revoked"):
            values["retired_at"] = sa.func.coalesce(cas.c.retired_at, at)
        if state == "revoked":
            values["revoked_at"] = sa.func.coalesce(cas.c.revoked_at, at)
            values["revocation_reason"] = sa.func.coalesce(
                cas.c.revocation_reason, sa.literal(reason, sa.String())
            )
        with self._write(conn, "ca", ca_id) as c:
            current = c.execute(sa.select(cas.c.state).where(cas.c.id == ca_id)).scalar()
            if current == "revoked" and state != "revoked":
                raise Conflict("ca", str(ca_id), "invalid-transition", f"revoked->{state}")
            row = update_one(c, cas, cas.c.id == ca_id, values, ("ca", str(ca_id)))
            return CaRecord(**row._mapping)

    def revoke_certificates_issued_by(
        self,
        ca_ids: Sequence[int],
        now: dt.datetime,
        reason: str,
        conn: Connection | None = None,
    ) -> list[str]:
        """Revoke every live (issued/active/superseded) certificate these CAs signed.

        Returns the revoked serials, sorted. Each emits ``certificate.revoked``.
        """
        check_aware("now", now)
        if not ca_ids:
            return []
        where = sa.and_(
            certificates.c.issuer_ca_id.in_(list(ca_ids)), certificates.c.state.in_(_LIVE)
        )
        values = {"state": "revoked", "revoked_at": now, "revocation_reason": reason}
        stmt = (
            sa.update(certificates).where(where).values(values).returning(certificates.c.serial_hex)
        )
        with self._write(conn, "certificate", "*") as c:
            return sorted(c.execute(stmt).scalars())

    def drained_issuing_cas(
        self, namespace_id: int, now: dt.datetime, conn: Connection | None = None
    ) -> list[CaRecord]:
        """Trusted (active/successor) issuing CAs with no live certificate valid after ``now``.

        Candidates for retirement; the caller keeps the current issuer of each active
        policy (see :meth:`certhub.authority.CertificateAuthorityService.retire_drained`).
        """
        check_aware("now", now)
        live_leaf = (
            sa.select(sa.literal(1))
            .where(
                certificates.c.issuer_ca_id == cas.c.id,
                certificates.c.state.in_(_LIVE),
                certificates.c.not_after > sa.literal(now, UTCDateTime()),
            )
            .exists()
        )
        stmt = (
            sa.select(cas)
            .where(
                cas.c.namespace_id == namespace_id,
                cas.c.kind == "issuing",
                cas.c.state.in_(_TRUSTED),
                ~live_leaf,
            )
            .order_by(cas.c.id)
        )
        with self._read(conn) as c:
            return [CaRecord(**row._mapping) for row in c.execute(stmt)]

    def list_expiring_cas(
        self,
        namespace_id: int,
        now: dt.datetime,
        within: dt.timedelta,
        conn: Connection | None = None,
    ) -> list[CaRecord]:
        """Trusted (active/successor) CAs of any kind whose ``not_after`` is before
        ``now + within``, soonest first (for metrics and the dashboard)."""
        check_aware("now", now)
        horizon = sa.literal(now + within, UTCDateTime())
        stmt = (
            sa.select(cas)
            .where(
                cas.c.namespace_id == namespace_id,
                cas.c.state.in_(_TRUSTED),
                cas.c.not_after < horizon,
            )
            .order_by(cas.c.not_after, cas.c.id)
        )
        with self._read(conn) as c:
            return [CaRecord(**row._mapping) for row in c.execute(stmt)]

    def create_policy(
        self,
        namespace_id: int,
        name: str,
        validity_seconds: int,
        key_types: Sequence[str],
        backdate_seconds: int,
        development: bool,
        now: dt.datetime,
        superseded_grace_seconds: int = 0,
        conn: Connection | None = None,
    ) -> PolicyRecord:
        """Create an active policy; AlreadyExists if the namespace has one of that name."""
        _check_policy(validity_seconds, key_types, backdate_seconds, superseded_grace_seconds)
        check_aware("now", now)
        values = {
            "namespace_id": namespace_id,
            "name": name,
            "validity_seconds": validity_seconds,
            "key_types": list(key_types),
            "backdate_seconds": backdate_seconds,
            "development": development,
            "superseded_grace_seconds": superseded_grace_seconds,
            "state": "active",
            "created_at": now,
            "updated_at": now,
        }
        stmt = sa.insert(policies).values(values).returning(*policies.c)
        with self._write(conn, "policy", name) as c:
            return _policy(c.execute(stmt).one())

    def get_policy(
        self, namespace_id: int, name: str, conn: Connection | None = None
    ) -> PolicyRecord | None:
        """The policy of that name in the namespace (deleted ones included), or None."""
        where = sa.and_(policies.c.namespace_id == namespace_id, policies.c.name == name)
        return self._one_policy(where, conn)

    def get_policy_by_id(
        self, policy_id: int, conn: Connection | None = None
    ) -> PolicyRecord | None:
        """The policy with this id, or None."""
        return self._one_policy(policies.c.id == policy_id, conn)

    def list_policies(
        self, namespace_id: int, include_deleted: bool = False, conn: Connection | None = None
    ) -> list[PolicyRecord]:
        """Policies of a namespace by name."""
        stmt = (
            sa.select(policies)
            .where(policies.c.namespace_id == namespace_id)
            .order_by(policies.c.name)
        )
        if not include_deleted:
            stmt = stmt.where(policies.c.state == "active")
        with self._read(conn) as c:
            return [_policy(row) for row in c.execute(stmt)]

    def set_policy_state(
        self, policy_id: int, state: PolicyState, now: dt.datetime, conn: Connection | None = None
    ) -> PolicyRecord:
        """Mark a policy active or deleted; NotFound if it does not exist."""
        check_choice("state", state, POLICY_STATES)
        return self._update_policy(policy_id, {"state": state}, now, conn)

    def update_policy(
        self,
        policy_id: int,
        now: dt.datetime,
        *,
        validity_seconds: int | None = None,
        key_types: Sequence[str] | None = None,
        backdate_seconds: int | None = None,
        development: bool | None = None,
        superseded_grace_seconds: int | None = None,
        conn: Connection | None = None,
    ) -> PolicyRecord:
        """Change the given settings of a policy (None leaves a setting as it is)."""
        values: dict[str, Any] = {
            "validity_seconds": validity_seconds,
            "key_types": None if key_types is None else list(key_types),
            "backdate_seconds": backdate_seconds,
            "development": development,
            "superseded_grace_seconds": superseded_grace_seconds,
        }
        values = {k: v for k, v in values.items() if v is not None}
        _check_policy(
            values.get("validity_seconds", 1),
            values.get("key_types", ["-"]),
            values.get("backdate_seconds", 0),
            values.get("superseded_grace_seconds", 0),
        )
        return self._update_policy(policy_id, values, now, conn)

    def _update_policy(
        self, policy_id: int, values: dict[str, Any], now: dt.datetime, conn: Connection | None
    ) -> PolicyRecord:
        check_aware("now", now)
        ident = ("policy", str(policy_id))
        with self._write(conn, *ident) as c:
            where = policies.c.id == policy_id
            return _policy(update_one(c, policies, where, {**values, "updated_at": now}, ident))

    def _one_policy(
        self, where: sa.ColumnElement[bool], conn: Connection | None
    ) -> PolicyRecord | None:
        with self._read(conn) as c:
            row = c.execute(sa.select(policies).where(where)).first()
            return None if row is None else _policy(row)


def _check_policy(
    validity_seconds: int, key_types: Sequence[str], backdate_seconds: int, grace_seconds: int
) -> None:
    if validity_seconds <= 0:
        raise ValueError(f"validity_seconds={validity_seconds}: must be positive")
    if isinstance(key_types, str) or not key_types:
        raise ValueError(f"key_types={key_types!r}: expected a non-empty list of names")
    if backdate_seconds < 0 or grace_seconds < 0:
        raise ValueError("backdate_seconds and superseded_grace_seconds must not be negative")


def _policy(row: sa.Row[Any]) -> PolicyRecord:
    data = dict(row._mapping)
    data["key_types"] = tuple(data["key_types"])
    return PolicyRecord(**data)
