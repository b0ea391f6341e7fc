"""The credentials API on the wire (wire doc §2.2): request parsing and response bodies.

Pure: bytes and values in, dicts out. Topics end with the ``$rid`` and nothing after it
(the Java and C# SDKs take everything after ``?$rid=`` as the rid).

Request ``{"id": "dev-1", "csr": "<base64 DER>", "replace": null | "*" | "<rid>"}``:
a missing ``replace`` and ``"replace": null`` mean the same; other members are ignored.
The CSR's base64 is decoded here (leniently: whitespace and PEM armour are stripped),
so a CSR that is not base64 at all is refused before any operation exists.

Errors the authority reports come back as ``400040`` with ``info.credentialError``
(:data:`CREDENTIAL_ERRORS`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certhub.pki import CsrRejected, csr_der_from_base64
from certhub.renewal.errors import CsrRefused, RenewalError, RequestInvalid

__all__ = [
    "CREDENTIAL_ERRORS",
    "ISSUE_CERTIFICATE",
    "MAX_REQUEST_BYTES",
    "CredentialRequest",
    "accepted_body",
    "certificate_body",
    "csr_refused",
    "error_body",
    "parse_request",
    "response_topic",
    "wire_time",
]

ISSUE_CERTIFICATE = "issueCertificate"
"""The one operation of ``$iothub/credentials/POST/{operation}/``."""

MAX_REQUEST_BYTES = 64 * 1024

#: pki ``CsrRejected.reason`` -> ``info.credentialError``.
CREDENTIAL_ERRORS: Mapping[str, str] = {
    "csr-too-large": "CsrTooLarge",
    "csr-malformed": "FailedToDecodeCsr",
    "csr-signature-invalid": "InvalidCsrSignature",
    "cn-missing": "CommonNameMissing",
    "cn-mismatch": "CommonNameMismatch",
    "key-type-not-allowed": "KeyTypeNotAllowed",
    "key-reused": "KeyReused",
}


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """A parsed ``issueCertificate`` request."""

    device_id: str
    csr_der: bytes
    replace: str | None


def csr_refused(exc: CsrRejected) -> CsrRefused:
    """The 400040 error for a CSR the authority refused."""
    code = CREDENTIAL_ERRORS.get(exc.reason, "CsrRejected")
    return CsrRefused(exc.reason, code, exc.message)


def parse_request(payload: bytes) -> CredentialRequest:
    """Parse a request body; RequestInvalid (400004) or CsrRefused (400040)."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise RequestInvalid(f"request of {len(payload)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestInvalid(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestInvalid("the request body must be a JSON object")
    device_id = _required_string(body, "id")
    csr_text = _required_string(body, "csr")
    replace = body.get("replace")
    if replace is not None and (not isinstance(replace, str) or not replace):
        raise RequestInvalid("'replace' must be null, \"*\" or a request id")
    try:
        csr_der = csr_der_from_base64(csr_text)
    except CsrRejected as exc:
        raise csr_refused(exc) from exc
    return CredentialRequest(device_id, csr_der, replace)


def _required_string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise RequestInvalid(f"'{name}' is required")
    if not isinstance(value, str) or not value:
        raise RequestInvalid(f"'{name}' must be a non-empty string")
    return value


def wire_time(value: dt.datetime) -> str:
    """``2025-06-09T17:31:31.426Z``: UTC with milliseconds (``operationExpires``)."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _timestamp(value: dt.datetime) -> str:
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


def response_topic(status: int, rid: str) -> str:
    """``$iothub/credentials/res/{status}/?$rid={rid}``."""
    return f"$iothub/credentials/res/{status}/?$rid={rid}"


def accepted_body(correlation_id: str, expires_at: dt.datetime) -> dict[str, Any]:
    """The 202 body."""
    return {"correlationId": correlation_id, "operationExpires": wire_time(expires_at)}


def certificate_body(correlation_id: str, chain_der: Sequence[bytes]) -> dict[str, Any]:
    """The 200 body: leaf, issuing CA, root as base64 DER."""
    certificates = [base64.b64encode(der).decode("ascii") for der in chain_der]
    return {"correlationId": correlation_id, "certificates": certificates}


def error_body(
    error: RenewalError,
    *,
    tracking_id: str,
    now: dt.datetime,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The error body: errorCode, message, trackingId, timestampUtc, info[, retryAfter]."""
    info = dict(error.info)
    if correlation_id is not None:
        info["correlationId"] = correlation_id
    body: dict[str, Any] = {
        "errorCode": error.error_code,
        "message": error.message,
        "trackingId": tracking_id,
        "timestampUtc": _timestamp(now),
        "info": info,
    }
    if error.retry_after is not None:
        body["retryAfter"] = error.retry_after
    return body
