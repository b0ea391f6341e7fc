"""The lifecycle's store queries and state changes on SQLite and PostgreSQL (no server)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certhub.bootstrap import initialize
from certhub.clock import FixedClock
from certhub.issuer_lifecycle import IssuerLifecycle, RetirementLoop
from certhub.registry import Store
from certhub.registry.errors import Conflict
from serverkit import create_device, make_key_and_csr, open_authority

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    data = tmp_path / "data"
    initialize(data, database_url=db_url, development=True)
    with Store.open(db_url) as opened:
        yield opened, data


def _lifecycle(store: Store, data: Path, at: dt.datetime = NOW) -> IssuerLifecycle:
    return IssuerLifecycle(open_authority(data, store, FixedClock(at)))


def _issue(lc: IssuerLifecycle, device_id: str) -> str:
    create_device(lc.store, device_id)
    _, csr = make_key_and_csr(device_id)
    leaf = lc.authority.issue(
        device_id=device_id, csr_der=csr, policy_name="default", requested_via="cli", actor="t"
    )
    return leaf.serial_hex


def test_revoke_issuer_records_time_and_reason_and_revokes_leaves(
    store: tuple[Store, Path],
) -> None:
    s, data = store
    lc = _lifecycle(s, data)
    serial = _issue(lc, "d1")
    change = lc.revoke_issuer("default", actor="t", reason="compromised")
    [old] = change.previous
    assert (old.state, old.revoked_at, old.revocation_reason) == ("revoked", NOW, "compromised")
    assert old.retired_at == NOW
    assert change.revoked_serials == (serial,)
    cert = s.get_certificate(serial)
    assert cert is not None and cert.state == "revoked"
    ns = s.get_namespace("default")
    assert ns is not None
    assert [c.id for c in s.list_cas(ns.id, state="revoked")] == [old.id]
    # First reason wins; leaving "revoked" is refused.
    again = s.set_ca_state(old.id, "revoked", NOW + dt.timedelta(hours=1), reason="other")
    assert (again.revoked_at, again.revocation_reason) == (NOW, "compromised")
    with pytest.raises(Conflict):
        s.set_ca_state(old.id, "active", NOW)


def test_drained_and_expiring_queries(store: tuple[Store, Path]) -> None:
    s, data = store
    lc = _lifecycle(s, data)
    serial = _issue(lc, "d2")
    change = lc.rotate_issuer("default", actor="t")
    [old] = change.previous
    ns = s.get_namespace("default")
    assert ns is not None
    assert old.id not in {c.id for c in s.drained_issuing_cas(ns.id, NOW)}
    cert = s.get_certificate(serial)
    assert cert is not None
    after = cert.not_after + dt.timedelta(seconds=1)
    drained = {c.id for c in s.drained_issuing_cas(ns.id, after)}
    assert {old.id, change.new_ca.id} <= drained  # the new one has no leaves yet
    assert [c.id for c in _lifecycle(s, data, after).retire_drained()] == [old.id]
    expiring = s.list_expiring_cas(ns.id, NOW, dt.timedelta(days=400))
    assert [c.not_after for c in expiring] == sorted(c.not_after for c in expiring)
    assert old.id not in {c.id for c in expiring}  # retired: no longer reported
    assert change.new_ca.id in {c.id for c in expiring}
    assert s.list_expiring_cas(ns.id, NOW, dt.timedelta(days=1)) == []


def test_the_retirement_loop_runs_the_check_and_stops(store: tuple[Store, Path]) -> None:
    s, data = store
    lc = _lifecycle(s, data)
    lc.rotate_issuer("default", actor="t")  # the old CA has no leaves: drained at once

    async def run(fn: Any, /, *args: Any) -> Any:
        return fn(*args)

    async def scenario() -> list[str]:
        loop = RetirementLoop(lc, run, interval=0.01)
        await loop.start()
        await asyncio.sleep(0.1)
        await loop.stop()
        return [c.state for c in await loop.run_once()]

    assert asyncio.run(scenario()) == []  # the background run already retired it
    ns = s.get_namespace("default")
    assert ns is not None
    states = [c.state for c in s.list_cas(ns.id, kind="issuing")]
    assert states == ["retired", "active"]
    assert s.list_audit("ca", s.list_cas(ns.id, kind="issuing")[0].serial_hex)[0].actor == "system"
