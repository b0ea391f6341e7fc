"""The authority's leaf: each field is built from server data only."""

from __future__ import annotations

import base64
import datetime as dt
import re
import warnings
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_support import CRL_URL, DEVICE_ID, NOW, REVOCATION_ID, make_csr, make_request, p256

from certhub.clock import FixedClock
from certhub.pki import (
    DEFAULT_VALIDATORS,
    REVOCATION_ID_OID,
    Authority,
    CaKeyPair,
    CsrContext,
    CsrRejected,
    IssuanceError,
    IssuedLeaf,
    KeyType,
    LeafPolicy,
    certificate_sha1,
    certificate_sha256,
    chain_base64,
    chain_pem,
    create_issuing_ca,
    create_root_ca,
    public_key_sha256,
)
from certhub.pki.ca import CA_BACKDATE
from certhub.rand import SeededRandom


@pytest.fixture
def device_key() -> ec.EllipticCurvePrivateKey:
    return p256()


@pytest.fixture
def leaf(
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
    device_key: ec.EllipticCurvePrivateKey,
) -> IssuedLeaf:
    return authority.sign(make_request(make_csr(device_key), issuer=ica, root=root, policy=policy))


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


# --- leaf fields ----------------------------------------------------------------


def test_subject_is_only_the_device_id(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    extra = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
    ]
    csr = make_csr(p256(), extra=extra)
    cert = authority.sign(make_request(csr, issuer=ica, root=root, policy=policy)).certificate
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_ID)])


def test_issuer_and_signature(leaf: IssuedLeaf, ica: CaKeyPair) -> None:
    assert leaf.certificate.issuer == ica.certificate.subject
    leaf.certificate.verify_directly_issued_by(ica.certificate)


def test_public_key_is_the_requested_key(
    leaf: IssuedLeaf, device_key: ec.EllipticCurvePrivateKey
) -> None:
    assert leaf.certificate.public_key() == device_key.public_key()


def test_basic_constraints_not_a_ca(leaf: IssuedLeaf) -> None:
    ext = _ext(leaf.certificate, x509.BasicConstraints)
    assert ext.critical
    assert ext.value == x509.BasicConstraints(ca=False, path_length=None)


def test_key_usage_digital_signature_only_for_ec(leaf: IssuedLeaf) -> None:
    ext = _ext(leaf.certificate, x509.KeyUsage)
    assert ext.critical
    ku = ext.value
    assert ku.digital_signature
    assert not (ku.key_encipherment or ku.key_cert_sign or ku.crl_sign or ku.key_agreement)
    assert not (ku.content_commitment or ku.data_encipherment)


def test_key_usage_adds_key_encipherment_for_rsa(
    rsa_keys: dict[int, rsa.RSAPrivateKey],
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    all_keys_policy: LeafPolicy,
) -> None:
    req = make_request(make_csr(rsa_keys[2048]), issuer=ica, root=root, policy=all_keys_policy)
    issued = authority.sign(req)
    ku = _ext(issued.certificate, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert issued.key_type is KeyType.RSA2048


def test_extended_key_usage_client_auth(leaf: IssuedLeaf) -> None:
    ext = _ext(leaf.certificate, x509.ExtendedKeyUsage)
    assert not ext.critical
    assert list(ext.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_subject_key_identifier(leaf: IssuedLeaf, device_key: ec.EllipticCurvePrivateKey) -> None:
    ski = _ext(leaf.certificate, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(device_key.public_key())


def test_authority_key_identifier(leaf: IssuedLeaf, ica: CaKeyPair) -> None:
    aki = _ext(leaf.certificate, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ica.certificate, x509.SubjectKeyIdentifier).value.digest


def test_crl_distribution_point(leaf: IssuedLeaf) -> None:
    ext = _ext(leaf.certificate, x509.CRLDistributionPoints)
    assert not ext.critical
    assert [dp.full_name for dp in ext.value] == [[x509.UniformResourceIdentifier(CRL_URL)]]


def test_no_crl_distribution_point_without_url(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    req = make_request(make_csr(p256()), issuer=ica, root=root, policy=policy, crl_url=None)
    with pytest.raises(x509.ExtensionNotFound):
        _ext(authority.sign(req).certificate, x509.CRLDistributionPoints)


def test_revocation_id_extension(leaf: IssuedLeaf) -> None:
    ext = leaf.certificate.extensions.get_extension_for_oid(REVOCATION_ID_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + REVOCATION_ID


def test_exactly_the_profile_extensions(leaf: IssuedLeaf) -> None:
    assert [ext.oid.dotted_string for ext in leaf.certificate.extensions] == [
        "2.5.29.19",  # basicConstraints
        "2.5.29.15",  # keyUsage
        "2.5.29.37",  # extKeyUsage
        "2.5.29.14",  # subjectKeyIdentifier
        "2.5.29.35",  # authorityKeyIdentifier
        "2.5.29.31",  # cRLDistributionPoints
        REVOCATION_ID_OID.dotted_string,
    ]


@pytest.mark.parametrize(
    "requested",
    [
        pytest.param(
            (x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False), id="san"
        ),
        pytest.param((x509.BasicConstraints(ca=True, path_length=None), True), id="ca-true"),
        pytest.param(
            (
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                True,
            ),
            id="key-cert-sign",
        ),
        pytest.param(
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False), id="server-auth"
        ),
    ],
)
def test_requested_extensions_are_not_copied(
    requested: tuple[x509.ExtensionType, bool],
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
) -> None:
    csr = make_csr(p256(), extensions=[requested])
    cert = authority.sign(make_request(csr, issuer=ica, root=root, policy=policy)).certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert not _ext(cert, x509.KeyUsage).value.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("ica_key", "hash_type"),
    [
        pytest.param(KeyType.P256, hashes.SHA256, id="p256-issuer-sha256"),
        pytest.param(KeyType.P384, hashes.SHA384, id="p384-issuer-sha384"),
    ],
)
def test_signature_hash_follows_issuer_key(
    ica_key: KeyType,
    hash_type: type[hashes.HashAlgorithm],
    root: CaKeyPair,
    clock: FixedClock,
    rng: SeededRandom,
    authority: Authority,
    policy: LeafPolicy,
) -> None:
    ica = create_issuing_ca(root, common_name="i", key_type=ica_key, clock=clock, rng=rng)
    # A P-384 device key under a P-256 issuer still gets SHA-256: the issuer decides.
    csr = make_csr(ec.generate_private_key(ec.SECP384R1()))
    cert = authority.sign(make_request(csr, issuer=ica, root=root, policy=policy)).certificate
    assert isinstance(cert.signature_hash_algorithm, hash_type)


def test_serials_are_random_and_positive(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    serials = {
        authority.sign(
            make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
        ).certificate.serial_number
        for _ in range(5)
    }
    assert len(serials) == 5
    assert all(0 < s < 1 << 127 for s in serials)


# --- validity window ------------------------------------------------------------


def test_validity_is_backdated(
    authority: Authority, clock: FixedClock, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    clock.advance(timedelta(days=1))
    req = make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    cert = authority.sign(req).certificate
    assert cert.not_valid_before_utc == NOW + timedelta(days=1) - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=1) + policy.validity


def test_backdate_never_before_issuer(
    authority: Authority, clock: FixedClock, rng: SeededRandom, policy: LeafPolicy
) -> None:
    # CAs are backdated themselves (CA_BACKDATE), so build an issuer that started
    # one minute ago by hand to see the leaf's notBefore capped at the issuer's.
    root = create_root_ca(common_name="r", clock=clock, rng=rng)
    ica = create_issuing_ca(root, common_name="i", clock=clock, rng=rng)
    recent = x509.CertificateBuilder(
        issuer_name=root.certificate.subject,
        subject_name=ica.certificate.subject,
        public_key=ica.private_key.public_key(),
        serial_number=1,
        not_valid_before=NOW + timedelta(minutes=1),
        not_valid_after=NOW + timedelta(days=30),
        extensions=list(ica.certificate.extensions),
    ).sign(root.private_key, hashes.SHA256())
    issuer = CaKeyPair(recent, ica.private_key)
    clock.advance(timedelta(minutes=3))
    cert = authority.sign(
        make_request(make_csr(p256()), issuer=issuer, root=root, policy=policy)
    ).certificate
    assert cert.not_valid_before_utc == NOW + timedelta(minutes=1)


def test_not_after_capped_at_issuer(
    authority: Authority,
    clock: FixedClock,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
) -> None:
    clock.advance(timedelta(days=350))
    cert = authority.sign(
        make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    ).certificate
    assert cert.not_valid_after_utc == ica.certificate.not_valid_after_utc
    assert cert.not_valid_before_utc == NOW + timedelta(days=350, minutes=-5)


def test_sub_second_clock_is_truncated(
    clock: FixedClock, rng: SeededRandom, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    clock.advance(timedelta(hours=1, microseconds=999_999))
    issued = Authority(clock, rng).sign(
        make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    )
    assert issued.not_before == NOW + timedelta(minutes=55)
    assert issued.not_after == NOW + timedelta(hours=1) + policy.validity


@pytest.mark.parametrize(
    "delta",
    [
        pytest.param(timedelta(days=365), id="reject/issuer-expired"),
        pytest.param(-CA_BACKDATE - timedelta(seconds=1), id="reject/issuer-not-yet-valid"),
    ],
)
def test_rejects_issuer_outside_its_validity(
    delta: timedelta,
    authority: Authority,
    clock: FixedClock,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
) -> None:
    clock.advance(delta)
    req = make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    with pytest.raises(IssuanceError) as info:
        authority.sign(req)
    assert info.value.reason == "issuer-not-valid"


def test_development_policy_issues_minutes(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair
) -> None:
    dev = LeafPolicy.create("dev", "2m", backdate="0s", development=True)
    issued = authority.sign(make_request(make_csr(p256()), issuer=ica, root=root, policy=dev))
    assert issued.not_after - issued.not_before == timedelta(minutes=2)


# --- other issuance rejections --------------------------------------------------


@pytest.mark.parametrize(
    ("revocation_id", "reason"),
    [
        pytest.param(b"x" * 31, "invalid-revocation-id", id="reject/revocation-id-31-bytes"),
        pytest.param(b"", "invalid-revocation-id", id="reject/revocation-id-empty"),
    ],
)
def test_rejects_bad_revocation_id(
    revocation_id: bytes,
    reason: str,
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
) -> None:
    req = make_request(
        make_csr(p256()), issuer=ica, root=root, policy=policy, revocation_id=revocation_id
    )
    with pytest.raises(IssuanceError) as info:
        authority.sign(req)
    assert info.value.reason == reason


def test_rejects_device_id_longer_than_a_common_name(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    device_id = "d" * 65
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cryptography warns about CN > 64
        csr = make_csr(p256(), cns=[device_id])
        req = make_request(csr, issuer=ica, root=root, policy=policy, device_id=device_id)
        with pytest.raises(IssuanceError) as info:
            authority.sign(req)
    assert info.value.reason == "invalid-common-name"


def test_without_key_type_validator_unknown_keys_still_refused(
    clock: FixedClock, rng: SeededRandom, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    authority = Authority(clock, rng, validators=())
    csr = make_csr(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CsrRejected) as info:
        authority.sign(make_request(csr, issuer=ica, root=root, policy=policy))
    assert info.value.reason == "key-type-not-allowed"


@dataclass(frozen=True)
class _DeviceIdPrefix:
    """A caller-supplied validator (as a provisioner would add)."""

    prefix: str
    name: str = "device-id-prefix"

    def check(self, ctx: CsrContext) -> None:
        if not ctx.device_id.startswith(self.prefix):
            raise CsrRejected("device-id-prefix", f"{ctx.device_id!r} lacks {self.prefix!r}")


def test_extra_validators_run(
    clock: FixedClock, rng: SeededRandom, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    authority = Authority(clock, rng, validators=(*DEFAULT_VALIDATORS, _DeviceIdPrefix("sensor-")))
    with pytest.raises(CsrRejected) as info:
        authority.sign(make_request(make_csr(p256()), issuer=ica, root=root, policy=policy))
    assert info.value.reason == "device-id-prefix"


# --- IssuedLeaf facts and chain helpers -------------------------------------------


def test_issued_leaf_facts(
    leaf: IssuedLeaf, ica: CaKeyPair, root: CaKeyPair, device_key: ec.EllipticCurvePrivateKey
) -> None:
    der = serialization.Encoding.DER
    cert = leaf.certificate
    assert leaf.chain_der == (
        cert.public_bytes(der),
        ica.certificate.public_bytes(der),
        root.certificate.public_bytes(der),
    )
    assert int(leaf.serial_hex, 16) == cert.serial_number
    assert re.fullmatch(r"[0-9a-f]{32}", leaf.serial_hex)
    assert leaf.not_before == cert.not_valid_before_utc
    assert leaf.not_after == cert.not_valid_after_utc
    assert leaf.not_before.tzinfo is not None and leaf.not_before.utcoffset() == timedelta(0)
    assert leaf.not_after.tzinfo == dt.UTC
    assert leaf.sha256_thumbprint == certificate_sha256(cert)
    assert leaf.sha1_thumbprint == certificate_sha1(cert)
    assert leaf.public_key_sha256 == public_key_sha256(device_key.public_key())
    assert leaf.key_type is KeyType.P256


def test_chain_pem_round_trips(leaf: IssuedLeaf) -> None:
    pem = chain_pem(leaf)
    certs = x509.load_pem_x509_certificates(pem)
    assert tuple(c.public_bytes(serialization.Encoding.DER) for c in certs) == leaf.chain_der
    assert all(len(line) <= 64 for line in pem.splitlines())
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 3


def test_chain_base64(leaf: IssuedLeaf) -> None:
    encoded = chain_base64(leaf)
    assert [base64.b64decode(item, validate=True) for item in encoded] == list(leaf.chain_der)
    assert all("\n" not in item for item in encoded)


def test_reproducible_with_seeded_randomness(
    ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    csr = make_csr(p256())
    serials = [
        Authority(FixedClock(NOW), SeededRandom(5))
        .sign(make_request(csr, issuer=ica, root=root, policy=policy))
        .serial_hex
        for _ in range(2)
    ]
    assert serials[0] == serials[1]


# -- a context shared with the caller (one parse per CSR) --------------------------------------


def test_sign_with_its_context_parses_once(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    key = p256()
    req = make_request(make_csr(key), issuer=ica, root=root, policy=policy)
    ctx = authority.context(req)
    digest = ctx.public_key_sha256  # what a batch's key-reuse lookup reads first
    leaf = authority.sign(req, context=ctx)
    assert leaf.public_key_sha256 == digest == public_key_sha256(key.public_key())
    assert ctx.csr is ctx.csr


def test_sign_with_a_context_still_runs_every_validator(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    req = make_request(
        make_csr(p256(), cns=("someone-else",)), issuer=ica, root=root, policy=policy
    )
    ctx = authority.context(req)
    ctx.public_key_sha256  # noqa: B018 - parsed before the validators run
    with pytest.raises(CsrRejected) as info:
        authority.sign(req, context=ctx)
    assert info.value.reason == "cn-mismatch"


@pytest.mark.parametrize(
    "other",
    [
        pytest.param("csr", id="reject/context-of-another-csr"),
        pytest.param("device", id="reject/context-of-another-device"),
        pytest.param("key-seen", id="reject/context-of-another-key-lookup"),
    ],
)
def test_reject_context_of_another_request(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy, other: str
) -> None:
    csr = make_csr(p256())
    req = make_request(csr, issuer=ica, root=root, policy=policy)
    if other == "csr":
        foreign = make_request(make_csr(p256()), issuer=ica, root=root, policy=policy)
    elif other == "device":
        foreign = make_request(csr, issuer=ica, root=root, policy=policy, device_id="other")
    else:
        foreign = make_request(csr, issuer=ica, root=root, policy=policy, key_seen=lambda _: True)
    with pytest.raises(ValueError, match="another request"):
        authority.sign(req, context=authority.context(foreign))


def test_malformed_csr_rejection_is_not_cached() -> None:
    ctx = CsrContext(
        csr_der=b"\x30\x03junk",
        device_id=DEVICE_ID,
        allowed_key_types=frozenset({KeyType.P256}),
        key_seen=lambda _: False,
    )
    for _ in range(2):
        with pytest.raises(CsrRejected) as info:
            ctx.public_key_sha256  # noqa: B018
        assert info.value.reason == "csr-malformed"
