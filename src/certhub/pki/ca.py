"""Certificate authorities: root, issuing CA and the server TLS certificate.

The hierarchy mirrors Azure's ADR PKI: one root per namespace (``CA:TRUE, pathlen:1``)
signs one issuing CA per policy (``CA:TRUE, pathlen:0``), which signs device leaves
(see :mod:`certhub.pki.authority`). Onboarding CAs are roots created the same way under
another name. CA keys are ECDSA P-256 (default) or P-384; certificates are signed with
SHA-256 by P-256 keys and SHA-384 by P-384 keys.

A child certificate never outlives, nor starts before, its issuer: validity windows
are clipped to the issuer's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certhub.clock import Clock
from certhub.rand import Random

from ._build import (
    CA_KEY_TYPES,
    authority_key_id,
    crl_distribution_points,
    random_serial,
    signature_hash,
    subject_key_id,
    validity_window,
)
from ._build import common_name as _cn
from .errors import IssuanceError
from .keys import KeyType, PrivateKey, generate_private_key

__all__ = [
    "CaKeyPair",
    "create_issuing_ca",
    "create_root_ca",
    "create_server_certificate",
    "random_serial",
]

_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_SERVER_CN_FALLBACK = "certhub server"


CA_BACKDATE = timedelta(days=1)
"""How far CA and server certificates are backdated (device clocks run late)."""


@dataclass(frozen=True)
class CaKeyPair:
    """A CA certificate with its private key."""

    certificate: x509.Certificate
    private_key: PrivateKey


def _ca_key(key_type: KeyType) -> PrivateKey:
    if key_type not in CA_KEY_TYPES:
        raise IssuanceError(
            "ca-key-type-not-allowed", f"CA keys must be p256 or p384, not {key_type}"
        )
    return generate_private_key(key_type)


def create_root_ca(
    *,
    common_name: str,
    key_type: KeyType = KeyType.P256,
    clock: Clock,
    rng: Random,
    validity: timedelta = timedelta(days=3650),
) -> CaKeyPair:
    """A self-signed root CA (``CA:TRUE, pathlen:1``), valid for ``validity`` from now.

    Its notBefore is backdated by :data:`CA_BACKDATE` so that leaves issued right
    after it still get their own backdating for device clock skew.
    """
    key = _ca_key(key_type)
    name = _cn(common_name)
    now = clock.now().replace(microsecond=0)
    start = now - CA_BACKDATE
    end = now + validity
    if validity <= timedelta(0):
        raise IssuanceError("invalid-validity", f"empty validity {validity}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial(rng))
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(subject_key_id(key.public_key()), critical=False)
        .sign(key, signature_hash(key))
    )
    return CaKeyPair(cert, key)


def create_issuing_ca(
    root: CaKeyPair,
    *,
    common_name: str,
    key_type: KeyType = KeyType.P256,
    clock: Clock,
    rng: Random,
    validity: timedelta = timedelta(days=365),
    crl_url: str | None = None,
) -> CaKeyPair:
    """An issuing CA (``CA:TRUE, pathlen:0``) signed by ``root``.

    ``crl_url``, when given, is where the root publishes its CRL (the CRL that would
    list this issuing CA once revoked).
    """
    key = _ca_key(key_type)
    start, end = validity_window(clock.now(), CA_BACKDATE, validity, root.certificate)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_cn(common_name))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(random_serial(rng))
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(subject_key_id(key.public_key()), critical=False)
        .add_extension(authority_key_id(root.certificate), critical=False)
    )
    if crl_url is not None:
        builder = builder.add_extension(crl_distribution_points(crl_url), critical=False)
    cert = builder.sign(root.private_key, signature_hash(root.private_key))
    return CaKeyPair(cert, key)


def create_server_certificate(
    ca: CaKeyPair,
    *,
    hosts: Sequence[str],
    clock: Clock,
    rng: Random,
    validity: timedelta = timedelta(days=825),
) -> tuple[x509.Certificate, PrivateKey]:
    """A TLS server certificate (P-256 key) for ``hosts``, signed by ``ca``.

    Each host becomes a SAN entry: an IP address SAN when it parses as an IPv4/IPv6
    address (so ``127.0.0.1`` passes ``ssl`` hostname checks), a DNS name otherwise.
    The subject CN is the first host (or a generic name if it is over 64 characters).
    """
    san = _subject_alt_name(hosts)
    key = generate_private_key(KeyType.P256)
    start, end = validity_window(clock.now(), CA_BACKDATE, validity, ca.certificate)
    cn = hosts[0] if len(hosts[0]) <= 64 else _SERVER_CN_FALLBACK
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(cn))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(random_serial(rng))
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SERVER_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(subject_key_id(key.public_key()), critical=False)
        .add_extension(authority_key_id(ca.certificate), critical=False)
        .sign(ca.private_key, signature_hash(ca.private_key))
    )
    return cert, key


def _subject_alt_name(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    if isinstance(hosts, str) or not hosts:
        raise IssuanceError("no-hosts", "a server certificate needs at least one host name")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        name = _general_name(host)
        names.append(name)
    return x509.SubjectAlternativeName(names)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or not host.isascii() or any(c.isspace() or c in "/:@" for c in host):
        raise IssuanceError("invalid-host", f"not a DNS name or IP address: {host!r}")
    return x509.DNSName(host.lower())
