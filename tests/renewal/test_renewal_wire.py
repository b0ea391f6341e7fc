"""Wire shapes of the credentials API: parsing, bodies, topics, the error-code table."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from renewal_support import csr_b64, csr_der

from certhub.renewal import errors as e
from certhub.renewal.wire import (
    CREDENTIAL_ERRORS,
    accepted_body,
    certificate_body,
    error_body,
    parse_request,
    response_topic,
    wire_time,
)

NOW = dt.datetime(2025, 6, 9, 17, 31, 31, 426574, tzinfo=dt.UTC)
PKI_REASONS = (
    "csr-too-large",
    "csr-malformed",
    "csr-signature-invalid",
    "cn-missing",
    "cn-mismatch",
    "key-type-not-allowed",
    "key-reused",
)


def test_every_csr_rejection_reason_has_a_credential_error() -> None:
    assert set(CREDENTIAL_ERRORS) == set(PKI_REASONS)
    assert CREDENTIAL_ERRORS["csr-malformed"] == "FailedToDecodeCsr"


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (e.RequestInvalid("x"), 400004, 400),
        (e.CsrRefused("cn-mismatch", "CommonNameMismatch", "x"), 400040, 400),
        (e.NotAuthenticatedDevice("x"), 401002, 401),
        (e.DeviceMissing("x"), 404001, 404),
        (e.OperationActive("r", "2025-06-09T17:31:31.426Z"), 409005, 409),
        (e.ReplaceMismatch("x"), 412001, 412),
        (e.NotCertificateManaged("x"), 412005, 412),
        (e.Throttled(7), 429002, 429),
        (e.ServerError("x", retry_after=5), 500001, 500),
    ],
)
def test_error_codes_and_topic_status(error: e.RenewalError, code: int, status: int) -> None:
    assert (error.error_code, error.status) == (code, status)
    body = error_body(error, tracking_id="t", now=NOW)
    assert body["errorCode"] == code
    assert body["timestampUtc"] == "2025-06-09T17:31:31.426574Z"
    assert ("retryAfter" in body) == (error.retry_after is not None)


def test_operation_active_and_throttled_bodies() -> None:
    body = error_body(
        e.OperationActive("aabbcc", "2025-06-09T17:31:31.426Z"), tracking_id="t", now=NOW
    )
    assert body["info"] == {"requestId": "aabbcc", "operationExpires": "2025-06-09T17:31:31.426Z"}
    assert error_body(e.Throttled(12), tracking_id="t", now=NOW)["retryAfter"] == 12


def test_csr_refused_body_carries_the_correlation_id() -> None:
    error = e.CsrRefused("csr-malformed", "FailedToDecodeCsr", "bad DER")
    body = error_body(error, tracking_id="t", now=NOW, correlation_id="c-1")
    assert body["info"] == {
        "credentialError": "FailedToDecodeCsr",
        "credentialMessage": "bad DER",
        "correlationId": "c-1",
    }
    assert body["message"] == "A Certificate signing request operation failed"


def test_response_topic_has_five_tokens_and_ends_with_the_rid() -> None:
    topic = response_topic(202, "a-1")
    assert topic == "$iothub/credentials/res/202/?$rid=a-1"
    assert len(topic.split("/")) == 5
    assert topic.split("?$rid=")[1] == "a-1"


def test_accepted_and_certificate_bodies() -> None:
    assert accepted_body("c", NOW) == {
        "correlationId": "c",
        "operationExpires": "2025-06-09T17:31:31.426Z",
    }
    body = certificate_body("c", [b"leaf", b"ica", b"root"])
    assert body == {"correlationId": "c", "certificates": ["bGVhZg==", "aWNh", "cm9vdA=="]}
    assert wire_time(NOW.replace(microsecond=0)) == "2025-06-09T17:31:31.000Z"


def test_parse_request_is_lenient_where_azure_clients_differ() -> None:
    der = csr_der("d")
    pem = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(der).decode()
    pem += "-----END CERTIFICATE REQUEST-----\n"
    body = {"id": "d", "csr": pem, "replace": "*", "extra": True}
    request = parse_request(json.dumps(body).encode())
    assert (request.device_id, request.csr_der, request.replace) == ("d", der, "*")
    assert (
        parse_request(
            json.dumps({"id": "d", "csr": csr_b64("d"), "replace": None}).encode()
        ).replace
        is None
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(b"", e.RequestInvalid, id="reject/empty"),
        pytest.param(b"\xff\xfe", e.RequestInvalid, id="reject/not-utf8"),
        pytest.param(b'"text"', e.RequestInvalid, id="reject/string"),
        pytest.param(b'{"id": "", "csr": "AAAA"}', e.RequestInvalid, id="reject/id-empty"),
        pytest.param(b'{"id": "d", "csr": ""}', e.RequestInvalid, id="reject/csr-empty"),
        pytest.param(b'{"id": "d", "csr": null}', e.RequestInvalid, id="reject/csr-null"),
        pytest.param(b" " * 70_000, e.RequestInvalid, id="reject/too-large"),
        pytest.param(b'{"id": "d", "csr": "***"}', e.CsrRefused, id="reject/csr-not-base64"),
    ],
)
def test_parse_request_rejects(payload: bytes, error: type[e.RenewalError]) -> None:
    with pytest.raises(error):
        parse_request(payload)
