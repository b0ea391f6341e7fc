"""Helpers shared by the PKI tests: CSR construction and request defaults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certhub.pki import CaKeyPair, IssuanceRequest, LeafPolicy

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
DEVICE_ID = "dev-1"
REVOCATION_ID = bytes(range(32))
CRL_URL = "http://certhub.test/crl/default.crl"


def never_seen(_public_key_sha256: str) -> bool:
    return False


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    cns: Sequence[str] = (DEVICE_ID,),
    extra: Sequence[x509.NameAttribute[str]] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> bytes:
    """A DER CSR signed by ``key`` with the given CNs, other attributes and extensions."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False) for cn in cns]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([*attrs, *extra]))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else (hashes.SHA256())
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_request(
    csr_der: bytes,
    *,
    issuer: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
    device_id: str = DEVICE_ID,
    revocation_id: bytes = REVOCATION_ID,
    crl_url: str | None = CRL_URL,
    key_seen: Callable[[str], bool] = never_seen,
) -> IssuanceRequest:
    return IssuanceRequest(
        csr_der=csr_der,
        device_id=device_id,
        revocation_id=revocation_id,
        policy=policy,
        issuer=issuer,
        root=root.certificate,
        crl_url=crl_url,
        key_seen=key_seen,
    )


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)
