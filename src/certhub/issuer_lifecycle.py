"""The lifecycle of policies' issuing CAs: revoke, rotate, delete a policy, retire.

Why a module of its own: these are operator actions over the store and the authority
(:class:`~certhub.authority.CertificateAuthorityService`), each one transaction with
its audit entries; the hub and the TLS layer follow them through the change feed
(``ca.changed``, ``policy.changed`` and ``certificate.revoked`` events, written by
triggers), so they work the same from the CLI, the admin API or another node.

States of an issuing CA (``cas.state``)::

    active   trusted by the hub; the newest active CA of an active policy issues
    retired  no longer trusted: replaced by a rotation (or its policy deleted) and its
             last live leaf has expired — see :meth:`IssuerLifecycle.retire_drained`
    revoked  no longer trusted, at once (``revoke-issuer``); its leaves are revoked too;
             ``revoked_at`` / ``revocation_reason`` feed the root's CRL

A planned rotation creates the successor ``active`` (new issuance uses it at once) and
leaves the predecessor ``active`` — still trusted — until it is drained. (The schema's
``successor`` state, a CA trusted before it issues, is not used by rotation; it is
trusted like ``active``.) Deleting a policy stops issuance under it; its CAs stay
trusted until their leaves expire, then retire like rotated ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService
from certhub.pki import KeyType, key_type_of
from certhub.registry.errors import NotFound
from certhub.registry.records import AuditEvent, CaRecord, PolicyRecord

__all__ = [
    "ISSUER_EVENTS",
    "TRUSTED_CA_STATES",
    "IssuerChange",
    "IssuerLifecycle",
    "RetirementLoop",
    "RootRotation",
]

log = logging.getLogger("certhub.issuers")

TRUSTED_CA_STATES = ("active", "successor")
"""CA states the hub trusts (the same as :data:`certhub.listener.trust.LIVE_CA_STATES`)."""

ISSUER_EVENTS = frozenset({"ca.changed", "policy.changed"})
"""Change-feed kinds after which cached issuers must be re-read."""

DEFAULT_REVOKE_REASON = "issuer revoked by operator"


@dataclass(frozen=True, kw_only=True)
class IssuerChange:
    """What a revoke-issuer or rotate-issuer did."""

    policy: PolicyRecord
    new_ca: CaRecord
    previous: tuple[CaRecord, ...]
    """The policy's earlier trusted issuing CAs, as they are after the change."""
    revoked_serials: tuple[str, ...] = ()
    """Leaves revoked with them (revoke-issuer only), sorted."""


@dataclass(frozen=True, kw_only=True)
class RootRotation:
    """What a root rotation did."""

    new_root: CaRecord
    previous: tuple[CaRecord, ...]
    """The roots trusted before (still trusted until drained)."""
    issuers: tuple[CaRecord, ...]
    """The new issuing CA of each active policy, signed by the new root."""


class IssuerLifecycle:
    """Operator actions on policies and their issuing CAs (blocking; run in an executor)."""

    def __init__(self, authority: CertificateAuthorityService) -> None:
        self.authority = authority
        self.store = authority.store

    # -- actions ----------------------------------------------------------------------

    def revoke_issuer(
        self, policy_name: str, *, actor: str, reason: str = DEFAULT_REVOKE_REASON
    ) -> IssuerChange:
        """Replace the policy's issuing CA(s) with a new one and revoke the old and their leaves.

        One transaction: a new active CA, every earlier trusted CA ``revoked`` (time and
        reason recorded), every live leaf they signed ``revoked``, audit entries. The hub
        stops trusting the old CAs and closes their sessions on the change feed. Raises
        NotFound for an unknown or deleted policy.
        """
        with self.store.transaction() as conn:
            policy, trusted = self._policy_and_trusted(policy_name, conn)
            new_ca = self._add_successor(policy, conn, actor)
            now = self.authority.clock.now()
            previous = tuple(
                self.store.set_ca_state(ca.id, "revoked", now, conn=conn, reason=reason)
                for ca in trusted
            )
            serials = self.store.revoke_certificates_issued_by(
                [ca.id for ca in trusted], now, reason, conn=conn
            )
            for ca in previous:
                self._audit(conn, actor, "ca.revoke", "ca", ca.serial_hex, reason, _ca_details(ca))
            details = {
                "newCa": new_ca.serial_hex,
                "revokedCas": [ca.serial_hex for ca in previous],
                "revokedCertificates": len(serials),
            }
            self._audit(conn, actor, "policy.revoke-issuer", "policy", policy.name, reason, details)
        self.authority.invalidate()
        return IssuerChange(
            policy=policy, new_ca=new_ca, previous=previous, revoked_serials=tuple(serials)
        )

    def rotate_issuer(
        self, policy_name: str, *, actor: str, reason: str | None = None
    ) -> IssuerChange:
        """Add a successor issuing CA that issues from now on; the old ones stay trusted.

        The predecessors are retired by :meth:`retire_drained` once their last live leaf
        has expired. Raises NotFound for an unknown or deleted policy.
        """
        with self.store.transaction() as conn:
            policy, trusted = self._policy_and_trusted(policy_name, conn)
            new_ca = self._add_successor(policy, conn, actor)
            details = {"newCa": new_ca.serial_hex, "previousCas": [c.serial_hex for c in trusted]}
            self._audit(conn, actor, "policy.rotate-issuer", "policy", policy.name, reason, details)
        self.authority.invalidate()
        return IssuerChange(policy=policy, new_ca=new_ca, previous=tuple(trusted))

    def delete_policy(
        self, policy_name: str, *, actor: str, reason: str | None = None
    ) -> PolicyRecord:
        """Stop issuance under the policy; certificates it issued work until they expire.

        DPS enrollments naming it then fail with 400005 (no usable credential policy).
        Raises NotFound for an unknown or already deleted policy.
        """
        with self.store.transaction() as conn:
            policy, _ = self._policy_and_trusted(policy_name, conn)
            now = self.authority.clock.now()
            deleted = self.store.set_policy_state(policy.id, "deleted", now, conn=conn)
            self._audit(conn, actor, "policy.delete", "policy", policy.name, reason, {})
        self.authority.invalidate()
        return deleted

    def rotate_root(self, *, actor: str, reason: str | None = None) -> RootRotation:
        """Overlap rotation of the namespace root: a new root, and a new issuing CA under
        it for every active policy, which issue from now on.

        The old root and its issuing CAs stay trusted while their leaves live; then
        :meth:`retire_drained` retires the issuing CAs and, once none is left under it,
        the old root. One transaction. (Not cross-signed: certhub's hub decides from the
        store, and third parties get both roots from ``certhub ca list``.)
        """
        ns = self.authority.namespace
        with self.store.transaction() as conn:
            roots = [
                r
                for r in self.store.list_cas(ns.id, kind="root", conn=conn)
                if r.state in TRUSTED_CA_STATES
            ]
            key_type = _key_type(roots[-1]) if roots else KeyType.P256
            count = len(self.store.list_cas(ns.id, kind="root", conn=conn))
            row = self.authority.new_root_ca(key_type=key_type, generation=count + 1)
            new_root = self.store.add_ca(row, conn=conn)
            self._audit(
                conn, actor, "ca.create", "ca", new_root.serial_hex, reason, _ca_details(new_root)
            )
            issuers = [
                self._add_successor(policy, conn, actor, root=new_root)
                for policy in self.store.list_policies(ns.id, conn=conn)
            ]
            details = {
                "newRoot": new_root.serial_hex,
                "previousRoots": [r.serial_hex for r in roots],
                "newIssuingCas": [c.serial_hex for c in issuers],
            }
            self._audit(conn, actor, "namespace.rotate-root", "namespace", ns.name, reason, details)
        self.authority.invalidate()
        return RootRotation(new_root=new_root, previous=tuple(roots), issuers=tuple(issuers))

    def retire_drained(self, *, actor: str = "system") -> list[CaRecord]:
        """Retire trusted issuing CAs that no longer issue and whose leaves have all expired.

        "No longer issue": not the newest active CA of an active policy. Idempotent and
        safe to run on several nodes (a second run finds nothing); returns what it retired.
        """
        ns = self.authority.namespace
        with self.store.transaction() as conn:
            now = self.authority.clock.now()
            keep = self._issuing_now(ns.id, conn)
            drained = self.store.drained_issuing_cas(ns.id, now, conn=conn)
            retired = [
                self.store.set_ca_state(ca.id, "retired", now, conn=conn)
                for ca in drained
                if ca.id not in keep
            ]
            retired += self._retire_orphan_roots(ns.id, now, conn)
            for ca in retired:
                reason = (
                    "last certificate expired" if ca.kind == "issuing" else "no issuing CA left"
                )
                self._audit(conn, actor, "ca.retire", "ca", ca.serial_hex, reason, _ca_details(ca))
        if retired:
            self.authority.invalidate()
        return retired

    def expiring(self, within: dt.timedelta) -> list[CaRecord]:
        """Trusted CAs (root, issuing, server, onboarding) expiring within ``within``."""
        ns = self.authority.namespace
        return self.store.list_expiring_cas(ns.id, self.authority.clock.now(), within)

    def on_events(self, batch: Sequence[Any]) -> None:
        """Change-feed handler: forget cached issuers after a CA or policy change elsewhere."""
        if any(event.kind in ISSUER_EVENTS for event in batch):
            self.authority.invalidate()

    # -- steps --------------------------------------------------------------------------

    def _policy_and_trusted(
        self, policy_name: str, conn: Connection
    ) -> tuple[PolicyRecord, list[CaRecord]]:
        ns = self.authority.namespace
        policy = self.store.get_policy(ns.id, policy_name, conn=conn)
        if policy is None or policy.state != "active":
            raise NotFound("policy", policy_name)
        cas = self.store.list_cas(ns.id, kind="issuing", policy_id=policy.id, conn=conn)
        return policy, [ca for ca in cas if ca.state in TRUSTED_CA_STATES]

    def _retire_orphan_roots(
        self, namespace_id: int, now: dt.datetime, conn: Connection
    ) -> list[CaRecord]:
        """Trusted roots other than the newest that no trusted issuing CA chains to."""
        roots = [
            r
            for r in self.store.list_cas(namespace_id, kind="root", conn=conn)
            if r.state in TRUSTED_CA_STATES
        ]
        issuing = self.store.list_cas(namespace_id, kind="issuing", conn=conn)
        used = {_issuer_name(ca) for ca in issuing if ca.state in TRUSTED_CA_STATES}
        return [
            self.store.set_ca_state(root.id, "retired", now, conn=conn)
            for root in roots[:-1]
            if root.subject not in used
        ]

    def _add_successor(
        self, policy: PolicyRecord, conn: Connection, actor: str, root: CaRecord | None = None
    ) -> CaRecord:
        cas = self.store.list_cas(
            policy.namespace_id, kind="issuing", policy_id=policy.id, conn=conn
        )
        key_type = _key_type(cas[-1]) if cas else KeyType.P256
        row = self.authority.new_issuing_ca(
            policy, key_type=key_type, generation=len(cas) + 1, root=root
        )
        new_ca = self.store.add_ca(row, conn=conn)
        self._audit(conn, actor, "ca.create", "ca", new_ca.serial_hex, None, _ca_details(new_ca))
        return new_ca

    def _issuing_now(self, namespace_id: int, conn: Connection) -> set[int]:
        """Ids of the CA each active policy issues from (its newest active issuing CA)."""
        active = {p.id for p in self.store.list_policies(namespace_id, conn=conn)}
        newest: dict[int, int] = {}
        for ca in self.store.list_cas(namespace_id, kind="issuing", state="active", conn=conn):
            if ca.policy_id in active:
                newest[ca.policy_id] = max(ca.id, newest.get(ca.policy_id, 0))
        return set(newest.values())

    def _audit(
        self,
        conn: Connection,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str,
        reason: str | None,
        details: dict[str, Any],
    ) -> None:
        event = AuditEvent(
            at=self.authority.clock.now(),
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            reason=reason,
            details=details,
        )
        self.store.append_audit(event, conn=conn)


def _issuer_name(ca: CaRecord) -> str:
    return x509.load_pem_x509_certificate(ca.cert_pem.encode()).issuer.rfc4514_string()


def _key_type(ca: CaRecord) -> KeyType:
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    return key_type_of(cert.public_key()) or KeyType.P256


def _ca_details(ca: CaRecord) -> dict[str, Any]:
    return {
        "id": ca.id,
        "subject": ca.subject,
        "policyId": ca.policy_id,
        "state": ca.state,
        "notAfter": ca.not_after.isoformat(),
    }


class RetirementLoop:
    """Runs :meth:`IssuerLifecycle.retire_drained` every ``interval`` seconds.

    Self-contained so that a cluster can run it under a lease on one node: call
    :meth:`run_once` from the lease holder instead of :meth:`start`.
    """

    def __init__(
        self,
        lifecycle: IssuerLifecycle,
        run: Callable[..., Awaitable[Any]],
        *,
        interval: float = 60.0,
    ) -> None:
        self.lifecycle = lifecycle
        self._run = run
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> list[CaRecord]:
        """One check (in the executor); the CAs it retired."""
        retired: list[CaRecord] = await self._run(self.lifecycle.retire_drained)
        for ca in retired:
            log.info("retired %s CA %s (%s): drained", ca.kind, ca.id, ca.subject)
        return retired

    async def start(self) -> None:
        """Check now and then every ``interval`` seconds in the background."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retiring drained issuing CAs failed")
            await asyncio.sleep(self.interval)
