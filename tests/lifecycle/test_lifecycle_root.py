"""Root rotation with an overlap period: new issuance chains to the new root at once,
certificates under the old root keep working until they expire, then the old root and
its issuing CAs retire and are no longer trusted."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from lifecycle_support import admin_client, dps_register, leaf_of
from prometheus_client import REGISTRY

from certhub.bootstrap import initialize
from certhub.cli import cli
from certhub.clock import FixedClock
from certhub.issuer_lifecycle import IssuerLifecycle
from serverkit import DeviceClient, DevicePems, RunningServer, open_authority, running_server


def chain(pems: DevicePems) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pems.chain.read_bytes())


def provision(running: RunningServer, device_id: str, directory: Path) -> DevicePems:
    registration = dps_register(running, device_id, directory)
    assert registration.pems is not None, registration.body
    return registration.pems


def _refusals(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("certhub_hub_refusals_total", labels) or 0.0


def test_root_rotation_overlaps_then_retires_the_old_root(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", https_port=0) as running:
        old = provision(running, "before", tmp_path / "a")
        with DeviceClient(running, "before", old) as client:
            assert client.connect() == 0
            with admin_client(running) as api:
                answer = api.post("/certhub/v1/namespaces/default/rotate-root", json={})
                missing = api.post("/certhub/v1/namespaces/other/rotate-root", json={})
            assert answer.status_code == 200, answer.text
            assert missing.status_code == 404
            time.sleep(1.0)
            assert not client.record.disconnected.is_set()
        body = answer.json()
        new_root_subject = body["root"]["subject"]
        assert "G2" in new_root_subject
        assert [c["state"] for c in body["previousRoots"]] == ["active"]
        new = provision(running, "after", tmp_path / "b")
        leaf, issuing, root = chain(new)
        assert root.subject.rfc4514_string() == new_root_subject
        assert issuing.issuer == root.subject
        leaf.verify_directly_issued_by(issuing)
        issuing.verify_directly_issued_by(root)
        for device_id, pems in (("before", old), ("after", new)):
            with DeviceClient(running, device_id, pems) as client:
                assert client.connect() == 0
        lifecycle = IssuerLifecycle(open_authority(running.data_dir, running.store))
        assert lifecycle.retire_drained() == []  # "before" still holds a valid leaf
        expired = leaf_of(old).not_valid_after_utc + dt.timedelta(seconds=1)
        later = open_authority(running.data_dir, running.store, FixedClock(expired))
        retired = IssuerLifecycle(later).retire_drained(actor="tests")
        assert sorted(c.kind for c in retired) == ["issuing", "root"]
        assert {c.subject for c in retired if c.kind == "root"} == {
            chain(old)[2].subject.rfc4514_string()
        }
        running.refresh_trust()
        refused = _refusals("issuer-not-a-policy-ca")
        with DeviceClient(running, "before", old) as client:
            assert client.connect() == 5  # its issuing CA is retired: no longer this hub's
        assert _refusals("issuer-not-a-policy-ca") == refused + 1
        with DeviceClient(running, "after", new) as client:
            assert client.connect() == 0
        audit = running.store.list_audit("namespace", "default")
        assert audit[0].action == "namespace.rotate-root"


def test_namespace_rotate_root_cli_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    initialize(data, development=True)
    args = ["namespace", "rotate-root", "--data-dir", str(data), "--reason", "10y", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["root"]["kind"] == "root" and "G2" in out["root"]["subject"]
    assert [c["kind"] for c in out["issuingCas"]] == ["issuing"]
    roots = CliRunner().invoke(cli, ["ca", "list", "--data-dir", str(data), "--json"])
    kinds = [c["kind"] for c in json.loads(roots.output)]
    assert kinds.count("root") == 2
