"""First-run initialisation: what it creates, idempotency, host names, both stores."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from certhub.bootstrap import SERVICE_POLICIES, initialize, service_keys
from certhub.datadir import PASSPHRASE_ENV, DataDir
from certhub.registry import Store


def test_init_creates_namespace_policy_group_and_tls(tmp_path: Path, db_url: str) -> None:
    result = initialize(tmp_path / "d", database_url=db_url)
    assert result.created
    assert result.namespace == "default"
    assert result.id_scope.startswith("0ne") and len(result.id_scope) == 11
    assert result.mqtt_port == 8883 and result.hub_host == "localhost"
    assert result.service_connection_string.startswith(
        "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey="
    )
    with Store.open(db_url) as store:
        ns = store.get_namespace("default")
        assert ns is not None and ns.id_scope == result.id_scope
        policy = store.get_policy(ns.id, "default")
        assert policy is not None and policy.validity_seconds == 30 * 86400
        assert [c.kind for c in store.list_cas(ns.id)] == ["root", "server", "issuing"]
        group = store.get_enrollment(ns.id, "group", "default")
        assert group is not None and group.primary_key == result.group_primary_key
        assert group.credential_policy_name == "default"
        assert set(service_keys(store)) == set(SERVICE_POLICIES)
        actions = [a.action for a in store.list_audit(limit=10)]
        assert "namespace.create" in actions and "policy.create" in actions


def test_init_is_idempotent(tmp_path: Path, db_url: str) -> None:
    first = initialize(tmp_path / "d", database_url=db_url)
    cert_before = DataDir(tmp_path / "d").server_cert_path.read_bytes()
    second = initialize(tmp_path / "d", database_url=db_url)
    assert not second.created
    assert {**first.as_dict(), "created": None} == {**second.as_dict(), "created": None}
    assert DataDir(tmp_path / "d").server_cert_path.read_bytes() == cert_before
    with Store.open(db_url) as store:
        ns = store.get_namespace("default")
        assert ns is not None
        assert len(store.list_policies(ns.id)) == 1
        assert len(store.list_cas(ns.id)) == 3


def test_new_host_reissues_server_certificate_under_same_anchor(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    initialize(tmp_path)
    anchor = dd.server_ca_path.read_bytes()
    result = initialize(tmp_path, hosts=["hub.example.test"])
    cert = x509.load_pem_x509_certificate(dd.server_cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hub.example.test" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert dd.server_ca_path.read_bytes() == anchor
    assert result.hub_host == "localhost"  # the first run chose it; later runs keep it


def test_first_host_becomes_hub_host(tmp_path: Path) -> None:
    result = initialize(tmp_path, hosts=["hub.example.test", "other.test"])
    assert result.hub_host == "hub.example.test"
    assert "HostName=hub.example.test:8443;" in result.service_connection_string


def test_secrets_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    initialize(tmp_path)
    dd = DataDir(tmp_path)
    for path in (dd.passphrase_path, dd.server_key_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_passphrase_from_environment_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    initialize(tmp_path)
    assert not DataDir(tmp_path).passphrase_path.exists()


def test_ca_keys_are_encrypted_in_the_store(tmp_path: Path) -> None:
    initialize(tmp_path)
    with Store.open(DataDir(tmp_path).database_url) as store:
        ns = store.get_namespace("default")
        assert ns is not None
        for ca in store.list_cas(ns.id):
            assert ca.key_pem_encrypted is not None
            assert b"ENCRYPTED PRIVATE KEY" in ca.key_pem_encrypted


def test_server_certificate_verifies_for_localhost_and_loopback(tmp_path: Path) -> None:
    initialize(tmp_path)
    dd = DataDir(tmp_path)
    ctx = ssl.create_default_context(cafile=str(dd.server_ca_path))
    cert = x509.load_pem_x509_certificate(dd.server_cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED
