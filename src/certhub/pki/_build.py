"""Shared pieces of certificate building: names, serials, hashes, key identifiers,
validity windows. Private to the package."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.rand import Random

from .errors import IssuanceError
from .keys import KeyType, PrivateKey, PublicKey

__all__ = [
    "CA_KEY_TYPES",
    "authority_key_id",
    "common_name",
    "crl_distribution_points",
    "random_serial",
    "signature_hash",
    "subject_key_id",
    "validity_window",
]

CA_KEY_TYPES = frozenset({KeyType.P256, KeyType.P384})
_SERIAL_BYTES = 16
_MAX_CN = 64  # RFC 5280 ub-common-name


def random_serial(rng: Random) -> int:
    """A positive serial number from 16 random bytes with the top bit cleared."""
    while True:
        raw = bytearray(rng.token_bytes(_SERIAL_BYTES))
        raw[0] &= 0x7F
        serial = int.from_bytes(raw, "big")
        if serial:
            return serial


def common_name(value: str) -> x509.Name:
    """A subject or issuer name holding only ``CN=value`` (1..64 characters)."""
    if not 1 <= len(value) <= _MAX_CN:
        raise IssuanceError(
            "invalid-common-name", f"a common name has 1..{_MAX_CN} characters: {value!r}"
        )
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 (and larger curve) issuers, SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def subject_key_id(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    """The RFC 5280 method-1 key identifier (SHA-1 of the key bits)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI naming the issuer's subject key identifier (computed if it has none)."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = subject_key_id(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def validity_window(
    now: dt.datetime, backdate: dt.timedelta, validity: dt.timedelta, issuer: x509.Certificate
) -> tuple[dt.datetime, dt.datetime]:
    """``(notBefore, notAfter)`` in whole seconds, kept inside the issuer's validity.

    Raises ``IssuanceError("issuer-not-valid")`` unless the issuer is valid at ``now``,
    ``IssuanceError("invalid-validity")`` if the window would be empty.
    """
    issuer_start, issuer_end = issuer.not_valid_before_utc, issuer.not_valid_after_utc
    if not issuer_start <= now < issuer_end:
        raise IssuanceError(
            "issuer-not-valid",
            f"issuer {issuer.subject.rfc4514_string()} is not valid at {now.isoformat()}",
        )
    start = max((now - backdate).replace(microsecond=0), issuer_start)
    end = min((now + validity).replace(microsecond=0), issuer_end)
    if end <= start:
        raise IssuanceError("invalid-validity", f"empty validity window {start}..{end}")
    return start, end


def crl_distribution_points(url: str) -> x509.CRLDistributionPoints:
    """A CRL distribution point extension with one full-name URI."""
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point])
