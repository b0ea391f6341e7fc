"""Batched issuance (one transaction per batch) and the group-commit queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from test_authority_service import add_device, make_csr, new_service

from certhub.authority import CertificateAuthorityService, IssueItem
from certhub.issuance_queue import IssuanceQueue
from certhub.metrics import LEAVES_SIGNED
from certhub.pki import CsrRejected, IssuedLeaf
from certhub.registry.errors import NotFound


@pytest.fixture(params=["in-server", "signing-process"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str
) -> Iterator[CertificateAuthorityService]:
    """The authority signing in this process, or in a signing process (same outcomes)."""
    signer = request.getfixturevalue("signer") if request.param == "signing-process" else None
    service = new_service(tmp_path, db_url, signer)
    yield service
    service.store.close()


def signed_where(where: str) -> float:
    return float(LEAVES_SIGNED.labels(where)._value.get())


def item(device: str, csr: bytes) -> IssueItem:
    return IssueItem(
        device_id=device, csr_der=csr, policy_name="default", requested_via="api", actor="test"
    )


def test_batch_refuses_items_individually(service: CertificateAuthorityService) -> None:
    add_device(service, "a")
    add_device(service, "b")
    used = ec.generate_private_key(ec.SECP256R1())
    [first] = service.issue_batch([item("b", make_csr("b", used))])
    assert isinstance(first, IssuedLeaf)
    key = ec.generate_private_key(ec.SECP256R1())
    where = "server" if service.signer is None else "signing-process"
    before = signed_where(where)
    results = service.issue_batch(
        [
            item("a", make_csr("a", key)),
            item("a", make_csr("a", key)),  # same key twice in one batch
            item("b", make_csr("not-b")),
            item("ghost", make_csr("ghost")),
            item("b", b"\x30\x03garbage"),
            item("b", make_csr("b", used)),  # certified for b before this batch
            item("b", make_csr("b")),
        ]
    )
    assert isinstance(results[0], IssuedLeaf)
    assert isinstance(results[1], CsrRejected) and results[1].reason == "key-reused"
    assert isinstance(results[2], CsrRejected) and results[2].reason == "cn-mismatch"
    assert isinstance(results[3], NotFound)
    assert isinstance(results[4], CsrRejected) and results[4].reason == "csr-malformed"
    assert isinstance(results[5], CsrRejected) and results[5].reason == "key-reused"
    assert isinstance(results[6], IssuedLeaf)
    assert signed_where(where) - before == 6  # all but the unknown device, where expected
    recorded = {c.serial_hex for c in service.store.list_certificates(limit=100)}
    assert recorded == {first.serial_hex, results[0].serial_hex, results[6].serial_hex}
    leaf = results[6]
    assert leaf.chain_der[0] == leaf.certificate.public_bytes(Encoding.DER)
    issuer = x509.load_der_x509_certificate(leaf.chain_der[1])
    leaf.certificate.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(x509.load_der_x509_certificate(leaf.chain_der[2]))


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
