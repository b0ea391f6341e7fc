"""Batched issuance (one transaction per batch) and the group-commit queue."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_authority_service import add_device, make_csr

from certhub.authority import CertificateAuthorityService, IssueItem
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.issuance_queue import IssuanceQueue
from certhub.pki import CsrRejected, IssuedLeaf
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.errors import NotFound


@pytest.fixture
def service(tmp_path: Path, db_url: str) -> CertificateAuthorityService:
    initialize(tmp_path, database_url=db_url)
    rng = SystemRandom()
    return CertificateAuthorityService(
        Store.open(db_url),
        clock=SystemClock(),
        rng=rng,
        passphrase=DataDir(tmp_path).passphrase(rng),
    )


def item(device: str, csr: bytes) -> IssueItem:
    return IssueItem(
        device_id=device, csr_der=csr, policy_name="default", requested_via="api", actor="test"
    )


def test_batch_refuses_items_individually(service: CertificateAuthorityService) -> None:
    add_device(service, "a")
    add_device(service, "b")
    key = ec.generate_private_key(ec.SECP256R1())
    results = service.issue_batch(
        [
            item("a", make_csr("a", key)),
            item("a", make_csr("a", key)),  # same key twice in one batch
            item("b", make_csr("not-b")),
            item("ghost", make_csr("ghost")),
            item("b", b"\x30\x03garbage"),
            item("b", make_csr("b")),
        ]
    )
    assert isinstance(results[0], IssuedLeaf)
    assert isinstance(results[1], CsrRejected) and results[1].reason == "key-reused"
    assert isinstance(results[2], CsrRejected) and results[2].reason == "cn-mismatch"
    assert isinstance(results[3], NotFound)
    assert isinstance(results[4], CsrRejected) and results[4].reason == "csr-malformed"
    assert isinstance(results[5], IssuedLeaf)
    recorded = {c.serial_hex for c in service.store.list_certificates(limit=100)}
    assert recorded == {results[0].serial_hex, results[5].serial_hex}


def test_queue_issues_concurrent_requests_exactly_once(
    service: CertificateAuthorityService,
) -> None:
    devices = [f"d{i}" for i in range(8)]
    for d in devices:
        add_device(service, d)
    queue = IssuanceQueue(service, max_batch=16)
    futures: list[Future[IssuedLeaf]] = []
    lock = threading.Lock()

    def submit(device: str) -> None:
        for _ in range(5):
            fut = queue.submit(item(device, make_csr(device)))
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=submit, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leaves = [f.result(timeout=30) for f in futures]
    queue.close()
    serials = {leaf.serial_hex for leaf in leaves}
    assert len(serials) == 40
    recorded = service.store.list_certificates(limit=1000)
    assert {c.serial_hex for c in recorded} == serials


def test_queue_reports_refusals_through_the_future(service: CertificateAuthorityService) -> None:
    add_device(service, "x")
    queue = IssuanceQueue(service)
    fut = queue.submit(item("x", make_csr("y")))
    with pytest.raises(CsrRejected) as info:
        fut.result(timeout=30)
    assert info.value.reason == "cn-mismatch"
    queue.close()
    with pytest.raises(RuntimeError):
        queue.submit(item("x", make_csr("x")))
