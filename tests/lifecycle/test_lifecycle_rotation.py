"""A planned issuer rotation under load: 100 devices stay connected through
``certhub policy rotate-issuer``, renew (their new certificates come from the successor
CA) and reconnect with them — with zero refusals and zero dropped sessions."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from lifecycle_support import (
    CREDENTIALS_RES,
    all_refusals,
    enroll_fleet,
    finish_renewal,
    start_renewal,
)

from certhub.cli import cli
from serverkit import DeviceClient, DevicePems, RunningServer, running_server

FLEET = 100
RENEWING = 90  # the other 10 keep their old leaves: the old CA must stay trusted


def connect_all(
    running: RunningServer, devices: list[tuple[str, DevicePems]]
) -> tuple[list[DeviceClient], list[int | None]]:
    def one(item: tuple[str, DevicePems]) -> tuple[DeviceClient, int | None]:
        client = DeviceClient(running, item[0], item[1])
        return client, client.connect(30.0)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, devices))
    return [c for c, _ in results], [code for _, code in results]


def close_all(clients: list[DeviceClient]) -> None:
    for client in clients:
        client.close()
    clients.clear()


def issuer_subject(chain: list[str]) -> str:
    leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
    return leaf.issuer.rfc4514_string()


def test_a_hundred_devices_ride_through_a_planned_rotation_and_renew(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as running:
        devices = enroll_fleet(running, tmp_path / "old", FLEET, "fleet")
        refused_before = all_refusals()
        clients, codes = connect_all(running, devices)
        try:
            assert codes == [0] * FLEET
            for client in clients:
                assert client.subscribe(CREDENTIALS_RES + "#") == [1]
            args = ["policy", "rotate-issuer", "default", "--data-dir", str(running.data_dir)]
            result = CliRunner().invoke(cli, [*args, "--reason", "planned", "--json"])
            assert result.exit_code == 0, result.output
            time.sleep(1.0)  # the change feed has reached the hub and the TLS layer
            assert not any(c.record.disconnected.is_set() for c in clients)
            ns = running.store.get_namespace("default")
            assert ns is not None
            old_ca, new_ca = running.store.list_cas(ns.id, kind="issuing", policy_id=1)
            assert (old_ca.state, new_ca.state) == ("active", "active")
            pairs = list(zip(clients, devices, strict=True))[:RENEWING]
            renewals = [start_renewal(c, d) for c, (d, _) in pairs]
            for (client, _), renewal in zip(pairs, renewals, strict=True):
                finish_renewal(client, renewal)
            assert {tuple(r.statuses) for r in renewals} == {(202, 200)}
            assert {issuer_subject(r.chain or []) for r in renewals} == {new_ca.subject}
            assert not any(c.record.disconnected.is_set() for c in clients)  # nobody dropped
        finally:
            close_all(clients)
        renewed = [(r.device_id, r.pems(tmp_path / "new")) for r in renewals]
        clients, codes = connect_all(running, renewed + devices[RENEWING:])
        close_all(clients)
        assert codes == [0] * FLEET
        assert all_refusals() == refused_before
        assert running.store.get_ca(old_ca.id).state == "active"  # type: ignore[union-attr]
