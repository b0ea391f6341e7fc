"""Pure hub rules: usernames, topics, and the credential decision (certhub.hub.auth)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import pytest

from certhub.hub import topics
from certhub.hub.auth import Identity, authorize, parse_username, still_admits
from certhub.hub.issuers import LeafFacts
from certhub.hub.topics import PublishKind, Subscription
from certhub.listener import Refusal
from certhub.mqtt import ConnectReturnCode
from certhub.registry.records import DeviceRecord
from certhub.sas import generate_sas_token

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
RID = bytes(range(32))
KEY = "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleS0="
OTHER_KEY = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3Q="
HOST = "hub.example"


# -- usernames -------------------------------------------------------------------------------


def test_username_with_extra_parameters() -> None:
    name = parse_username(f"{HOST}/dev-1/?api-version=2021-04-12&DeviceClientType=x%2F1&model-id=d")
    assert name is not None
    assert (name.host, name.device_id, name.api_version) == (HOST, "dev-1", "2021-04-12")
    assert ("DeviceClientType", "x/1") in name.params


@pytest.mark.parametrize(
    "username",
    [
        pytest.param(None, id="reject/none"),
        pytest.param(f"{HOST}/dev-1/", id="reject/no-query"),
        pytest.param(f"{HOST}/dev-1/?DeviceClientType=x", id="reject/no-api-version"),
        pytest.param(f"{HOST}/dev-1/?api-version=", id="reject/empty-api-version"),
        pytest.param(f"{HOST}/dev-1/mod/?api-version=1", id="reject/module-identity"),
        pytest.param(f"{HOST}//?api-version=1", id="reject/empty-device-id"),
        pytest.param(f"{HOST}/de+v/?api-version=1", id="reject/wildcard-in-device-id"),
        pytest.param("0ne1/registrations/dev-1/api-version=2019-03-31", id="reject/dps-username"),
    ],
)
def test_username_rejections(username: str | None) -> None:
    assert parse_username(username) is None


# -- topics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "family"),
    [
        ("devices/d1/messages/devicebound/#", Subscription.C2D),
        ("devices/+/messages/devicebound/#", Subscription.C2D),
        ("$iothub/twin/res/#", Subscription.TWIN_RESPONSES),
        ("$iothub/twin/PATCH/properties/desired/#", Subscription.DESIRED),
        ("$iothub/methods/POST/#", Subscription.METHODS),
        ("$iothub/credentials/res/#", Subscription.CREDENTIALS),
        ("$iothub/credential/#", Subscription.CREDENTIALS),
    ],
)
def test_own_filters_map_to_families(topic_filter: str, family: Subscription) -> None:
    assert topics.classify_filter("d1", topic_filter) is family


@pytest.mark.parametrize(
    "topic_filter",
    [
        pytest.param("devices/d2/messages/devicebound/#", id="reject/other-device"),
        pytest.param("#", id="reject/everything"),
        pytest.param("$iothub/#", id="reject/all-iothub"),
        pytest.param("devices/d1/messages/events/#", id="reject/own-telemetry"),
        pytest.param("devices/#", id="reject/all-devices"),
    ],
)
def test_foreign_filters_are_refused(topic_filter: str) -> None:
    assert topics.classify_filter("d1", topic_filter) is None


def test_publish_topics_are_classified() -> None:
    get = topics.classify_publish("$iothub/twin/GET/?$rid=42")
    assert get == topics.Request(PublishKind.TWIN_GET, "42")
    patch = topics.classify_publish("$iothub/twin/PATCH/properties/reported/?$rid=a-1&x=y")
    assert patch == topics.Request(PublishKind.TWIN_PATCH_REPORTED, "a-1")
    res = topics.classify_publish("$iothub/methods/res/404/?$rid=9")
    assert res == topics.Request(PublishKind.METHOD_RESPONSE, "9", 404)
    creds = topics.classify_publish("$iothub/credentials/POST/issueCertificate/?$rid=7")
    assert creds == topics.Request(PublishKind.CREDENTIALS, "7", operation="issueCertificate")


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("$iothub/twin/GET/", id="reject/no-rid"),
        pytest.param("$iothub/twin/GET/?$rid=", id="reject/empty-rid"),
        pytest.param("$iothub/methods/res/ok/?$rid=1", id="reject/non-numeric-status"),
        pytest.param("$iothub/twin/PATCH/properties/desired/?$rid=1", id="reject/desired-patch"),
        pytest.param("devices/d2/messages/events/?$rid=1", id="reject/other-device"),
        pytest.param("$iothub/other/?$rid=1", id="reject/unknown"),
    ],
)
def test_publish_rejections(topic: str) -> None:
    assert topics.classify_publish(topic) is None


def test_response_topics_end_with_the_parsed_parameters() -> None:
    assert topics.twin_response_topic(200, "1") == "$iothub/twin/res/200/?$rid=1"
    assert topics.twin_response_topic(204, "x", 5) == "$iothub/twin/res/204/?$rid=x&$version=5"
    assert topics.desired_topic(3) == "$iothub/twin/PATCH/properties/desired/?$version=3"
    assert topics.method_request_topic("go", "a") == "$iothub/methods/POST/go/?$rid=a"
    assert topics.c2d_topic("d", "k=v") == "devices/d/messages/devicebound/k=v"
    assert topics.credentials_response_topic(403, "r") == "$iothub/credentials/res/403/?$rid=r"


# -- the credential decision ----------------------------------------------------------------


def _device(**overrides: Any) -> DeviceRecord:
    fields: dict[str, Any] = {
        "device_id": "d1",
        "namespace_id": 1,
        "status": "enabled",
        "status_reason": None,
        "auth_type": "certificateAuthority",
        "primary_key": None,
        "secondary_key": None,
        "primary_thumbprint": None,
        "secondary_thumbprint": None,
        "revocation_id": RID,
        "generation_id": "1",
        "etag": "e",
        "policy_name": "default",
        "enrollment_id": None,
        "connection_state": "Disconnected",
        "connection_state_updated_at": None,
        "last_activity_at": None,
        "status_updated_at": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return DeviceRecord(**fields)


LEAF = LeafFacts(
    common_name="d1",
    serial_hex="0" * 31 + "1",
    not_before=NOW - dt.timedelta(days=1),
    not_after=NOW + dt.timedelta(days=29),
    revocation_id=RID,
    sha1="AB" * 20,
    issuer_ca_id=7,
)


def _sas(resource: str = f"{HOST}/devices/d1", key: str = KEY, ttl: int = 3600) -> bytes:
    return generate_sas_token(resource, key, int(NOW.timestamp()) + ttl).encode()


def _decide(device: DeviceRecord | None, **kwargs: Any) -> Identity | Refusal:
    options: dict[str, Any] = {
        "host": HOST,
        "password": None,
        "leaf": LEAF,
        "certificate_state": "issued",
        "now": NOW,
    }
    options.update(kwargs)
    return authorize(device, **options)


def test_policy_certificate_admits() -> None:
    identity = _decide(_device())
    assert identity == Identity(
        "d1", "certificateAuthority", LEAF.serial_hex, 7, LEAF.not_after, credential=RID.hex()
    )


def test_self_signed_thumbprint_admits_either_thumbprint() -> None:
    device = _device(auth_type="selfSigned", secondary_thumbprint="ab" * 20)
    identity = _decide(device, leaf=dataclasses.replace(LEAF, issuer_ca_id=None))
    assert isinstance(identity, Identity) and identity.auth_type == "selfSigned"
    assert identity.credential == "AB" * 20


def test_sas_admits_with_the_secondary_key() -> None:
    device = _device(auth_type="sas", primary_key=OTHER_KEY, secondary_key=KEY)
    identity = _decide(device, leaf=None, password=_sas())
    assert isinstance(identity, Identity)
    assert identity.expires_at == NOW + dt.timedelta(hours=1)
    assert identity.credential == KEY


_SAS = {"auth_type": "sas", "primary_key": KEY}
_NOT_AUTHORIZED = ConnectReturnCode.NOT_AUTHORIZED
_BAD_LOGIN = ConnectReturnCode.BAD_USERNAME_OR_PASSWORD


@pytest.mark.parametrize(
    ("device", "kwargs", "code", "reason"),
    [
        pytest.param(None, {}, 5, "device-not-found", id="reject/unknown-device"),
        pytest.param({"status": "disabled"}, {}, 5, "device-disabled", id="reject/disabled"),
        pytest.param({}, {"leaf": None}, 5, "no-client-certificate", id="reject/no-certificate"),
        pytest.param(
            {}, {"leaf": dataclasses.replace(LEAF, issuer_ca_id=None)}, 5,
            "issuer-not-a-policy-ca", id="reject/onboarding-ca",
        ),
        pytest.param(
            {}, {"leaf": dataclasses.replace(LEAF, common_name="d2")}, 5,
            "common-name-mismatch", id="reject/wrong-cn",
        ),
        pytest.param(
            {}, {"now": LEAF.not_after + dt.timedelta(seconds=1)}, 5, "certificate-expired",
            id="reject/expired",
        ),
        pytest.param(
            {}, {"now": LEAF.not_before - dt.timedelta(seconds=1)}, 5,
            "certificate-not-yet-valid", id="reject/not-yet-valid",
        ),
        pytest.param(
            {}, {"leaf": dataclasses.replace(LEAF, revocation_id=None)}, 5,
            "revocation-id-missing", id="reject/no-revocation-id",
        ),
        pytest.param(
            {"revocation_id": bytes(32)}, {}, 5, "revocation-id-mismatch",
            id="reject/revoked-identifier",
        ),
        pytest.param(
            {}, {"certificate_state": "revoked"}, 5, "certificate-revoked",
            id="reject/revoked-serial",
        ),
        pytest.param(
            {"auth_type": "selfSigned", "primary_thumbprint": "CD" * 20}, {}, 5,
            "thumbprint-mismatch", id="reject/thumbprint",
        ),
        pytest.param(_SAS, {"leaf": None}, 5, "no-credential", id="reject/sas-no-password"),
        pytest.param(
            _SAS, {"password": _sas(key=OTHER_KEY)}, 5, "sas-signature-mismatch",
            id="reject/sas-wrong-key",
        ),
        pytest.param(
            _SAS, {"password": _sas(ttl=-1)}, 5, "sas-expired", id="reject/sas-expired"
        ),
        pytest.param(
            _SAS, {"password": _sas(resource=f"{HOST}/devices/d2")}, 5, "sas-wrong-resource",
            id="reject/sas-wrong-sr",
        ),
        pytest.param(
            _SAS, {"password": b"SharedAccessSignature nonsense"}, 4, "sas-malformed",
            id="reject/sas-malformed",
        ),
        pytest.param({"auth_type": "none"}, {}, 5, "no-authentication", id="reject/auth-none"),
    ],
)  # fmt: skip
def test_refusals(
    device: dict[str, Any] | None, kwargs: dict[str, Any], code: int, reason: str
) -> None:
    decision = _decide(None if device is None else _device(**device), **kwargs)
    assert decision == Refusal(code=ConnectReturnCode(code), reason=reason)


def test_sas_expiry_is_checked_against_the_given_time() -> None:
    token = generate_sas_token(f"{HOST}/devices/d1", KEY, int(time.time()) + 60)
    device = _device(**_SAS)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert _decide(device, password=token.encode(), now=later) == Refusal(
        code=_NOT_AUTHORIZED, reason="sas-expired"
    )


# -- re-checking a live session when its device's record changes -------------------------------

_CA_ID = Identity("d1", "certificateAuthority", serial_hex="01", credential=RID.hex())
_SELF_ID = Identity("d1", "selfSigned", credential="AB" * 20)
_SAS_ID = Identity("d1", "sas", credential=KEY)


@pytest.mark.parametrize(
    ("device", "identity", "expected"),
    [
        pytest.param(_device(), _CA_ID, None, id="ca/unchanged"),
        pytest.param(
            _device(revocation_id=bytes(32)), _CA_ID, "revocation-id-rotated", id="ca/rotated"
        ),
        pytest.param(None, _CA_ID, "device-deleted", id="ca/deleted"),
        pytest.param(_device(status="disabled"), _CA_ID, "device-disabled", id="ca/disabled"),
        pytest.param(
            _device(**_SAS), _CA_ID, "device-credentials-changed", id="ca/now-sas",
        ),
        pytest.param(
            _device(auth_type="selfSigned", primary_thumbprint="ab" * 20), _SELF_ID, None,
            id="self/same-thumbprint-other-case",
        ),
        pytest.param(
            _device(auth_type="selfSigned", primary_thumbprint="CD" * 20,
                    secondary_thumbprint="AB" * 20), _SELF_ID, None,
            id="self/moved-to-secondary",
        ),
        pytest.param(
            _device(auth_type="selfSigned", primary_thumbprint="CD" * 20), _SELF_ID,
            "device-credentials-changed", id="self/replaced",
        ),
        pytest.param(
            _device(**_SAS, secondary_key=OTHER_KEY), _SAS_ID, None,
            id="sas/other-key-regenerated",
        ),
        pytest.param(
            _device(auth_type="sas", primary_key=OTHER_KEY), _SAS_ID,
            "device-credentials-changed", id="sas/key-regenerated",
        ),
    ],
)  # fmt: skip
def test_still_admits(
    device: DeviceRecord | None, identity: Identity, expected: str | None
) -> None:
    assert still_admits(device, identity) == expected
