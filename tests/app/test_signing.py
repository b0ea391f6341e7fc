"""Signing in child processes (certhub.signing) and the authority's use of them.

The children are real processes; the in-process authority is the reference: every
outcome must be the same (the refusal reasons and key reuse are asserted for both in
test_issuance_batch.py).
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_authority_service import add_device, make_csr, new_service
from test_issuance_batch import item, signed_where

from certhub.authority import CertificateAuthorityService
from certhub.clock import FixedClock
from certhub.pki import Authority, CsrRejected, IssuanceRequest, IssuedLeaf
from certhub.signing import (
    SignBatch,
    SigningProcesses,
    SigningUnavailable,
    SignJob,
    issuer_material,
    sign_jobs,
)


@pytest.fixture
def service(
    tmp_path: Path, db_url: str, signer: SigningProcesses
) -> Iterator[CertificateAuthorityService]:
    service = new_service(tmp_path, db_url, signer)
    yield service
    service.store.close()


def test_the_child_builds_the_same_leaf_as_the_server(
    service: CertificateAuthorityService,
) -> None:
    """Same time, serial, key and policy: the to-be-signed bytes are identical."""
    rid = add_device(service, "same")
    issuer = service.issuer_for("default")
    csr = make_csr("same")
    now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    serial = bytes(range(1, 17))

    class Drawn:
        def token_bytes(self, n: int) -> bytes:
            return serial

    request = IssuanceRequest(
        csr_der=csr,
        device_id="same",
        revocation_id=rid,
        policy=issuer.leaf_policy,
        issuer=issuer.ca,
        root=issuer.root,
        crl_url="https://certhub.test/crl/1.crl",
        key_seen=lambda _: False,
    )
    here = Authority(FixedClock(now), Drawn()).sign(request)
    job = SignJob(
        csr_der=csr,
        device_id="same",
        revocation_id=rid,
        policy=issuer.leaf_policy,
        issuer="i",
        crl_url="https://certhub.test/crl/1.crl",
        serial_bytes=serial,
    )
    material = issuer_material(issuer.ca, issuer.root)
    [there] = sign_jobs(
        SignBatch(now, Authority(FixedClock(now), Drawn()).validators, {"i": material},
                  frozenset(), (job,))
    )  # fmt: skip
    assert isinstance(there, IssuedLeaf)
    there = pickle.loads(pickle.dumps(there))  # as it crosses the pipe: DER, parsed again
    assert isinstance(there, IssuedLeaf)
    assert there.certificate.tbs_certificate_bytes == here.certificate.tbs_certificate_bytes
    assert there.chain_der[1:] == here.chain_der[1:]
    assert there.serial_hex == here.serial_hex
    assert (there.not_before, there.not_after) == (here.not_before, here.not_after)
    assert there.public_key_sha256 == here.public_key_sha256
    assert there.key_type == here.key_type


def test_a_batch_nobody_collects_does_not_confuse_the_next(
    service: CertificateAuthorityService, signer: SigningProcesses
) -> None:
    """A transaction that fails after starting a batch never collects it; the next
    caller still gets its own leaves (answers are matched by order, not by arrival)."""
    add_device(service, "x")
    add_device(service, "y")
    service.begin_sign_batch([item("x", make_csr("x"))])  # never collected
    [mine] = service.sign_batch([item("y", make_csr("y"))])
    assert not isinstance(mine, Exception)
    assert mine.item.device_id == "y"
    assert mine.leaf.certificate.subject.rfc4514_string() == "CN=y"


def test_two_children_share_a_batch_by_device(tmp_path: Path, db_url: str) -> None:
    """Split by device: a device's jobs stay in one child, in order, so a key it
    brings twice is still refused the second time; results come back in job order."""
    processes = SigningProcesses(2)
    service = new_service(tmp_path, db_url, processes)
    try:
        devices = [f"s{i}" for i in range(6)]
        for device in devices:
            add_device(service, device)
        assert processes.wait_ready()
        key = ec.generate_private_key(ec.SECP256R1())
        items = [item(d, make_csr(d)) for d in devices]
        items.insert(3, item("s0", make_csr("s0", key)))
        items.append(item("s0", make_csr("s0", key)))  # the same key again, last
        before = signed_where("signing-process")
        results = service.issue_batch(items)
        assert signed_where("signing-process") - before == len(items)
        assert isinstance(results[-1], CsrRejected) and results[-1].reason == "key-reused"
        for entry, leaf in zip(items[:-1], results[:-1], strict=True):
            assert isinstance(leaf, IssuedLeaf)
            assert leaf.certificate.subject.rfc4514_string() == f"CN={entry.device_id}"
    finally:
        processes.close()
        service.store.close()


def test_a_dead_child_means_signing_here_then_a_new_child(tmp_path: Path, db_url: str) -> None:
    processes = SigningProcesses(1)
    service = new_service(tmp_path, db_url, processes)
    try:
        add_device(service, "d")
        assert processes.wait_ready()
        [old] = processes.pids()
        os.kill(old, signal.SIGKILL)
        _wait_gone(old)
        assert not processes.ready()  # the renewal writer then signs after its commit
        before = signed_where("server")
        [leaf] = service.issue_batch([item("d", make_csr("d"))])
        assert isinstance(leaf, IssuedLeaf)  # signed in the server instead
        assert signed_where("server") == before + 1
        assert processes.wait_ready()
        [new] = processes.pids()
        assert new != old
        before = signed_where("signing-process")
        [leaf] = service.issue_batch([item("d", make_csr("d"))])
        assert isinstance(leaf, IssuedLeaf)
        assert signed_where("signing-process") == before + 1
    finally:
        processes.close()
        service.store.close()


def test_a_child_killed_while_signing_fails_the_batch_cleanly() -> None:
    processes = SigningProcesses(1)
    try:
        assert processes.wait_ready()
        [pid] = processes.pids()
        os.kill(pid, signal.SIGSTOP)  # holds the batch: it cannot answer before the kill
        batch = SignBatch(dt.datetime.now(dt.UTC), (), {}, frozenset(), ())
        pending = processes.submit(batch)
        assert pending is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SigningUnavailable, match="is gone"):
            pending.result()
        assert processes.submit(batch) is None  # a new child is starting: sign yourself
        assert processes.wait_ready()
        assert processes.pids() != [pid]
        again = processes.submit(batch)
        assert again is not None and again.result() == []
    finally:
        processes.close()


def test_close_stops_the_children_and_later_batches_are_signed_by_the_caller() -> None:
    processes = SigningProcesses(2)
    assert not processes.ready()  # nothing started yet
    assert processes.wait_ready()
    assert processes.ready()
    pids = processes.pids()
    assert len(pids) == 2
    processes.close()
    assert not processes.ready()
    for pid in pids:
        _wait_gone(pid)
    # closed: nobody to send to, so the caller signs itself
    empty = SignBatch(dt.datetime.now(dt.UTC), (), {}, frozenset(), ())
    assert processes.submit(empty) is None


def test_children_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup: the child notices its pipe closed and exits."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from certhub.signing import SigningProcesses

            if __name__ == "__main__":
                processes = SigningProcesses(1)
                assert processes.wait_ready()
                print(processes.pids()[0], flush=True)
                time.sleep(60)
            """
        )
    )
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        _wait_gone(child)
    finally:
        server.kill()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child: reap it if it is a zombie
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:
            pass
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")
