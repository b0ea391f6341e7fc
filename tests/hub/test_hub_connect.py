"""CONNECT to the hub over TLS with paho-mqtt 2: who is admitted, and the exact CONNACK
code and counted reason of every refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from certhub.authority import new_ca_row
from certhub.clock import SystemClock
from certhub.pki import Authority, IssuanceRequest, KeyType, LeafPolicy, create_root_ca
from certhub.rand import SystemRandom
from serverkit import (
    DeviceClient,
    RunningServer,
    create_device,
    create_policy,
    device_with_certificate,
    issue_certificate,
    make_key_and_csr,
    open_authority,
    past_clock,
    random_key,
    running_server,
    sas_password,
    self_signed,
    write_key_and_cert,
    write_pems,
)

Setup = Callable[[RunningServer, str, Path], dict[str, Any]]


@pytest.fixture(scope="module", params=[1, 0], ids=["tls-on-a-thread", "tls-on-the-loop"])
def hub(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    """The hub with the listener's own TLS transport (handshakes on a worker thread, the
    default) and with the event loop's TLS transport (``handshake_threads=0``)."""
    with running_server(
        tmp_path_factory.mktemp("hub") / "data", handshake_threads=request.param
    ) as running:
        yield running


NOW = dt.datetime.now


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def x509_device(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    return {"pems": device_with_certificate(hub, device_id, pems_dir)}


def sas_device(hub: RunningServer, device_id: str, **token: Any) -> dict[str, Any]:
    key = random_key()
    create_device(hub.store, device_id, auth_type="sas", primary_key=key)
    host = token.pop("host", hub.hub_host)
    resource_id = token.pop("resource_id", device_id)
    signing_key = token.pop("key", key)
    return {"password": sas_password(host, resource_id, signing_key, **token)}


def self_signed_device(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    create_device(hub.store, device_id, auth_type="selfSigned")
    key, csr = make_key_and_csr(device_id)
    leaf = issue_certificate(open_authority(hub.data_dir, hub.store), device_id, csr)
    device = hub.store.get_device(device_id)
    assert device is not None
    thumbprint = leaf.sha1_thumbprint
    hub.store.update_device(
        dataclasses.replace(device, primary_thumbprint=thumbprint), None, now=_now()
    )
    return {"pems": write_pems(pems_dir, device_id, key, leaf)}


def expired(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    clock = past_clock(600)
    policy = f"short-{device_id}"
    create_policy(hub, policy, "60s", clock=clock)
    return {"pems": device_with_certificate(hub, device_id, pems_dir, policy=policy, clock=clock)}


def not_yet_valid(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    return {"pems": device_with_certificate(hub, device_id, pems_dir, clock=past_clock(-600))}


def revoked_identifier(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    hub.store.rotate_revocation_id(device_id, SystemRandom().token_bytes(32), _now())
    return options


def revoked_serial(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    hub.store.set_certificate_state(options["pems"].leaf.serial_hex, "revoked", _now(), "test")
    return options


def disabled(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    device = hub.store.get_device(device_id)
    assert device is not None
    hub.store.update_device(dataclasses.replace(device, status="disabled"), None, now=_now())
    return options


def unknown_device(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    hub.store.delete_device(device_id)
    return options


def onboarding_ca(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    """A leaf with the right CN and revocation id, from a trusted onboarding CA."""
    device = create_device(hub.store, device_id)
    clock, rng = SystemClock(), SystemRandom()
    ca = create_root_ca(common_name=f"onboarding {device_id}", clock=clock, rng=rng)
    ns = hub.store.get_namespace("default")
    assert ns is not None
    hub.store.add_ca(new_ca_row(ns.id, "onboarding", f"ob-{device_id}", ca, None, _now()))
    hub.refresh_trust()
    key, csr = make_key_and_csr(device_id)
    leaf = Authority(clock, rng).sign(
        IssuanceRequest(
            csr_der=csr,
            device_id=device_id,
            revocation_id=device.revocation_id,
            policy=LeafPolicy.create("onboarding", "30d", [KeyType.P256]),
            issuer=ca,
            root=ca.certificate,
            crl_url=None,
            key_seen=lambda _: False,
        )
    )
    return {"pems": write_pems(pems_dir, device_id, key, leaf)}


def wrong_cn(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    other = device_with_certificate(hub, f"{device_id}-other", pems_dir)
    create_device(hub.store, device_id)
    return {"pems": other}


def no_certificate(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    create_device(hub.store, device_id)
    return {}


def bad_username(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    return {**options, "username": f"{hub.hub_host}/{device_id}/?DeviceClientType=x"}


def wrong_host(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    options = x509_device(hub, device_id, pems_dir)
    return {**options, "username": f"elsewhere.example/{device_id}/?api-version=2021-04-12"}


def client_id_mismatch(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    return {**x509_device(hub, device_id, pems_dir), "client_id": "someone-else"}


def unrouted(hub: RunningServer, device_id: str, pems_dir: Path) -> dict[str, Any]:
    return {**x509_device(hub, device_id, pems_dir), "username": "just-a-name"}


CASES = [
    pytest.param(x509_device, 0, None, id="accept/x509"),
    pytest.param(lambda h, d, p: sas_device(h, d), 0, None, id="accept/sas"),
    pytest.param(self_signed_device, 0, None, id="accept/self-signed-thumbprint"),
    pytest.param(expired, 5, "certificate-expired", id="reject/expired"),
    pytest.param(not_yet_valid, 5, "certificate-not-yet-valid", id="reject/not-yet-valid"),
    pytest.param(revoked_identifier, 5, "revocation-id-mismatch", id="reject/revoked-identifier"),
    pytest.param(revoked_serial, 5, "certificate-revoked", id="reject/revoked-serial"),
    pytest.param(disabled, 5, "device-disabled", id="reject/disabled"),
    pytest.param(unknown_device, 5, "device-not-found", id="reject/unknown-device"),
    pytest.param(onboarding_ca, 5, "issuer-not-a-policy-ca", id="reject/onboarding-ca"),
    pytest.param(wrong_cn, 5, "common-name-mismatch", id="reject/wrong-cn"),
    pytest.param(no_certificate, 5, "no-client-certificate", id="reject/no-certificate"),
    pytest.param(bad_username, 4, "bad-username", id="reject/wrong-username"),
    pytest.param(wrong_host, 4, "wrong-host", id="reject/wrong-host"),
    pytest.param(client_id_mismatch, 4, "client-id-mismatch", id="reject/client-id-mismatch"),
    pytest.param(
        lambda h, d, p: sas_device(h, d, key=random_key()), 5, "sas-signature-mismatch",
        id="reject/sas-wrong-key",
    ),
    pytest.param(
        lambda h, d, p: sas_device(h, d, ttl=-60), 5, "sas-expired", id="reject/sas-expired"
    ),
    pytest.param(
        lambda h, d, p: sas_device(h, d, resource_id="someone-else"), 5, "sas-wrong-resource",
        id="reject/sas-wrong-sr",
    ),
    pytest.param(
        lambda h, d, p: {**sas_device(h, d), "password": "SharedAccessSignature sr=x"}, 4,
        "sas-malformed", id="reject/sas-malformed",
    ),
]  # fmt: skip


def _tls_failures() -> float:
    labels = {"reason": "handshake-failed"}
    return REGISTRY.get_sample_value("certhub_listener_tls_failures_total", labels) or 0.0


def _refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("certhub_hub_refusals_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize(("setup", "code", "reason"), CASES)
def test_connect(
    hub: RunningServer, device_id: str, pems_dir: Path, setup: Setup, code: int, reason: str | None
) -> None:
    options = setup(hub, device_id, pems_dir)
    before = _refusals(reason) if reason else 0.0
    with DeviceClient(hub, device_id, **options) as client:
        assert client.connect() == code
        if code:
            assert client.wait_disconnected()
            assert _refusals(str(reason)) == before + 1
        else:
            assert device_id in hub.server.hub_frontend.sessions


def test_unrouted_username_is_refused_by_the_listener(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    before = REGISTRY.get_sample_value("certhub_listener_unrouted_total") or 0.0
    with DeviceClient(hub, device_id, **unrouted(hub, device_id, pems_dir)) as client:
        assert client.connect() == 4
    assert REGISTRY.get_sample_value("certhub_listener_unrouted_total") == before + 1


def _foreign_leaf(pems_dir: Path, device_id: str) -> dict[str, Any]:
    clock, rng = SystemClock(), SystemRandom()
    ca = create_root_ca(common_name="stranger", clock=clock, rng=rng)
    key, csr = make_key_and_csr(device_id)
    leaf = Authority(clock, rng).sign(
        IssuanceRequest(
            csr_der=csr,
            device_id=device_id,
            revocation_id=bytes(32),
            policy=LeafPolicy.create("stranger", "30d"),
            issuer=ca,
            root=ca.certificate,
            crl_url=None,
            key_seen=lambda _: False,
        )
    )
    return {"pems": write_pems(pems_dir, device_id, key, leaf)}


def test_a_certificate_from_an_unknown_ca_is_refused(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    """The listener's own TLS (default) takes any client certificate and the hub refuses
    this one with CONNACK 5; the event loop's TLS (``handshake_threads=0``) verifies
    against the trusted CAs and fails the handshake instead, with no CONNACK at all."""
    create_device(hub.store, device_id)
    before, refused = _tls_failures(), _refusals("issuer-not-a-policy-ca")
    with DeviceClient(hub, device_id, **_foreign_leaf(pems_dir, device_id)) as client:
        code = client.connect()
        if hub.server.config.handshake_threads:
            assert code == 5
            assert client.wait_disconnected()
            assert _refusals("issuer-not-a-policy-ca") == refused + 1
        else:
            assert code is None  # TLS alert
    assert _tls_failures() == before


def test_a_truly_self_signed_certificate_admits_its_selfsigned_device(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    """IoT Hub's ``selfSigned`` devices: the hub knows only the thumbprint. The listener's
    own TLS admits them; the event loop's TLS (``handshake_threads=0``, Python's ``ssl``
    has no verify callback) fails their handshake."""
    from cryptography.hazmat.primitives import hashes

    key, cert = self_signed(device_id)
    cert_file, key_file = write_key_and_cert(pems_dir, "self", key, cert)
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    create_device(hub.store, device_id, auth_type="selfSigned", primary_thumbprint=thumbprint)
    client = DeviceClient(hub, device_id, cert_file=cert_file, key_file=key_file)
    with client:
        if hub.server.config.handshake_threads:
            assert client.connect() == 0
            assert device_id in hub.server.hub_frontend.sessions
        else:
            assert client.connect() is None
