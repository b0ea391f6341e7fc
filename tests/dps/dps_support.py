"""Helpers for the DPS tests: an initialised certhub, credentials, CSRs, onboarding CAs."""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.authority import CertificateAuthorityService
from certhub.bootstrap import initialize
from certhub.clock import FixedClock
from certhub.datadir import DataDir
from certhub.dps import Attestation, DpsResponse, DpsSettings, ProvisioningService
from certhub.dps.attestation import SasCredential, X509Credential
from certhub.pki import CaKeyPair, LeafPolicy, certificate_sha1, create_root_ca
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry.records import EnrollmentRecord, NewEnrollment
from certhub.sas import derive_device_key, generate_sas_token

HUB_HOST = "hub.certhub.test"
CSR_API = "2025-07-01-preview"
OLD_API = "2019-03-31"


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_der(cn: str, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """A DER CSR for ``cn`` signed by ``key`` (a fresh P-256 key by default)."""
    key = key or p256()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def csr_b64(cn: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    return base64.b64encode(csr_der(cn, key)).decode()


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def chain_of(state: dict[str, Any]) -> list[x509.Certificate]:
    return [
        x509.load_der_x509_certificate(base64.b64decode(c)) for c in state["issuedCertificateChain"]
    ]


@dataclass
class OnboardingCa:
    """A CA that issues onboarding (X.509 attestation) certificates, as a vendor would."""

    pair: CaKeyPair
    name: str

    @property
    def pem(self) -> str:
        return self.pair.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        cn: str,
        *,
        not_after: dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key or p256()
        now = dt.datetime.now(dt.UTC)
        ca = self.pair.certificate
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.pair.private_key, hashes.SHA256())
        )
        return key, cert


def onboarding_ca(name: str) -> OnboardingCa:
    from certhub.clock import SystemClock

    pair = create_root_ca(common_name=name, clock=SystemClock(), rng=SystemRandom())
    return OnboardingCa(pair, name)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class DpsEnv:
    """An initialised certhub (dev profile) with a provisioning service over its store."""

    data_dir: Path
    store: Store
    authority: CertificateAuthorityService
    clock: FixedClock
    id_scope: str
    group_key: str
    namespace_id: int
    settings: DpsSettings
    service: ProvisioningService = field(init=False)
    services: list[ProvisioningService] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.service = self.make_service(self.settings)

    def make_service(self, settings: DpsSettings) -> ProvisioningService:
        service = ProvisioningService(
            self.store, self.authority, settings=settings, clock=self.clock, rng=SystemRandom()
        )
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            service.close()
        self.store.close()

    # -- credentials --------------------------------------------------------------

    def now_unix(self) -> int:
        return int(self.clock.now().timestamp())

    def device_key(self, registration_id: str, group_key: str | None = None) -> str:
        return derive_device_key(group_key or self.group_key, registration_id)

    def sas(
        self,
        registration_id: str,
        key: str | None = None,
        *,
        ttl: int = 3600,
        sr: str | None = None,
        skn: str | None = "registration",
    ) -> str:
        resource = sr or f"{self.id_scope}/registrations/{registration_id}"
        key = key or self.device_key(registration_id)
        return generate_sas_token(resource, key, self.now_unix() + ttl, skn)

    def attest_sas(self, registration_id: str, token: str | None = None) -> Attestation:
        token = token or self.sas(registration_id)
        return self.service.attest(self.id_scope, registration_id, SasCredential(token))

    def attest_cert(self, registration_id: str, cert: x509.Certificate) -> Attestation:
        credential = X509Credential(der(cert))
        return self.service.attest(self.id_scope, registration_id, credential)

    # -- flows ----------------------------------------------------------------------

    def register(self, att: Attestation, payload: bytes, api_version: str = CSR_API) -> DpsResponse:
        return self.service.respond(self.service.register, att, payload, api_version)

    def poll(self, att: Attestation, operation_id: str) -> DpsResponse:
        return self.service.respond(self.service.operation_status, att, operation_id)

    def provision(
        self, att: Attestation, payload: bytes, api_version: str = CSR_API
    ) -> DpsResponse:
        """Register and poll once; the final response."""
        first = self.register(att, payload, api_version)
        if first.status != 202:
            return first
        return self.poll(att, first.body["operationId"])

    # -- enrollments ------------------------------------------------------------------

    def enroll(self, name: str, kind: str = "individual", **fields: Any) -> EnrollmentRecord:
        fields.setdefault("attestation_type", "symmetricKey")
        if fields["attestation_type"] == "symmetricKey":
            fields.setdefault("primary_key", base64.b64encode(b"p" * 32).decode())
            fields.setdefault("secondary_key", base64.b64encode(b"s" * 32).decode())
        fields.setdefault("credential_policy_name", "default")
        new = NewEnrollment(namespace_id=self.namespace_id, kind=kind, name=name, **fields)  # type: ignore[arg-type]
        return self.store.create_enrollment(new, self.clock.now())

    def enroll_x509_group(self, name: str, *cas: OnboardingCa, **fields: Any) -> EnrollmentRecord:
        return self.enroll(
            name,
            "group",
            attestation_type="x509",
            x509_certificates=tuple(ca.pem for ca in cas),
            x509_thumbprints=tuple(certificate_sha1(ca.pair.certificate) for ca in cas),
            **fields,
        )

    def enroll_x509_individual(
        self,
        registration_id: str,
        cert: x509.Certificate,
        *,
        thumbprint_only: bool = False,
        **fields: Any,
    ) -> EnrollmentRecord:
        return self.enroll(
            registration_id,
            attestation_type="x509",
            x509_certificates=() if thumbprint_only else (pem(cert),),
            x509_thumbprints=(certificate_sha1(cert),),
            **fields,
        )

    def create_policy(self, name: str, validity: str) -> None:
        self.authority.create_policy(
            LeafPolicy.create(name, validity, development=True), actor="test"
        )


_TEMPLATE: Path | None = None


def _template() -> Path:
    """An initialised SQLite data directory, made once per test session and copied."""
    global _TEMPLATE
    if _TEMPLATE is None:
        root = Path(tempfile.mkdtemp(prefix="certhub-dps-template-"))
        atexit.register(shutil.rmtree, root, True)
        initialize(root / "data", development=True)
        _TEMPLATE = root / "data"
    return _TEMPLATE


def make_env(tmp_path: Path, database_url: str | None = None, **settings: Any) -> DpsEnv:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    if database_url is None and not (tmp_path / "data").exists():
        shutil.copytree(_template(), tmp_path / "data")
    result = initialize(tmp_path / "data", database_url=database_url, development=True, clock=clock)
    dd = DataDir(tmp_path / "data")
    store = Store.open(database_url or dd.database_url)
    authority = CertificateAuthorityService(
        store, clock=clock, rng=SystemRandom(), passphrase=dd.passphrase(SystemRandom())
    )
    ns = store.get_namespace("default")
    assert ns is not None
    return DpsEnv(
        data_dir=tmp_path / "data",
        store=store,
        authority=authority,
        clock=clock,
        id_scope=result.id_scope,
        group_key=result.group_primary_key,
        namespace_id=ns.id,
        settings=DpsSettings(hub_host=HUB_HOST, **settings),
    )
