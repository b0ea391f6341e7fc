"""The store's DPS tables, written through the driver and read back through Core."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dps_support import DpsEnv

from certhub.registry import AlreadyExists
from certhub.registry._dps import (
    DpsRegistrationRecord,
    NewDpsOperation,
    NewDpsRegistration,
    dps_operations,
    dps_registrations,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _reg(env: DpsEnv, status: str = "assigned", **fields: object) -> NewDpsRegistration:
    values: dict[str, object] = {
        "namespace_id": env.namespace_id,
        "registration_id": "s-1",
        "device_id": "s-1",
        "enrollment_id": None,
        "attestation_type": "symmetricKey",
        "status": status,
        "substatus": "initialAssignment",
        "assigned_hub": "hub",
        "attestation": {"symmetricKey": {"enrollmentGroupId": "default"}},
    }
    values.update(fields)
    return NewDpsRegistration(**values)  # type: ignore[arg-type]


def _op(env: DpsEnv, op_id: str, at: dt.datetime, **fields: object) -> NewDpsOperation:
    values: dict[str, object] = {
        "operation_id": op_id,
        "namespace_id": env.namespace_id,
        "registration_id": "s-1",
        "status": "assigned",
        "response": {"operationId": op_id, "status": "assigned", "n": [1, 2]},
        "created_at": at,
        "expires_at": at + dt.timedelta(hours=1),
    }
    values.update(fields)
    return NewDpsOperation(**values)  # type: ignore[arg-type]


def test_registration_round_trip_matches_core(any_env: DpsEnv) -> None:
    env = any_env
    store = env.store
    disabled = store.save_dps_registration(_reg(env, "disabled", error_code=401003), T0)
    assert disabled.first_assigned_at is None
    later = T0 + dt.timedelta(minutes=1)
    first = store.save_dps_registration(_reg(env), later)
    assert (first.created_at, first.first_assigned_at) == (T0, later)
    again = store.save_dps_registration(
        _reg(env, substatus="deviceDataMigrated"), T0 + dt.timedelta(hours=1)
    )
    assert again.first_assigned_at == later
    assert again.etag != first.etag
    read = store.get_dps_registration(env.namespace_id, "s-1")
    assert read == again
    with store.engine.connect() as c:
        row = c.execute(sa.select(dps_registrations)).one()
    assert DpsRegistrationRecord(**row._mapping) == again


def test_a_second_first_save_is_already_exists(any_env: DpsEnv) -> None:
    env = any_env
    env.store.save_dps_registration(_reg(env), T0)
    with pytest.raises(AlreadyExists):
        env.store.save_dps_registration(_reg(env), T0, known_new=True)


def test_operations_round_trip_latest_and_purge(any_env: DpsEnv) -> None:
    env = any_env
    store = env.store
    store.create_dps_operation(_op(env, "op-1", T0, request_sha256="ab"))
    store.create_dps_operation(_op(env, "op-2", T0 + dt.timedelta(hours=2)))
    with pytest.raises(AlreadyExists):
        store.create_dps_operation(_op(env, "op-1", T0))
    op = store.get_dps_operation("op-1")
    assert op is not None
    assert (op.request_sha256, op.response["n"], op.created_at) == ("ab", [1, 2], T0)
    with store.engine.connect() as c:
        core = c.execute(
            sa.select(dps_operations).where(dps_operations.c.operation_id == "op-1")
        ).one()
    assert core.response == op.response and core.expires_at == op.expires_at
    latest = store.latest_dps_operation(env.namespace_id, "s-1")
    assert latest is not None and latest.operation_id == "op-2"
    assert store.purge_dps_operations(T0 + dt.timedelta(hours=2)) == 1
    assert store.get_dps_operation("op-1") is None
    assert store.delete_dps_registration(env.namespace_id, "s-1") is False


def test_candidates_probe_and_etag(any_env: DpsEnv) -> None:
    env = any_env
    store = env.store
    solo = env.enroll("s-2", initial_twin={"tags": {"a": 1}})
    individual, groups = store.dps_enrollment_candidates(env.namespace_id, "s-2", "symmetricKey")
    assert individual == store.get_enrollment_by_id(solo.id)
    assert [g.name for g in groups] == ["default"]
    assert groups[0] == store.get_enrollment(env.namespace_id, "group", "default")
    none, x509_groups = store.dps_enrollment_candidates(env.namespace_id, "s-3", "x509")
    assert (none, x509_groups) == (None, [])
    assert store.enrollment_etag(solo.id) == solo.etag
    assert store.enrollment_etag(10_000) is None
    assert store.device_probe("s-2") is None
    env.provision(env.attest_sas("s-4"), b"")
    assert store.device_probe("s-4") == (env.namespace_id, "enabled")
