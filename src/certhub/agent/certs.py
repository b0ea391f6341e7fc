"""Device-side certificate work: CSRs, chains off the wire, PEM files, the twin report.

Wire forms (wire doc §2.1, §2.2): a CSR travels as base64 DER with no PEM armour; a
chain comes back as a list of base64 DER strings, leaf first. The agent is lenient on
input and also reads PEM strings in a chain (the Learn page shows PEM).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.agent.errors import ProtocolError
from certhub.pki import PrivateKey

__all__ = [
    "CertificateInfo",
    "chain_from_wire",
    "chain_to_pem",
    "check_chain_matches",
    "csr_base64",
    "key_to_pem",
    "make_csr",
    "utc_text",
]


@dataclass(frozen=True, kw_only=True)
class CertificateInfo:
    """The facts of a leaf the agent schedules by and reports."""

    not_before: dt.datetime
    not_after: dt.datetime
    serial_hex: str
    """Lowercase hex, zero-padded to 32 digits (as the server stores serials)."""
    thumbprint: str
    """Uppercase hex SHA-1 of the DER (the Azure thumbprint form)."""
    common_name: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        """The info of ``cert``."""
        der = cert.public_bytes(serialization.Encoding.DER)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return cls(
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial_hex=format(cert.serial_number, "032x"),
            thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
            common_name=str(names[0].value) if names else "",
        )

    def report(self) -> dict[str, Any]:
        """``properties.reported.certificate``: validFrom, validUntil, serialNumber,
        thumbprint."""
        return {
            "validFrom": utc_text(self.not_before),
            "validUntil": utc_text(self.not_after),
            "serialNumber": self.serial_hex,
            "thumbprint": self.thumbprint,
        }


def utc_text(value: dt.datetime) -> str:
    """``2026-03-01T00:00:00Z`` (whole seconds, as certificates carry them)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_csr(key: PrivateKey, common_name: str) -> bytes:
    """A DER PKCS#10 request for ``CN=common_name`` signed by ``key`` (SHA-256, or
    SHA-384 for a P-384 key)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    digest: hashes.SHA256 | hashes.SHA384 = hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        digest = hashes.SHA384()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, digest)
    return csr.public_bytes(serialization.Encoding.DER)


def csr_base64(csr_der: bytes) -> str:
    """The wire form of a CSR: base64 DER, no armour, no line breaks."""
    return base64.b64encode(csr_der).decode("ascii")


def chain_from_wire(items: Any, *, field: str) -> list[x509.Certificate]:
    """Parse a wire chain (base64 DER or PEM strings, leaf first); ProtocolError if it is
    not a non-empty list of certificates."""
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ProtocolError("bad-chain", f"{field} must be a non-empty list of strings")
    try:
        return [_one_certificate(item) for item in items]
    except (ValueError, binascii.Error) as exc:
        raise ProtocolError("bad-chain", f"{field} holds an unreadable certificate") from exc


def _one_certificate(text: str) -> x509.Certificate:
    if "-----BEGIN" in text:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))


def chain_to_pem(chain: Sequence[x509.Certificate]) -> bytes:
    """Concatenated PEM, leaf first: what a TLS client presents."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (the file is mode 0600 in the state directory)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def check_chain_matches(chain: Sequence[x509.Certificate], key: PrivateKey, cn: str) -> None:
    """ProtocolError unless the leaf certifies ``key`` and names ``cn``."""
    leaf_key = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_key != ours:
        raise ProtocolError("wrong-key", "the issued certificate is not for the key we sent")
    if CertificateInfo.of(chain[0]).common_name != cn:
        raise ProtocolError("wrong-subject", f"the issued certificate does not name {cn!r}")
