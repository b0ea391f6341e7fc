"""Signing registrations' CSRs before their write transaction.

Why: the registration writer holds SQLite's single write lock for the whole batch, and
validating + signing a CSR was most of the time spent inside it (a 64-item batch held
the lock for over a second on a busy 2-core machine, and every other writer — presence,
twins, activations — waited behind it). The writer thread therefore signs a batch's
CSRs first, with plain reads and no lock (:meth:`Presigner.presign`), and the
transaction only *records* a pre-signed leaf after re-checking, inside the transaction,
everything the signature depended on (:func:`usable`): the same device with the same
revocation id, the same active policy and issuing CA, and a key the device has never
had certified. Whatever no longer holds, or was refused before the transaction, is
signed inside it as before, so the answer (and the refusal reason) never depends on
the pre-signing. A pre-signed leaf that is not recorded is dropped: it was never stored
nor sent, so one request still yields at most one certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService, IssueItem, SignedItem
from certhub.dps.attestation import Attestation
from certhub.dps.wire import RegisterRequest
from certhub.pki import PolicyError
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry.errors import NotFound
from certhub.registry.records import DeviceRecord

__all__ = ["Presigned", "Presigner", "actor_of", "usable"]


@dataclass(frozen=True, slots=True)
class Presigned:
    """A leaf signed for a registration, not yet recorded."""

    signed: SignedItem
    new_device: bool
    """The device did not exist when signing: ``signed.revocation_id`` was drawn for it."""


def actor_of(att: Attestation) -> str:
    """The audit actor of a DPS issuance."""
    return f"dps:{att.enrollment_kind}:{att.enrollment_name}"


class Presigner:
    """Validates and signs registrations' CSRs outside any write transaction."""

    def __init__(self, store: Store, authority: CertificateAuthorityService, rng: Random) -> None:
        self._store = store
        self._authority = authority
        self._rng = rng

    def presign(
        self, requests: Sequence[tuple[Attestation, RegisterRequest]]
    ) -> list[Presigned | None]:
        """A pre-signed leaf per request, or None where the transaction must decide."""
        planned = [self._plan(att, req) for att, req in requests]
        items = [p[0] for p in planned if p is not None]
        # a key certified before is refused by `usable`, in the transaction
        batch = self._authority.begin_sign_batch(items, key_history=False) if items else None
        signed = iter(batch.result() if batch is not None else [])
        results: list[Presigned | None] = []
        for plan in planned:
            if plan is None:
                results.append(None)
                continue
            entry = next(signed)
            results.append(Presigned(entry, plan[1]) if isinstance(entry, SignedItem) else None)
        return results

    def _plan(self, att: Attestation, req: RegisterRequest) -> tuple[IssueItem, bool] | None:
        """What to sign for this request (and whether the device is new), or None."""
        if req.csr_der is None:
            return None
        policy_name = self._policy_name(att)
        if policy_name is None:
            return None
        probe = self._store.device_probe(att.registration_id)
        if probe is not None and (probe[0] != att.namespace_id or probe[1] == "disabled"):
            return None
        new_device = probe is None
        item = IssueItem(
            device_id=att.registration_id,
            csr_der=req.csr_der,
            policy_name=policy_name,
            requested_via="dps",
            actor=actor_of(att),
            revocation_id=self._rng.token_bytes(32) if new_device else None,
        )
        return item, new_device

    def _policy_name(self, att: Attestation) -> str | None:
        """The enrollment's credential policy, if it is enabled and current."""
        enrollment = att.enrollment
        etag = self._store.enrollment_etag(att.enrollment_id)
        if enrollment is None or etag is None or enrollment.etag != etag:
            enrollment = self._store.get_enrollment_by_id(att.enrollment_id)
        if enrollment is None or enrollment.provisioning_status == "disabled":
            return None
        return enrollment.credential_policy_name or None


def usable(
    presigned: Presigned | None,
    conn: Connection,
    *,
    store: Store,
    authority: CertificateAuthorityService,
    device: DeviceRecord,
    policy_name: str,
    actor: str,
) -> bool:
    """Whether ``presigned`` may be recorded for ``device`` in ``conn``'s transaction:
    everything its signature depended on still holds (read in that transaction)."""
    if presigned is None:
        return False
    signed = presigned.signed
    item = signed.item
    if (
        item.device_id != device.device_id
        or item.policy_name != policy_name
        or item.actor != actor
        or signed.revocation_id != device.revocation_id
    ):
        return False
    try:
        issuer = authority.issuer_for(policy_name)
    except (NotFound, PolicyError):  # signing inside the transaction gives the reason
        return False
    if issuer.policy != signed.issuer.policy or issuer.ca_record.id != signed.issuer.ca_record.id:
        return False
    pair = (device.device_id, signed.leaf.public_key_sha256)
    return not store.seen_public_keys([pair], conn=conn)
