"""A node SIGKILLed during a renewal storm: its devices reconnect to the other nodes and
finish renewing, no accepted renewal is lost, and the survivors run the scheduled work.

Three real ``certhub serve`` processes on one PostgreSQL store, each on its own ports.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

from cluster_support import MovingDevice, enroll, serve_nodes, wait_for

from certhub.bootstrap import initialize
from certhub.cluster import LeaseStore
from certhub.registry import Store

DEVICES = 36
RENEWALS = 4


def test_sigkill_of_a_node_mid_storm_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    init = initialize(data_dir, database_url=pg_url, development=True)
    with Store.open(pg_url) as store:
        store.set_setting("renewal.detection_interval_seconds", "0.5")
        store.set_setting("renewal.stuck_after_seconds", "2")
        devices = enroll(data_dir, store, tmp_path / "pems", DEVICES, "storm")
    with serve_nodes(data_dir, pg_url, 3, log) as nodes, Store.open(pg_url) as store:
        ports = [n.port for n in nodes]
        swarm = [
            MovingDevice(
                device_id, pems, ports, init.hub_host, Path(init.trust_anchor), RENEWALS, i
            )
            for i, (device_id, pems) in enumerate(devices)
        ]
        for device in swarm:
            device.start()
        total = DEVICES * RENEWALS
        victim = nodes[0]

        def held() -> list[MovingDevice]:  # the victim's devices with renewals still to do
            return [d for d in swarm if d.ports_used[-1:] == [victim.port] and not d.done.is_set()]

        assert wait_for(lambda: _returned(swarm) >= total // 8 and len(held()) >= 3, 60), (
            log.read_text()[-3000:]
        )
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)
        killed_at = _returned(swarm)
        assert killed_at < total  # the storm was still going
        stranded = held()  # those that finished on it before the kill have nothing to move
        assert stranded
        assert wait_for(lambda: all(d.done.is_set() for d in swarm), 90), _status(swarm, log)
        for device in swarm:
            device.stop()
        assert all(len(set(d.ports_used)) > 1 for d in stranded)
        assert all(d.ports_used[-1] != victim.port for d in stranded)
        _assert_nothing_lost(store, swarm)
        _assert_survivors_run_the_jobs(store, victim.process.pid)


def _returned(swarm: list[MovingDevice]) -> int:
    return sum(len(d.returned) for d in swarm)


def _status(swarm: list[MovingDevice], log: Path) -> str:
    stuck = [
        (d.device_id, len(d.returned), d.errors[-2:], d.ports_used, d.connect_failures[-3:])
        for d in swarm
        if not d.done.is_set()
    ]
    return f"unfinished: {stuck}\n{log.read_text()[-3000:]}"


def _assert_nothing_lost(store: Store, swarm: list[MovingDevice]) -> None:
    for device in swarm:
        assert len(device.returned) == RENEWALS
        for request in device.returned:
            assert request.serial is not None
            assert store.get_certificate(request.serial) is not None
        hub = [
            c
            for c in store.list_certificates(device_id=device.device_id, limit=100)
            if c.requested_via == "hub"
        ]
        ops = store.list_operations(device_id=device.device_id, limit=100)
        issued = [o for o in ops if o.certificate_serial is not None]
        assert len(hub) == len(issued)  # one certificate per operation, never two
        assert {r.serial for r in device.returned} <= {c.serial_hex for c in hub}
        assert not [o for o in ops if o.state == "pending"], device.device_id


def _assert_survivors_run_the_jobs(store: Store, dead_pid: int) -> None:
    leases = LeaseStore(store.engine)
    first = leases.get("renewal.jobs")
    assert first is not None

    def renewed() -> bool:  # the lease moves on: a live node keeps renewing it
        lease = leases.get("renewal.jobs")
        return lease is not None and lease.expires_at > first.expires_at

    assert wait_for(renewed, 10)
    later = leases.get("renewal.jobs")
    assert later is not None
    # the dead node's last heartbeat ages out of the 2-second liveness window
    assert wait_for(lambda: _live_names(store) == ["n1", "n2"], 10), _live_names(store)
    live = {n.node_id: n.name for n in _live(store, dt.datetime.now(dt.UTC))}
    assert later.holder in live and live[later.holder] != "n0"


def _live_names(store: Store) -> list[str]:
    return sorted(n.name for n in _live(store, dt.datetime.now(dt.UTC)))


def _live(store: Store, now: dt.datetime) -> list:  # type: ignore[type-arg]
    from certhub.cluster import NodeRegistry

    return NodeRegistry(store.engine).live(now, dt.timedelta(seconds=2))
