"""Leaf policy validation and duration parsing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certhub.pki import KeyType, LeafPolicy, PolicyError, parse_duration


def test_defaults() -> None:
    policy = LeafPolicy.create("default", "30d")
    assert policy.validity == timedelta(days=30)
    assert policy.key_types == frozenset({KeyType.P256, KeyType.P384})
    assert policy.backdate == timedelta(minutes=5)
    assert policy.development is False


def test_create_accepts_configuration_spellings() -> None:
    policy = LeafPolicy.create(
        "fleet-a", "12h", key_types=["p256", "rsa2048"], backdate="90s", development=True
    )
    assert policy.validity == timedelta(hours=12)
    assert policy.key_types == frozenset({KeyType.P256, KeyType.RSA2048})
    assert all(isinstance(kt, KeyType) for kt in policy.key_types)
    assert policy.backdate == timedelta(seconds=90)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(PolicyError) as info:
        LeafPolicy(name="default", validity=timedelta(days=1))
    assert info.value.reason == "validity-out-of-range"


def test_policy_is_frozen() -> None:
    policy = LeafPolicy.create("default", "30d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.validity = timedelta(days=1)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"validity": timedelta(days=7)}, id="accept/7d"),
        pytest.param({"validity": timedelta(days=90)}, id="accept/90d"),
        pytest.param({"validity": timedelta(seconds=60), "development": True}, id="accept/dev-60s"),
        pytest.param({"validity": timedelta(days=90), "development": True}, id="accept/dev-90d"),
        pytest.param({"backdate": timedelta(0)}, id="accept/no-backdate"),
        pytest.param({"backdate": timedelta(days=1)}, id="accept/backdate-1d"),
        pytest.param({"name": "abc"}, id="accept/name-3-chars"),
        pytest.param({"name": "0" + "a" * 62}, id="accept/name-63-chars"),
        pytest.param({"name": "A-b-C-1"}, id="accept/name-mixed"),
        pytest.param({"key_types": [KeyType.RSA3072]}, id="accept/rsa3072-only"),
    ],
)
def test_accepts(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"name": "default", "validity": timedelta(days=30), **kwargs}
    policy = LeafPolicy.create(**args)
    assert policy.name == args["name"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        pytest.param(
            {"validity": timedelta(days=6, hours=23)},
            "validity-out-of-range",
            id="reject/validity-under-7d",
        ),
        pytest.param(
            {"validity": timedelta(days=90, seconds=1)},
            "validity-out-of-range",
            id="reject/validity-over-90d",
        ),
        pytest.param(
            {"validity": timedelta(minutes=10)},
            "validity-out-of-range",
            id="reject/minutes-without-development",
        ),
        pytest.param(
            {"validity": timedelta(0)}, "validity-out-of-range", id="reject/validity-zero"
        ),
        pytest.param(
            {"validity": timedelta(days=-30)},
            "validity-out-of-range",
            id="reject/validity-negative",
        ),
        pytest.param(
            {"validity": timedelta(seconds=59), "development": True},
            "validity-out-of-range",
            id="reject/dev-validity-under-60s",
        ),
        pytest.param(
            {"validity": timedelta(days=91), "development": True},
            "validity-out-of-range",
            id="reject/dev-validity-over-90d",
        ),
        pytest.param({"key_types": []}, "no-key-types", id="reject/no-key-types"),
        pytest.param(
            {"key_types": ["p256", "ed25519"]}, "unknown-key-type", id="reject/unknown-key-type"
        ),
        pytest.param({"key_types": ["P256"]}, "unknown-key-type", id="reject/key-type-wrong-case"),
        pytest.param(
            {"backdate": timedelta(seconds=-1)},
            "backdate-out-of-range",
            id="reject/backdate-negative",
        ),
        pytest.param(
            {"backdate": timedelta(days=1, seconds=1)},
            "backdate-out-of-range",
            id="reject/backdate-over-1d",
        ),
        pytest.param({"backdate": "5 min"}, "invalid-duration", id="reject/backdate-unparsable"),
        pytest.param(
            {"validity": "thirty days"}, "invalid-duration", id="reject/validity-unparsable"
        ),
        pytest.param({"name": "ab"}, "invalid-name", id="reject/name-too-short"),
        pytest.param({"name": "a" * 64}, "invalid-name", id="reject/name-too-long"),
        pytest.param({"name": "-default"}, "invalid-name", id="reject/name-leading-dash"),
        pytest.param({"name": "my_policy"}, "invalid-name", id="reject/name-underscore"),
        pytest.param({"name": "default\n"}, "invalid-name", id="reject/name-trailing-newline"),
        pytest.param({"name": "défaut"}, "invalid-name", id="reject/name-non-ascii"),
        pytest.param({"name": ""}, "invalid-name", id="reject/name-empty"),
    ],
)
def test_rejects(kwargs: dict[str, Any], reason: str) -> None:
    args: dict[str, Any] = {"name": "default", "validity": timedelta(days=30), **kwargs}
    with pytest.raises(PolicyError) as info:
        LeafPolicy.create(**args)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("120s", timedelta(seconds=120)),
        ("10m", timedelta(minutes=10)),
        ("12h", timedelta(hours=12)),
        ("0s", timedelta(0)),
        ("  7d\n", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="reject/empty"),
        pytest.param("30", id="reject/no-unit"),
        pytest.param("d", id="reject/no-number"),
        pytest.param("1.5d", id="reject/fraction"),
        pytest.param("-1d", id="reject/negative"),
        pytest.param("30 d", id="reject/inner-space"),
        pytest.param("30D", id="reject/upper-case-unit"),
        pytest.param("1w", id="reject/weeks"),
        pytest.param("1d2h", id="reject/compound"),
        pytest.param("٣d", id="reject/non-ascii-digit"),
        pytest.param("9999999999d", id="reject/too-many-digits"),
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_duration(text)
    assert info.value.reason == "invalid-duration"


@settings(max_examples=50)
@given(st.integers(min_value=0, max_value=999_999), st.sampled_from("smhd"))
def test_parse_duration_matches_timedelta(amount: int, unit: str) -> None:
    names = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    assert parse_duration(f"{amount}{unit}") == timedelta(**{names[unit]: amount})
