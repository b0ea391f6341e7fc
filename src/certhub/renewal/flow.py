"""The renewal steps that run inside one store transaction (blocking: the writer thread).

* :func:`accept` — a batch of requests: replay a known ``$rid``, apply the
  one-operation-per-device rule and ``replace``, admission control, then store the new
  operations as ``pending`` (the 202 goes out after this commits);
* :func:`issue` — a batch of pending operations: sign through the authority, store each
  response (200 or an error), assign the new certificates' windows and write them to the
  twins — one commit, so a certificate is recorded exactly when its operation completes;
* :func:`activate` — the first connection with an ``issued`` certificate (two-phase).

An operation is **active** while it is pending (accepted, not yet issued) and unexpired.
A finished operation whose response was not delivered does not block a new request: its
response is kept and delivered on the device's next subscription all the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService, IssueItem, SignedItem
from certhub.pki import CsrRejected, IssuedLeaf, PkiError
from certhub.registry import Store
from certhub.registry._renewal import NewRenewalWindow, OperationFinish, RenewalStatusRecord
from certhub.registry.errors import NotFound, StoreError
from certhub.registry.records import CertificateRecord, NewOperation, OperationRecord
from certhub.renewal import twin
from certhub.renewal.errors import (
    DeviceMissing,
    NotCertificateManaged,
    OperationActive,
    RenewalError,
    ReplaceMismatch,
    RequestInvalid,
    ServerError,
)
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.presign import issue_item, still_valid
from certhub.renewal.window import Window, effective_validity
from certhub.renewal.wire import certificate_body, csr_refused, error_body, wire_time

__all__ = [
    "Accepted",
    "Admit",
    "CertFacts",
    "Outcome",
    "Refused",
    "Replayed",
    "StatusLookup",
    "Submission",
    "accept",
    "activate",
    "activate_many",
    "assign_windows",
    "is_active",
    "issue",
]

_FINISHED = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class Submission:
    """A parsed request from an authenticated device."""

    device_id: str
    rid: str
    csr_der: bytes
    replace: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new pending operation (answer 202, then issue it), with the device's credential
    policy when it was accepted (what its leaf will be signed under)."""

    operation: OperationRecord
    policy_name: str


@dataclass(frozen=True, slots=True)
class Replayed:
    """The ``$rid`` is known: answer what it was answered (202, and its final response)."""

    operation: OperationRecord


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer with this error; nothing was stored."""

    error: RenewalError


Outcome = Accepted | Replayed | Refused
StatusLookup = Callable[[], RenewalStatusRecord | None]
Admit = Callable[[str, StatusLookup], RenewalError | None]
"""Admission control: ``(device_id, a lookup of its renewal status) -> None or the 429``
(the status is only read for a request that is throttled)."""


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What window assignment needs of a certificate.

    ``issued_at`` is when the server signed it (the store's ``created_at``): windows are
    placed in the validity counted from there, not from the backdated notBefore.
    """

    device_id: str
    serial_hex: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime

    @classmethod
    def of(cls, cert: CertificateRecord) -> CertFacts:
        return cls(
            cert.device_id, cert.serial_hex, cert.not_before, cert.not_after, cert.created_at
        )


def is_active(op: OperationRecord, now: dt.datetime) -> bool:
    """Whether the operation still blocks a new request of its device (pending, unexpired)."""
    return op.state == "pending" and op.expires_at > now


# -- accept ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    """What one accept batch knows, updated as its requests are decided in order."""

    by_rid: dict[tuple[str, str], OperationRecord | int]
    active: dict[str, OperationRecord | int]
    new: list[NewOperation] = field(default_factory=list)
    replaced_new: set[int] = field(default_factory=set)
    replaced_old: list[int] = field(default_factory=list)


def accept(
    store: Store,
    submissions: Sequence[Submission],
    *,
    now: dt.datetime,
    ttl: dt.timedelta,
    admit: Admit,
    new_id: Callable[[], str],
    conn: Connection,
) -> list[Outcome]:
    """Decide a batch of requests in order and store the accepted ones (pending)."""
    ids = {s.device_id for s in submissions}
    policies = store.device_policies(ids, conn=conn)
    known = store.relevant_operations([(s.device_id, s.rid) for s in submissions], conn=conn)
    batch = _Batch(
        by_rid={(o.device_id, o.rid): o for o in known},
        active={o.device_id: o for o in known if is_active(o, now)},
    )
    decided: list[Outcome | tuple[type[Accepted] | type[Replayed], int]] = []
    for sub in submissions:
        if sub.device_id not in policies:
            decided.append(Refused(DeviceMissing(f"device {sub.device_id!r} not found")))
            continue
        lookup = _status_lookup(store, sub.device_id, conn)
        choice = _decide(sub, policies[sub.device_id], batch, lookup, admit, now)
        if isinstance(choice, int) and choice < 0:
            batch.new.append(_new_operation(sub, now, ttl, new_id))
            index = len(batch.new) - 1
            batch.active[sub.device_id] = batch.by_rid[(sub.device_id, sub.rid)] = index
            decided.append((Accepted, index))
        else:
            decided.append((Replayed, choice) if isinstance(choice, int) else choice)
    for op_id in batch.replaced_old:
        store.replace_operation(op_id, now, conn=conn)
    records = store.insert_operations(batch.new, conn=conn)
    for index in batch.replaced_new:
        store.replace_operation(records[index].id, now, conn=conn)
    return [
        d if not isinstance(d, tuple) else _outcome(d[0], records[d[1]], policies) for d in decided
    ]


def _outcome(
    kind: type[Accepted] | type[Replayed],
    op: OperationRecord,
    policies: Mapping[str, str | None],
) -> Accepted | Replayed:
    if kind is Replayed:
        return Replayed(op)
    policy_name = policies[op.device_id]
    assert policy_name is not None  # a device without a policy is refused
    return Accepted(op, policy_name)


def _status_lookup(store: Store, device_id: str, conn: Connection) -> StatusLookup:
    return lambda: store.get_renewal_status(device_id, conn=conn)


def _decide(
    sub: Submission,
    policy_name: str | None,
    batch: _Batch,
    status: StatusLookup,
    admit: Admit,
    now: dt.datetime,
) -> Outcome | int:
    """An outcome, the index of a new operation of this batch (a replay), or -1 (accept)."""
    known = batch.by_rid.get((sub.device_id, sub.rid))
    if known is not None:
        return _replay(known)
    if policy_name is None:
        return Refused(NotCertificateManaged(f"device {sub.device_id!r} has no credential policy"))
    active = batch.active.get(sub.device_id)
    refusal = _replace_refusal(sub, active, batch)
    if refusal is not None:
        return refusal
    throttled = admit(sub.device_id, status)
    if throttled is not None:
        return Refused(throttled)
    if isinstance(active, int):
        batch.replaced_new.add(active)
    elif active is not None:
        batch.replaced_old.append(active.id)
    return -1


def _replay(known: OperationRecord | int) -> Outcome | int:
    if isinstance(known, int) or known.state in ("pending", *_FINISHED):
        return known if isinstance(known, int) else Replayed(known)
    message = f"request {known.rid!r} was {known.state}; send a new $rid"
    return Refused(RequestInvalid(message))


def _replace_refusal(
    sub: Submission, active: OperationRecord | int | None, batch: _Batch
) -> Refused | None:
    if active is None:
        if sub.replace not in (None, "*"):
            return Refused(ReplaceMismatch(f"no active request {sub.replace!r} to replace"))
        return None
    rid, expires = _rid_expires(active, batch)
    if sub.replace is None:
        return Refused(OperationActive(rid, wire_time(expires)))
    if sub.replace not in ("*", rid):
        return Refused(ReplaceMismatch(f"the active request is not {sub.replace!r}"))
    return None


def _rid_expires(active: OperationRecord | int, batch: _Batch) -> tuple[str, dt.datetime]:
    if isinstance(active, int):
        new = batch.new[active]
        return new.rid, new.expires_at
    return active.rid, active.expires_at


def _new_operation(
    sub: Submission, now: dt.datetime, ttl: dt.timedelta, new_id: Callable[[], str]
) -> NewOperation:
    return NewOperation(
        device_id=sub.device_id,
        rid=sub.rid,
        correlation_id=new_id(),
        csr_der=sub.csr_der,
        expires_at=now + ttl,
        created_at=now,
    )


# -- issue ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """An operation with its final response, and the window of its new certificate."""

    operation: OperationRecord
    window: Window | None = None


def issue(
    store: Store,
    authority: CertificateAuthorityService,
    operation_ids: Iterable[int],
    *,
    now: dt.datetime,
    placer: WindowPlacer,
    new_id: Callable[[], str],
    origin: str,
    conn: Connection,
    fresh: Collection[int] = (),
    presigned: Mapping[int, SignedItem] | None = None,
) -> list[Finished]:
    """Issue the still-pending operations among ``operation_ids`` and store the results.

    An operation that already has a certificate (recorded before a crash) is completed
    with it, never signed again; ``fresh`` ones (accepted by this writer, so certainly
    without one) skip that lookup. ``presigned`` leaves (by operation id, signed before
    the transaction, see :mod:`certhub.renewal.presign`) are recorded when still valid.
    """
    ops = store.lock_pending_operations(operation_ids, conn=conn)
    if not ops:
        return []
    existing = store.certificates_for_operations(
        [o.id for o in ops if o.id not in fresh], conn=conn
    )
    policies = store.device_policies({o.device_id for o in ops}, conn=conn)
    finishes: dict[int, OperationFinish] = {}
    certs: list[CertFacts] = []
    to_sign: list[tuple[OperationRecord, IssueItem]] = []
    candidates: list[tuple[OperationRecord, str, SignedItem]] = []
    presigned = presigned or {}
    for op in ops:
        cert = existing.get(op.id)
        if cert is not None:  # recorded before a crash: complete it, never sign again
            finishes[op.id] = _completed(op, _chain_of(store, authority, cert), cert.serial_hex)
            certs.append(CertFacts.of(cert))
        elif op.device_id not in policies:
            finishes[op.id] = _failed(op, DeviceMissing("device not found"), new_id, now)
        elif (policy_name := policies[op.device_id]) is None:
            error = NotCertificateManaged("the device has no credential policy")
            finishes[op.id] = _failed(op, error, new_id, now)
        elif (signed := presigned.get(op.id)) is not None:
            candidates.append((op, policy_name, signed))
        else:
            to_sign.append((op, issue_item(op, policy_name)))
    good, again = still_valid(store, authority, candidates, conn=conn)
    to_sign += [(op, issue_item(op, policy_name)) for op, policy_name in again]
    # the pre-signed leaves first: the signing below then sees their keys as used
    results = authority.record_batch([signed for _, signed in good], conn=conn)
    results += authority.issue_batch([item for _, item in to_sign], conn=conn)
    decided = [op for op, _ in good] + [op for op, _ in to_sign]
    for op, result in zip(decided, results, strict=True):
        if isinstance(result, IssuedLeaf):
            finishes[op.id] = _completed(op, result.chain_der, result.serial_hex)
            certs.append(CertFacts(op.device_id, result.serial_hex, *_times(result), now))
        else:
            finishes[op.id] = _failed(op, _issue_error(result), new_id, now)
    store.finish_operations(list(finishes.values()), now, conn=conn)
    windows = dict(assign_windows(store, certs, now=now, placer=placer, origin=origin, conn=conn))
    return [
        Finished(_finished_record(op, finishes[op.id], now), windows.get(op.device_id))
        for op in ops
    ]


def _times(leaf: IssuedLeaf) -> tuple[dt.datetime, dt.datetime]:
    return leaf.not_before, leaf.not_after


def _issue_error(exc: Exception) -> RenewalError:
    if isinstance(exc, CsrRejected):
        return csr_refused(exc)
    if isinstance(exc, NotFound) and exc.kind == "device":
        return DeviceMissing("device not found")
    if isinstance(exc, NotFound):
        return NotCertificateManaged(f"cannot issue: {exc}")
    if isinstance(exc, PkiError):
        return ServerError(f"cannot issue: {exc.reason}", retry_after=30)
    return ServerError(f"cannot issue: {exc}", retry_after=30)


def _completed(op: OperationRecord, chain: Sequence[bytes], serial: str) -> OperationFinish:
    return OperationFinish(
        operation_id=op.id,
        state="completed",
        response_status=200,
        response_body=certificate_body(op.correlation_id, chain),
        certificate_serial=serial,
    )


def _failed(
    op: OperationRecord, error: RenewalError, new_id: Callable[[], str], now: dt.datetime
) -> OperationFinish:
    body = error_body(error, tracking_id=new_id(), now=now, correlation_id=op.correlation_id)
    return OperationFinish(
        operation_id=op.id, state="failed", response_status=error.status, response_body=body
    )


def _finished_record(
    op: OperationRecord, fin: OperationFinish, now: dt.datetime
) -> OperationRecord:
    return replace(
        op,
        state=fin.state,
        certificate_serial=fin.certificate_serial,
        response_status=fin.response_status,
        response_body=fin.response_body,
        updated_at=now,
    )


def _chain_of(
    store: Store, authority: CertificateAuthorityService, cert: CertificateRecord
) -> list[bytes]:
    issuer = store.get_ca(cert.issuer_ca_id)
    chain = [cert.cert_der]
    if issuer is None:
        return chain
    pem = x509.load_pem_x509_certificate(issuer.cert_pem.encode())
    # the root that signed this issuer: after a root rotation two roots coexist
    root = authority.root_certificate_of(issuer)
    return [*chain, pem.public_bytes(Encoding.DER), root.public_bytes(Encoding.DER)]


# -- windows and activation -------------------------------------------------------------------


def assign_windows(
    store: Store,
    certs: Sequence[CertFacts],
    *,
    now: dt.datetime,
    placer: WindowPlacer,
    origin: str,
    conn: Connection,
) -> list[tuple[str, Window]]:
    """Give each device's newest certificate among ``certs`` a window (unless it has one)
    and write it to the twin; returns the new ``(device_id, window)`` pairs."""
    newest: dict[str, CertFacts] = {}
    for cert in certs:
        seen = newest.get(cert.device_id)
        if seen is None or cert.not_before >= seen.not_before:
            newest[cert.device_id] = cert
    statuses = store.renewal_statuses(newest, conn=conn)
    rows: list[NewRenewalWindow] = []
    for cert in newest.values():
        status = statuses.get(cert.device_id)
        if status is not None and (
            status.serial_hex == cert.serial_hex or status.not_before > cert.not_before
        ):
            continue
        previous = None if status is None else Window(status.renew_after, status.renew_before)
        validity = effective_validity(cert.not_before, cert.not_after, cert.issued_at)
        window = placer.place(validity, cert.device_id, now, previous)
        rows.append(_window_row(cert, window))
    store.put_renewal_windows(rows, now, conn=conn)
    pairs = [(r.device_id, Window(r.renew_after, r.renew_before)) for r in rows]
    twin.write_windows(store, pairs, now, origin, conn)
    return pairs


def _window_row(cert: CertFacts, window: Window) -> NewRenewalWindow:
    return NewRenewalWindow(
        device_id=cert.device_id,
        serial_hex=cert.serial_hex,
        not_before=cert.not_before,
        not_after=cert.not_after,
        renew_after=window.renew_after,
        renew_before=window.renew_before,
    )


def activate(
    store: Store,
    serial_hex: str,
    *,
    now: dt.datetime,
    placer: WindowPlacer,
    origin: str,
    conn: Connection,
) -> tuple[CertificateRecord, list[str]]:
    """``issued`` -> ``active``, older live certificates superseded, the device's window
    kept on its newest certificate. Returns the certificate and the superseded serials."""
    (result,) = activate_many(store, [serial_hex], now=now, placer=placer, origin=origin, conn=conn)
    if isinstance(result, StoreError):
        raise result
    return result


def activate_many(
    store: Store,
    serials: Sequence[str],
    *,
    now: dt.datetime,
    placer: WindowPlacer,
    origin: str,
    conn: Connection,
) -> list[tuple[CertificateRecord, list[str]] | StoreError]:
    """:func:`activate` for each serial, in order, with one window assignment for all
    of them; a serial that is unknown or no longer live gets its ``StoreError`` (and
    changes nothing)."""
    results: list[tuple[CertificateRecord, list[str]] | StoreError] = []
    if not serials:
        return results
    for serial_hex in serials:
        try:
            results.append(store.activate_certificate(serial_hex, now, conn=conn))
        except StoreError as exc:
            results.append(exc)
    devices = {r[0].device_id for r in results if not isinstance(r, StoreError)}
    newest = store.newest_live_certificates(devices, conn=conn)
    facts = [CertFacts.of(cert) for cert in newest.values()]
    assign_windows(store, facts, now=now, placer=placer, origin=origin, conn=conn)
    return results
