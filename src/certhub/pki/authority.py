"""The authority: validates a device's CSR and signs its leaf.

The authority holds the policy. Whoever authorises a request (DPS attestation, hub
renewal) hands over an :class:`IssuanceRequest`; the authority runs the validators and
builds the leaf **only from the server's data** — device id, policy, issuer, revocation
identifier, CRL URL. Nothing the device asked for is copied besides its public key:
no subject attributes, no requested extensions (a requested SAN or ``CA:TRUE`` is
silently dropped).

Leaf profile (matching the leaves Azure's preview service issues): subject ``CN=<device
id>``; ``basicConstraints CA:FALSE`` critical; ``keyUsage digitalSignature`` critical
(plus ``keyEncipherment`` for RSA keys); EKU ``clientAuth``; SKI; AKI; optional CRL
distribution point; the revocation identifier extension (non-critical); random serial;
signed with SHA-256 by P-256 issuers and SHA-384 by P-384 issuers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certhub.clock import Clock
from certhub.rand import Random

from ._build import (
    authority_key_id,
    common_name,
    crl_distribution_points,
    random_serial,
    signature_hash,
    subject_key_id,
    validity_window,
)
from .ca import CaKeyPair
from .errors import CsrRejected
from .extensions import revocation_id_extension
from .keys import KeyType, PublicKey
from .policy import LeafPolicy
from .validators import DEFAULT_VALIDATORS, CsrContext, CsrValidator

__all__ = [
    "Authority",
    "IssuanceRequest",
    "IssuedLeaf",
    "chain_base64",
    "chain_pem",
]

_DER = serialization.Encoding.DER
_CLIENT_AUTH = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
_DER_CACHE_SIZE = 64
_NOT_A_CA = x509.BasicConstraints(ca=False, path_length=None)


def _key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_EC_KEY_USAGE = _key_usage(key_encipherment=False)
_RSA_KEY_USAGE = _key_usage(key_encipherment=True)


@dataclass(frozen=True, kw_only=True)
class IssuanceRequest:
    """Everything the authority needs to decide on and sign one device CSR.

    ``key_seen(public_key_sha256)`` answers whether that key was already certified for
    this device (the caller asks the store).
    """

    csr_der: bytes
    device_id: str
    revocation_id: bytes
    policy: LeafPolicy
    issuer: CaKeyPair
    root: x509.Certificate
    crl_url: str | None
    key_seen: Callable[[str], bool] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class IssuedLeaf:
    """A signed leaf and the facts the store records about it."""

    certificate: x509.Certificate
    chain_der: tuple[bytes, ...]
    """DER of leaf, issuing CA, root — in that order."""
    serial_hex: str
    """Lowercase hex serial, zero-padded to 32 digits."""
    not_before: dt.datetime
    not_after: dt.datetime
    sha256_thumbprint: str
    """Lowercase hex SHA-256 of the leaf DER."""
    sha1_thumbprint: str
    """Uppercase hex SHA-1 of the leaf DER (Azure thumbprint form)."""
    public_key_sha256: str
    key_type: KeyType

    def __reduce__(self) -> tuple[Callable[[dict[str, object]], IssuedLeaf], tuple[object]]:
        # pickled without the parsed certificate (not picklable): DER, parsed again
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "certificate"}
        return _unpickle_leaf, (state,)


def _unpickle_leaf(state: dict[str, object]) -> IssuedLeaf:
    der = state["chain_der"][0]  # type: ignore[index]
    return IssuedLeaf(certificate=x509.load_der_x509_certificate(der), **state)  # type: ignore[arg-type]


class Authority:
    """Validates CSRs and signs device leaves with an injected clock and randomness."""

    def __init__(
        self,
        clock: Clock,
        rng: Random,
        validators: Sequence[CsrValidator] = DEFAULT_VALIDATORS,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._validators = tuple(validators)
        self._der_cache: dict[x509.Certificate, bytes] = {}
        self._issuer_cache: dict[x509.Certificate, _IssuerFacts] = {}

    @property
    def validators(self) -> tuple[CsrValidator, ...]:
        """The rules every CSR passes, in order."""
        return self._validators

    def validate(self, req: IssuanceRequest) -> x509.CertificateSigningRequest:
        """Run every validator; return the parsed CSR or raise ``CsrRejected``."""
        return self._check(req).csr

    def context(self, req: IssuanceRequest) -> CsrContext:
        """A fresh validation context for ``req`` (nothing parsed yet).

        Callers that need the CSR's key hash before signing (a batch's bulk key-reuse
        lookup) take it from here and pass the same context to :meth:`sign`, so the CSR
        is parsed once.
        """
        return CsrContext(
            csr_der=req.csr_der,
            device_id=req.device_id,
            allowed_key_types=req.policy.key_types,
            key_seen=req.key_seen,
        )

    def sign(self, req: IssuanceRequest, *, context: CsrContext | None = None) -> IssuedLeaf:
        """Validate ``req`` and sign its leaf.

        ``context`` is one :meth:`context` returned for this very request (every
        validator still runs over it). Raises ``CsrRejected`` for a refused CSR and
        ``IssuanceError`` when the issuer is not valid now, the revocation id is not 32
        bytes or the device id does not fit in a common name (1..64 characters).
        """
        if context is None:
            ctx = self._check(req)
        elif not _made_for(context, req):
            raise ValueError("the context was made for another request")
        else:
            ctx = self._run_validators(context)
        key_type = ctx.key_type
        if key_type is None:  # only possible with a validator list lacking KeyTypeAllowed
            raise CsrRejected("key-type-not-allowed", "the CSR key is not a supported type")
        cert = self._build(req, ctx.public_key)
        leaf_der = cert.public_bytes(_DER)
        return IssuedLeaf(
            certificate=cert,
            chain_der=(leaf_der, self._der(req.issuer.certificate), self._der(req.root)),
            serial_hex=format(cert.serial_number, "032x"),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256_thumbprint=hashlib.sha256(leaf_der).hexdigest(),
            sha1_thumbprint=hashlib.sha1(leaf_der, usedforsecurity=False).hexdigest().upper(),
            public_key_sha256=ctx.public_key_sha256,
            key_type=key_type,
        )

    def _check(self, req: IssuanceRequest) -> CsrContext:
        return self._run_validators(self.context(req))

    def _run_validators(self, ctx: CsrContext) -> CsrContext:
        for validator in self._validators:
            validator.check(ctx)
        return ctx

    def _issuer_facts(self, issuer: CaKeyPair) -> _IssuerFacts:
        # Issuer name, AKI and hash are the same for every leaf of an issuer: derive once.
        facts = self._issuer_cache.get(issuer.certificate)
        if facts is None:
            if len(self._issuer_cache) >= _DER_CACHE_SIZE:
                self._issuer_cache.clear()
            facts = self._issuer_cache[issuer.certificate] = _IssuerFacts.of(issuer)
        return facts

    def _der(self, cert: x509.Certificate) -> bytes:
        # Issuer and root DER are the same for every leaf of a policy: encode once.
        der = self._der_cache.get(cert)
        if der is None:
            if len(self._der_cache) >= _DER_CACHE_SIZE:
                self._der_cache.clear()
            der = self._der_cache[cert] = cert.public_bytes(_DER)
        return der

    def _build(self, req: IssuanceRequest, public_key: PublicKey) -> x509.Certificate:
        facts = self._issuer_facts(req.issuer)
        policy = req.policy
        start, end = validity_window(
            self._clock.now(), policy.backdate, policy.validity, req.issuer.certificate
        )
        # One constructor call instead of a chain of add_extension copies (~20 µs less).
        return x509.CertificateBuilder(
            issuer_name=facts.name,
            subject_name=common_name(req.device_id),
            public_key=public_key,
            serial_number=random_serial(self._rng),
            not_valid_before=start,
            not_valid_after=end,
            extensions=_leaf_extensions(req, public_key, facts),
        ).sign(req.issuer.private_key, facts.hash)


@dataclass(frozen=True, slots=True)
class _IssuerFacts:
    """What every leaf of one issuer shares: its name, AKI extension and signature hash."""

    name: x509.Name
    aki: x509.Extension[x509.ExtensionType]
    hash: hashes.SHA256 | hashes.SHA384
    crl_points: dict[str, x509.Extension[x509.ExtensionType]]

    @classmethod
    def of(cls, issuer: CaKeyPair) -> _IssuerFacts:
        aki = authority_key_id(issuer.certificate)
        return cls(
            name=issuer.certificate.subject,
            aki=x509.Extension(aki.oid, False, aki),
            hash=signature_hash(issuer.private_key),
            crl_points={},
        )

    def crl_point(self, url: str) -> x509.Extension[x509.ExtensionType]:
        ext = self.crl_points.get(url)
        if ext is None:
            if len(self.crl_points) >= _DER_CACHE_SIZE:
                self.crl_points.clear()
            value = crl_distribution_points(url)
            ext = self.crl_points[url] = x509.Extension(value.oid, False, value)
        return ext


def _ext(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


_EC_HEAD = (_ext(_NOT_A_CA, True), _ext(_EC_KEY_USAGE, True), _ext(_CLIENT_AUTH, False))
_RSA_HEAD = (_ext(_NOT_A_CA, True), _ext(_RSA_KEY_USAGE, True), _ext(_CLIENT_AUTH, False))


def _leaf_extensions(
    req: IssuanceRequest, public_key: PublicKey, facts: _IssuerFacts
) -> list[x509.Extension[x509.ExtensionType]]:
    """The leaf profile, in order; only SKI and the revocation id differ per leaf."""
    exts = list(_RSA_HEAD if isinstance(public_key, rsa.RSAPublicKey) else _EC_HEAD)
    exts.append(_ext(subject_key_id(public_key), False))
    exts.append(facts.aki)
    if req.crl_url is not None:
        exts.append(facts.crl_point(req.crl_url))
    exts.append(_ext(revocation_id_extension(req.revocation_id), False))
    return exts


def _made_for(ctx: CsrContext, req: IssuanceRequest) -> bool:
    """Whether ``ctx`` is what :meth:`Authority.context` returns for ``req``."""
    return (
        ctx.csr_der == req.csr_der
        and ctx.device_id == req.device_id
        and ctx.allowed_key_types == req.policy.key_types
        and ctx.key_seen is req.key_seen
    )


def chain_pem(leaf: IssuedLeaf) -> bytes:
    """The chain (leaf, issuing CA, root) as concatenated PEM certificates."""
    return b"".join(_pem(der) for der in leaf.chain_der)


def chain_base64(leaf: IssuedLeaf) -> list[str]:
    """The chain as base64 DER strings, the wire form of ``issuedCertificateChain``."""
    return [base64.b64encode(der).decode("ascii") for der in leaf.chain_der]


def _pem(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]  # RFC 7468: 64 columns
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
