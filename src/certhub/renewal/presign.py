"""Signing accepted renewals ahead of the transaction that records them.

Why: each turn of the renewal writer is one transaction, and signing the operations
accepted in the previous turn inside it held SQLite's single write lock for most of
the turn (0.4 s typical, seconds at worst on a busy 2-core machine), so every other
writer — presence, twin patches, DPS, activations — queued behind it. The writer
therefore starts signing a turn's accepted operations (:func:`begin_presign`) either
in the signing processes (:mod:`certhub.signing`), which work while the writer goes on,
or — without them — in its own thread after the commit (a separate signer *thread*
measured slower: the GIL). The next transaction only records a leaf after re-checking
there everything its signature depended on (:func:`still_valid`): the operation is
still pending with the same CSR, the device keeps the same credential policy and
revocation id, the policy's issuing CA is unchanged and the key was never certified for
the device. Anything else is signed inside the transaction as before. A leaf that is
not recorded is dropped: it was never stored nor sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.engine import Connection

from certhub.authority import (
    CertificateAuthorityService,
    IssueItem,
    PendingSignatures,
    SignedItem,
)
from certhub.pki import PolicyError
from certhub.registry import Store
from certhub.registry.errors import NotFound
from certhub.registry.records import OperationRecord

__all__ = ["Presigning", "begin_presign", "issue_item", "presign", "still_valid"]


def issue_item(op: OperationRecord, policy_name: str) -> IssueItem:
    """What the authority signs for a renewal operation."""
    return IssueItem(
        device_id=op.device_id,
        csr_der=op.csr_der,
        policy_name=policy_name,
        requested_via="hub",
        actor="hub",
        operation_id=op.id,
    )


class Presigning:
    """Leaves being signed for a set of operations (see :func:`begin_presign`)."""

    def __init__(self, pending: PendingSignatures | None) -> None:
        self._pending = pending

    def result(self) -> dict[int, SignedItem]:
        """The leaves signed, by operation id (refused ones are left to the transaction)."""
        if self._pending is None:
            return {}
        signed: dict[int, SignedItem] = {}
        for entry in self._pending.result():
            if isinstance(entry, SignedItem) and entry.item.operation_id is not None:
                signed[entry.item.operation_id] = entry
        return signed


def begin_presign(
    store: Store,
    authority: CertificateAuthorityService,
    ops: Sequence[OperationRecord],
    *,
    conn: Connection | None = None,
    policies: Mapping[str, str | None] | None = None,
) -> Presigning:
    """Start signing the operations that can be signed now (reads only, in ``conn``'s
    transaction when given); with signing processes the signing runs there while the
    caller goes on. ``policies`` (device id -> credential policy), when the caller read
    them in the same transaction, saves reading them again."""
    if not ops:
        return Presigning(None)
    if policies is None:
        policies = store.device_policies({op.device_id for op in ops}, conn=conn)
    items = [issue_item(op, name) for op in ops if (name := policies.get(op.device_id))]
    if not items:
        return Presigning(None)
    # a key certified before is refused by still_valid, which reads it in the transaction
    return Presigning(authority.begin_sign_batch(items, conn=conn, key_history=False))


def presign(
    store: Store, authority: CertificateAuthorityService, ops: Sequence[OperationRecord]
) -> dict[int, SignedItem]:
    """Leaves for the operations that can be signed now, by operation id (no writes)."""
    return begin_presign(store, authority, ops).result()


def still_valid(
    store: Store,
    authority: CertificateAuthorityService,
    candidates: Sequence[tuple[OperationRecord, str, SignedItem]],
    *,
    conn: Connection,
) -> tuple[list[tuple[OperationRecord, SignedItem]], list[tuple[OperationRecord, str]]]:
    """Split ``(operation, its device's policy now, pre-signed leaf)`` into the leaves
    that may be recorded in ``conn``'s transaction and the ``(operation, policy)`` pairs
    to sign there."""
    if not candidates:
        return [], []
    devices = {op.device_id for op, _, _ in candidates}
    revocation_ids = store.revocation_ids(devices, conn=conn)
    pairs = [(op.device_id, s.leaf.public_key_sha256) for op, _, s in candidates]
    seen = store.seen_public_keys(pairs, conn=conn)
    good: list[tuple[OperationRecord, SignedItem]] = []
    again: list[tuple[OperationRecord, str]] = []
    for op, policy_name, signed in candidates:
        ok = (
            signed.item == issue_item(op, policy_name)
            and revocation_ids.get(op.device_id) == signed.revocation_id
            and (op.device_id, signed.leaf.public_key_sha256) not in seen
            and _same_issuer(authority, policy_name, signed)
        )
        if ok:
            seen.add((op.device_id, signed.leaf.public_key_sha256))
            good.append((op, signed))
        else:
            again.append((op, policy_name))
    return good, again


def _same_issuer(
    authority: CertificateAuthorityService, policy_name: str, signed: SignedItem
) -> bool:
    try:
        issuer = authority.issuer_for(policy_name)
    except (NotFound, PolicyError):  # signing inside the transaction gives the reason
        return False
    return (
        issuer.policy == signed.issuer.policy and issuer.ca_record.id == signed.issuer.ca_record.id
    )
