"""The authority as the server runs it: the pure :mod:`certhub.pki` core joined to the store.

:class:`CertificateAuthorityService` holds a namespace's CAs and policies. It creates
policies (each with its own issuing CA signed by the namespace root), keeps decrypted
CA keys in memory, and issues device leaves so that the certificate row and its audit
event are committed in one transaction — the protocol front-ends (DPS, hub renewal)
only authorize and call :meth:`CertificateAuthorityService.issue`; they never sign.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import Connection

from certhub.clock import Clock
from certhub.pki import (
    Authority,
    CaKeyPair,
    CsrRejected,
    IssuanceError,
    IssuanceRequest,
    IssuedLeaf,
    KeyType,
    LeafPolicy,
    PolicyError,
    certificate_sha256,
    create_issuing_ca,
    decrypt_private_key,
    encrypt_private_key,
    public_key_sha256,
)
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry.errors import NotFound
from certhub.registry.records import (
    AuditEvent,
    CaKind,
    CaRecord,
    NamespaceRecord,
    NewCa,
    NewCertificate,
    PolicyRecord,
    RequestedVia,
)

__all__ = [
    "CertificateAuthorityService",
    "IssueItem",
    "PolicyIssuer",
    "leaf_policy_of",
    "new_ca_row",
]

ISSUING_CA_VALIDITY = dt.timedelta(days=365)
ISSUER_CACHE_SECONDS = 2.0


def leaf_policy_of(record: PolicyRecord) -> LeafPolicy:
    """The pki view of a stored policy."""
    return LeafPolicy.create(
        record.name,
        dt.timedelta(seconds=record.validity_seconds),
        record.key_types,
        dt.timedelta(seconds=record.backdate_seconds),
        record.development,
    )


def new_ca_row(
    namespace_id: int,
    kind: CaKind,
    name: str,
    pair: CaKeyPair | x509.Certificate,
    passphrase: bytes | None,
    now: dt.datetime,
    policy_id: int | None = None,
) -> NewCa:
    """A store row for a CA certificate (and its encrypted key when ``pair`` has one)."""
    cert = pair.certificate if isinstance(pair, CaKeyPair) else pair
    key = None
    if isinstance(pair, CaKeyPair) and passphrase is not None:
        key = encrypt_private_key(pair.private_key, passphrase)
    return NewCa(
        namespace_id=namespace_id,
        kind=kind,
        name=name,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        subject=cert.subject.rfc4514_string(),
        serial_hex=format(cert.serial_number, "x"),
        sha256=certificate_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        created_at=now,
        key_pem_encrypted=key,
        policy_id=policy_id,
    )


@dataclass(frozen=True)
class PolicyIssuer:
    """What issuing under one policy needs: the policy, its issuing CA and the root."""

    policy: PolicyRecord
    leaf_policy: LeafPolicy
    ca_record: CaRecord
    ca: CaKeyPair
    root: x509.Certificate


class CertificateAuthorityService:
    """Policies, CAs and issuance for one namespace, backed by the store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        rng: Random,
        passphrase: bytes,
        namespace: str = "default",
        crl_base_url: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng
        self._passphrase = passphrase
        self._namespace_name = namespace
        self._crl_base_url = crl_base_url
        self.authority = Authority(clock, rng)
        self._keys: dict[int, CaKeyPair] = {}
        self._issuers: dict[str, tuple[float, PolicyIssuer]] = {}
        self._lock = threading.Lock()

    # -- lookups -----------------------------------------------------------------

    @property
    def namespace(self) -> NamespaceRecord:
        ns = self.store.get_namespace(self._namespace_name)
        if ns is None:
            raise NotFound("namespace", self._namespace_name)
        return ns

    def root_ca(self) -> CaRecord:
        """The namespace's active root CA."""
        roots = self.store.list_cas(self.namespace.id, kind="root", state="active")
        if not roots:
            raise NotFound("root CA", self._namespace_name)
        return roots[0]

    def ca_pair(self, record: CaRecord) -> CaKeyPair:
        """The CA's certificate and decrypted key (decrypted once, then cached)."""
        with self._lock:
            pair = self._keys.get(record.id)
            if pair is None:
                if record.key_pem_encrypted is None:
                    raise NotFound("CA private key", record.name)
                key = decrypt_private_key(record.key_pem_encrypted, self._passphrase)
                cert = x509.load_pem_x509_certificate(record.cert_pem.encode())
                pair = self._keys[record.id] = CaKeyPair(certificate=cert, private_key=key)
            return pair

    def invalidate(self) -> None:
        """Forget cached policies and issuers (after a policy or CA change)."""
        with self._lock:
            self._issuers.clear()

    def issuer_for(self, policy_name: str) -> PolicyIssuer:
        """The active policy of that name with its current issuing CA.

        Cached for :data:`ISSUER_CACHE_SECONDS` (changes made by another process show
        up within that time; changes made through this object at once).
        """
        now = time.monotonic()
        cached = self._issuers.get(policy_name)
        if cached is not None and now - cached[0] < ISSUER_CACHE_SECONDS:
            return cached[1]
        issuer = self._load_issuer(policy_name)
        self._issuers[policy_name] = (now, issuer)
        return issuer

    def _load_issuer(self, policy_name: str) -> PolicyIssuer:
        ns = self.namespace
        policy = self.store.get_policy(ns.id, policy_name)
        if policy is None or policy.state != "active":
            raise NotFound("policy", policy_name)
        cas = self.store.list_cas(ns.id, kind="issuing", policy_id=policy.id, state="active")
        if not cas:
            raise NotFound("issuing CA of policy", policy_name)
        root = self.ca_pair(self.root_ca()).certificate
        return PolicyIssuer(policy, leaf_policy_of(policy), cas[-1], self.ca_pair(cas[-1]), root)

    def crl_url(self, ca_id: int) -> str | None:
        if self._crl_base_url is None:
            return None
        return f"{self._crl_base_url.rstrip('/')}/crl/{ca_id}.crl"

    # -- policies ----------------------------------------------------------------

    def create_policy(
        self, leaf: LeafPolicy, *, actor: str, ca_key_type: KeyType = KeyType.P256
    ) -> PolicyRecord:
        """Create a policy and its issuing CA (signed by the root) in one transaction."""
        ns = self.namespace
        now = self.clock.now()
        root_rec = self.root_ca()
        root = self.ca_pair(root_rec)
        ica = create_issuing_ca(
            root,
            common_name=f"certhub {ns.name} {leaf.name} issuing CA",
            key_type=ca_key_type,
            clock=self.clock,
            rng=self.rng,
            validity=ISSUING_CA_VALIDITY,
            crl_url=self.crl_url(root_rec.id),
        )
        with self.store.transaction() as conn:
            policy = self.store.create_policy(
                ns.id,
                leaf.name,
                int(leaf.validity.total_seconds()),
                sorted(k.value for k in leaf.key_types),
                int(leaf.backdate.total_seconds()),
                leaf.development,
                now,
                conn=conn,
            )
            row = new_ca_row(
                ns.id,
                "issuing",
                ica.certificate.subject.rfc4514_string(),
                ica,
                self._passphrase,
                now,
                policy_id=policy.id,
            )
            self.store.add_ca(row, conn=conn)
            self.store.append_audit(
                AuditEvent(
                    at=now,
                    actor=actor,
                    action="policy.create",
                    subject_type="policy",
                    subject_id=leaf.name,
                    details=_policy_details(leaf),
                ),
                conn=conn,
            )
        self.invalidate()
        return policy

    # -- issuance ----------------------------------------------------------------

    def issue(
        self,
        *,
        device_id: str,
        csr_der: bytes,
        policy_name: str,
        requested_via: RequestedVia,
        actor: str,
        revocation_id: bytes | None = None,
        operation_id: int | None = None,
        conn: Connection | None = None,
    ) -> IssuedLeaf:
        """Validate and sign ``csr_der`` for ``device_id`` and record it with an audit event.

        Raises :class:`certhub.pki.CsrRejected` (with ``reason``) for a refused CSR and
        :class:`~certhub.registry.errors.NotFound` for an unknown device or policy. The
        device lookup, the key-reuse check and the record share one transaction (the
        caller's when ``conn`` is given), so a certificate is recorded exactly when it
        is returned.
        """
        item = IssueItem(
            device_id=device_id,
            csr_der=csr_der,
            policy_name=policy_name,
            requested_via=requested_via,
            actor=actor,
            revocation_id=revocation_id,
            operation_id=operation_id,
        )
        result = self.issue_batch([item], conn=conn)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def issue_batch(
        self, items: Sequence[IssueItem], *, conn: Connection | None = None
    ) -> list[IssuedLeaf | Exception]:
        """Issue several certificates in ONE transaction (one commit, one fsync).

        Each item's result is its leaf or the exception that refused it (a refused
        item records nothing; the others are unaffected). Two items of one batch that
        bring the same public key for the same device: the second is ``key-reused``.
        """
        if conn is not None:
            return self._issue_batch(items, conn)
        with self.store.transaction() as own:
            return self._issue_batch(items, own)

    def _issue_batch(
        self, items: Sequence[IssueItem], conn: Connection
    ) -> list[IssuedLeaf | Exception]:
        wanted = [i.device_id for i in items if i.revocation_id is None]
        revocation_ids = self.store.revocation_ids(wanted, conn=conn)
        seen = self.store.seen_public_keys(_key_pairs(items), conn=conn)
        results: list[IssuedLeaf | Exception] = []
        for item in items:
            try:
                leaf, issuer, rid = self._sign_one(item, revocation_ids, seen)
            except (CsrRejected, NotFound, IssuanceError, PolicyError) as exc:
                results.append(exc)
                continue
            seen.add((item.device_id, leaf.public_key_sha256))
            self._record(item, leaf, issuer, rid, conn)
            results.append(leaf)
        return results

    def _sign_one(
        self, item: IssueItem, revocation_ids: dict[str, bytes], seen: set[tuple[str, str]]
    ) -> tuple[IssuedLeaf, PolicyIssuer, bytes]:
        issuer = self.issuer_for(item.policy_name)
        revocation_id = item.revocation_id or revocation_ids.get(item.device_id)
        if revocation_id is None:
            raise NotFound("device", item.device_id)
        device_id = item.device_id
        request = IssuanceRequest(
            csr_der=item.csr_der,
            device_id=device_id,
            revocation_id=revocation_id,
            policy=issuer.leaf_policy,
            issuer=issuer.ca,
            root=issuer.root,
            crl_url=self.crl_url(issuer.ca_record.id),
            key_seen=lambda h: (device_id, h) in seen,
        )
        return self.authority.sign(request), issuer, revocation_id

    def _record(
        self,
        item: IssueItem,
        leaf: IssuedLeaf,
        issuer: PolicyIssuer,
        revocation_id: bytes,
        conn: Connection,
    ) -> None:
        now = self.clock.now()
        record = NewCertificate(
            serial_hex=leaf.serial_hex,
            device_id=item.device_id,
            policy_id=issuer.policy.id,
            issuer_ca_id=issuer.ca_record.id,
            not_before=leaf.not_before,
            not_after=leaf.not_after,
            sha256=leaf.sha256_thumbprint,
            sha1=leaf.sha1_thumbprint,
            public_key_sha256=leaf.public_key_sha256,
            key_type=leaf.key_type.value,
            revocation_id=revocation_id,
            requested_via=item.requested_via,
            cert_der=leaf.chain_der[0],
            created_at=now,
            operation_id=item.operation_id,
        )
        audit = AuditEvent(
            at=now,
            actor=item.actor,
            action="certificate.issue",
            subject_type="device",
            subject_id=item.device_id,
            details={
                "serial": leaf.serial_hex,
                "policy": issuer.policy.name,
                "via": item.requested_via,
                "notAfter": leaf.not_after.isoformat(),
            },
        )
        self.store.record_issuance(record, audit, conn=conn)


@dataclass(frozen=True, kw_only=True)
class IssueItem:
    """One certificate to issue (see :meth:`CertificateAuthorityService.issue`)."""

    device_id: str
    csr_der: bytes
    policy_name: str
    requested_via: RequestedVia
    actor: str
    revocation_id: bytes | None = None
    operation_id: int | None = None


def _key_pairs(items: Sequence[IssueItem]) -> list[tuple[str, str]]:
    """(device, public-key hash) of each parsable CSR, for one bulk key-reuse lookup."""
    pairs = []
    for item in items:
        try:
            csr = x509.load_der_x509_csr(item.csr_der)
            pairs.append((item.device_id, public_key_sha256(csr.public_key())))
        except (ValueError, TypeError):
            continue  # the validators will refuse it with the right reason
    return pairs


def _policy_details(leaf: LeafPolicy) -> dict[str, Any]:
    return {
        "validitySeconds": int(leaf.validity.total_seconds()),
        "keyTypes": sorted(k.value for k in leaf.key_types),
        "backdateSeconds": int(leaf.backdate.total_seconds()),
        "development": leaf.development,
    }
