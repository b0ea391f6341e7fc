"""Issuance through the store: policy creation, CSR to recorded certificate, rejections."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.pki import CsrRejected, LeafPolicy, revocation_id_of
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.errors import AlreadyExists, NotFound
from certhub.registry.records import NewDevice
from certhub.signing import SigningProcesses


def make_csr(cn: str, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def new_service(
    data_dir: Path, db_url: str, signer: SigningProcesses | None = None
) -> CertificateAuthorityService:
    """An initialised data directory's authority (signing in ``signer`` if given)."""
    initialize(data_dir, database_url=db_url)
    rng = SystemRandom()
    return CertificateAuthorityService(
        Store.open(db_url),
        clock=SystemClock(),
        rng=rng,
        passphrase=DataDir(data_dir).passphrase(rng),
        crl_base_url="https://localhost:8443",
        signer=signer,
    )


@pytest.fixture
def service(tmp_path: Path, db_url: str) -> CertificateAuthorityService:
    return new_service(tmp_path, db_url)


def add_device(service: CertificateAuthorityService, device_id: str) -> bytes:
    rid = SystemRandom().token_bytes(32)
    service.store.create_device(
        NewDevice(
            device_id=device_id,
            namespace_id=service.namespace.id,
            revocation_id=rid,
            policy_name="default",
        ),
        service.clock.now(),
    )
    return rid


def test_issue_records_certificate_and_audit(service: CertificateAuthorityService) -> None:
    rid = add_device(service, "dev-1")
    leaf = service.issue(
        device_id="dev-1",
        csr_der=make_csr("dev-1"),
        policy_name="default",
        requested_via="cli",
        actor="test",
    )
    assert revocation_id_of(leaf.certificate) == rid
    record = service.store.get_certificate(leaf.serial_hex)
    assert record is not None
    assert (record.device_id, record.state, record.requested_via) == ("dev-1", "issued", "cli")
    assert record.sha256 == leaf.sha256_thumbprint
    assert record.cert_der == leaf.chain_der[0]
    audit = service.store.list_audit(subject_type="device", subject_id="dev-1")
    assert [a.action for a in audit] == ["certificate.issue"]
    assert audit[0].details["serial"] == leaf.serial_hex
    crl = leaf.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert str(crl.value[0].full_name[0].value).startswith("https://localhost:8443/crl/")


def test_reused_key_is_rejected_and_nothing_recorded(service: CertificateAuthorityService) -> None:
    add_device(service, "dev-2")
    key = ec.generate_private_key(ec.SECP256R1())
    service.issue(
        device_id="dev-2",
        csr_der=make_csr("dev-2", key),
        policy_name="default",
        requested_via="cli",
        actor="test",
    )
    with pytest.raises(CsrRejected) as info:
        service.issue(
            device_id="dev-2",
            csr_der=make_csr("dev-2", key),
            policy_name="default",
            requested_via="hub",
            actor="test",
        )
    assert info.value.reason == "key-reused"
    assert len(service.store.list_certificates(device_id="dev-2")) == 1


def test_cn_mismatch_is_rejected(service: CertificateAuthorityService) -> None:
    add_device(service, "dev-3")
    with pytest.raises(CsrRejected) as info:
        service.issue(
            device_id="dev-3",
            csr_der=make_csr("someone-else"),
            policy_name="default",
            requested_via="cli",
            actor="test",
        )
    assert info.value.reason == "cn-mismatch"
    assert service.store.list_certificates(device_id="dev-3") == []


def test_unknown_policy_and_device(service: CertificateAuthorityService) -> None:
    with pytest.raises(NotFound):
        service.issue(
            device_id="ghost",
            csr_der=make_csr("ghost"),
            policy_name="default",
            requested_via="cli",
            actor="test",
        )
    add_device(service, "dev-4")
    with pytest.raises(NotFound):
        service.issue(
            device_id="dev-4",
            csr_der=make_csr("dev-4"),
            policy_name="nope",
            requested_via="cli",
            actor="test",
        )


def test_policy_gets_its_own_issuing_ca(
    service: CertificateAuthorityService, tmp_path: Path
) -> None:
    service.create_policy(LeafPolicy.create("sensors", "14d"), actor="test")
    with pytest.raises(AlreadyExists):
        service.create_policy(LeafPolicy.create("sensors", "14d"), actor="test")
    default, sensors = service.issuer_for("default"), service.issuer_for("sensors")
    assert default.ca.certificate.subject != sensors.ca.certificate.subject
    assert default.root == sensors.root
    add_device(service, "dev-5")
    leaf = service.issue(
        device_id="dev-5",
        csr_der=make_csr("dev-5"),
        policy_name="sensors",
        requested_via="cli",
        actor="test",
    )
    assert leaf.not_after - leaf.not_before == dt.timedelta(days=14, minutes=5)
    # The chain verifies with openssl (the revocation-id extension is non-critical).
    pem = serialization.Encoding.PEM
    (tmp_path / "root.pem").write_bytes(sensors.root.public_bytes(pem))
    (tmp_path / "ica.pem").write_bytes(sensors.ca.certificate.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.certificate.public_bytes(pem))
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "ica.pem",
            "leaf.pem",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "leaf.pem: OK", out.stdout + out.stderr
