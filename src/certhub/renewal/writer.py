"""Group commit for renewal: one thread, one transaction per batch, pipelined.

Why: every commit is an fsync on SQLite (3 to 6 ms on the development machine), as
much as signing ten leaves. Requests that arrive together share commits. Each turn of
the writer takes whatever is queued (up to ``max_batch``) and runs ONE transaction:

1. delivery marks;
2. accepts of the new requests (:func:`~certhub.renewal.flow.accept`); when a signing
   process (:mod:`certhub.signing`) is ready, their leaves start signing there at once
   (:func:`~certhub.renewal.presign.begin_presign`: reads in this transaction), while
   this thread goes on with
3. issuance of the operations accepted in the *previous* turn, recording the leaves
   signed for them meanwhile (awaited before this transaction began, so no write lock
   is held while a child signs), and of recovered ones
   (:func:`~certhub.renewal.flow.issue`);
4. first-use activations.

Without a ready signing process the writer signs a turn's accepted operations right
after its commit, outside any transaction (no lock held), and records them in the next.
Either way the transaction re-checks a pre-signed leaf before recording it
(:func:`~certhub.renewal.presign.still_valid`) and signs anything else itself.

After the commit the issued operations' final responses go out and the new ones get
their 202 — a 202 is only ever sent for an operation that is stored. A request is
thus answered within two turns; a turn with accepted operations is followed at once by
another (even when nothing new is queued), and under load every turn shares its
commit between two batches.
Callers on the event loop await the ``concurrent.futures.Future`` objects with
``asyncio.wrap_future``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService, SignedItem
from certhub.clock import Clock
from certhub.registry import Store
from certhub.registry.errors import AlreadyExists
from certhub.registry.records import CertificateRecord
from certhub.renewal import flow
from certhub.renewal.config import RenewalConfig
from certhub.renewal.flow import Accepted, Admit, Finished, Outcome, Submission
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.presign import Presigning, begin_presign

__all__ = ["AcceptResult", "RenewalWriter"]

log = logging.getLogger("certhub.renewal")
T = TypeVar("T")
_STOP = object()


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """An accept outcome; for ``Accepted``, ``final`` resolves when it was issued."""

    outcome: Outcome
    final: Future[Finished] | None = None


@dataclass(slots=True)
class _Accept:
    submission: Submission
    future: Future[AcceptResult]


@dataclass(slots=True)
class _Issue:
    operation_id: int
    future: Future[Finished | None]


@dataclass(slots=True)
class _Activate:
    serial_hex: str
    future: Future[tuple[CertificateRecord, list[str]]]


@dataclass(slots=True)
class _Delivered:
    operation_id: int


_Job = _Accept | _Issue | _Activate | _Delivered


@dataclass(slots=True)
class _Generation:
    """The operations one turn accepted, and the signing of their leaves."""

    ids: list[int]
    signing: Presigning


@dataclass(frozen=True, slots=True)
class _Turn:
    finished: list[Finished]
    outcomes: list[Outcome]
    activated: list[Any]
    signing: _Generation | None


def _settle(future: Future[T], result: T | None = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:  # the caller gave up (cancelled)
        pass


class RenewalWriter:
    """The renewal service's single writer thread."""

    def __init__(
        self,
        store: Store,
        authority: CertificateAuthorityService,
        *,
        clock: Clock,
        config: RenewalConfig,
        placer: WindowPlacer,
        admit: Admit,
        new_id: Callable[[], str],
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock
        self._config = config
        self._placer = placer
        self._admit = admit
        self._new_id = new_id
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="certhub-renewal", daemon=True)
        self._closed = False
        self._signing: _Generation | None = None
        """The operations accepted in the last turn, with the signing of their leaves."""
        self._thread.start()

    # -- submitting --------------------------------------------------------------------------

    def accept(self, submission: Submission) -> Future[AcceptResult]:
        """Queue a request; the future holds its outcome."""
        future: Future[AcceptResult] = Future()
        self._put(_Accept(submission, future))
        return future

    def issue(self, operation_id: int) -> Future[Finished | None]:
        """Queue a pending operation for issuance (recovery); None if no longer pending."""
        future: Future[Finished | None] = Future()
        self._put(_Issue(operation_id, future))
        return future

    def activate(self, serial_hex: str) -> Future[tuple[CertificateRecord, list[str]]]:
        """Queue a first-use activation of an ``issued`` certificate."""
        future: Future[tuple[CertificateRecord, list[str]]] = Future()
        self._put(_Activate(serial_hex, future))
        return future

    def delivered(self, operation_id: int) -> None:
        """Record (in the next batch) that an operation's response was delivered."""
        if not self._closed:
            self._queue.put(_Delivered(operation_id))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _put(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError("the renewal writer is closed")
        self._queue.put(job)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        carry: dict[int, Future[Finished]] = {}
        stopping = False
        while not stopping or carry:
            batch, stop = self._next_batch(block=not carry and not stopping)
            stopping = stopping or stop
            if not batch and not carry:
                continue
            try:
                carry = self._process(batch, carry)
            except Exception:  # never let the thread die; futures were settled
                log.exception("renewal batch failed")
                carry = {}
                self._signing = None

    def _next_batch(self, block: bool) -> tuple[list[_Job], bool]:
        batch: list[_Job] = []
        try:
            entry = self._queue.get() if block else self._queue.get_nowait()
        except queue.Empty:
            return batch, False
        while True:
            if entry is _STOP:
                return batch, True
            batch.append(entry)  # type: ignore[arg-type]
            if len(batch) >= self._config.max_batch:
                return batch, False
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _process(
        self, batch: list[_Job], carry: dict[int, Future[Finished]]
    ) -> dict[int, Future[Finished]]:
        """One turn; returns the futures of the operations still to issue (the next carry)."""
        accepts = [j for j in batch if isinstance(j, _Accept)]
        activations = [j for j in batch if isinstance(j, _Activate)]
        marks = [j.operation_id for j in batch if isinstance(j, _Delivered)]
        issues = [j for j in batch if isinstance(j, _Issue)]
        previous, self._signing = self._signing, None
        # its leaves, awaited before BEGIN: no write lock is held while a child signs
        presigned = {} if previous is None else self._collect(previous)
        ready_ids = [] if previous is None else [i for i in previous.ids if i in carry]
        ids = [*ready_ids, *(job.operation_id for job in issues)]
        fresh = set(ready_ids)
        try:
            turn = self._with_retry(
                lambda: self._transaction(ids, fresh, accepts, activations, marks, presigned)
            )
        except Exception as exc:
            log.exception("renewal transaction failed (accepted operations stay pending)")
            futures: list[Future[Any]] = [*carry.values(), *(j.future for j in issues)]
            futures += [j.future for j in accepts] + [j.future for j in activations]
            for future in futures:
                _settle(future, error=exc)
            return {}
        self._settle_finished(turn.finished, [(i, carry.pop(i)) for i in ready_ids], issues)
        accepted: list[Accepted] = []
        for job, outcome in zip(accepts, turn.outcomes, strict=True):
            final: Future[Finished] | None = None
            if isinstance(outcome, Accepted):
                final = carry[outcome.operation.id] = Future()
                accepted.append(outcome)
            _settle(job.future, AcceptResult(outcome, final))
        if turn.signing is not None:
            self._signing = turn.signing
        elif accepted:  # no signing process (ready): sign now, outside the transaction
            ids = [a.operation.id for a in accepted]
            self._signing = _Generation(ids, self._begin_presign(accepted))
        for act, result in zip(activations, turn.activated, strict=True):
            if isinstance(result, BaseException):
                _settle(act.future, error=result)
            else:
                _settle(act.future, result)
        return carry

    def _settle_finished(
        self,
        finished: list[Finished],
        waiting: list[tuple[int, Future[Finished]]],
        issues: list[_Issue],
    ) -> None:
        by_id = {f.operation.id: f for f in finished}
        for op_id, future in waiting:
            result = by_id.get(op_id)
            if result is None:  # replaced before it was issued
                _settle(future, error=LookupError(f"operation {op_id} is no longer pending"))
            else:
                _settle(future, result)
        for job in issues:
            _settle(job.future, by_id.get(job.operation_id))

    def _begin_presign(
        self, accepted: list[Accepted], conn: Connection | None = None
    ) -> Presigning:
        ops = [a.operation for a in accepted]
        policies = {a.operation.device_id: a.policy_name for a in accepted}
        try:
            return begin_presign(self._store, self._authority, ops, conn=conn, policies=policies)
        except Exception:  # only an optimisation: the transaction signs what is left
            log.exception("signing before the renewal transaction failed")
            return Presigning(None)

    def _collect(self, generation: _Generation) -> dict[int, SignedItem]:
        try:
            return generation.signing.result()
        except Exception:  # only an optimisation: the transaction signs what is left
            log.exception("signing before the renewal transaction failed")
            return {}

    def _with_retry(self, step: Callable[[], T]) -> T:
        try:
            return step()
        except AlreadyExists:  # another node stored the same (device, rid) meanwhile
            return step()

    def _transaction(
        self,
        ids: list[int],
        fresh: set[int],
        accepts: list[_Accept],
        activations: list[_Activate],
        marks: list[int],
        presigned: dict[int, SignedItem],
    ) -> _Turn:
        """The turn's transaction: delivery marks; accepts, whose leaves then start
        signing in the signing processes (reads in this transaction) while the rest
        runs; issuance of ``ids`` (recording the ``presigned`` leaves); activations."""
        now = self._clock.now()
        store, config = self._store, self._config
        with store.transaction() as conn:
            store.mark_operations_delivered(marks, now, conn=conn)
            outcomes: list[Outcome] = []
            if accepts:
                outcomes = flow.accept(
                    store,
                    [job.submission for job in accepts],
                    now=now,
                    ttl=config.operation_ttl,
                    admit=self._admit,
                    new_id=self._new_id,
                    conn=conn,
                )
            signing = None
            accepted = [o for o in outcomes if isinstance(o, Accepted)]
            signer = self._authority.signer
            if accepted and signer is not None and signer.ready():  # else: after the commit
                started = self._begin_presign(accepted, conn)
                signing = _Generation([a.operation.id for a in accepted], started)
            finished = flow.issue(
                store,
                self._authority,
                ids,
                now=now,
                placer=self._placer,
                new_id=self._new_id,
                origin=config.origin,
                conn=conn,
                fresh=fresh,
                presigned=presigned,
            )
            activated: list[Any] = flow.activate_many(
                store,
                [act.serial_hex for act in activations],
                now=now,
                placer=self._placer,
                origin=config.origin,
                conn=conn,
            )
            return _Turn(finished, outcomes, activated, signing)
