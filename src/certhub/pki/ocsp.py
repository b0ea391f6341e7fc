"""OCSP (RFC 6960) requests and responses, without I/O.

The responder is the CA itself: a response about a certificate is signed by the CA
that issued it (the root for an issuing CA, an issuing CA for a device leaf), with a
by-key responder id and the CA certificate attached. No delegated OCSP-signing
certificate is needed, and a client that trusts the chain can check every answer
(RFC 6960 §4.2.2.2, "the CA who issued the certificate in question").

Flow: :func:`parse_request` turns the request DER into an :class:`OcspQuery` (or None
when it is malformed — the caller answers :func:`unsuccessful_response` with
``MALFORMED_REQUEST``); the caller finds the issuer with :func:`issuer_matches`, looks
the serial up, and signs a :class:`CertStatus` with :func:`signed_response`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ._build import signature_hash
from .ca import CaKeyPair

__all__ = [
    "CertStatus",
    "OcspQuery",
    "issuer_hashes",
    "issuer_matches",
    "parse_request",
    "signed_response",
    "unsuccessful_response",
]

StatusName = Literal["good", "revoked", "unknown"]
_STATUS = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class OcspQuery:
    """The one certificate a request asks about (CertID fields) and its nonce."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    algorithm: hashes.HashAlgorithm
    serial: int
    nonce: bytes | None

    @property
    def serial_hex(self) -> str:
        """The serial as the registry stores it (lower-case hex, no leading zeros)."""
        return format(self.serial, "x")


@dataclass(frozen=True, slots=True)
class CertStatus:
    """What the responder says about one certificate."""

    status: StatusName
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        if (self.status == "revoked") != (self.revoked_at is not None):
            raise ValueError("revoked_at is required exactly for status 'revoked'")


def parse_request(der: bytes) -> OcspQuery | None:
    """The query of an OCSP request, or None if it is not one well-formed request.

    ``cryptography`` accepts exactly one CertID per request; a request listing several
    is treated as malformed (certhub clients ask about one certificate at a time).
    """
    try:
        request = ocsp.load_der_ocsp_request(der)
        nonce = _nonce(request)
        return OcspQuery(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            algorithm=request.hash_algorithm,
            serial=request.serial_number,
            nonce=nonce,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """``(issuerNameHash, issuerKeyHash)`` of a CA certificate under ``algorithm``."""
    # The key hash covers the subjectPublicKey BIT STRING value (RFC 6960 §4.1.1), not the
    # SPKI: let an OCSP request builder compute it (for any key type). It takes the name
    # hash from its first argument's *issuer* field, so that one is computed here.
    probe = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    digest = hashes.Hash(algorithm)
    digest.update(issuer.subject.public_bytes())
    return digest.finalize(), probe.issuer_key_hash


def issuer_matches(query: OcspQuery, issuer: x509.Certificate) -> bool:
    """Whether the query's CertID names ``issuer`` as the certificate's issuer."""
    name_hash, key_hash = issuer_hashes(issuer, query.algorithm)
    return (name_hash, key_hash) == (query.issuer_name_hash, query.issuer_key_hash)


def signed_response(
    query: OcspQuery,
    issuer: CaKeyPair,
    status: CertStatus,
    *,
    now: dt.datetime,
    validity: dt.timedelta,
) -> bytes:
    """A successful basic response about ``query``'s certificate, signed by ``issuer``.

    thisUpdate is ``now`` and nextUpdate ``now + validity``; the request's nonce is
    echoed. The issuer's certificate is included so the signer can be found without it.
    """
    this_update = now.replace(microsecond=0)
    revoked_at = status.revoked_at.replace(microsecond=0) if status.revoked_at else None
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial,
            algorithm=query.algorithm,
            cert_status=_STATUS[status.status],
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=revoked_at,
            revocation_reason=status.reason if status.status == "revoked" else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
        .certificates([issuer.certificate])
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    response = builder.sign(issuer.private_key, signature_hash(issuer.private_key))
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response (``malformedRequest``, ``unauthorized``, ``internalError``…)."""
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)
