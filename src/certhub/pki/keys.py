"""Key types, key generation, key protection and fingerprints.

certhub issues to and signs with ECDSA P-256/P-384 keys (and accepts RSA 2048/3072
device keys when a policy allows them). Key generation uses the operating system's
randomness through ``cryptography``, which offers no way to inject a generator;
everything else that is random (serials, identifiers) takes a ``certhub.rand.Random``.

Fingerprint conventions: ``public_key_sha256`` and ``certificate_sha256`` are lowercase
hex; ``certificate_sha1`` is uppercase hex, as Azure shows certificate thumbprints.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

from .errors import PrivateKeyError

__all__ = [
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "certificate_sha1",
    "certificate_sha256",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "key_type_of",
    "public_key_sha256",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""A private key certhub can hold: ECDSA or RSA."""

PublicKey: TypeAlias = CertificatePublicKeyTypes
"""Any public key ``cryptography`` can find in a certificate or CSR."""


class KeyType(StrEnum):
    """The key types a policy can allow; the value is the configuration spelling."""

    P256 = "p256"
    P384 = "p384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"


_CURVES: dict[KeyType, type[ec.EllipticCurve]] = {
    KeyType.P256: ec.SECP256R1,
    KeyType.P384: ec.SECP384R1,
}
_RSA_SIZES: dict[KeyType, int] = {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072}
_CURVE_NAMES: dict[str, KeyType] = {"secp256r1": KeyType.P256, "secp384r1": KeyType.P384}
_RSA_TYPES: dict[int, KeyType] = {size: kt for kt, size in _RSA_SIZES.items()}


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """Generate a fresh private key of ``key_type``."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[key_type])


def key_type_of(public_key: PublicKey) -> KeyType | None:
    """The :class:`KeyType` of ``public_key``, or ``None`` for any other key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVE_NAMES.get(public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RSA_TYPES.get(public_key.key_size)
    return None


def encrypt_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    """Serialise ``key`` as encrypted PKCS#8 PEM (best available encryption)."""
    if not passphrase:
        raise PrivateKeyError("empty-passphrase", "a private key needs a non-empty passphrase")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_private_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    """Load an encrypted PEM private key written by :func:`encrypt_private_key`."""
    if not passphrase:
        raise PrivateKeyError("empty-passphrase", "a private key needs a non-empty passphrase")
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(pem, passphrase)
    except TypeError as exc:
        raise PrivateKeyError("not-encrypted", "the private key is not encrypted") from exc
    except ValueError as exc:
        raise PrivateKeyError(
            "decrypt-failed", "wrong passphrase or not a PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PrivateKeyError("unsupported-key-type", f"unsupported key {type(key).__name__}")
    return key


def public_key_sha256(public_key: PublicKey) -> str:
    """Lowercase hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def certificate_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_sha1(cert: x509.Certificate) -> str:
    """Uppercase hex SHA-1 of the certificate's DER (the Azure thumbprint form)."""
    return (
        hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False)
        .hexdigest()
        .upper()
    )
