"""The revocation identifier extension."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pki_support import REVOCATION_ID, make_csr, make_request, p256

from certhub.pki import (
    REVOCATION_ID_OID,
    Authority,
    CaKeyPair,
    IssuanceError,
    LeafPolicy,
    revocation_id_extension,
    revocation_id_of,
)


def test_oid_is_under_the_uuid_arc() -> None:
    arc, _, value = REVOCATION_ID_OID.dotted_string.partition(".25.")
    assert arc == "2"
    assert uuid.UUID(int=int(value)) == uuid.UUID("89af2565-7ecf-4d46-b3b7-944240e438a8")
    assert not REVOCATION_ID_OID.dotted_string.startswith("1.3.6.1.4.1.311.")


def test_extension_value_is_der_octet_string() -> None:
    ext = revocation_id_extension(REVOCATION_ID)
    assert ext.oid == REVOCATION_ID_OID
    assert ext.value == b"\x04\x20" + REVOCATION_ID


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="reject/empty"),
        pytest.param(b"x" * 31, id="reject/31-bytes"),
        pytest.param(b"x" * 33, id="reject/33-bytes"),
    ],
)
def test_extension_rejects_wrong_length(value: bytes) -> None:
    with pytest.raises(IssuanceError) as info:
        revocation_id_extension(value)
    assert info.value.reason == "invalid-revocation-id"


def test_issued_leaf_carries_non_critical_revocation_id(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    req = make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    cert = authority.sign(req).certificate
    ext = cert.extensions.get_extension_for_oid(REVOCATION_ID_OID)
    assert ext.critical is False
    assert revocation_id_of(cert) == REVOCATION_ID


def test_certificate_without_extension_has_none(root: CaKeyPair) -> None:
    assert revocation_id_of(root.certificate) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\x04\x1f" + b"x" * 31, id="short-octet-string"),
        pytest.param(b"\x0c\x20" + b"x" * 32, id="utf8string-not-octet-string"),
        pytest.param(b"\x04\x20" + b"x" * 32 + b"\x00", id="trailing-byte"),
    ],
)
def test_malformed_extension_reads_as_none(ica: CaKeyPair, value: bytes) -> None:
    cert = (
        x509.CertificateBuilder()
        .subject_name(ica.certificate.subject)
        .issuer_name(ica.certificate.subject)
        .public_key(ica.private_key.public_key())
        .serial_number(1)
        .not_valid_before(ica.certificate.not_valid_before_utc)
        .not_valid_after(ica.certificate.not_valid_after_utc)
        .add_extension(x509.UnrecognizedExtension(REVOCATION_ID_OID, value), critical=False)
        .sign(ica.private_key, hashes.SHA256())
    )
    assert revocation_id_of(cert) is None
