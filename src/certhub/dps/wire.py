"""DPS wire shapes: CONNECT usernames, MQTT topics, request bodies, response bodies.

Pure functions over strings, bytes and dicts (no store, no I/O), shared by the MQTT
frontend and the HTTPS routes. Field names and topics follow the wire reference
(docs/azure-wire-protocol.md §1, §2.1); where Azure is unconfirmed the lenient reading
is taken and noted in docs/dps.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from certhub.dps.errors import BadRequest, DpsError
from certhub.pki import CsrRejected, csr_der_from_base64

__all__ = [
    "CSR_API_VERSION",
    "DEFAULT_API_VERSION",
    "MAX_BODY_BYTES",
    "POLL_TOPIC",
    "REGISTER_TOPIC",
    "RESPONSE_FILTER",
    "DpsUsername",
    "RegisterRequest",
    "check_registration_id",
    "error_body",
    "parse_register_body",
    "parse_status_body",
    "parse_username",
    "response_topic",
    "supports_csr",
    "utc_text",
]

DEFAULT_API_VERSION = "2019-03-31"
CSR_API_VERSION = "2025-07-01-preview"
REGISTER_TOPIC = "$dps/registrations/PUT/iotdps-register/"
POLL_TOPIC = "$dps/registrations/GET/iotdps-get-operationstatus/"
RESPONSE_FILTER = "$dps/registrations/res/#"
_RESPONSE_PREFIX = "$dps/registrations/res/"
MAX_BODY_BYTES = 64 * 1024
"""Largest register / status-lookup body read (a CSR is at most 8 KiB of DER)."""

# DPS registration ids: alphanumerics and - . _ : up to 128 characters. certhub keeps
# the case as sent (Azure lower-cases); the registration id is the device id.
_REGISTRATION_ID = re.compile(r"[A-Za-z0-9\-._:]{1,128}")
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True, kw_only=True)
class DpsUsername:
    """A parsed DPS CONNECT username ``{idScope}/registrations/{regId}/api-version=…``."""

    id_scope: str
    registration_id: str
    api_version: str
    params: dict[str, str]


def parse_username(username: str | None) -> DpsUsername | None:
    """Parse a DPS username; None when it is not one (then it is not for DPS).

    No ``?`` before ``api-version``; extra ``&key=value`` parameters are allowed.
    """
    if not username:
        return None
    parts = username.split("/")
    if len(parts) != 4 or parts[1] != "registrations" or not parts[0] or not parts[2]:
        return None
    if not parts[3].startswith("api-version="):
        return None
    params: dict[str, str] = {}
    for item in parts[3].split("&"):
        key, _, value = item.partition("=")
        if key:
            params[unquote(key)] = unquote(value)
    return DpsUsername(
        id_scope=parts[0],
        registration_id=unquote(parts[2]),
        api_version=params.get("api-version") or DEFAULT_API_VERSION,
        params=params,
    )


def check_registration_id(registration_id: str) -> str:
    """Return ``registration_id`` or raise BadRequest 400002 if it is not a valid one."""
    if not _REGISTRATION_ID.fullmatch(registration_id):
        raise BadRequest(
            f"invalid registration id {registration_id[:140]!r}: use 1-128 of A-Z a-z 0-9 - . _ :",
            reason="invalid-registration-id",
            error_code=400002,
        )
    return registration_id


def supports_csr(api_version: str | None) -> bool:
    """True for api-versions dated 2025-07-01 or later (``2025-07-01-preview`` and up)."""
    match = _DATE.match(api_version or "")
    return match is not None and match.group(1) >= CSR_API_VERSION[:10]


def response_topic(status: int, rid: str, retry_after: int | None = None) -> str:
    """``$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]``."""
    topic = f"{_RESPONSE_PREFIX}{status}/?$rid={quote(rid, safe='')}"
    return topic if retry_after is None else f"{topic}&retry-after={retry_after}"


def utc_text(value: dt.datetime) -> str:
    """A UTC timestamp as DPS writes it: ``2026-01-02T03:04:05.123456Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(err: DpsError, tracking_id: str, now: dt.datetime) -> dict[str, Any]:
    """``ProvisioningServiceErrorDetails`` for ``err`` (``info.reason`` is certhub's)."""
    return {
        "errorCode": err.error_code,
        "trackingId": tracking_id,
        "message": err.message,
        "timestampUtc": utc_text(now),
        "info": {"reason": err.reason},
    }


@dataclass(frozen=True, kw_only=True)
class RegisterRequest:
    """A parsed ``DeviceRegistration`` body."""

    registration_id: str
    payload: Any
    csr_der: bytes | None
    csr_in_payload: bool
    """The CSR came as ``payload.csr`` (SDKs without CSR support): echo the chain there."""

    @property
    def csr_sha256(self) -> str | None:
        """Fingerprint of the CSR, used to answer a repeated register with its operation."""
        return None if self.csr_der is None else hashlib.sha256(self.csr_der).hexdigest()


def _load_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(
            f"the request body exceeds {MAX_BODY_BYTES} bytes", reason="body-too-large"
        )
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc}", reason="malformed-json"
        ) from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object", reason="not-an-object")
    return value


def _check_body_id(body: dict[str, Any], registration_id: str) -> None:
    body_id = body.get("registrationId")
    if body_id is None:
        return
    if not isinstance(body_id, str):
        raise BadRequest("registrationId must be a string", reason="invalid-field")
    if body_id != registration_id:
        raise BadRequest(
            f"registrationId {body_id[:140]!r} does not match {registration_id!r}",
            reason="registration-id-mismatch",
            error_code=400002,
        )


def _decode_csr(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{where} must be a base64 string", reason="invalid-field")
    try:
        return csr_der_from_base64(text)
    except CsrRejected as exc:
        raise BadRequest(
            f"CSR rejected ({exc.reason}): {exc.message}", reason=exc.reason, error_code=400004
        ) from exc


def parse_register_body(
    body: bytes, registration_id: str, api_version: str | None, *, strict_api_version: bool
) -> RegisterRequest:
    """Parse a register body; BadRequest 400001/400002/400003/400004 for a bad one.

    A top-level ``csr`` with an api-version older than ``2025-07-01-preview`` is
    accepted unless ``strict_api_version`` (then 400003, as Azure's preview does);
    ``payload.csr`` is accepted with any api-version. A top-level ``csr`` wins over
    ``payload.csr``.
    """
    data = _load_object(body)
    _check_body_id(data, registration_id)
    payload = data.get("payload")
    csr_der: bytes | None = None
    in_payload = False
    if data.get("csr") is not None:
        if strict_api_version and not supports_csr(api_version):
            raise BadRequest(
                f"csr needs api-version {CSR_API_VERSION} or later, not {api_version}",
                reason="csr-needs-newer-api-version",
                error_code=400003,
            )
        csr_der = _decode_csr(data["csr"], "csr")
    elif isinstance(payload, dict) and payload.get("csr") is not None:
        csr_der = _decode_csr(payload["csr"], "payload.csr")
        in_payload = True
    return RegisterRequest(
        registration_id=registration_id,
        payload=payload,
        csr_der=csr_der,
        csr_in_payload=in_payload,
    )


def parse_status_body(body: bytes, registration_id: str) -> None:
    """Check a status-lookup body: a ``csr`` there is a bad request (400003)."""
    data = _load_object(body)
    _check_body_id(data, registration_id)
    if data.get("csr") is not None:
        raise BadRequest(
            "csr is not allowed in a registration status lookup",
            reason="csr-in-status-lookup",
            error_code=400003,
        )
