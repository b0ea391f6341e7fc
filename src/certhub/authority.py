"""The authority as the server runs it: the pure :mod:`certhub.pki` core joined to the store.

:class:`CertificateAuthorityService` holds a namespace's CAs and policies. It creates
policies (each with its own issuing CA signed by the namespace root), keeps decrypted
CA keys in memory, and issues device leaves so that the certificate row and its audit
event are committed in one transaction — the protocol front-ends (DPS, hub renewal)
only authorize and call :meth:`CertificateAuthorityService.issue`; they never sign.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import Connection

from certhub.clock import Clock
from certhub.issuing import (
    BatchIssuance,
    IssueItem,
    PendingSignatures,
    PolicyIssuer,
    SignedItem,
)
from certhub.pki import (
    Authority,
    CaKeyPair,
    IssuedLeaf,
    KeyType,
    LeafPolicy,
    certificate_sha256,
    create_issuing_ca,
    create_root_ca,
    decrypt_private_key,
    encrypt_private_key,
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
    PolicyRecord,
    RequestedVia,
)
from certhub.signing import SigningProcesses

__all__ = [
    "CertificateAuthorityService",
    "IssueItem",
    "PendingSignatures",
    "PolicyIssuer",
    "SignedItem",
    "leaf_policy_of",
    "new_ca_row",
]

log = logging.getLogger("certhub.authority")
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
        signer: SigningProcesses | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        """Child processes that validate and sign (None: this process signs)."""
        self.clock = clock
        self.rng = rng
        self._passphrase = passphrase
        self._namespace_name = namespace
        self._crl_base_url = crl_base_url
        self.authority = Authority(clock, rng)
        self._keys: dict[int, CaKeyPair] = {}
        self._issuers: dict[str, tuple[float, PolicyIssuer]] = {}
        self._lock = threading.Lock()
        self._batches = BatchIssuance(
            store,
            authority=self.authority,
            clock=clock,
            rng=rng,
            signer=signer,
            issuer_for=self.issuer_for,
            crl_url=self.crl_url,
        )

    # -- lookups -----------------------------------------------------------------

    @property
    def namespace(self) -> NamespaceRecord:
        ns = self.store.get_namespace(self._namespace_name)
        if ns is None:
            raise NotFound("namespace", self._namespace_name)
        return ns

    def root_ca(self) -> CaRecord:
        """The namespace's newest active root CA (the one that signs new issuing CAs)."""
        roots = self.store.list_cas(self.namespace.id, kind="root", state="active")
        if not roots:
            raise NotFound("root CA", self._namespace_name)
        return roots[-1]

    def root_certificate_of(self, ca: CaRecord) -> x509.Certificate:
        """The root that signed issuing CA ``ca`` (matched by subject; after a root
        rotation two roots coexist until the old one's issuing CAs retire)."""
        issuer = self.ca_pair(ca).certificate.issuer.rfc4514_string()
        roots = self.store.list_cas(self.namespace.id, kind="root")
        matching = [r for r in roots if r.subject == issuer] or [self.root_ca()]
        return self.ca_pair(matching[-1]).certificate

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
        root = self.root_certificate_of(cas[-1])
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

    def new_issuing_ca(
        self,
        policy: PolicyRecord,
        *,
        key_type: KeyType,
        generation: int = 1,
        root: CaRecord | None = None,
    ) -> NewCa:
        """A fresh issuing CA for ``policy``, signed by ``root`` (default: the newest
        active root), as a store row.

        ``generation`` > 1 adds `` G{n}`` to the common name (rotations, revocations).
        Nothing is written; the caller adds the row in its own transaction.
        """
        root_rec = root or self.root_ca()
        suffix = f" G{generation}" if generation > 1 else ""
        ica = create_issuing_ca(
            self.ca_pair(root_rec),
            common_name=f"certhub {self.namespace.name} {policy.name} issuing CA{suffix}",
            key_type=key_type,
            clock=self.clock,
            rng=self.rng,
            validity=ISSUING_CA_VALIDITY,
            crl_url=self.crl_url(root_rec.id),
        )
        subject = ica.certificate.subject.rfc4514_string()
        return new_ca_row(
            policy.namespace_id,
            "issuing",
            subject,
            ica,
            self._passphrase,
            self.clock.now(),
            policy_id=policy.id,
        )

    def new_root_ca(self, *, key_type: KeyType, generation: int) -> NewCa:
        """A fresh self-signed namespace root (`` G{n}`` in its name) as a store row."""
        ns = self.namespace
        root = create_root_ca(
            common_name=f"certhub {ns.name} root CA G{generation}",
            key_type=key_type,
            clock=self.clock,
            rng=self.rng,
        )
        name = root.certificate.subject.rfc4514_string()
        return new_ca_row(ns.id, "root", name, root, self._passphrase, self.clock.now())

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
        """:meth:`BatchIssuance.issue_batch <certhub.issuing.BatchIssuance.issue_batch>`."""
        return self._batches.issue_batch(items, conn=conn)

    def sign_batch(
        self, items: Sequence[IssueItem], *, conn: Connection | None = None
    ) -> list[SignedItem | Exception]:
        """:meth:`BatchIssuance.sign_batch <certhub.issuing.BatchIssuance.sign_batch>`."""
        return self._batches.sign_batch(items, conn=conn)

    def begin_sign_batch(
        self,
        items: Sequence[IssueItem],
        *,
        conn: Connection | None = None,
        key_history: bool = True,
    ) -> PendingSignatures:
        """:meth:`BatchIssuance.begin_sign_batch
        <certhub.issuing.BatchIssuance.begin_sign_batch>`."""
        return self._batches.begin_sign_batch(items, conn=conn, key_history=key_history)

    def record_batch(
        self, signed: Sequence[SignedItem | Exception], *, conn: Connection
    ) -> list[IssuedLeaf | Exception]:
        """:meth:`BatchIssuance.record_batch <certhub.issuing.BatchIssuance.record_batch>`."""
        return self._batches.record_batch(signed, conn=conn)


def _policy_details(leaf: LeafPolicy) -> dict[str, Any]:
    return {
        "validitySeconds": int(leaf.validity.total_seconds()),
        "keyTypes": sorted(k.value for k in leaf.key_types),
        "backdateSeconds": int(leaf.backdate.total_seconds()),
        "development": leaf.development,
    }
