"""Key types, key protection and fingerprints."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certhub.pki import (
    CaKeyPair,
    KeyType,
    PkiError,
    PrivateKeyError,
    certificate_sha1,
    certificate_sha256,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    key_type_of,
    public_key_sha256,
)


def test_key_type_values_are_configuration_spellings() -> None:
    assert [kt.value for kt in KeyType] == ["p256", "p384", "rsa2048", "rsa3072"]
    assert KeyType("p384") is KeyType.P384


@pytest.mark.parametrize("key_type", [KeyType.P256, KeyType.P384])
def test_generate_ec_key_has_its_type(key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key_type_of(key.public_key()) is key_type


def test_generate_rsa_key_has_its_type() -> None:
    key = generate_private_key(KeyType.RSA2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers().e == 65537
    assert key_type_of(key.public_key()) is KeyType.RSA2048


def test_key_type_of_rsa3072(rsa_keys: dict[int, rsa.RSAPrivateKey]) -> None:
    assert key_type_of(rsa_keys[3072].public_key()) is KeyType.RSA3072


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="p521"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP224R1()), id="p224"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    ],
)
def test_key_type_of_unknown_keys_is_none(make: object) -> None:
    key = make()  # type: ignore[operator]
    assert key_type_of(key.public_key()) is None


def test_key_type_of_rsa1024_is_none(rsa_keys: dict[int, rsa.RSAPrivateKey]) -> None:
    assert key_type_of(rsa_keys[1024].public_key()) is None


@pytest.mark.parametrize("key_type", [KeyType.P256, KeyType.P384, KeyType.RSA2048])
def test_encrypt_decrypt_round_trip(key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    pem = encrypt_private_key(key, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    loaded = decrypt_private_key(pem, b"correct horse")
    assert loaded.private_numbers() == key.private_numbers()


def _encrypted_p256() -> bytes:
    return encrypt_private_key(generate_private_key(KeyType.P256), b"secret")


def _plain_p256() -> bytes:
    return generate_private_key(KeyType.P256).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_ed25519() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.parametrize(
    ("pem", "passphrase", "reason"),
    [
        pytest.param(_encrypted_p256, b"wrong", "decrypt-failed", id="reject/wrong-passphrase"),
        pytest.param(lambda: b"not a key", b"secret", "decrypt-failed", id="reject/not-pem"),
        pytest.param(_plain_p256, b"secret", "not-encrypted", id="reject/not-encrypted"),
        pytest.param(_encrypted_p256, b"", "empty-passphrase", id="reject/empty-passphrase"),
        pytest.param(
            _encrypted_ed25519, b"secret", "unsupported-key-type", id="reject/ed25519-key"
        ),
    ],
)
def test_decrypt_rejects(pem: object, passphrase: bytes, reason: str) -> None:
    with pytest.raises(PrivateKeyError) as info:
        decrypt_private_key(pem(), passphrase)  # type: ignore[operator]
    assert info.value.reason == reason
    assert isinstance(info.value, PkiError)


def test_encrypt_rejects_empty_passphrase() -> None:
    with pytest.raises(PrivateKeyError) as info:
        encrypt_private_key(generate_private_key(KeyType.P256), b"")
    assert info.value.reason == "empty-passphrase"


def test_public_key_sha256_is_lowercase_hex_of_spki() -> None:
    public_key = generate_private_key(KeyType.P256).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = public_key_sha256(public_key)
    assert digest == hashlib.sha256(spki).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_certificate_thumbprints(root: CaKeyPair) -> None:
    cert = root.certificate
    assert certificate_sha256(cert) == cert.fingerprint(hashes.SHA256()).hex()
    assert re.fullmatch(r"[0-9a-f]{64}", certificate_sha256(cert))
    assert certificate_sha1(cert) == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert re.fullmatch(r"[0-9A-F]{40}", certificate_sha1(cert))
