"""Who may connect to the hub: username parsing and the credential rules, pure.

:func:`authorize` decides from the CONNECT, the stored device, what TLS presented and
the time; the frontend fetches the device (in the executor) and applies the decision.
Every refusal carries a machine-readable reason and a CONNACK code: 4 (bad user name or
password) when the CONNECT is malformed for the hub, 5 (not authorized) when the
credential does not admit the device.

Rules per ``auth_type`` (wire doc §3, §6):

* ``certificateAuthority`` — the leaf was signed directly by a live policy issuing CA
  (never an onboarding CA, the root or another trusted CA), its CN is the device id, it is
  within its validity period, it carries the device's current revocation identifier and
  its serial is not revoked in the store.
* ``selfSigned`` — the leaf's SHA-1 thumbprint is the device's primary or secondary one,
  and it is within its validity period; whoever issued it (itself included). The
  listener's TLS transport (:mod:`certhub.listener._tls`) accepts any client certificate
  and proves the device holds its key; only with ``handshake_threads=0`` (Python's
  ``ssl``, which verifies at TLS) does a certificate no trusted CA issued fail the
  handshake instead.
* ``sas`` — the password is a SAS token for ``{host}/devices/{deviceId}`` signed with the
  primary or secondary key and not expired (constant-time comparison, :mod:`certhub.sas`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import unquote

from certhub.hub.issuers import LeafFacts
from certhub.listener.api import Refusal
from certhub.mqtt import ConnectReturnCode
from certhub.registry.records import DeviceRecord
from certhub.sas import SasError, parse_sas_token, verify_sas_token

__all__ = [
    "HubUsername",
    "Identity",
    "authorize",
    "is_hub_username",
    "parse_username",
    "refusal",
    "still_admits",
]

_BAD_LOGIN = ConnectReturnCode.BAD_USERNAME_OR_PASSWORD
_NOT_AUTHORIZED = ConnectReturnCode.NOT_AUTHORIZED
_DEVICE_ID_FORBIDDEN = frozenset("/+#")


@dataclass(frozen=True, slots=True)
class HubUsername:
    """``{host}/{deviceId}/?api-version=…`` taken apart."""

    host: str
    device_id: str
    api_version: str
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated device: how it proved itself and until when the proof holds."""

    device_id: str
    auth_type: str
    serial_hex: str | None = None
    issuer_ca_id: int | None = None
    expires_at: dt.datetime | None = None
    credential: str | None = None
    """What admitted the device, to re-check when its record changes: the certificate's
    revocation identifier (hex), the matched thumbprint, or the matched SAS key."""


def refusal(reason: str, code: ConnectReturnCode = _NOT_AUTHORIZED) -> Refusal:
    """A refusal with ``reason`` (CONNACK 5 unless told otherwise)."""
    return Refusal(code=code, reason=reason)


def is_hub_username(username: str | None) -> bool:
    """True for usernames shaped like the hub's (``…/?…``); DPS's have no ``/?``."""
    return username is not None and "/?" in username


def parse_username(username: str | None) -> HubUsername | None:
    """Parse a hub CONNECT username; None when it is not ``{host}/{deviceId}/?api-version=…``.

    Extra query parameters (``DeviceClientType``, ``model-id``) are kept in ``params``.
    Module identities (``{host}/{deviceId}/{moduleId}/?…``) are not supported.
    """
    if username is None:
        return None
    path, sep, query = username.partition("/?")
    if not sep:
        return None
    parts = path.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    host, device_id = parts
    if _DEVICE_ID_FORBIDDEN & set(device_id):
        return None
    params = tuple(_query_pairs(query))
    versions = [value for key, value in params if key == "api-version"]
    if len(versions) != 1 or not versions[0]:
        return None
    return HubUsername(host, device_id, versions[0], params)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``k=v&k2=v2`` as pairs, percent-decoded only where needed (the CONNECT hot path)."""
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append(
                (unquote(key) if "%" in key else key, unquote(value) if "%" in value else value)
            )
    return pairs


def authorize(
    device: DeviceRecord | None,
    *,
    host: str,
    password: bytes | None,
    leaf: LeafFacts | None,
    certificate_state: str | None,
    now: dt.datetime,
) -> Identity | Refusal:
    """Decide whether the credential presented admits ``device`` now."""
    if device is None:
        return refusal("device-not-found")
    if device.status != "enabled":
        return refusal("device-disabled")
    if device.auth_type == "certificateAuthority":
        return _certificate_authority(device, leaf, certificate_state, now)
    if device.auth_type == "selfSigned":
        return _self_signed(device, leaf, now)
    if device.auth_type == "sas":
        return _sas(device, host, password, now)
    return refusal("no-authentication")


def still_admits(device: DeviceRecord | None, identity: Identity) -> str | None:
    """Why a session admitted as ``identity`` must close now that the device's record is
    ``device`` (None: it may stay). Used when the record's credentials change: a change
    the CONNECT lookup already saw (its event read only afterwards) keeps the session."""
    if device is None:
        return "device-deleted"
    if device.status != "enabled":
        return "device-disabled"
    if device.auth_type != identity.auth_type:
        return "device-credentials-changed"
    if identity.auth_type == "certificateAuthority":
        rotated = device.revocation_id.hex() != identity.credential
        return "revocation-id-rotated" if rotated else None
    if identity.auth_type == "selfSigned":
        known = identity.credential in _thumbprints(device)
        return None if known else "device-credentials-changed"
    return None if identity.credential in _keys(device) else "device-credentials-changed"


def _thumbprints(device: DeviceRecord) -> set[str]:
    """The device's registered thumbprints, upper-case (the leaf's ``sha1`` form)."""
    return {t.upper() for t in (device.primary_thumbprint, device.secondary_thumbprint) if t}


def _keys(device: DeviceRecord) -> list[str]:
    """The device's SAS keys, primary first."""
    return [k for k in (device.primary_key, device.secondary_key) if k]


def _validity(leaf: LeafFacts, now: dt.datetime) -> Refusal | None:
    if now < leaf.not_before:
        return refusal("certificate-not-yet-valid")
    if now > leaf.not_after:
        return refusal("certificate-expired")
    return None


def _certificate_authority(
    device: DeviceRecord, leaf: LeafFacts | None, certificate_state: str | None, now: dt.datetime
) -> Identity | Refusal:
    if leaf is None:
        return refusal("no-client-certificate")
    if leaf.issuer_ca_id is None:
        return refusal("issuer-not-a-policy-ca")
    if leaf.common_name != device.device_id:
        return refusal("common-name-mismatch")
    bad_time = _validity(leaf, now)
    if bad_time is not None:
        return bad_time
    if leaf.revocation_id is None:
        return refusal("revocation-id-missing")
    if leaf.revocation_id != device.revocation_id:
        return refusal("revocation-id-mismatch")
    if certificate_state == "revoked":
        return refusal("certificate-revoked")
    return Identity(
        device.device_id,
        device.auth_type,
        serial_hex=leaf.serial_hex,
        issuer_ca_id=leaf.issuer_ca_id,
        expires_at=leaf.not_after,
        credential=leaf.revocation_id.hex(),
    )


def _self_signed(
    device: DeviceRecord, leaf: LeafFacts | None, now: dt.datetime
) -> Identity | Refusal:
    if leaf is None:
        return refusal("no-client-certificate")
    if leaf.sha1 not in _thumbprints(device):
        return refusal("thumbprint-mismatch")
    bad_time = _validity(leaf, now)
    if bad_time is not None:
        return bad_time
    return Identity(
        device.device_id, device.auth_type, expires_at=leaf.not_after, credential=leaf.sha1
    )


def _sas(
    device: DeviceRecord, host: str, password: bytes | None, now: dt.datetime
) -> Identity | Refusal:
    if not password:
        return refusal("no-credential")
    try:
        token = parse_sas_token(password.decode())
    except (UnicodeDecodeError, SasError):
        return refusal("sas-malformed", _BAD_LOGIN)
    resource = f"{host}/devices/{device.device_id}"
    keys = _keys(device)
    if not keys:
        return refusal("no-device-key")
    failure: SasError | None = None
    for key in keys:
        try:
            verify_sas_token(token, key, now=now, expected_resource=resource)
        except SasError as exc:
            failure = exc
            if exc.reason != "signature-mismatch":
                break
            continue
        except ValueError:
            return refusal("no-device-key")
        expires = dt.datetime.fromtimestamp(token.expiry, dt.UTC)
        return Identity(device.device_id, device.auth_type, expires_at=expires, credential=key)
    assert failure is not None
    return refusal(f"sas-{failure.reason}")
