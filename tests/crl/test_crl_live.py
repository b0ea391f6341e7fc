"""CRLs and OCSP on a running certhub, checked with openssl as a relying party would."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from certhub.bootstrap import service_keys
from certhub.rand import SystemRandom
from certhub.sas import generate_sas_token
from serverkit import (
    DevicePems,
    RunningServer,
    create_policy,
    device_with_certificate,
    running_server,
)

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Pki:
    """The running server, an HTTPS client, and the CA files of the default policy."""

    running: RunningServer
    http: httpx.Client
    base_url: str
    cafile: Path
    issuer: Path
    issuer_id: int
    root_id: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    data = tmp_path_factory.mktemp("crl") / "data"
    with running_server(data, https_port=_free_port()) as running:
        port = running.server.https_port
        base_url = f"https://localhost:{port}"
        trust = ssl.create_default_context(cafile=str(running.trust_anchor))
        ns = running.store.get_namespace("default")
        assert ns is not None
        [root] = running.store.list_cas(ns.id, kind="root")
        policy = running.store.get_policy(ns.id, "default")
        assert policy is not None
        [ica] = running.store.list_cas(ns.id, kind="issuing", policy_id=policy.id)
        files = data.parent / "ca"
        files.mkdir()
        (files / "issuer.pem").write_text(ica.cert_pem)
        (files / "cas.pem").write_text(ica.cert_pem + root.cert_pem)
        with httpx.Client(base_url=base_url, verify=trust, timeout=30) as http:
            yield Pki(
                running,
                http,
                base_url,
                files / "cas.pem",
                files / "issuer.pem",
                ica.id,
                root.id,
            )


def _device(pki: Pki, device_id: str, tmp_path: Path) -> DevicePems:
    return device_with_certificate(pki.running, device_id, tmp_path)


def _revoke(pki: Pki, device_id: str, reason: str = "keyCompromise") -> list[str]:
    _, serials = pki.running.store.revoke_device(
        device_id,
        SystemRandom().token_bytes(32),
        now=pki.running.server.clock.now(),
        actor="tests",
        reason=reason,
    )
    return serials


def _crl(pki: Pki, ca_id: int) -> x509.CertificateRevocationList:
    response = pki.http.get(f"/crl/{ca_id}.crl")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _wait_for_number(pki: Pki, ca_id: int, above: int, timeout: float = 3.0) -> float:
    """Seconds until the stored CRL's number exceeds ``above`` (no HTTP request made)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        meta = pki.running.store.get_crl(ca_id, with_der=False)
        if meta is not None and meta.number > above:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"CRL of CA {ca_id} still at number <= {above} after {timeout}s")


# -- CRL --------------------------------------------------------------------------------


def test_openssl_verify_crl_check(pki: Pki, tmp_path: Path) -> None:
    good = _device(pki, "crl-good", tmp_path)
    bad = _device(pki, "crl-bad", tmp_path)
    meta = pki.running.store.get_crl(pki.issuer_id, with_der=False)
    _revoke(pki, "crl-bad")
    _wait_for_number(pki, pki.issuer_id, meta.number if meta else 0)
    response = pki.http.get(f"/crl/{pki.issuer_id}.crl", params={"format": "pem"})
    assert response.headers["content-type"] == "application/x-pem-file"
    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(response.content)

    ok = _openssl("verify", "-crl_check", "-CAfile", pki.cafile, "-CRLfile", crl_pem, good.cert)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{good.cert}: OK" in ok.stdout

    refused = _openssl("verify", "-crl_check", "-CAfile", pki.cafile, "-CRLfile", crl_pem, bad.cert)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr


def test_crl_fields(pki: Pki, tmp_path: Path) -> None:
    leaf = _device(pki, "crl-fields", tmp_path).leaf
    assert leaf is not None
    before = _number(_crl(pki, pki.issuer_id))
    _revoke(pki, "crl-fields", reason="key compromise")
    _wait_for_number(pki, pki.issuer_id, before)
    crl = _crl(pki, pki.issuer_id)
    issuer = x509.load_pem_x509_certificate(pki.issuer.read_bytes())
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=24)
    entry = crl.get_revoked_certificate_by_serial_number(leaf.certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_pem_on_accept_header(pki: Pki) -> None:
    response = pki.http.get(
        f"/crl/{pki.issuer_id}.crl", headers={"Accept": "application/x-pem-file"}
    )
    assert response.status_code == 200
    assert response.content.startswith(b"-----BEGIN X509 CRL-----")
    x509.load_pem_x509_crl(response.content)


def test_revocation_regenerates_crl_and_number_grows(pki: Pki, tmp_path: Path) -> None:
    before = _number(_crl(pki, pki.issuer_id))
    _device(pki, "crl-number", tmp_path)
    serials = _revoke(pki, "crl-number")
    elapsed = _wait_for_number(pki, pki.issuer_id, before)
    assert elapsed < 2.0
    crl = _crl(pki, pki.issuer_id)
    assert _number(crl) > before
    listed = {format(e.serial_number, "032x") for e in crl}
    assert set(serials) <= listed


def test_every_download_serves_the_stored_bytes(pki: Pki) -> None:
    first = pki.http.get(f"/crl/{pki.issuer_id}.crl").content
    second = pki.http.get(f"/crl/{pki.issuer_id}.crl").content
    stored = pki.running.store.get_crl(pki.issuer_id)
    assert stored is not None
    assert first == second == stored.der


def test_root_crl_lists_revoked_issuing_ca(pki: Pki) -> None:
    policy = create_policy(pki.running, "crl-doomed", validity="1h")
    [ica] = pki.running.store.list_cas(policy.namespace_id, kind="issuing", policy_id=policy.id)
    before = _number(_crl(pki, pki.root_id))
    assert (
        _crl(pki, pki.root_id).get_revoked_certificate_by_serial_number(int(ica.serial_hex, 16))
        is None
    )
    pki.running.store.set_ca_state(ica.id, "revoked", pki.running.server.clock.now())
    _wait_for_number(pki, pki.root_id, before)
    crl = _crl(pki, pki.root_id)
    assert crl.get_revoked_certificate_by_serial_number(int(ica.serial_hex, 16)) is not None


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/crl/999999.crl", 404, id="reject/unknown-ca"),
        pytest.param("/crl/abc.crl", 400, id="reject/not-a-ca-id"),
        pytest.param("/crl/99999999999999999999999.crl", 400, id="reject/ca-id-too-large"),
        pytest.param("/crl/1.crl?format=xml", 400, id="reject/unknown-format"),
    ],
)
def test_crl_refusals(pki: Pki, path: str, status: int) -> None:
    response = pki.http.get(path)
    assert response.status_code == status
    reasons = ("not-found", "invalid-field", "invalid-value", "invalid-format")
    assert response.headers.get("certhub-reason") in reasons


# -- OCSP -------------------------------------------------------------------------------


def _openssl_ocsp(pki: Pki, cert: Path, tmp_path: Path) -> str:
    result = _openssl(
        "ocsp",
        "-issuer",
        pki.issuer,
        "-cert",
        cert,
        "-url",
        f"{pki.base_url}/ocsp",
        "-CAfile",
        pki.cafile,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr + result.stdout
    return result.stdout


def test_openssl_ocsp_good_and_revoked(pki: Pki, tmp_path: Path) -> None:
    good = _device(pki, "ocsp-good", tmp_path)
    bad = _device(pki, "ocsp-bad", tmp_path)
    _revoke(pki, "ocsp-bad", reason="superseded")
    assert f"{good.cert}: good" in _openssl_ocsp(pki, good.cert, tmp_path)
    out = _openssl_ocsp(pki, bad.cert, tmp_path)
    assert f"{bad.cert}: revoked" in out
    assert "Reason: superseded" in out
    assert "Revocation Time:" in out


def _request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _post(pki: Pki, body: bytes) -> ocsp.OCSPResponse:
    response = pki.http.post(
        "/ocsp", content=body, headers={"Content-Type": "application/ocsp-request"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def test_ocsp_get_matches_post(pki: Pki, tmp_path: Path) -> None:
    leaf = _device(pki, "ocsp-get", tmp_path).leaf
    assert leaf is not None
    issuer = x509.load_pem_x509_certificate(pki.issuer.read_bytes())
    body = _request(leaf.certificate, issuer)
    encoded = base64.b64encode(body).decode()
    response = pki.http.get(f"/ocsp/{encoded}")
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == leaf.certificate.serial_number
    issuer.public_key().verify(  # type: ignore[call-arg]
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )


def test_ocsp_unknown_serial_is_unknown(pki: Pki) -> None:
    issuer = x509.load_pem_x509_certificate(pki.issuer.read_bytes())
    stranger = _foreign_cert(issuer.subject, issuer_key=None)
    body = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            *_hashes(issuer), serial_number=stranger.serial_number, algorithm=hashes.SHA1()
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = _post(pki, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def _hashes(issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """CertID hashes computed by hand: SHA-1 of the subject DER and of the EC point."""
    point = issuer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return hashlib.sha1(issuer.subject.public_bytes()).digest(), hashlib.sha1(point).digest()


def _foreign_cert(
    issuer_name: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey | None
) -> x509.Certificate:
    key = issuer_key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_ocsp_foreign_issuer_is_unauthorized(pki: Pki) -> None:
    stranger = _foreign_cert(None, None)
    answer = _post(pki, _request(stranger, stranger))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="reject/empty"),
        pytest.param(b"\x30\x03\x02\x01\x01", id="reject/not-an-ocsp-request"),
        pytest.param(b"\x30" * 20_000, id="reject/too-large"),
    ],
)
def test_malformed_ocsp_request(pki: Pki, body: bytes) -> None:
    answer = _post(pki, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("not*base64", id="reject/get-bad-base64"),
        pytest.param(base64.b64encode(b"garbage").decode(), id="reject/get-not-der"),
    ],
)
def test_malformed_ocsp_get(pki: Pki, encoded: str) -> None:
    response = pki.http.get(f"/ocsp/{encoded}")
    assert response.status_code == 200
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# -- wiring -------------------------------------------------------------------------------


def test_issuing_ca_points_leaves_at_the_served_crl(pki: Pki) -> None:
    """The server's authority puts ``{https base}/crl/{caId}.crl`` into the leaves it signs."""
    authority = pki.running.server._authority  # the one DPS and hub renewal issue with
    assert authority is not None
    url = authority.crl_url(pki.issuer_id)
    hub_host = pki.running.store.get_setting("hub_host")
    port = pki.running.server.https_port
    assert url == f"https://{hub_host}:{port}/crl/{pki.issuer_id}.crl"
    response = pki.http.get(url.replace(f"https://{hub_host}:{port}", ""))
    assert response.status_code == 200
    x509.load_der_x509_crl(response.content)


def test_admin_audit_filters_by_action_and_time(pki: Pki, tmp_path: Path) -> None:
    _device(pki, "audit-dev", tmp_path)
    _revoke(pki, "audit-dev")
    keys = service_keys(pki.running.store)["iothubowner"]
    resource = f"localhost:{pki.running.server.https_port}"
    token = generate_sas_token(resource, keys["primaryKey"], int(time.time()) + 600, "iothubowner")
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
    response = pki.http.get(
        "/certhub/v1/audit",
        params={"action": "device.*", "subjectId": "audit-dev", "since": since},
        headers={"Authorization": token},
    )
    assert response.status_code == 200, response.text
    assert [e["action"] for e in response.json()["items"]] == ["device.revoke"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    response = pki.http.get(
        "/certhub/v1/audit", params={"since": later}, headers={"Authorization": token}
    )
    assert response.json()["items"] == []


def test_admin_api_revoke_regenerates_crl(pki: Pki, tmp_path: Path) -> None:
    leaf = _device(pki, "crl-admin", tmp_path).leaf
    assert leaf is not None
    before = _number(_crl(pki, pki.issuer_id))
    keys = service_keys(pki.running.store)["iothubowner"]
    resource = f"localhost:{pki.running.server.https_port}"
    token = generate_sas_token(resource, keys["primaryKey"], int(time.time()) + 600, "iothubowner")
    response = pki.http.post(
        "/certhub/v1/devices/crl-admin/revoke",
        json={"reason": "keyCompromise", "disable": False},
        headers={"Authorization": token},
    )
    assert response.status_code == 200, response.text
    assert _wait_for_number(pki, pki.issuer_id, before) < 2.0
    crl = _crl(pki, pki.issuer_id)
    assert crl.get_revoked_certificate_by_serial_number(leaf.certificate.serial_number)


def test_openssl_crl_check_all_refuses_leaf_of_revoked_issuer(pki: Pki, tmp_path: Path) -> None:
    """Both levels: the root's CRL lists the revoked issuing CA, so its leaves fail too."""
    policy = create_policy(pki.running, "crl-chain", validity="1h")
    [ica] = pki.running.store.list_cas(policy.namespace_id, kind="issuing", policy_id=policy.id)
    leaf = device_with_certificate(pki.running, "crl-chain-dev", tmp_path, policy="crl-chain")
    cafile = tmp_path / "chain-cas.pem"
    root = pki.running.store.get_ca(pki.root_id)
    assert root is not None
    cafile.write_text(ica.cert_pem + root.cert_pem)

    def check() -> subprocess.CompletedProcess[str]:
        crls = tmp_path / "crls.pem"
        crls.write_bytes(
            b"".join(
                pki.http.get(f"/crl/{ca_id}.crl", params={"format": "pem"}).content
                for ca_id in (pki.root_id, ica.id)
            )
        )
        return _openssl("verify", "-crl_check_all", "-CAfile", cafile, "-CRLfile", crls, leaf.cert)

    assert check().returncode == 0
    meta = pki.running.store.get_crl(pki.root_id, with_der=False)
    pki.running.store.set_ca_state(ica.id, "revoked", pki.running.server.clock.now())
    _wait_for_number(pki, pki.root_id, meta.number if meta else 0)
    refused = check()
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
