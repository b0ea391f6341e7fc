"""The key store: keys, chains and a small state file in the agent's state directory.

Why shaped so: a device may lose power at any instant, and the one thing it must never
lose is a certificate the hub accepts. So every file is written whole or not at all
(temporary file, fsync, rename, fsync of the directory), keys are mode 0600, and each
key pair is a numbered *generation* (``key-000003.pem``, ``chain-000003.pem``) that is
never rewritten. ``state.json`` names the ``current`` generation (connected at least
once) and at most one ``pending`` one (a renewal in progress: key and CSR saved before
the CSR is sent; chain saved once issued). The current generation's files are deleted
only after the pending one has connected and been promoted, so after a crash at any
step the agent still holds a certificate that worked.

State file (``format`` 1)::

    {"format": 1, "nextGeneration": 5, "clockOffsetSeconds": -0.4,
     "current": {"generation": 3, "deviceId": "dev-1", "assignedHub": "hub.example",
                 "issuedAt": "2026-01-02T03:04:05Z", "source": "dps"},
     "pending": {"generation": 4, "method": "hub", "rid": "…", "csr": "<base64 DER>",
                 "issued": null | {same shape as current}}}
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certhub.agent.certs import chain_to_pem, key_to_pem, utc_text
from certhub.agent.errors import KeyStoreError
from certhub.agent.schedule import parse_timestamp
from certhub.agent.transport import ClientCertificate
from certhub.pki import PrivateKey

__all__ = ["AgentState", "Issued", "KeyStore", "Pending", "atomic_write"]

STATE_FORMAT = 1
_STATE_FILE = "state.json"
_LOCK_FILE = "lock"
Method = Literal["hub", "dps"]


@dataclass(frozen=True, kw_only=True)
class Issued:
    """A generation with a certificate: where it came from and whom it is for."""

    generation: int
    device_id: str
    assigned_hub: str
    issued_at: dt.datetime | None
    """Estimated server time of issuance (``notBefore`` + backdate, or a DPS timestamp)."""
    source: Method


@dataclass(frozen=True, kw_only=True)
class Pending:
    """A renewal in progress."""

    generation: int
    method: Method
    rid: str
    csr: str
    issued: Issued | None = None


@dataclass(frozen=True, kw_only=True)
class AgentState:
    """What ``state.json`` holds."""

    current: Issued | None = None
    pending: Pending | None = None
    next_generation: int = 1
    clock_offset_seconds: float = 0.0

    def generations(self) -> set[int]:
        """Generations whose files must be kept."""
        kept = set()
        if self.current is not None:
            kept.add(self.current.generation)
        if self.pending is not None:
            kept.add(self.pending.generation)
        return kept


class KeyStore:
    """Files of one agent; every write is atomic and durable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None

    # -- paths ----------------------------------------------------------------------

    def key_path(self, generation: int) -> Path:
        return self.directory / f"key-{generation:06d}.pem"

    def chain_path(self, generation: int) -> Path:
        return self.directory / f"chain-{generation:06d}.pem"

    def credential(self, generation: int) -> ClientCertificate:
        """The files a TLS client presents for ``generation``."""
        return ClientCertificate(
            chain_file=self.chain_path(generation), key_file=self.key_path(generation)
        )

    # -- lifecycle ------------------------------------------------------------------

    def open(self, *, lock: bool = True) -> None:
        """Create the directory (0700) and, unless told not to, take an exclusive lock."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if lock:
                self._lock()
        except OSError as exc:
            raise KeyStoreError(
                "unusable-directory", f"cannot use {self.directory}: {exc}", path=str(exc.filename)
            ) from exc

    def _lock(self) -> None:
        import fcntl  # POSIX only; imported here so the module loads anywhere

        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KeyStoreError(
                "locked",
                f"another agent is using {self.directory}",
                path=str(self.directory / _LOCK_FILE),
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- state ----------------------------------------------------------------------

    def load(self) -> AgentState:
        """The saved state; an empty one when there is none yet."""
        path = self.directory / _STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return AgentState()
        except OSError as exc:
            raise KeyStoreError("unreadable", f"cannot read {path}: {exc}", path=str(path)) from exc
        try:
            return _state_from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(
                "corrupt", f"{path} is not a valid state file", path=str(path)
            ) from exc

    def save(self, state: AgentState) -> None:
        """Write ``state.json`` atomically."""
        data = json.dumps(_state_to_json(state), indent=1, sort_keys=True).encode()
        self._write(self.directory / _STATE_FILE, data, 0o600)

    def allocate(self, state: AgentState) -> tuple[int, AgentState]:
        """A fresh generation number and the state that reserves it (not yet saved)."""
        return state.next_generation, replace(state, next_generation=state.next_generation + 1)

    # -- keys and chains ------------------------------------------------------------

    def write_key(self, generation: int, key: PrivateKey) -> None:
        self._write(self.key_path(generation), key_to_pem(key), 0o600)

    def load_key(self, generation: int) -> PrivateKey:
        path = self.key_path(generation)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyStoreError("bad-key", f"cannot load {path}", path=str(path)) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyStoreError("bad-key", f"{path} holds an unsupported key", path=str(path))
        return key

    def write_chain(self, generation: int, chain: Sequence[x509.Certificate]) -> None:
        self._write(self.chain_path(generation), chain_to_pem(chain), 0o644)

    def load_chain(self, generation: int) -> list[x509.Certificate]:
        path = self.chain_path(generation)
        try:
            chain = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise KeyStoreError("bad-chain", f"cannot load {path}", path=str(path)) from exc
        return chain

    def has_chain(self, generation: int) -> bool:
        return self.chain_path(generation).is_file() and self.key_path(generation).is_file()

    def cleanup(self, state: AgentState) -> list[str]:
        """Delete key, chain and temporary files no generation of ``state`` uses."""
        keep = {p.name for g in state.generations() for p in self.credential(g).files()}
        removed = []
        for path in self.directory.iterdir():
            name = path.name
            stale = name.startswith(".tmp-") or (
                name.startswith(("key-", "chain-")) and name.endswith(".pem") and name not in keep
            )
            if stale:
                path.unlink(missing_ok=True)
                removed.append(name)
        if removed:
            _fsync_dir(self.directory)
        return sorted(removed)

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        try:
            atomic_write(path, data, mode)
        except OSError as exc:
            raise KeyStoreError(
                "write-failed", f"cannot write {path}: {exc}", path=str(path)
            ) from exc


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``: temporary file (``mode``), fsync, rename, fsync of
    the directory. Readers see the old content or the new, never a mix."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- JSON ---------------------------------------------------------------------------


def _issued_to_json(issued: Issued | None) -> dict[str, Any] | None:
    if issued is None:
        return None
    return {
        "generation": issued.generation,
        "deviceId": issued.device_id,
        "assignedHub": issued.assigned_hub,
        "issuedAt": None if issued.issued_at is None else utc_text(issued.issued_at),
        "source": issued.source,
    }


def _issued_from_json(data: Any) -> Issued | None:
    if data is None:
        return None
    issued_at = data.get("issuedAt")
    return Issued(
        generation=int(data["generation"]),
        device_id=str(data["deviceId"]),
        assigned_hub=str(data["assignedHub"]),
        issued_at=None if issued_at is None else parse_timestamp(str(issued_at)),
        source=_method(data["source"]),
    )


def _method(value: Any) -> Method:
    if value == "hub":
        return "hub"
    if value == "dps":
        return "dps"
    raise ValueError(f"unknown method {value!r}")


def _state_to_json(state: AgentState) -> dict[str, Any]:
    pending = state.pending
    return {
        "format": STATE_FORMAT,
        "nextGeneration": state.next_generation,
        "clockOffsetSeconds": state.clock_offset_seconds,
        "current": _issued_to_json(state.current),
        "pending": None
        if pending is None
        else {
            "generation": pending.generation,
            "method": pending.method,
            "rid": pending.rid,
            "csr": pending.csr,
            "issued": _issued_to_json(pending.issued),
        },
    }


def _state_from_json(data: Any) -> AgentState:
    if data.get("format") != STATE_FORMAT:
        raise ValueError("unknown state format")
    raw = data.get("pending")
    pending = None
    if raw is not None:
        pending = Pending(
            generation=int(raw["generation"]),
            method=_method(raw["method"]),
            rid=str(raw["rid"]),
            csr=str(raw["csr"]),
            issued=_issued_from_json(raw.get("issued")),
        )
    return AgentState(
        current=_issued_from_json(data.get("current")),
        pending=pending,
        next_generation=int(data["nextGeneration"]),
        clock_offset_seconds=float(data.get("clockOffsetSeconds", 0.0)),
    )
