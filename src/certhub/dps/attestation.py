"""Attestation: who is registering, proved by a SAS token or an onboarding certificate.

Which enrollment decides (as DPS does): an individual enrollment for the registration
id, if one exists, decides alone; otherwise the enrollment groups of the credential's
kind. A symmetric-key group attests a device whose token verifies with the key
derived from the group key (primary or secondary); an X.509 group attests a device
whose certificate was issued directly by one of the group's signing CAs.

"Unknown enrollment" (404001) means no enrollment could apply at all: no individual
enrollment for the registration id and no group of the credential's kind. Otherwise a
failure is 401002 with ``reason`` saying why (a group device's token matches no
group, or no group CA issued its certificate). Signatures are compared in constant
time (:func:`certhub.sas.verify_sas_token`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from certhub.dps.errors import NotFound, Unauthorized
from certhub.dps.wire import utc_text
from certhub.pki import certificate_sha1, certificate_sha256
from certhub.registry import Store
from certhub.registry.records import EnrollmentRecord, NamespaceRecord
from certhub.sas import SasError, SasToken, derive_device_key, parse_sas_token, verify_sas_token

__all__ = [
    "SAS_KEY_NAME",
    "Attestation",
    "Attestor",
    "Credential",
    "SasCredential",
    "X509Credential",
    "certificate_info",
]

SAS_KEY_NAME = "registration"
_CA_CACHE_SIZE = 256


@dataclass(frozen=True)
class SasCredential:
    """A SAS token (``SharedAccessSignature sr=…&sig=…&se=…&skn=registration``)."""

    token: str


@dataclass(frozen=True)
class X509Credential:
    """The DER of the onboarding certificate the client presented over TLS."""

    cert_der: bytes


Credential = SasCredential | X509Credential


@dataclass(frozen=True, kw_only=True)
class Attestation:
    """A proved registration: which enrollment admits which registration id, and how."""

    namespace_id: int
    id_scope: str
    registration_id: str
    enrollment_id: int
    enrollment_kind: Literal["group", "individual"]
    enrollment_name: str
    attestation_type: Literal["symmetricKey", "x509"]
    device_keys: tuple[str, str | None] | None = None
    """SAS only: the device's (primary, secondary) keys, derived for groups."""
    certificate: x509.Certificate | None = None
    """X.509 only: the onboarding certificate."""
    signing_certificate: x509.Certificate | None = None
    """X.509 groups only: the signing CA that issued it."""
    enrollment: EnrollmentRecord | None = None
    """The enrollment as read at attestation (re-checked by etag before use)."""

    @property
    def thumbprint(self) -> str | None:
        """Uppercase SHA-1 of the onboarding certificate (X.509), else None."""
        return None if self.certificate is None else certificate_sha1(self.certificate)

    def state_info(self) -> dict[str, Any]:
        """The ``symmetricKey`` / ``x509`` member of ``registrationState``."""
        group = self.enrollment_name if self.enrollment_kind == "group" else None
        if self.attestation_type == "symmetricKey":
            return {"symmetricKey": {"enrollmentGroupId": group} if group else {}}
        info: dict[str, Any] = {}
        if self.certificate is not None:
            info["certificateInfo"] = certificate_info(self.certificate)
        if group:
            info["enrollmentGroupId"] = group
        if self.signing_certificate is not None:
            info["signingCertificateInfo"] = certificate_info(self.signing_certificate)
        return {"x509": info}


def certificate_info(cert: x509.Certificate) -> dict[str, Any]:
    """``X509CertificateInfo`` of a certificate."""
    return {
        "subjectName": cert.subject.rfc4514_string(),
        "sha1Thumbprint": certificate_sha1(cert),
        "sha256Thumbprint": certificate_sha256(cert).upper(),
        "issuerName": cert.issuer.rfc4514_string(),
        "notBeforeUtc": utc_text(cert.not_valid_before_utc),
        "notAfterUtc": utc_text(cert.not_valid_after_utc),
        "serialNumber": format(cert.serial_number, "X"),
        "version": cert.version.value + 1,
    }


def _fail(reason: str, message: str) -> Unauthorized:
    return Unauthorized(message, reason=reason, error_code=401002)


def _unknown_enrollment(registration_id: str) -> NotFound:
    return NotFound(
        f"no enrollment applies to registration {registration_id!r}",
        reason="enrollment-not-found",
        error_code=404001,
    )


class Attestor:
    """Proves credentials against the enrollments in the store (thread-safe)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._namespaces: dict[str, NamespaceRecord] = {}
        self._cas: dict[str, x509.Certificate] = {}

    def namespace(self, id_scope: str) -> NamespaceRecord:
        """The namespace of an ID scope (cached: scopes never change); 404004 if unknown."""
        ns = self._namespaces.get(id_scope)
        if ns is None:
            ns = self._store.get_namespace_by_scope(id_scope)
            if ns is None:
                raise NotFound(
                    f"unknown ID scope {id_scope[:64]!r}",
                    reason="id-scope-not-found",
                    error_code=404004,
                )
            self._namespaces[id_scope] = ns
        return ns

    def attest(
        self, id_scope: str, registration_id: str, credential: Credential, now: dt.datetime
    ) -> Attestation:
        """Prove ``credential`` for ``registration_id``; raises Unauthorized or NotFound."""
        ns = self.namespace(id_scope)
        kind = "symmetricKey" if isinstance(credential, SasCredential) else "x509"
        individual, groups = self._store.dps_enrollment_candidates(ns.id, registration_id, kind)
        if isinstance(credential, SasCredential):
            return self._sas(ns, registration_id, credential.token, individual, groups, now)
        return self._x509(ns, registration_id, credential.cert_der, individual, groups, now)

    # -- symmetric keys ---------------------------------------------------------------

    def _sas(
        self,
        ns: NamespaceRecord,
        registration_id: str,
        token_text: str,
        individual: EnrollmentRecord | None,
        groups: Sequence[EnrollmentRecord],
        now: dt.datetime,
    ) -> Attestation:
        try:
            token = parse_sas_token(token_text)
        except SasError as exc:
            raise _fail(f"sas-{exc.reason}", f"SAS token refused: {exc}") from exc
        resource = f"{ns.id_scope}/registrations/{registration_id}"
        if individual is not None:
            if individual.attestation_type != "symmetricKey":
                raise _fail("attestation-mismatch", "the enrollment expects an X.509 certificate")
            keys = _keys(individual.primary_key, individual.secondary_key)
            self._verify(token, keys, resource, now)
            return self._attestation(ns, registration_id, individual, device_keys=keys)
        if not groups:
            raise _unknown_enrollment(registration_id)
        for group in groups:
            keys = _keys(
                *(derive_device_key(k, registration_id) if k else None for k in _pair(group))
            )
            if self._matches(token, keys, resource, now):
                return self._attestation(ns, registration_id, group, device_keys=keys)
        raise _fail("sas-signature-mismatch", "the SAS token signature does not match")

    def _verify(
        self, token: SasToken, keys: tuple[str, str | None], resource: str, now: dt.datetime
    ) -> None:
        if not self._matches(token, keys, resource, now):
            raise _fail("sas-signature-mismatch", "the SAS token signature does not match")

    @staticmethod
    def _matches(
        token: SasToken, keys: tuple[str, str | None], resource: str, now: dt.datetime
    ) -> bool:
        """True if one key verifies; key-independent failures raise at once."""
        for key in keys:
            if key is None:
                continue
            try:
                verify_sas_token(
                    token,
                    key,
                    now=now,
                    expected_resource=resource,
                    key_name=SAS_KEY_NAME,
                    require_key_name=False,  # azure-iot-device 2.14 sends no skn
                )
                return True
            except SasError as exc:
                if exc.reason != "signature-mismatch":
                    raise _fail(f"sas-{exc.reason}", f"SAS token refused: {exc}") from exc
            except ValueError as exc:  # an enrollment key that is not base64
                raise _fail("sas-bad-enrollment-key", "the enrollment key is unusable") from exc
        return False

    # -- X.509 ------------------------------------------------------------------------

    def _x509(
        self,
        ns: NamespaceRecord,
        registration_id: str,
        cert_der: bytes,
        individual: EnrollmentRecord | None,
        groups: Sequence[EnrollmentRecord],
        now: dt.datetime,
    ) -> Attestation:
        cert = _load_der(cert_der)
        _check_certificate(cert, registration_id, now)
        if individual is not None:
            if individual.attestation_type != "x509":
                raise _fail("attestation-mismatch", "the enrollment expects a symmetric key")
            if not self._individual_matches(individual, cert):
                raise _fail("certificate-mismatch", "the certificate is not the enrolled one")
            return self._attestation(ns, registration_id, individual, certificate=cert)
        if not groups:
            raise _unknown_enrollment(registration_id)
        candidates = list(self._issuing_cas(groups, cert))
        if not candidates:
            raise _fail("certificate-not-enrolled", "no enrollment group's CA issued it")
        for group, ca in candidates:
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):  # or an unusable CA key
                continue
            return self._attestation(
                ns, registration_id, group, certificate=cert, signing_certificate=ca
            )
        raise _fail("certificate-signature-invalid", "no signing CA of the group issued it")

    def _individual_matches(self, enrollment: EnrollmentRecord, cert: x509.Certificate) -> bool:
        sha1 = certificate_sha1(cert)
        sha256 = certificate_sha256(cert)
        thumbs = {t.replace(":", "").upper() for t in enrollment.x509_thumbprints}
        if sha1 in thumbs or sha256.upper() in thumbs:
            return True
        return any(self._ca(pem) == cert for pem in enrollment.x509_certificates)

    def _issuing_cas(
        self, groups: Sequence[EnrollmentRecord], cert: x509.Certificate
    ) -> Iterator[tuple[EnrollmentRecord, x509.Certificate]]:
        for group in groups:
            for pem in group.x509_certificates:
                ca = self._ca(pem)
                if ca is not None and ca.subject == cert.issuer:
                    yield group, ca

    def _ca(self, pem: str) -> x509.Certificate | None:
        ca = self._cas.get(pem)
        if ca is None:
            try:
                ca = x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                return None
            if len(self._cas) >= _CA_CACHE_SIZE:
                self._cas.clear()
            self._cas[pem] = ca
        return ca

    # -- shared -----------------------------------------------------------------------

    @staticmethod
    def _attestation(
        ns: NamespaceRecord,
        registration_id: str,
        enrollment: EnrollmentRecord,
        *,
        device_keys: tuple[str, str | None] | None = None,
        certificate: x509.Certificate | None = None,
        signing_certificate: x509.Certificate | None = None,
    ) -> Attestation:
        return Attestation(
            namespace_id=ns.id,
            id_scope=ns.id_scope,
            registration_id=registration_id,
            enrollment_id=enrollment.id,
            enrollment_kind=enrollment.kind,
            enrollment_name=enrollment.name,
            attestation_type=enrollment.attestation_type,
            device_keys=device_keys,
            certificate=certificate,
            signing_certificate=signing_certificate,
            enrollment=enrollment,
        )


def _pair(enrollment: EnrollmentRecord) -> Sequence[str | None]:
    return (enrollment.primary_key, enrollment.secondary_key)


def _keys(primary: str | None, secondary: str | None) -> tuple[str, str | None]:
    if primary is None:
        raise _fail("sas-no-enrollment-key", "the enrollment has no symmetric key")
    return (primary, secondary)


def _load_der(cert_der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise _fail("certificate-malformed", "the client certificate cannot be parsed") from exc


def _check_certificate(cert: x509.Certificate, registration_id: str, now: dt.datetime) -> None:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != registration_id:
        shown = cns[0].value if cns else None
        raise _fail(
            "certificate-cn-mismatch",
            f"certificate CN {shown!r} is not the registration id {registration_id!r}",
        )
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _fail("certificate-expired", "the certificate is not valid now")
