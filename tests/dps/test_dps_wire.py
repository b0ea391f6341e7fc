"""Wire shapes: usernames, topics, api-versions, error bodies."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from certhub.dps.errors import CODES, BadRequest, NotFound, Throttled, Unauthorized
from certhub.dps.wire import (
    error_body,
    parse_register_body,
    parse_username,
    response_topic,
    supports_csr,
    utc_text,
)


def test_sdk_username_parses() -> None:
    user = parse_username(
        "0ne00ABC/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot%2F2.14"
    )
    assert user is not None
    assert (user.id_scope, user.registration_id, user.api_version) == (
        "0ne00ABC",
        "dev-1",
        "2019-03-31",
    )
    assert user.params["ClientVersion"] == "azure-iot/2.14"


@pytest.mark.parametrize(
    "username",
    [
        pytest.param(None, id="reject/none"),
        pytest.param("hub.local/dev-1/?api-version=2021-04-12", id="reject/hub-username"),
        pytest.param("hub/registrations/?api-version=2021-04-12", id="reject/hub-device-named"),
        pytest.param("0ne1/registrations/dev-1/?api-version=x", id="reject/question-mark"),
        pytest.param("0ne1/registrations/dev-1", id="reject/no-api-version"),
        pytest.param("0ne1/registration/dev-1/api-version=x", id="reject/path"),
        pytest.param("0ne1/registrations//api-version=x", id="reject/empty-id"),
    ],
)
def test_other_usernames_are_not_dps(username: str | None) -> None:
    assert parse_username(username) is None


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2019-03-31", False),
        ("2021-06-01", False),
        ("2025-07-01-preview", True),
        ("2026-11-01", True),
        ("2026-11-15-preview", True),
        ("", False),
        (None, False),
        ("latest", False),
    ],
)
def test_supports_csr(version: str | None, expected: bool) -> None:
    assert supports_csr(version) is expected


def test_response_topics() -> None:
    assert response_topic(202, "7", 3) == "$dps/registrations/res/202/?$rid=7&retry-after=3"
    assert response_topic(200, "a b") == "$dps/registrations/res/200/?$rid=a%20b"


def test_error_body_shape_and_status() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC)
    err = Unauthorized("nope", reason="sas-expired")
    assert err.status == 401
    assert error_body(err, "t-1", now) == {
        "errorCode": 401002,
        "trackingId": "t-1",
        "message": "nope",
        "timestampUtc": "2026-01-02T03:04:05.006000Z",
        "info": {"reason": "sas-expired"},
    }
    assert Throttled("slow", reason="throttled", retry_after=2).status == 429
    assert utc_text(now) == "2026-01-02T03:04:05.006000Z"


def test_every_code_is_six_digits_and_matches_a_status() -> None:
    for code in CODES:
        assert 100000 <= code <= 599999
    with pytest.raises(ValueError, match="cannot carry"):
        NotFound("x", reason="x", error_code=400001)


def test_payload_csr_is_used_only_without_a_top_level_one() -> None:
    top = base64.b64encode(b"\x30\x00top").decode()
    inner = base64.b64encode(b"\x30\x00inner").decode()
    req = parse_register_body(
        f'{{"csr": "{top}", "payload": {{"csr": "{inner}"}}}}'.encode(),
        "d",
        "2025-07-01-preview",
        strict_api_version=True,
    )
    assert (req.csr_der, req.csr_in_payload) == (b"\x30\x00top", False)
    empty = parse_register_body(b" ", "d", None, strict_api_version=False)
    assert (empty.csr_der, empty.payload) == (None, None)
    with pytest.raises(BadRequest):
        parse_register_body(b'{"registrationId": 5}', "d", None, strict_api_version=False)
