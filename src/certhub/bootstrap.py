"""First run: turn an empty data directory (or database) into a working certhub.

:func:`initialize` is idempotent. The first call creates namespace ``default`` with
its root CA, policy ``default`` (30-day leaves) with its issuing CA, the symmetric-key
enrollment group ``default``, an ID scope, the TLS server CA and endpoint certificate,
and the service access keys. Later calls reuse all of it and report the same facts; a
call that names a host the endpoint certificate does not cover reissues that
certificate (the server CA, and so the trust anchor, stays the same).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certhub.authority import CertificateAuthorityService, new_ca_row
from certhub.clock import Clock, SystemClock
from certhub.datadir import DataDir, write_private, write_public
from certhub.pki import (
    CaKeyPair,
    KeyType,
    LeafPolicy,
    create_root_ca,
    create_server_certificate,
    decrypt_private_key,
)
from certhub.rand import Random, SystemRandom
from certhub.registry import Store
from certhub.registry.records import AuditEvent, NewEnrollment

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_NAMESPACE",
    "DEFAULT_POLICY",
    "SERVICE_POLICIES",
    "InitResult",
    "initialize",
    "service_keys",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_POLICY = "default"
DEFAULT_GROUP = "default"
DEFAULT_VALIDITY = dt.timedelta(days=30)
DEFAULT_MQTT_PORT = 8883
DEFAULT_HTTPS_PORT = 8443
SERVICE_POLICIES = ("iothubowner", "service", "registryRead", "registryReadWrite")
ACTOR = "certhub-init"


@dataclass(frozen=True)
class InitResult:
    """What a device and an operator need to know about an initialised certhub."""

    data_dir: str
    database_url: str
    namespace: str
    id_scope: str
    hub_host: str
    mqtt_port: int
    https_port: int
    enrollment_group: str
    group_primary_key: str
    trust_anchor: str
    service_connection_string: str
    development: bool
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(rng: Random) -> str:
    return base64.b64encode(rng.token_bytes(32)).decode()


def service_keys(store: Store) -> dict[str, dict[str, str]]:
    """The service shared-access policies and their keys."""
    raw = store.get_setting("service_keys")
    return dict(json.loads(raw)) if raw else {}


def _id_scope(rng: Random) -> str:
    return "0ne" + rng.token_bytes(4).hex().upper()


def _hosts(requested: Sequence[str], store: Store) -> list[str]:
    known = json.loads(store.get_setting("hosts") or "[]")
    merged = list(dict.fromkeys([*known, *requested, "localhost", "127.0.0.1"]))
    return merged


def initialize(
    data_dir: Path,
    *,
    database_url: str | None = None,
    hosts: Sequence[str] = (),
    development: bool = False,
    mqtt_port: int | None = None,
    https_port: int | None = None,
    clock: Clock | None = None,
    rng: Random | None = None,
) -> InitResult:
    """Create (or reuse) everything a certhub server needs; see the module docstring."""
    clock = clock or SystemClock()
    rng = rng or SystemRandom()
    dd = DataDir(data_dir)
    dd.create()
    url = database_url or dd.database_url
    passphrase = dd.passphrase(rng)
    with Store.open(url) as store:
        created = store.get_namespace(DEFAULT_NAMESPACE) is None
        if created:
            _create_namespace(store, clock, rng, passphrase, development)
        elif development and store.get_setting("development") != "1":
            store.set_setting("development", "1")
        all_hosts = _hosts(hosts, store)
        if created or (hosts and store.get_setting("hub_host") is None):
            store.set_setting("hub_host", (list(hosts) or ["localhost"])[0])
        store.set_setting("hosts", json.dumps(all_hosts))
        if mqtt_port is not None:
            store.set_setting("mqtt_port", str(mqtt_port))
        if https_port is not None:
            store.set_setting("https_port", str(https_port))
        _ensure_server_tls(store, dd, all_hosts, clock, rng, passphrase)
        return _facts(store, dd, url, created)


def _create_namespace(
    store: Store, clock: Clock, rng: Random, passphrase: bytes, development: bool
) -> None:
    now = clock.now()
    root = create_root_ca(
        common_name=f"certhub {DEFAULT_NAMESPACE} root CA",
        key_type=KeyType.P256,
        clock=clock,
        rng=rng,
    )
    server_ca = create_root_ca(
        common_name="certhub server CA", key_type=KeyType.P256, clock=clock, rng=rng
    )
    keys = {name: {"primaryKey": _key(rng), "secondaryKey": _key(rng)} for name in SERVICE_POLICIES}
    with store.transaction() as conn:
        ns = store.create_namespace(DEFAULT_NAMESPACE, _id_scope(rng), now, conn=conn)
        store.add_ca(new_ca_row(ns.id, "root", "root", root, passphrase, now), conn=conn)
        store.add_ca(new_ca_row(ns.id, "server", "server", server_ca, passphrase, now), conn=conn)
        store.set_setting("service_keys", json.dumps(keys), conn=conn)
        store.set_setting("development", "1" if development else "0", conn=conn)
        store.set_setting("mqtt_port", str(DEFAULT_MQTT_PORT), conn=conn)
        store.set_setting("https_port", str(DEFAULT_HTTPS_PORT), conn=conn)
        store.append_audit(
            AuditEvent(
                at=now,
                actor=ACTOR,
                action="namespace.create",
                subject_type="namespace",
                subject_id=DEFAULT_NAMESPACE,
            ),
            conn=conn,
        )
    ca = CertificateAuthorityService(store, clock=clock, rng=rng, passphrase=passphrase)
    ca.create_policy(LeafPolicy.create(DEFAULT_POLICY, DEFAULT_VALIDITY), actor=ACTOR)
    store.create_enrollment(
        NewEnrollment(
            namespace_id=ns.id,
            kind="group",
            name=DEFAULT_GROUP,
            attestation_type="symmetricKey",
            primary_key=_key(rng),
            secondary_key=_key(rng),
            credential_policy_name=DEFAULT_POLICY,
        ),
        now,
    )


def _server_ca(store: Store, passphrase: bytes) -> CaKeyPair:
    ns = store.get_namespace(DEFAULT_NAMESPACE)
    assert ns is not None
    rec = store.list_cas(ns.id, kind="server", state="active")[-1]
    assert rec.key_pem_encrypted is not None
    return CaKeyPair(
        x509.load_pem_x509_certificate(rec.cert_pem.encode()),
        decrypt_private_key(rec.key_pem_encrypted, passphrase),
    )


def _covers(cert_path: Path, hosts: Sequence[str], ca: x509.Certificate) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca.subject:
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    names |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(hosts) <= names


def _ensure_server_tls(
    store: Store, dd: DataDir, hosts: list[str], clock: Clock, rng: Random, passphrase: bytes
) -> None:
    ca = _server_ca(store, passphrase)
    pem = serialization.Encoding.PEM
    write_public(dd.server_ca_path, ca.certificate.public_bytes(pem))
    if _covers(dd.server_cert_path, hosts, ca.certificate) and dd.server_key_path.exists():
        return
    cert, key = create_server_certificate(ca, hosts=hosts, clock=clock, rng=rng)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(dd.server_key_path, key_pem)
    write_public(dd.server_cert_path, cert.public_bytes(pem))
    os.chmod(dd.server_key_path, 0o600)


def _facts(store: Store, dd: DataDir, url: str, created: bool) -> InitResult:
    ns = store.get_namespace(DEFAULT_NAMESPACE)
    assert ns is not None
    group = store.get_enrollment(ns.id, "group", DEFAULT_GROUP)
    hub_host = store.get_setting("hub_host") or "localhost"
    https_port = int(store.get_setting("https_port") or DEFAULT_HTTPS_PORT)
    owner = service_keys(store)["iothubowner"]["primaryKey"]
    conn_str = (
        f"HostName={hub_host}:{https_port};SharedAccessKeyName=iothubowner;SharedAccessKey={owner}"
    )
    return InitResult(
        data_dir=str(dd.root),
        database_url=_redact(url),
        namespace=ns.name,
        id_scope=ns.id_scope,
        hub_host=hub_host,
        mqtt_port=int(store.get_setting("mqtt_port") or DEFAULT_MQTT_PORT),
        https_port=https_port,
        enrollment_group=DEFAULT_GROUP,
        group_primary_key=(group.primary_key or "") if group else "",
        trust_anchor=str(dd.server_ca_path),
        service_connection_string=conn_str,
        development=store.get_setting("development") == "1",
        created=created,
    )


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
