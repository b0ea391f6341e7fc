"""Signing leaves in child processes: the authority's CPU work off the server's GIL.

Why: the server is one Python process, so everything it does in Python shares one
core (the GIL), while a renewal storm leaves the machine's other cores idle. Of a
renewal's server time, about half is the authority's pure work: parsing and verifying
the CSR (an ECDSA verify), running the validators and building and signing the leaf
(``cryptography`` holds the GIL while it signs, so a thread does not help; measured).
:class:`SigningProcesses` runs that part in ``processes`` child processes; the store
reads before it (revocation ids, the keys a device already had certified) and the
writes after it stay in the server, in the caller's transaction.

The children get plain, picklable data only (:class:`SignBatch`): the CSRs, the leaf
policies, the issuers' certificates and keys (PKCS#8 DER over a socket pair to a child
the server started itself; the children cache them), the validators, the time and each
job's serial bytes, both drawn in the server from its injected clock and randomness.
What comes back is each job's :class:`~certhub.pki.IssuedLeaf` (it pickles as DER) or a
:class:`Refusal`, which :meth:`PendingLeaves.result` turns back into the ``PkiError``
that :meth:`certhub.pki.Authority.sign` raises: the caller sees exactly what signing
in-process gives.

A child exits when the server goes away, even by SIGKILL: it reads the end of its
socket. A child that dies is replaced on the next batch; the batch it held fails with
:class:`SigningUnavailable`, and callers sign that batch in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certhub.pki import (
    Authority,
    CaKeyPair,
    CsrRejected,
    IssuanceError,
    IssuanceRequest,
    IssuedLeaf,
    LeafPolicy,
    PkiError,
    PolicyError,
)
from certhub.pki.validators import CsrValidator

__all__ = [
    "IssuerMaterial",
    "Refusal",
    "SignBatch",
    "SignJob",
    "SigningProcesses",
    "SigningUnavailable",
    "issuer_material",
    "sign_jobs",
]

_DER = serialization.Encoding.DER
_READY = b"ready"
_CHILD = "import sys; from certhub.signing import child_main; child_main(int(sys.argv[1]))"
_UNCLAIMED = 64
"""Answers nobody asked for that a worker keeps (a transaction that failed after
starting a batch never collects it)."""
_REFUSALS: dict[str, type[PkiError]] = {
    "CsrRejected": CsrRejected,
    "IssuanceError": IssuanceError,
    "PolicyError": PolicyError,
}


class SigningUnavailable(RuntimeError):
    """The signing processes could not sign a batch (a child died, or they are closed)."""


# -- what crosses the pipe -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuerMaterial:
    """An issuing CA as the children need it: its certificate, key and root (DER)."""

    certificate_der: bytes
    private_key_der: bytes
    root_der: bytes


@dataclass(frozen=True, slots=True)
class SignJob:
    """One leaf to validate and sign (the picklable half of an ``IssuanceRequest``)."""

    csr_der: bytes
    device_id: str
    revocation_id: bytes
    policy: LeafPolicy
    issuer: str
    """Key of the batch's :attr:`SignBatch.issuers`."""
    crl_url: str | None
    serial_bytes: bytes
    """16 random bytes for the serial number, drawn by the server."""


@dataclass(frozen=True, slots=True)
class SignBatch:
    """Jobs signed in order, as one call of ``Authority.sign`` each."""

    now: dt.datetime
    validators: tuple[CsrValidator, ...]
    issuers: dict[str, IssuerMaterial]
    seen: frozenset[tuple[str, str]]
    """``(device id, public-key SHA-256)`` pairs already certified (key reuse); a leaf
    signed in the batch adds its own, as in-process signing does."""
    jobs: tuple[SignJob, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A job the authority refused: the exception's class name, reason and message."""

    kind: str
    reason: str
    message: str

    def exception(self) -> PkiError:
        return _REFUSALS[self.kind](self.reason, self.message)


def issuer_material(pair: CaKeyPair, root: x509.Certificate) -> IssuerMaterial:
    """What a child needs of an issuer (the key unencrypted: it goes down our own pipe)."""
    key = pair.private_key.private_bytes(
        _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuerMaterial(pair.certificate.public_bytes(_DER), key, root.public_bytes(_DER))


# -- the child's side ------------------------------------------------------------------------


class _BatchClock:
    def __init__(self) -> None:
        self.value = dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return self.value


class _DrawnRandom:
    """Hands out the job's serial bytes; fresh OS randomness if asked again (a zero
    serial, which the serial builder redraws)."""

    def __init__(self) -> None:
        self.value: bytes | None = None

    def token_bytes(self, n: int) -> bytes:
        value, self.value = self.value, None
        return value if value is not None and len(value) == n else os.urandom(n)


@dataclass
class _ChildState:
    clock: _BatchClock
    rng: _DrawnRandom
    authorities: dict[tuple[CsrValidator, ...], Authority]
    issuers: dict[IssuerMaterial, tuple[CaKeyPair, x509.Certificate]]


_STATE: _ChildState | None = None


def _state() -> _ChildState:
    global _STATE
    if _STATE is None:
        _STATE = _ChildState(_BatchClock(), _DrawnRandom(), {}, {})
    return _STATE


def _issuer(state: _ChildState, material: IssuerMaterial) -> tuple[CaKeyPair, x509.Certificate]:
    # the same objects batch after batch: the authority caches per-issuer facts by them
    found = state.issuers.get(material)
    if found is None:
        if len(state.issuers) >= 64:
            state.issuers.clear()
        key = serialization.load_der_private_key(material.private_key_der, None)
        pair = CaKeyPair(
            certificate=x509.load_der_x509_certificate(material.certificate_der),
            private_key=key,  # type: ignore[arg-type]
        )
        found = state.issuers[material] = (pair, x509.load_der_x509_certificate(material.root_der))
    return found


def sign_jobs(batch: SignBatch) -> list[IssuedLeaf | Refusal]:
    """Validate and sign each job in order (runs in a child; pure, no I/O)."""
    state = _state()
    authority = state.authorities.get(batch.validators)
    if authority is None:
        authority = state.authorities[batch.validators] = Authority(
            state.clock, state.rng, batch.validators
        )
    state.clock.value = batch.now
    seen = set(batch.seen)
    results: list[IssuedLeaf | Refusal] = []
    for job in batch.jobs:
        pair, root = _issuer(state, batch.issuers[job.issuer])
        device = job.device_id
        request = IssuanceRequest(
            csr_der=job.csr_der,
            device_id=device,
            revocation_id=job.revocation_id,
            policy=job.policy,
            issuer=pair,
            root=root,
            crl_url=job.crl_url,
            key_seen=lambda h, d=device: (d, h) in seen,  # type: ignore[misc]
        )
        state.rng.value = job.serial_bytes
        try:
            leaf = authority.sign(request)
        except (CsrRejected, IssuanceError, PolicyError) as exc:
            results.append(Refusal(type(exc).__name__, exc.reason, exc.message))
            continue
        seen.add((device, leaf.public_key_sha256))
        results.append(leaf)
    return results


def child_main(fd: int) -> None:
    """A signing process (``python -c`` with its end of a socket pair as ``fd``):
    announce readiness, then answer batches in order until the server's end closes
    (the server stopped, or died: no orphan). SIGINT is the server's to handle (a
    Ctrl-C in a terminal reaches the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        conn.send_bytes(_READY)
    except OSError:  # the server is gone already
        return
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, object] = ("ok", sign_jobs(pickle.loads(data)))
        except Exception as exc:  # a bug, or a batch that does not unpickle
            reply = ("error", repr(exc))
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


# -- the server's side -----------------------------------------------------------------------


class _Worker:
    """One signing process and the server's end of its pipe. Requests are answered in
    the order they were sent; each has a sequence number, and whoever wants an answer
    reads the pipe (under ``lock``) until it is there, keeping the others'."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.lock = threading.Lock()
        self.ready = False
        self.dead = False
        self.sent = 0
        self.received = 0
        self.answers: dict[int, bytes] = {}

    def outstanding(self) -> int:
        return self.sent - self.received

    def poll_ready(self) -> bool:
        """Whether the child finished starting (reads its announcement)."""
        with self.lock:
            if not self.ready and not self.dead:
                try:
                    if self.conn.poll(0) and self.conn.recv_bytes() == _READY:
                        self.ready = True
                except (EOFError, OSError):
                    self.dead = True
            return self.ready

    def send(self, data: bytes) -> int:
        with self.lock:
            try:
                self.conn.send_bytes(data)
            except OSError as exc:
                self.dead = True
                raise SigningUnavailable(f"signing process {self.process.pid}: {exc!r}") from exc
            self.sent += 1
            return self.sent - 1

    def answer(self, seq: int) -> bytes:
        with self.lock:
            while seq not in self.answers:
                if seq < self.received:  # dropped as unclaimed: cannot happen to a waiter
                    raise SigningUnavailable(f"the answer to batch {seq} was dropped")
                self._read_one()
            return self.answers.pop(seq)

    def _read_one(self) -> None:
        """Wait for the next answer and keep it."""
        try:
            self.answers[self.received] = self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            self.dead = True
            raise SigningUnavailable(f"signing process {self.process.pid} is gone") from exc
        self.received += 1
        if len(self.answers) > _UNCLAIMED:  # a caller gave up on its batch
            del self.answers[min(self.answers)]

    def alive(self) -> bool:
        return not self.dead and self.process.poll() is None

    def stop(self, timeout: float) -> None:
        """Close the pipe: a started child reads the end and exits (waited for up to
        ``timeout``); one still starting is killed (it holds nothing yet)."""
        self.conn.close()
        if self.ready:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PendingLeaves:
    """A batch :meth:`SigningProcesses.submit` handed to the signing processes."""

    def __init__(
        self,
        parts: list[tuple[_Worker, int, SignBatch]],
        jobs: tuple[SignJob, ...],
    ) -> None:
        self._parts = parts
        self._jobs = jobs

    def result(self) -> list[IssuedLeaf | PkiError]:
        """Each job's leaf (its chain: leaf, issuing CA, root) or its refusal, in job
        order; raises :class:`SigningUnavailable` if a child died or failed."""
        by_job: dict[int, IssuedLeaf | Refusal] = {}
        for worker, seq, part in self._parts:
            status, value = pickle.loads(worker.answer(seq))
            if status != "ok":
                raise SigningUnavailable(f"signing process {worker.process.pid}: {value}")
            by_job.update(zip(map(id, part.jobs), value, strict=True))
        return [_outcome(by_job[id(job)]) for job in self._jobs]


class SigningProcesses:
    """``processes`` child processes that sign batches (see the module docstring).

    Started on first use or :meth:`start` (a fresh ``python`` each); until a child has
    started, :meth:`submit` returns None and the caller signs in-process. A child that
    died is replaced on the next batch. Thread-safe: the renewal writer and DPS share it.
    """

    def __init__(self, processes: int = 1, *, stop_timeout: float = 2.0) -> None:
        if processes < 1:
            raise ValueError("at least one signing process")
        self.processes = processes
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._closed = False

    def start(self) -> None:
        """Spawn the missing children (returns before they finished starting)."""
        with self._lock:
            if self._closed:
                return
            dead = [w for w in self._workers if not w.alive()]
            for worker in dead:
                self._workers.remove(worker)
                worker.stop(0.1)
            while len(self._workers) < self.processes:
                self._workers.append(_spawn())

    def pids(self) -> list[int]:
        """The children's process ids."""
        with self._lock:
            return sorted(w.process.pid for w in self._workers)

    def ready(self) -> bool:
        """Whether a child could take a batch now (started and alive)."""
        with self._lock:
            workers = list(self._workers)
        return any(w.alive() and w.poll_ready() for w in workers)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Start the children and wait until each has started (tests, benchmarks)."""
        self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                workers = list(self._workers)
            if workers and all(w.poll_ready() for w in workers):
                return True
            time.sleep(0.02)
        return False

    def submit(self, batch: SignBatch) -> PendingLeaves | None:
        """Send ``batch`` to the children (split by device, so a device's jobs keep
        their order and the batch's key-reuse rule); None when no child is ready (still
        starting, or closed): the caller signs. Raises :class:`SigningUnavailable` if a
        child died."""
        self.start()
        with self._lock:
            workers = [w for w in self._workers if not w.dead]
        ready = sorted((w for w in workers if w.poll_ready()), key=_Worker.outstanding)
        if not ready:
            return None
        data = _split(batch, len(ready))
        parts = [
            (worker, worker.send(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)), part)
            for worker, part in zip(ready, data, strict=False)
        ]
        return PendingLeaves(parts, batch.jobs)

    def close(self) -> None:
        """Stop the children (they finish the batch in hand)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop(self._stop_timeout)


def _spawn() -> _Worker:
    """A new child: a fresh interpreter (not ``fork``: the server has threads, which a
    fork copies in whatever state they are in) that imports only this module."""
    ours, theirs = socket.socketpair()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return _Worker(process, Connection(ours.detach()))


def _split(batch: SignBatch, ways: int) -> list[SignBatch]:
    if ways == 1 or len(batch.jobs) < 2:
        return [batch]
    groups: dict[str, list[SignJob]] = {}
    for job in batch.jobs:
        groups.setdefault(job.device_id, []).append(job)
    chunks: list[list[SignJob]] = [[] for _ in range(ways)]
    for jobs in sorted(groups.values(), key=len, reverse=True):
        min(chunks, key=len).extend(jobs)
    return [dataclasses.replace(batch, jobs=tuple(c)) for c in chunks if c]


def _outcome(result: IssuedLeaf | Refusal) -> IssuedLeaf | PkiError:
    return result.exception() if isinstance(result, Refusal) else result
