"""Fixtures for the PKI tests: a fixed clock, seeded randomness, a root and an issuing CA."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pki_support import NOW, rsa_key

from certhub.clock import FixedClock
from certhub.pki import (
    Authority,
    CaKeyPair,
    KeyType,
    LeafPolicy,
    create_issuing_ca,
    create_root_ca,
)
from certhub.rand import SeededRandom


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def rng() -> SeededRandom:
    return SeededRandom(20260301)


@pytest.fixture
def root(clock: FixedClock, rng: SeededRandom) -> CaKeyPair:
    return create_root_ca(common_name="certhub-root-default", clock=clock, rng=rng)


@pytest.fixture
def ica(root: CaKeyPair, clock: FixedClock, rng: SeededRandom) -> CaKeyPair:
    return create_issuing_ca(root, common_name="certhub-ica-default", clock=clock, rng=rng)


@pytest.fixture
def policy() -> LeafPolicy:
    return LeafPolicy.create("default", timedelta(days=30))


@pytest.fixture
def all_keys_policy() -> LeafPolicy:
    return LeafPolicy.create("all-keys", timedelta(days=30), key_types=set(KeyType))


@pytest.fixture
def authority(clock: FixedClock, rng: SeededRandom) -> Authority:
    return Authority(clock, rng)


@pytest.fixture(scope="session")
def rsa_keys() -> dict[int, rsa.RSAPrivateKey]:
    """RSA keys are slow to generate: one of each size per test session."""
    return {bits: rsa_key(bits) for bits in (1024, 2048, 3072)}
