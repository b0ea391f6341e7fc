"""Root CA, issuing CA and server certificate profiles."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from pki_support import NOW

from certhub.clock import FixedClock
from certhub.pki import (
    CaKeyPair,
    IssuanceError,
    KeyType,
    create_issuing_ca,
    create_root_ca,
    create_server_certificate,
    random_serial,
)
from certhub.pki.ca import CA_BACKDATE
from certhub.rand import SeededRandom


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


# --- root -----------------------------------------------------------------------


def test_root_is_self_signed(root: CaKeyPair) -> None:
    cert = root.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "certhub-root-default"
    )
    cert.verify_directly_issued_by(cert)


def test_root_basic_constraints(root: CaKeyPair) -> None:
    ext = _ext(root.certificate, x509.BasicConstraints)
    assert ext.critical
    assert ext.value == x509.BasicConstraints(ca=True, path_length=1)


def test_root_key_usage(root: CaKeyPair) -> None:
    ext = _ext(root.certificate, x509.KeyUsage)
    assert ext.critical
    assert ext.value.key_cert_sign and ext.value.crl_sign and ext.value.digital_signature
    assert not ext.value.key_encipherment


def test_root_subject_key_identifier(root: CaKeyPair) -> None:
    ext = _ext(root.certificate, x509.SubjectKeyIdentifier)
    assert ext.value == x509.SubjectKeyIdentifier.from_public_key(root.private_key.public_key())


def test_root_validity(root: CaKeyPair) -> None:
    assert root.certificate.not_valid_before_utc == NOW - CA_BACKDATE
    assert root.certificate.not_valid_after_utc == NOW + timedelta(days=3650)


def test_root_default_key_and_hash(root: CaKeyPair) -> None:
    assert isinstance(root.private_key, ec.EllipticCurvePrivateKey)
    assert root.private_key.curve.name == "secp256r1"
    assert isinstance(root.certificate.signature_hash_algorithm, hashes.SHA256)


def test_p384_root_signs_with_sha384(clock: FixedClock, rng: SeededRandom) -> None:
    root = create_root_ca(common_name="r384", key_type=KeyType.P384, clock=clock, rng=rng)
    assert isinstance(root.certificate.signature_hash_algorithm, hashes.SHA384)
    ica = create_issuing_ca(root, common_name="i", clock=clock, rng=rng)
    assert isinstance(ica.certificate.signature_hash_algorithm, hashes.SHA384)


def test_root_drops_microseconds(rng: SeededRandom) -> None:
    clock = FixedClock(NOW + timedelta(microseconds=123456))
    root = create_root_ca(common_name="r", clock=clock, rng=rng)
    assert root.certificate.not_valid_before_utc == NOW - CA_BACKDATE


@pytest.mark.parametrize(
    "key_type",
    [
        pytest.param(KeyType.RSA2048, id="reject/rsa2048-root"),
        pytest.param(KeyType.RSA3072, id="reject/rsa3072-root"),
    ],
)
def test_root_rejects_rsa(key_type: KeyType, clock: FixedClock, rng: SeededRandom) -> None:
    with pytest.raises(IssuanceError) as info:
        create_root_ca(common_name="r", key_type=key_type, clock=clock, rng=rng)
    assert info.value.reason == "ca-key-type-not-allowed"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("", "invalid-common-name", id="reject/empty-cn"),
        pytest.param("x" * 65, "invalid-common-name", id="reject/cn-over-64"),
    ],
)
def test_root_rejects_bad_common_name(
    name: str, reason: str, clock: FixedClock, rng: SeededRandom
) -> None:
    with pytest.raises(IssuanceError) as info:
        create_root_ca(common_name=name, clock=clock, rng=rng)
    assert info.value.reason == reason


def test_root_rejects_empty_validity(clock: FixedClock, rng: SeededRandom) -> None:
    with pytest.raises(IssuanceError) as info:
        create_root_ca(common_name="r", clock=clock, rng=rng, validity=timedelta(0))
    assert info.value.reason == "invalid-validity"


# --- issuing CA -----------------------------------------------------------------


def test_issuing_ca_is_signed_by_root(root: CaKeyPair, ica: CaKeyPair) -> None:
    assert ica.certificate.issuer == root.certificate.subject
    ica.certificate.verify_directly_issued_by(root.certificate)


def test_issuing_ca_basic_constraints(ica: CaKeyPair) -> None:
    ext = _ext(ica.certificate, x509.BasicConstraints)
    assert ext.critical
    assert ext.value == x509.BasicConstraints(ca=True, path_length=0)


def test_issuing_ca_key_usage(ica: CaKeyPair) -> None:
    ext = _ext(ica.certificate, x509.KeyUsage)
    assert ext.critical
    assert ext.value.key_cert_sign and ext.value.crl_sign and ext.value.digital_signature


def test_issuing_ca_key_identifiers(root: CaKeyPair, ica: CaKeyPair) -> None:
    ski = _ext(ica.certificate, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ica.private_key.public_key())
    aki = _ext(ica.certificate, x509.AuthorityKeyIdentifier).value
    root_ski = _ext(root.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_issuing_ca_without_crl_url_has_no_distribution_point(ica: CaKeyPair) -> None:
    with pytest.raises(x509.ExtensionNotFound):
        _ext(ica.certificate, x509.CRLDistributionPoints)


def test_issuing_ca_crl_distribution_point(
    root: CaKeyPair, clock: FixedClock, rng: SeededRandom
) -> None:
    url = "http://certhub.test/crl/root.crl"
    ica = create_issuing_ca(root, common_name="i", clock=clock, rng=rng, crl_url=url)
    ext = _ext(ica.certificate, x509.CRLDistributionPoints)
    assert not ext.critical
    assert [dp.full_name for dp in ext.value] == [[x509.UniformResourceIdentifier(url)]]


def test_issuing_ca_validity(ica: CaKeyPair) -> None:
    assert ica.certificate.not_valid_before_utc == NOW - CA_BACKDATE
    assert ica.certificate.not_valid_after_utc == NOW + timedelta(days=365)


def test_issuing_ca_never_outlives_root(clock: FixedClock, rng: SeededRandom) -> None:
    root = create_root_ca(common_name="r", clock=clock, rng=rng, validity=timedelta(days=100))
    clock.advance(timedelta(days=50))
    ica = create_issuing_ca(root, common_name="i", clock=clock, rng=rng)
    assert ica.certificate.not_valid_after_utc == root.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    "delta",
    [
        pytest.param(timedelta(days=3650), id="reject/root-expired"),
        pytest.param(-CA_BACKDATE - timedelta(seconds=1), id="reject/root-not-yet-valid"),
    ],
)
def test_issuing_ca_rejects_invalid_root(
    root: CaKeyPair, clock: FixedClock, rng: SeededRandom, delta: timedelta
) -> None:
    clock.advance(delta)
    with pytest.raises(IssuanceError) as info:
        create_issuing_ca(root, common_name="i", clock=clock, rng=rng)
    assert info.value.reason == "issuer-not-valid"


def test_issuing_ca_rejects_rsa(root: CaKeyPair, clock: FixedClock, rng: SeededRandom) -> None:
    with pytest.raises(IssuanceError) as info:
        create_issuing_ca(root, common_name="i", key_type=KeyType.RSA2048, clock=clock, rng=rng)
    assert info.value.reason == "ca-key-type-not-allowed"


def test_p384_issuing_ca_under_p256_root(
    root: CaKeyPair, clock: FixedClock, rng: SeededRandom
) -> None:
    ica = create_issuing_ca(root, common_name="i", key_type=KeyType.P384, clock=clock, rng=rng)
    assert isinstance(ica.private_key, ec.EllipticCurvePrivateKey)
    assert ica.private_key.curve.name == "secp384r1"
    assert isinstance(ica.certificate.signature_hash_algorithm, hashes.SHA256)  # root's hash


# --- server certificate ---------------------------------------------------------


def test_server_certificate_profile(root: CaKeyPair, clock: FixedClock, rng: SeededRandom) -> None:
    cert, key = create_server_certificate(
        root, hosts=["localhost", "127.0.0.1", "::1", "Hub.Example.test"], clock=clock, rng=rng
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(root.certificate)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "hub.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert _ext(cert, x509.KeyUsage).critical
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert cert.not_valid_after_utc == NOW + timedelta(days=825)


def test_server_certificate_deduplicates_hosts(
    root: CaKeyPair, clock: FixedClock, rng: SeededRandom
) -> None:
    cert, _ = create_server_certificate(
        root, hosts=["localhost", "localhost"], clock=clock, rng=rng
    )
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_server_certificate_capped_at_issuer(
    ica: CaKeyPair, clock: FixedClock, rng: SeededRandom
) -> None:
    cert, _ = create_server_certificate(ica, hosts=["localhost"], clock=clock, rng=rng)
    assert cert.not_valid_after_utc == ica.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    ("hosts", "reason"),
    [
        pytest.param([], "no-hosts", id="reject/no-hosts"),
        pytest.param("localhost", "no-hosts", id="reject/hosts-as-string"),
        pytest.param(["host name"], "invalid-host", id="reject/host-with-space"),
        pytest.param(["https://x"], "invalid-host", id="reject/host-url"),
        pytest.param(["bücher.test"], "invalid-host", id="reject/host-non-ascii"),
        pytest.param([""], "invalid-host", id="reject/host-empty"),
    ],
)
def test_server_certificate_rejects(
    hosts: list[str], reason: str, root: CaKeyPair, clock: FixedClock, rng: SeededRandom
) -> None:
    with pytest.raises(IssuanceError) as info:
        create_server_certificate(root, hosts=hosts, clock=clock, rng=rng)
    assert info.value.reason == reason


# --- serials --------------------------------------------------------------------


class _ScriptedRandom:
    """Returns the given byte strings in order (a stand-in for certhub.rand.Random)."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def token_bytes(self, n: int) -> bytes:
        chunk = self._chunks.pop(0)
        assert len(chunk) == n
        return chunk


def test_random_serial_clears_top_bit() -> None:
    assert random_serial(_ScriptedRandom(b"\xff" * 16)) == (1 << 127) - 1


def test_random_serial_is_never_zero() -> None:
    rng = _ScriptedRandom(b"\x80" + b"\x00" * 15, b"\x00" * 15 + b"\x01")
    assert random_serial(rng) == 1


@settings(max_examples=50)
@given(st.integers(min_value=0))
def test_random_serial_range(seed: int) -> None:
    serial = random_serial(SeededRandom(seed))
    assert 0 < serial < 1 << 127


def test_ca_serials_differ(root: CaKeyPair, ica: CaKeyPair) -> None:
    assert root.certificate.serial_number != ica.certificate.serial_number
