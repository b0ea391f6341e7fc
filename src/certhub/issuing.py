"""Batch issuance of device leaves: validate and sign (in this process or in the signing
processes), then record each leaf with its audit event in the caller's transaction.

:class:`BatchIssuance` is the issuing half of
:class:`~certhub.authority.CertificateAuthorityService`, which owns one and exposes its
methods (``issue_batch``, ``sign_batch``, ``begin_sign_batch``, ``record_batch``); the
service keeps the policies, CAs and their keys. Signing in two steps
(:meth:`BatchIssuance.begin_sign_batch`, then ``result()``) lets a caller read in its
transaction, let a child sign meanwhile and record later (see :mod:`certhub.signing`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
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
    LeafPolicy,
    PkiError,
    PolicyError,
)
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry.errors import NotFound
from certhub.registry.records import (
    AuditEvent,
    CaRecord,
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

__all__ = ["BatchIssuance", "IssueItem", "PendingSignatures", "PolicyIssuer", "SignedItem"]

log = logging.getLogger("certhub.authority")


@dataclass(frozen=True)
class PolicyIssuer:
    """What issuing under one policy needs: the policy, its issuing CA and the root."""

    policy: PolicyRecord
    leaf_policy: LeafPolicy
    ca_record: CaRecord
    ca: CaKeyPair
    root: x509.Certificate


class BatchIssuance:
    """Validation, signing and recording of batches of leaves for one authority."""

    def __init__(
        self,
        store: Store,
        *,
        authority: Authority,
        clock: Clock,
        rng: Random,
        signer: SigningProcesses | None,
        issuer_for: Callable[[str], PolicyIssuer],
        crl_url: Callable[[int], str | None],
    ) -> None:
        self.store = store
        self.authority = authority
        self.clock = clock
        self.rng = rng
        self.signer = signer
        self.issuer_for = issuer_for
        self.crl_url = crl_url
        self._materials: dict[int, IssuerMaterial] = {}
        self._lock = threading.Lock()

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
