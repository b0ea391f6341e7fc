"""Shared access signature (SAS) tokens as IoT Hub and DPS use them.

``SharedAccessSignature sr={urlenc(uri)}&sig={urlenc(b64(HMAC-SHA256(b64decode(key),
urlenc(uri) + "\\n" + se)))}&se={expiry}[&skn={policy}]``

Verification is strict about what matters (signature in constant time, expiry, the
resource the caller expects, the key name) and lenient about encoding: the string to
sign is taken as the client sent it, and also re-encoded with upper- and lower-case
percent escapes, since SDKs differ there (wire doc §1.3).

Errors: :class:`SasError` with ``reason`` in ``"malformed"``, ``"expired"``,
``"wrong-resource"``, ``"wrong-key-name"``, ``"signature-mismatch"``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "SasError",
    "SasToken",
    "derive_device_key",
    "generate_sas_token",
    "parse_sas_token",
    "resource_within",
    "verify_sas_token",
]

_PREFIX = "SharedAccessSignature "


class SasError(Exception):
    """A SAS token was refused; ``reason`` says why (machine-readable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class SasToken:
    """A parsed token. ``sr_raw`` is the resource exactly as sent (still URL-encoded)."""

    sr_raw: str
    resource: str
    signature: bytes
    expiry: int
    key_name: str | None


def _sign(key: bytes, sr_encoded: str, expiry: int) -> bytes:
    return hmac.new(key, f"{sr_encoded}\n{expiry}".encode(), hashlib.sha256).digest()


def _decode_key(key_b64: str) -> bytes:
    try:
        return base64.b64decode(key_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError("the shared access key is not base64") from exc


def generate_sas_token(
    resource: str, key_b64: str, expiry: int, key_name: str | None = None
) -> str:
    """A token for ``resource`` valid until the Unix time ``expiry`` (client side; tests)."""
    sr = quote(resource, safe="")
    sig = base64.b64encode(_sign(_decode_key(key_b64), sr, expiry)).decode()
    token = f"{_PREFIX}sr={sr}&sig={quote(sig, safe='')}&se={expiry}"
    return token + (f"&skn={key_name}" if key_name else "")


def parse_sas_token(token: str) -> SasToken:
    """Parse a token (with or without the ``SharedAccessSignature`` prefix)."""
    body = token.strip()
    if body.startswith(_PREFIX):
        body = body[len(_PREFIX) :]
    raw: dict[str, str] = {}
    for part in body.split("&"):
        key, sep, value = part.partition("=")
        if not sep or key in raw:
            raise SasError("malformed", "SAS token fields must be unique key=value pairs")
        raw[key] = value
    if not {"sr", "sig", "se"} <= raw.keys():
        raise SasError("malformed", "SAS token needs sr, sig and se")
    try:
        signature = base64.b64decode(unquote(raw["sig"]), validate=True)
        expiry = int(raw["se"])
    except (binascii.Error, ValueError) as exc:
        raise SasError("malformed", "SAS token sig or se is not valid") from exc
    skn = unquote(raw["skn"]) if "skn" in raw else None
    return SasToken(
        sr_raw=raw["sr"],
        resource=unquote(raw["sr"]),
        signature=signature,
        expiry=expiry,
        key_name=skn,
    )


def _encodings(sr_raw: str) -> set[str]:
    plain = unquote(sr_raw)
    upper = quote(plain, safe="")
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), upper)
    return {sr_raw, upper, lower, quote_plus(plain, safe=""), plain}


def resource_within(resource: str, expected: str) -> bool:
    """True when ``resource`` equals ``expected`` or is a segment-wise prefix of it.

    Host names compare case-insensitively; a token for ``host`` covers
    ``host/devices/d1`` but a token for ``host/devices/d`` does not.
    """
    have = [s for s in resource.strip("/").split("/")]
    want = [s for s in expected.strip("/").split("/")]
    if not have or len(have) > len(want):
        return False
    if have[0].lower() != want[0].lower():
        return False
    return have[1:] == want[1 : len(have)]


def verify_sas_token(
    token: SasToken,
    key_b64: str,
    *,
    now: dt.datetime,
    expected_resource: str,
    key_name: str | None = None,
    require_key_name: bool = False,
) -> None:
    """Raise :class:`SasError` unless ``token`` is valid for ``expected_resource`` now."""
    if token.expiry <= int(now.timestamp()):
        raise SasError("expired", "the SAS token has expired")
    if not resource_within(token.resource, expected_resource):
        raise SasError("wrong-resource", f"the SAS token is not for {expected_resource}")
    if (require_key_name or token.key_name is not None) and token.key_name != key_name:
        raise SasError("wrong-key-name", "the SAS token names the wrong key")
    key = _decode_key(key_b64)
    ok = False
    for encoded in _encodings(token.sr_raw):
        # Constant-time comparison for each candidate; evaluate all of them.
        ok |= hmac.compare_digest(_sign(key, encoded, token.expiry), token.signature)
    if not ok:
        raise SasError("signature-mismatch", "the SAS token signature does not match")


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """DPS group enrollment: base64(HMAC-SHA256(b64decode(groupKey), registrationId))."""
    digest = hmac.new(_decode_key(group_key_b64), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()
