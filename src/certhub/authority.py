"""The authority as the server runs it: the pure :mod:`certhub.pki` core joined to the store.

:class:`CertificateAuthorityService` holds a namespace's CAs and policies. It creates
policies (each with its own issuing CA signed by the namespace root), keeps decrypted
CA keys in memory, and issues device leaves so that the certificate row and its audit
event are committed in one transaction — the protocol front-ends (DPS, hub renewal)
only authorize and call :meth:`CertificateAuthorityService.issue`; they never sign.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import Connection

from certhub.clock import Clock
from certhub.metrics import CERTIFICATES_ISSUED, LEAVES_SIGNED
from certhub.pki import (
    MAX_CSR_DER_BYTES,
    Authority,
    CaKeyPair,
    CsrContext,
    CsrRejected,
    IssuanceError,
    IssuanceRequest,
    IssuedLeaf,
    KeyType,
    LeafPolicy,
    PkiError,
    PolicyError,
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
    NewCertificate,
    PolicyRecord,
    RequestedVia,
)
from certhub.signing import (
    IssuerMaterial,
    PendingLeaves,
    SignBatch,
    SigningProcesses,
    SigningUnavailable,
    SignJob,
    issuer_material,
)

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
        self._materials: dict[int, IssuerMaterial] = {}
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
        signed = self.sign_batch(items, conn=conn)
        return self.record_batch(signed, conn=conn)

    def sign_batch(
        self, items: Sequence[IssueItem], *, conn: Connection | None = None
    ) -> list[SignedItem | Exception]:
        """Validate and sign each item without writing anything (the first half of
        :meth:`issue_batch`); :meth:`record_batch` writes the results and must run in
        the same transaction, or the key-reuse check could miss a concurrent issuance.

        Reads the devices' revocation ids and the keys they had certified (in ``conn``'s
        transaction when given). Each CSR is parsed once: the bulk key-reuse lookup and
        the validators share its :class:`~certhub.pki.CsrContext`.
        """
        return self.begin_sign_batch(items, conn=conn).result()

    def begin_sign_batch(
        self,
        items: Sequence[IssueItem],
        *,
        conn: Connection | None = None,
        key_history: bool = True,
    ) -> PendingSignatures:
        """:meth:`sign_batch` in two steps: the reads now, the signing in the
        :attr:`signer` processes while the caller does something else (at once, in
        this thread, without signing processes). ``result()`` gives what
        :meth:`sign_batch` returns; if the signing processes fail, it signs here.

        ``key_history=False`` skips the lookup of the keys each device had certified
        before (only the batch's own keys count as reused): for callers that check
        that again before they record a leaf, as the pre-signing paths do. It saves a
        query and, with signing processes, parsing each CSR in this process.
        """
        wanted = [i.device_id for i in items if i.revocation_id is None]
        revocation_ids = self.store.revocation_ids(wanted, conn=conn)
        seen: set[tuple[str, str]] = set()
        prepared = [self._prepare(item, revocation_ids, seen) for item in items]
        if key_history:
            seen |= self.store.seen_public_keys(_key_pairs(prepared), conn=conn)

        def here() -> list[SignedItem | Exception]:
            return _signed_items(prepared, self._sign_here(prepared, seen))

        if self.signer is not None and any(isinstance(e, _Prepared) for e in prepared):
            try:
                return self._sign_elsewhere(self.signer, prepared, seen, here)
            except SigningUnavailable:
                log.warning("signing in the server process (the signing processes failed)")
        return PendingSignatures.now(here())

    def _sign_here(
        self, prepared: Sequence[_Prepared | Exception], seen: set[tuple[str, str]]
    ) -> list[IssuedLeaf | PkiError]:
        """Each prepared entry's leaf or refusal, signed in this process."""
        leaves: list[IssuedLeaf | PkiError] = []
        for entry in prepared:
            if isinstance(entry, Exception):
                continue
            LEAVES_SIGNED.labels("server").inc()
            try:
                leaf = self.authority.sign(entry.request, context=entry.context)
            except (CsrRejected, IssuanceError, PolicyError) as exc:
                leaves.append(exc)
                continue
            seen.add((entry.item.device_id, leaf.public_key_sha256))
            leaves.append(leaf)
        return leaves

    def _sign_elsewhere(
        self,
        signer: SigningProcesses,
        prepared: Sequence[_Prepared | Exception],
        seen: set[tuple[str, str]],
        here: Callable[[], list[SignedItem | Exception]],
    ) -> PendingSignatures:
        """The signing half in the signing processes (the same results)."""
        issuers: dict[str, IssuerMaterial] = {}
        jobs: list[SignJob] = []
        for ready in prepared:
            if isinstance(ready, Exception):
                continue
            req = ready.request
            key = str(ready.issuer.ca_record.id)
            if key not in issuers:
                issuers[key] = self._material(ready.issuer)
            jobs.append(
                SignJob(
                    csr_der=req.csr_der,
                    device_id=req.device_id,
                    revocation_id=req.revocation_id,
                    policy=req.policy,
                    issuer=key,
                    crl_url=req.crl_url,
                    serial_bytes=self.rng.token_bytes(16),
                )
            )
        devices = {job.device_id for job in jobs}
        batch = SignBatch(
            now=self.clock.now(),
            validators=self.authority.validators,
            issuers=issuers,
            seen=frozenset(pair for pair in seen if pair[0] in devices),
            jobs=tuple(jobs),
        )
        pending = signer.submit(batch)
        if pending is None:  # no signing process has started yet
            return PendingSignatures.now(here())
        return PendingSignatures(pending, functools.partial(_signed_items, prepared), here)

    def _material(self, issuer: PolicyIssuer) -> IssuerMaterial:
        # an issuing CA's certificate, key and root never change: one entry per CA
        with self._lock:
            material = self._materials.get(issuer.ca_record.id)
            if material is None:
                material = issuer_material(issuer.ca, issuer.root)
                self._materials[issuer.ca_record.id] = material
            return material

    def record_batch(
        self, signed: Sequence[SignedItem | Exception], *, conn: Connection
    ) -> list[IssuedLeaf | Exception]:
        """Record the leaves :meth:`sign_batch` returned (read in this same ``conn``'s
        transaction, so the key-reuse check still holds), with their audit events."""
        results: list[IssuedLeaf | Exception] = []
        rows: list[tuple[NewCertificate, AuditEvent]] = []
        for entry in signed:
            if isinstance(entry, Exception):
                results.append(entry)
                continue
            rows.append(self._rows(entry.item, entry.leaf, entry.issuer, entry.revocation_id))
            results.append(entry.leaf)
        self.store.record_issuances(rows, conn=conn)
        for entry in signed:
            if not isinstance(entry, Exception):
                CERTIFICATES_ISSUED.labels(entry.item.requested_via).inc()
        return results

    def _prepare(
        self, item: IssueItem, revocation_ids: dict[str, bytes], seen: set[tuple[str, str]]
    ) -> _Prepared | Exception:
        try:
            issuer = self.issuer_for(item.policy_name)
        except (NotFound, PolicyError) as exc:
            return exc
        revocation_id = item.revocation_id or revocation_ids.get(item.device_id)
        if revocation_id is None:
            return NotFound("device", item.device_id)
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
        return _Prepared(item, issuer, request, self.authority.context(request))

    def _rows(
        self, item: IssueItem, leaf: IssuedLeaf, issuer: PolicyIssuer, revocation_id: bytes
    ) -> tuple[NewCertificate, AuditEvent]:
        """The certificate row and audit event recording ``leaf``."""
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
        return record, audit


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


@dataclass(frozen=True, slots=True)
class SignedItem:
    """A leaf :meth:`CertificateAuthorityService.sign_batch` signed, not yet recorded."""

    item: IssueItem
    leaf: IssuedLeaf
    issuer: PolicyIssuer
    revocation_id: bytes


@dataclass(frozen=True, slots=True)
class _Prepared:
    item: IssueItem
    issuer: PolicyIssuer
    request: IssuanceRequest
    context: CsrContext


class PendingSignatures:
    """A batch :meth:`CertificateAuthorityService.begin_sign_batch` is signing."""

    def __init__(
        self,
        pending: PendingLeaves | None,
        finish: Callable[[list[IssuedLeaf | PkiError]], list[SignedItem | Exception]],
        fallback: Callable[[], list[SignedItem | Exception]],
    ) -> None:
        self._pending = pending
        self._finish = finish
        self._fallback = fallback

    @classmethod
    def now(cls, results: list[SignedItem | Exception]) -> PendingSignatures:
        """Results that are already there."""
        return cls(None, lambda _: results, lambda: results)

    def result(self) -> list[SignedItem | Exception]:
        """The batch's results, as :meth:`CertificateAuthorityService.sign_batch`'s."""
        if self._pending is None:
            return self._fallback()
        try:
            leaves = self._pending.result()
        except SigningUnavailable as exc:
            log.warning("signing in the server process: %s", exc)
            return self._fallback()
        LEAVES_SIGNED.labels("signing-process").inc(len(leaves))
        return self._finish(leaves)


def _signed_items(
    prepared: Sequence[_Prepared | Exception], leaves: list[IssuedLeaf | PkiError]
) -> list[SignedItem | Exception]:
    """Each prepared entry's outcome: its exception, or the next of ``leaves`` (one per
    entry that was signed, in order) as a :class:`SignedItem` or a refusal."""
    signed = iter(leaves)
    results: list[SignedItem | Exception] = []
    for entry in prepared:
        if isinstance(entry, Exception):
            results.append(entry)
            continue
        leaf = next(signed)
        if isinstance(leaf, IssuedLeaf):
            revocation_id = entry.request.revocation_id
            results.append(SignedItem(entry.item, leaf, entry.issuer, revocation_id))
        else:
            results.append(leaf)
    return results


def _key_pairs(prepared: Sequence[_Prepared | Exception]) -> list[tuple[str, str]]:
    """(device, public-key hash) of each parsable CSR, for one bulk key-reuse lookup."""
    pairs = []
    for entry in prepared:
        if isinstance(entry, Exception) or len(entry.item.csr_der) > MAX_CSR_DER_BYTES:
            continue  # refused anyway, before any parsing
        try:
            pairs.append((entry.item.device_id, entry.context.public_key_sha256))
        except CsrRejected:
            continue  # the validators will refuse it with the right reason
    return pairs


def _policy_details(leaf: LeafPolicy) -> dict[str, Any]:
    return {
        "validitySeconds": int(leaf.validity.total_seconds()),
        "keyTypes": sorted(k.value for k in leaf.key_types),
        "backdateSeconds": int(leaf.backdate.total_seconds()),
        "development": leaf.development,
    }
