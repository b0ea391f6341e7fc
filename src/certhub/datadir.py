"""The data directory: where an embedded certhub keeps its store and secrets.

Layout::

    <data-dir>/certhub.db          SQLite store (unless --database points elsewhere)
    <data-dir>/ca-passphrase       generated CA-key passphrase, mode 0600
                                   (only when CERTHUB_CA_PASSPHRASE is not set)
    <data-dir>/tls/server-ca.pem   trust anchor for certhub's TLS endpoints
    <data-dir>/tls/server.pem      endpoint certificate
    <data-dir>/tls/server.key      endpoint private key, mode 0600
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from certhub.rand import Random

__all__ = ["PASSPHRASE_ENV", "DataDir", "write_private"]

PASSPHRASE_ENV = "CERTHUB_CA_PASSPHRASE"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (mode 0644)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class DataDir:
    """Paths inside a data directory."""

    root: Path

    @property
    def database_path(self) -> Path:
        return self.root / "certhub.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database_path}"

    @property
    def passphrase_path(self) -> Path:
        return self.root / "ca-passphrase"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def server_ca_path(self) -> Path:
        return self.tls_dir / "server-ca.pem"

    @property
    def server_cert_path(self) -> Path:
        return self.tls_dir / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.tls_dir / "server.key"

    def create(self) -> None:
        """Create the directory tree (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.tls_dir.mkdir(exist_ok=True)

    def passphrase(self, rng: Random) -> bytes:
        """The CA-key passphrase: from the environment, else the file (created on first use)."""
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env.encode()
        if self.passphrase_path.exists():
            return self.passphrase_path.read_bytes().strip()
        value = base64.urlsafe_b64encode(rng.token_bytes(32)).rstrip(b"=")
        write_private(self.passphrase_path, value + b"\n")
        return value
