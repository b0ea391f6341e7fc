"""CSR validators.

Each rule a device's CSR must pass is a tiny object with a ``name`` and
``check(ctx)``, raising :class:`CsrRejected` with a fixed ``reason``. The authority
runs them in order over one :class:`CsrContext`, which parses the CSR once and caches
what several rules need (the parsed request, its public key, the key hash). Callers
that authorise a request (DPS attestation, hub renewal) can add their own validators.

Order matters and is cheapest-first: size before parsing, key type before the
signature check (an RSA-1024 or Ed25519 key is refused without verifying anything),
the store lookup for key reuse last.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from .errors import CsrRejected
from .keys import KeyType, PublicKey, key_type_of, public_key_sha256

__all__ = [
    "DEFAULT_VALIDATORS",
    "MAX_CSR_DER_BYTES",
    "CommonNameIsDeviceId",
    "CsrContext",
    "CsrValidator",
    "KeyNotReused",
    "KeyTypeAllowed",
    "MaxCsrSize",
    "ProofOfPossession",
    "WellFormedCsr",
    "csr_der_from_base64",
]

MAX_CSR_DER_BYTES = 8 * 1024
"""Largest CSR (DER bytes) the authority will parse."""

# Base64 of MAX_CSR_DER_BYTES, plus room for PEM armour and line breaks.
_MAX_CSR_TEXT = 4 * MAX_CSR_DER_BYTES
_PEM_ARMOUR = re.compile(r"-----(BEGIN|END) (NEW )?CERTIFICATE REQUEST-----")
_WHITESPACE = re.compile(r"\s+")


def csr_der_from_base64(text: str) -> bytes:
    """Decode a CSR sent as base64 DER (the Azure wire form) to DER bytes.

    Lenient about what devices send: surrounding and embedded whitespace (line breaks)
    is ignored, and PEM armour (``-----BEGIN [NEW ]CERTIFICATE REQUEST-----`` and its
    END line) is stripped, although Azure documents "no PEM headers/footers/newlines".
    Everything else must be standard padded base64. Raises
    ``CsrRejected("csr-too-large")`` for text far beyond the DER size limit (before
    any decoding) and ``CsrRejected("csr-malformed")`` for anything undecodable.
    """
    if len(text) > _MAX_CSR_TEXT:
        raise CsrRejected("csr-too-large", f"CSR text of {len(text)} characters is too large")
    compact = _WHITESPACE.sub("", _PEM_ARMOUR.sub("", text))
    if not compact:
        raise CsrRejected("csr-malformed", "empty CSR")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CsrRejected("csr-malformed", f"CSR is not valid base64: {exc}") from exc


_UNSET: object = object()


class CsrContext:
    """What the validators look at; parsed values are computed once, on demand.

    A plain slotted class rather than a dataclass with ``functools.cached_property``:
    on Python 3.11 every cached property takes a lock and writes the instance
    ``__dict__``, which cost about as much as the CSR parse on the issuance hot path.
    A failed parse is not cached: asking again raises the same rejection again.
    """

    __slots__ = (
        "_csr",
        "_key_sha256",
        "_key_type",
        "_public_key",
        "allowed_key_types",
        "csr_der",
        "device_id",
        "key_seen",
    )

    def __init__(
        self,
        *,
        csr_der: bytes,
        device_id: str,
        allowed_key_types: frozenset[KeyType],
        key_seen: Callable[[str], bool],
    ) -> None:
        self.csr_der = csr_der
        self.device_id = device_id
        self.allowed_key_types = allowed_key_types
        self.key_seen = key_seen
        self._csr: x509.CertificateSigningRequest | None = None
        self._public_key: PublicKey | None = None
        self._key_type: object = _UNSET
        self._key_sha256: str | None = None

    def __repr__(self) -> str:
        return f"CsrContext(device_id={self.device_id!r}, csr_der=<{len(self.csr_der)} bytes>)"

    @property
    def csr(self) -> x509.CertificateSigningRequest:
        """The parsed request; ``CsrRejected("csr-malformed")`` if it is not PKCS#10 DER."""
        csr = self._csr
        if csr is None:
            try:
                csr = x509.load_der_x509_csr(self.csr_der)
                csr.subject  # noqa: B018 - force lazy parsing of the name here
            except ValueError as exc:
                raise CsrRejected("csr-malformed", f"not a DER PKCS#10 request: {exc}") from exc
            self._csr = csr
        return csr

    @property
    def public_key(self) -> PublicKey:
        """The requested public key; ``key-type-not-allowed`` if it cannot be loaded."""
        key = self._public_key
        if key is None:
            try:
                key = self.csr.public_key()
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise CsrRejected("key-type-not-allowed", f"unsupported public key: {exc}") from exc
            self._public_key = key
        return key

    @property
    def key_type(self) -> KeyType | None:
        """The :class:`KeyType` of the requested key, ``None`` if not one of ours."""
        if self._key_type is _UNSET:
            self._key_type = key_type_of(self.public_key)
        return self._key_type  # type: ignore[return-value]

    @property
    def public_key_sha256(self) -> str:
        """Lowercase hex SHA-256 of the requested key's SubjectPublicKeyInfo."""
        digest = self._key_sha256
        if digest is None:
            digest = self._key_sha256 = public_key_sha256(self.public_key)
        return digest


class CsrValidator(Protocol):
    """One rule a CSR must pass."""

    @property
    def name(self) -> str:
        """Short identifier of the rule."""
        ...

    def check(self, ctx: CsrContext) -> None:
        """Return if the rule holds; raise :class:`CsrRejected` otherwise."""
        ...


@dataclass(frozen=True)
class MaxCsrSize:
    """The DER is at most ``limit`` bytes (checked before parsing): "csr-too-large"."""

    limit: int = MAX_CSR_DER_BYTES
    name: str = "max-csr-size"

    def check(self, ctx: CsrContext) -> None:
        if len(ctx.csr_der) > self.limit:
            raise CsrRejected(
                "csr-too-large", f"CSR of {len(ctx.csr_der)} bytes exceeds {self.limit}"
            )


@dataclass(frozen=True)
class WellFormedCsr:
    """The bytes are a DER PKCS#10 request: "csr-malformed"."""

    name: str = "well-formed"

    def check(self, ctx: CsrContext) -> None:
        ctx.csr  # noqa: B018 - parsing is the check


@dataclass(frozen=True)
class KeyTypeAllowed:
    """The requested key is one of the policy's key types: "key-type-not-allowed"."""

    name: str = "key-type-allowed"

    def check(self, ctx: CsrContext) -> None:
        if ctx.key_type is None or ctx.key_type not in ctx.allowed_key_types:
            allowed = ", ".join(sorted(ctx.allowed_key_types))
            raise CsrRejected(
                "key-type-not-allowed", f"{_describe(ctx.public_key)} key; allowed: {allowed}"
            )


@dataclass(frozen=True)
class ProofOfPossession:
    """The CSR is signed by the requested key: "csr-signature-invalid"."""

    name: str = "proof-of-possession"

    def check(self, ctx: CsrContext) -> None:
        try:
            valid = ctx.csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm, InvalidSignature) as exc:
            raise CsrRejected("csr-signature-invalid", f"cannot verify: {exc}") from exc
        if not valid:
            raise CsrRejected("csr-signature-invalid", "the CSR signature does not verify")


@dataclass(frozen=True)
class CommonNameIsDeviceId:
    """Exactly one subject CN, equal to the device id: "cn-missing", "cn-mismatch"."""

    name: str = "cn-is-device-id"

    def check(self, ctx: CsrContext) -> None:
        cns = ctx.csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            raise CsrRejected("cn-missing", "the CSR subject has no common name")
        if len(cns) > 1:
            raise CsrRejected("cn-mismatch", f"the CSR subject has {len(cns)} common names")
        if cns[0].value != ctx.device_id:
            raise CsrRejected(
                "cn-mismatch", f"CN {cns[0].value!r} is not the device id {ctx.device_id!r}"
            )


@dataclass(frozen=True)
class KeyNotReused:
    """The key was never certified for this device before: "key-reused"."""

    name: str = "key-not-reused"

    def check(self, ctx: CsrContext) -> None:
        if ctx.key_seen(ctx.public_key_sha256):
            raise CsrRejected(
                "key-reused", f"key {ctx.public_key_sha256[:16]}… was already certified"
            )


DEFAULT_VALIDATORS: tuple[CsrValidator, ...] = (
    MaxCsrSize(),
    WellFormedCsr(),
    KeyTypeAllowed(),
    ProofOfPossession(),
    CommonNameIsDeviceId(),
    KeyNotReused(),
)
"""The rules every CSR passes, in order."""


def _describe(key: PublicKey) -> str:
    size = getattr(key, "key_size", None)
    curve = getattr(key, "curve", None)
    detail = curve.name if curve is not None else (f"{size}-bit" if size else "")
    return f"{type(key).__name__.removeprefix('_')} {detail}".strip()
