"""CSR validators: every rejection reason, by name, and acceptance of each key type."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from pki_support import DEVICE_ID, make_csr, make_request, p256

from certhub.pki import (
    DEFAULT_VALIDATORS,
    MAX_CSR_DER_BYTES,
    Authority,
    CaKeyPair,
    CsrRejected,
    KeyType,
    LeafPolicy,
    PkiError,
    csr_der_from_base64,
    public_key_sha256,
)

RsaKeys = dict[int, rsa.RSAPrivateKey]
CsrFactory = Callable[[RsaKeys], bytes]


def _tampered_signature(_: RsaKeys) -> bytes:
    der = bytearray(make_csr(p256()))
    der[-1] ^= 0x01  # last byte of the ECDSA signature (the BIT STRING closes the CSR)
    return bytes(der)


def _too_large(_: RsaKeys) -> bytes:
    blob = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x04" + b"x" * 9000)
    return make_csr(p256(), extensions=[(blob, False)])


REJECTIONS = [
    pytest.param(lambda k: make_csr(k[1024]), "key-type-not-allowed", id="reject/rsa-1024"),
    pytest.param(
        lambda k: make_csr(ec.generate_private_key(ec.SECP521R1())),
        "key-type-not-allowed",
        id="reject/p521",
    ),
    pytest.param(
        lambda k: make_csr(ed25519.Ed25519PrivateKey.generate()),
        "key-type-not-allowed",
        id="reject/ed25519",
    ),
    pytest.param(
        lambda k: make_csr(ec.generate_private_key(ec.SECP256K1())),
        "key-type-not-allowed",
        id="reject/secp256k1",
    ),
    pytest.param(
        lambda k: make_csr(k[2048]), "key-type-not-allowed", id="reject/rsa2048-not-in-policy"
    ),
    pytest.param(lambda k: make_csr(p256(), cns=["dev-2"]), "cn-mismatch", id="reject/cn-mismatch"),
    pytest.param(
        lambda k: make_csr(p256(), cns=["DEV-1"]), "cn-mismatch", id="reject/cn-case-mismatch"
    ),
    pytest.param(
        lambda k: make_csr(p256(), cns=[DEVICE_ID, DEVICE_ID]), "cn-mismatch", id="reject/two-cns"
    ),
    pytest.param(
        lambda k: make_csr(
            p256(), cns=[], extra=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVICE_ID)]
        ),
        "cn-missing",
        id="reject/no-cn",
    ),
    pytest.param(lambda k: make_csr(p256(), cns=[]), "cn-missing", id="reject/empty-subject"),
    pytest.param(_tampered_signature, "csr-signature-invalid", id="reject/bad-signature"),
    pytest.param(_too_large, "csr-too-large", id="reject/too-large"),
    pytest.param(
        lambda k: b"\xff" * (MAX_CSR_DER_BYTES + 1), "csr-too-large", id="reject/too-large-garbage"
    ),
    pytest.param(lambda k: b"not a csr at all", "csr-malformed", id="reject/not-der"),
    pytest.param(lambda k: make_csr(p256())[:-10], "csr-malformed", id="reject/truncated-der"),
    pytest.param(lambda k: b"", "csr-malformed", id="reject/empty"),
]


@pytest.mark.parametrize(("make", "reason"), REJECTIONS)
def test_rejects(
    make: CsrFactory,
    reason: str,
    rsa_keys: RsaKeys,
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    policy: LeafPolicy,
) -> None:
    req = make_request(make(rsa_keys), issuer=ica, root=root, policy=policy)
    with pytest.raises(CsrRejected) as info:
        authority.validate(req)
    assert info.value.reason == reason
    with pytest.raises(CsrRejected) as info:
        authority.sign(req)
    assert info.value.reason == reason


def test_rejects_reused_key(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    key = p256()
    asked: list[str] = []

    def key_seen(digest: str) -> bool:
        asked.append(digest)
        return True

    req = make_request(make_csr(key), issuer=ica, root=root, policy=policy, key_seen=key_seen)
    with pytest.raises(CsrRejected) as info:
        authority.sign(req)
    assert info.value.reason == "key-reused"
    assert asked == [public_key_sha256(key.public_key())]


def test_key_reuse_not_asked_for_rejected_csr(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    asked: list[str] = []
    req = make_request(
        make_csr(p256(), cns=["other"]),
        issuer=ica,
        root=root,
        policy=policy,
        key_seen=lambda d: asked.append(d) or False,  # type: ignore[func-returns-value]
    )
    with pytest.raises(CsrRejected):
        authority.validate(req)
    assert asked == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k: make_csr(p256()), id="accept/p256"),
        pytest.param(lambda k: make_csr(ec.generate_private_key(ec.SECP384R1())), id="accept/p384"),
        pytest.param(lambda k: make_csr(k[2048]), id="accept/rsa2048"),
        pytest.param(lambda k: make_csr(k[3072]), id="accept/rsa3072"),
    ],
)
def test_accepts_each_allowed_key_type(
    make: CsrFactory,
    rsa_keys: RsaKeys,
    authority: Authority,
    ica: CaKeyPair,
    root: CaKeyPair,
    all_keys_policy: LeafPolicy,
) -> None:
    csr_der = make(rsa_keys)
    req = make_request(csr_der, issuer=ica, root=root, policy=all_keys_policy)
    csr = authority.validate(req)
    assert csr.public_key() == x509.load_der_x509_csr(csr_der).public_key()


def test_accepts_other_subject_attributes_beside_cn(
    authority: Authority, ica: CaKeyPair, root: CaKeyPair, policy: LeafPolicy
) -> None:
    extra = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")]
    req = make_request(make_csr(p256(), extra=extra), issuer=ica, root=root, policy=policy)
    authority.validate(req)


def test_policy_key_types_restrict(authority: Authority, ica: CaKeyPair, root: CaKeyPair) -> None:
    p384_only = LeafPolicy.create("p384-only", "30d", key_types=[KeyType.P384])
    req = make_request(make_csr(p256()), issuer=ica, root=root, policy=p384_only)
    with pytest.raises(CsrRejected) as info:
        authority.validate(req)
    assert info.value.reason == "key-type-not-allowed"


def test_default_validator_order_and_names() -> None:
    assert [v.name for v in DEFAULT_VALIDATORS] == [
        "max-csr-size",
        "well-formed",
        "key-type-allowed",
        "proof-of-possession",
        "cn-is-device-id",
        "key-not-reused",
    ]


# --- csr_der_from_base64 ----------------------------------------------------------


def test_base64_plain() -> None:
    der = make_csr(p256())
    assert csr_der_from_base64(base64.b64encode(der).decode()) == der


def test_base64_with_whitespace_and_newlines() -> None:
    der = make_csr(p256())
    text = base64.encodebytes(der).decode()  # 76-column lines
    assert csr_der_from_base64(f"  \n{text}\r\n ") == der


@pytest.mark.parametrize("label", ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
def test_base64_with_pem_armour(label: str) -> None:
    der = make_csr(p256())
    body = base64.encodebytes(der).decode()
    text = f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"
    assert csr_der_from_base64(text) == der


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "csr-malformed", id="reject/empty"),
        pytest.param("  \n ", "csr-malformed", id="reject/blank"),
        pytest.param("MIIB!!==", "csr-malformed", id="reject/invalid-character"),
        pytest.param("MIIBa", "csr-malformed", id="reject/bad-padding"),
        pytest.param("MIIB_-8A", "csr-malformed", id="reject/url-safe-alphabet"),
        pytest.param("MIIBé===", "csr-malformed", id="reject/non-ascii"),
        pytest.param("A" * (40 * 1024), "csr-too-large", id="reject/text-too-large"),
    ],
)
def test_base64_rejects(text: str, reason: str) -> None:
    with pytest.raises(CsrRejected) as info:
        csr_der_from_base64(text)
    assert info.value.reason == reason
    assert isinstance(info.value, PkiError)
