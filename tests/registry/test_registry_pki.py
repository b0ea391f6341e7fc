"""CA certificates and credential policies."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from certhub.registry import AlreadyExists, Conflict, NotFound, Store
from certhub.registry.records import CaRecord, NamespaceRecord, NewCa, PolicyRecord

LATER = dt.datetime(2025, 4, 1, tzinfo=dt.UTC)


def test_add_and_get_ca(store: Store, issuing_ca: CaRecord, policy: PolicyRecord) -> None:
    assert issuing_ca.kind == "issuing"
    assert issuing_ca.policy_id == policy.id
    assert issuing_ca.state == "active"
    assert issuing_ca.key_pem_encrypted == b"\x00secret"
    assert issuing_ca.retired_at is None
    assert store.get_ca(issuing_ca.id) == issuing_ca
    assert store.get_ca_by_sha256(issuing_ca.sha256) == issuing_ca
    assert store.get_ca(issuing_ca.id + 100) is None


def test_current_issuing_ca_of_a_policy(
    store: Store,
    ns: NamespaceRecord,
    policy: PolicyRecord,
    make_ca: Callable[..., CaRecord],
) -> None:
    root = make_ca("root", kind="root")
    old = make_ca("ica-1", policy_id=policy.id)
    new = make_ca("ica-2", policy_id=policy.id, state="successor")
    make_ca("onboarding", kind="onboarding")

    def current() -> list[str]:
        found = store.list_cas(ns.id, kind="issuing", policy_id=policy.id, state="active")
        return [ca.name for ca in found]

    assert current() == ["ica-1"]
    store.set_ca_state(new.id, "active", LATER)
    retired = store.set_ca_state(old.id, "retired", LATER)
    assert retired.retired_at == LATER
    assert current() == ["ica-2"]
    assert [ca.id for ca in store.list_cas(ns.id)] == [root.id, old.id, new.id, root.id + 3]
    assert [ca.name for ca in store.list_cas(ns.id, kind="root")] == ["root"]
    revoked = store.set_ca_state(old.id, "revoked", LATER + dt.timedelta(days=1))
    assert (revoked.state, revoked.retired_at) == ("revoked", LATER)  # first retirement kept


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"kind": "leaf"}, "kind='leaf'", id="reject/unknown-kind"),
        pytest.param({"state": "gone"}, "state='gone'", id="reject/unknown-state"),
        pytest.param({"sha256": "ABC"}, "sha256='ABC'", id="reject/sha256-not-hex"),
        pytest.param({"serial_hex": "0x1"}, "serial_hex='0x1'", id="reject/serial-prefix"),
        pytest.param(
            {"not_after": dt.datetime(2030, 1, 1)}, "not_after=", id="reject/naive-datetime"
        ),
    ],
)
def test_new_ca_validation(overrides: dict[str, Any], error: str) -> None:
    fields: dict[str, Any] = {
        "namespace_id": 1,
        "kind": "root",
        "name": "r",
        "cert_pem": "pem",
        "subject": "CN=r",
        "serial_hex": "01",
        "sha256": "a" * 64,
        "not_before": LATER,
        "not_after": LATER,
        "created_at": LATER,
    }
    with pytest.raises(ValueError, match=error):
        NewCa(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        pytest.param("duplicate-sha256", AlreadyExists, id="reject/duplicate-sha256"),
        pytest.param("unknown-policy", Conflict, id="reject/unknown-policy"),
        pytest.param("unknown-ca-state-change", NotFound, id="reject/set-state-missing-ca"),
        pytest.param("unrevoke", Conflict, id="reject/leave-revoked"),
    ],
)
def test_ca_rejections(
    store: Store,
    issuing_ca: CaRecord,
    make_ca: Callable[..., CaRecord],
    action: str,
    expected: type[Exception],
) -> None:
    with pytest.raises(expected) as info:
        if action == "duplicate-sha256":
            make_ca("copy", sha256=issuing_ca.sha256)
        elif action == "unknown-policy":
            make_ca("orphan", policy_id=9999)
        elif action == "unknown-ca-state-change":
            store.set_ca_state(9999, "retired", LATER)
        else:
            store.set_ca_state(issuing_ca.id, "revoked", LATER)
            store.set_ca_state(issuing_ca.id, "active", LATER)
    if isinstance(info.value, Conflict):
        reason = "missing-reference" if action == "unknown-policy" else "invalid-transition"
        assert info.value.reason == reason
    if isinstance(info.value, NotFound):
        assert (info.value.kind, info.value.key) == ("ca", "9999")


def test_policy_crud(
    store: Store, ns: NamespaceRecord, policy: PolicyRecord, now: dt.datetime
) -> None:
    assert policy.key_types == ("ec-p256",)
    assert (policy.validity_seconds, policy.backdate_seconds) == (30 * 86400, 300)
    assert (policy.development, policy.superseded_grace_seconds, policy.state) == (
        False,
        0,
        "active",
    )
    assert store.get_policy(ns.id, "default") == policy
    assert store.get_policy_by_id(policy.id) == policy
    assert store.get_policy(ns.id, "nope") is None

    dev = store.create_policy(
        ns.id, "dev", 600, ["ec-p256", "ec-p384"], 0, True, now, superseded_grace_seconds=60
    )
    assert dev.key_types == ("ec-p256", "ec-p384") and dev.development
    assert [p.name for p in store.list_policies(ns.id)] == ["default", "dev"]

    updated = store.update_policy(dev.id, LATER, validity_seconds=900, key_types=["rsa-2048"])
    assert (updated.validity_seconds, updated.key_types) == (900, ("rsa-2048",))
    assert updated.superseded_grace_seconds == 60
    assert (updated.created_at, updated.updated_at) == (now, LATER)

    deleted = store.set_policy_state(dev.id, "deleted", LATER)
    assert deleted.state == "deleted"
    assert [p.name for p in store.list_policies(ns.id)] == ["default"]
    assert [p.name for p in store.list_policies(ns.id, include_deleted=True)] == ["default", "dev"]

    other = store.create_namespace("other", "0ne-other", now)
    copy = store.create_policy(other.id, "default", 60, ["ec-p256"], 0, False, now)
    assert copy.id != policy.id


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"name": "default"}, AlreadyExists, id="reject/duplicate-name"),
        pytest.param({"namespace_id": 9999}, Conflict, id="reject/unknown-namespace"),
    ],
)
def test_create_policy_rejections(
    store: Store,
    ns: NamespaceRecord,
    policy: PolicyRecord,
    now: dt.datetime,
    kwargs: dict[str, Any],
    expected: type[Exception],
) -> None:
    args: dict[str, Any] = {
        "namespace_id": ns.id,
        "name": "new",
        "validity_seconds": 60,
        "key_types": ["ec-p256"],
        "backdate_seconds": 0,
        "development": False,
        "now": now,
    }
    with pytest.raises(expected) as info:
        store.create_policy(**{**args, **kwargs})
    if expected is AlreadyExists:
        assert (info.value.kind, info.value.key) == ("policy", "default")  # type: ignore[attr-defined]
    if expected is Conflict:
        assert info.value.reason == "missing-reference"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda s: s.set_policy_state(9999, "deleted", LATER), id="reject/state-missing"
        ),
        pytest.param(
            lambda s: s.update_policy(9999, LATER, development=True), id="reject/update-missing"
        ),
    ],
)
def test_policy_not_found(store: Store, call: Callable[[Store], object]) -> None:
    with pytest.raises(NotFound) as info:
        call(store)
    assert (info.value.kind, info.value.key) == ("policy", "9999")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda s: s.create_policy(1, "p", 0, ["ec-p256"], 0, False, LATER),
            "validity_seconds=0",
            id="reject/zero-validity",
        ),
        pytest.param(
            lambda s: s.create_policy(1, "p", 60, [], 0, False, LATER),
            "key_types=",
            id="reject/no-key-types",
        ),
        pytest.param(
            lambda s: s.create_policy(1, "p", 60, "ec-p256", 0, False, LATER),
            "key_types=",
            id="reject/key-types-string",
        ),
        pytest.param(
            lambda s: s.create_policy(1, "p", 60, ["ec-p256"], -1, False, LATER),
            "backdate_seconds",
            id="reject/negative-backdate",
        ),
        pytest.param(
            lambda s: s.update_policy(1, LATER, validity_seconds=-5),
            "validity_seconds=-5",
            id="reject/update-negative-validity",
        ),
        pytest.param(
            lambda s: s.set_policy_state(1, "retired", LATER),
            "state='retired'",
            id="reject/unknown-policy-state",
        ),
        pytest.param(
            lambda s: s.set_ca_state(1, "expired", LATER),
            "state='expired'",
            id="reject/unknown-ca-state",
        ),
    ],
)
def test_pki_argument_validation(
    offline_store: Store, call: Callable[[Store], object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        call(offline_store)


def test_records_are_frozen() -> None:
    policy = PolicyRecord(
        id=1,
        namespace_id=1,
        name="p",
        validity_seconds=60,
        key_types=("ec-p256",),
        backdate_seconds=0,
        development=False,
        superseded_grace_seconds=0,
        state="active",
        created_at=LATER,
        updated_at=LATER,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.name = "x"  # type: ignore[misc]
