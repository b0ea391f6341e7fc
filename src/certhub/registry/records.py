"""Rows of the registry as frozen, keyword-only dataclasses.

``New*`` classes (and :class:`AuditEvent`) are what callers hand to the store; they
check their enum-like fields and datetimes on construction, so a bad value fails
at the caller, not deep in a transaction. ``*Record`` classes are what the store
returns; their fields are named exactly like the table columns. JSON lists come
back as tuples; JSON objects as plain dicts (treat them as read-only).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "ATTESTATION_TYPES",
    "AUTH_TYPES",
    "CA_KINDS",
    "CA_STATES",
    "CERTIFICATE_STATES",
    "CONNECTION_STATES",
    "DEVICE_STATUSES",
    "ENROLLMENT_KINDS",
    "OPERATION_STATES",
    "POLICY_STATES",
    "REQUESTED_VIA",
    "AttestationType",
    "AuditEvent",
    "AuditRecord",
    "AuthType",
    "CaKind",
    "CaRecord",
    "CaState",
    "CertificateRecord",
    "CertificateState",
    "ConnectionState",
    "DeviceRecord",
    "DeviceStatus",
    "EnrollmentKind",
    "EnrollmentRecord",
    "NamespaceRecord",
    "NewCa",
    "NewCertificate",
    "NewDevice",
    "NewEnrollment",
    "NewOperation",
    "OperationRecord",
    "OperationState",
    "PolicyRecord",
    "PolicyState",
    "RequestedVia",
    "TwinRecord",
]

CaKind = Literal["root", "issuing", "server", "onboarding"]
CaState = Literal["active", "successor", "retired", "revoked"]
PolicyState = Literal["active", "deleted"]
EnrollmentKind = Literal["group", "individual"]
AttestationType = Literal["symmetricKey", "x509"]
DeviceStatus = Literal["enabled", "disabled"]
AuthType = Literal["certificateAuthority", "selfSigned", "sas", "none"]
ConnectionState = Literal["Connected", "Disconnected"]
RequestedVia = Literal["dps", "hub", "cli", "api"]
CertificateState = Literal["issued", "active", "superseded", "revoked", "expired"]
OperationState = Literal["pending", "completed", "failed", "replaced", "expired"]

CA_KINDS: tuple[str, ...] = get_args(CaKind)
CA_STATES: tuple[str, ...] = get_args(CaState)
POLICY_STATES: tuple[str, ...] = get_args(PolicyState)
ENROLLMENT_KINDS: tuple[str, ...] = get_args(EnrollmentKind)
ATTESTATION_TYPES: tuple[str, ...] = get_args(AttestationType)
DEVICE_STATUSES: tuple[str, ...] = get_args(DeviceStatus)
AUTH_TYPES: tuple[str, ...] = get_args(AuthType)
CONNECTION_STATES: tuple[str, ...] = get_args(ConnectionState)
REQUESTED_VIA: tuple[str, ...] = get_args(RequestedVia)
CERTIFICATE_STATES: tuple[str, ...] = get_args(CertificateState)
OPERATION_STATES: tuple[str, ...] = get_args(OperationState)

_HEX = re.compile(r"[0-9a-f]+")
DEFAULT_REPROVISION = {"updateHubAssignment": True, "migrateDeviceData": True}


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name}={value!r}: expected one of {sorted(choices)}")


def check_aware(name: str, value: dt.datetime | None) -> None:
    """Raise ``ValueError`` for a naive datetime (``None`` passes)."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name}={value!r}: datetimes must be timezone-aware")


def _check_hex(name: str, value: str, length: int | None = None) -> None:
    if not _HEX.fullmatch(value) or (length is not None and len(value) != length):
        size = f"{length} " if length else ""
        raise ValueError(f"{name}={value!r}: expected {size}lower-case hex digits")


def _check_revocation_id(value: bytes) -> None:
    if len(value) != 32:
        raise ValueError(f"revocation_id: expected 32 bytes, got {len(value)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NamespaceRecord:
    """A namespace (ADR namespace / DPS instance): its name and ID scope."""

    id: int
    name: str
    id_scope: str
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewCa:
    """A CA certificate (and optionally its encrypted key) to store."""

    namespace_id: int
    kind: CaKind
    name: str
    cert_pem: str
    subject: str
    serial_hex: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    created_at: dt.datetime
    key_pem_encrypted: bytes | None = None
    policy_id: int | None = None
    state: CaState = "active"

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, CA_KINDS)
        check_choice("state", self.state, CA_STATES)
        _check_hex("serial_hex", self.serial_hex)
        _check_hex("sha256", self.sha256, 64)
        for name in ("not_before", "not_after", "created_at"):
            check_aware(name, getattr(self, name))


@dataclass(frozen=True, kw_only=True, slots=True)
class CaRecord:
    """A stored CA certificate."""

    id: int
    namespace_id: int
    kind: CaKind
    name: str
    policy_id: int | None
    cert_pem: str
    key_pem_encrypted: bytes | None
    subject: str
    serial_hex: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    state: CaState
    created_at: dt.datetime
    retired_at: dt.datetime | None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyRecord:
    """A credential policy; its issuing CA is the active ``issuing`` CA row for it."""

    id: int
    namespace_id: int
    name: str
    validity_seconds: int
    key_types: tuple[str, ...]
    backdate_seconds: int
    development: bool
    superseded_grace_seconds: int
    state: PolicyState
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewEnrollment:
    """A DPS enrollment (group or individual) to create."""

    namespace_id: int
    kind: EnrollmentKind
    name: str
    attestation_type: AttestationType
    primary_key: str | None = None
    secondary_key: str | None = None
    x509_certificates: tuple[str, ...] = ()
    x509_thumbprints: tuple[str, ...] = ()
    credential_policy_name: str | None = None
    initial_twin: Mapping[str, Any] = field(default_factory=dict)
    provisioning_status: DeviceStatus = "enabled"
    reprovision_policy: Mapping[str, bool] = field(
        default_factory=lambda: dict(DEFAULT_REPROVISION)
    )

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ENROLLMENT_KINDS)
        check_choice("attestation_type", self.attestation_type, ATTESTATION_TYPES)
        check_choice("provisioning_status", self.provisioning_status, DEVICE_STATUSES)
        if self.attestation_type == "symmetricKey" and not self.primary_key:
            raise ValueError("primary_key: required for symmetricKey attestation")


@dataclass(frozen=True, kw_only=True, slots=True)
class EnrollmentRecord:
    """A stored enrollment. Update it with ``dataclasses.replace`` + ``update_enrollment``."""

    id: int
    namespace_id: int
    kind: EnrollmentKind
    name: str
    attestation_type: AttestationType
    primary_key: str | None
    secondary_key: str | None
    x509_certificates: tuple[str, ...]
    x509_thumbprints: tuple[str, ...]
    credential_policy_name: str | None
    initial_twin: Mapping[str, Any]
    provisioning_status: DeviceStatus
    reprovision_policy: Mapping[str, bool]
    etag: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewDevice:
    """A device identity to create; its twin starts from ``initial_tags``/``initial_desired``."""

    device_id: str
    namespace_id: int
    revocation_id: bytes
    auth_type: AuthType = "certificateAuthority"
    status: DeviceStatus = "enabled"
    status_reason: str | None = None
    primary_key: str | None = None
    secondary_key: str | None = None
    primary_thumbprint: str | None = None
    secondary_thumbprint: str | None = None
    policy_name: str | None = None
    enrollment_id: int | None = None
    initial_tags: Mapping[str, Any] = field(default_factory=dict)
    initial_desired: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ValueError("device_id: must not be empty")
        check_choice("auth_type", self.auth_type, AUTH_TYPES)
        check_choice("status", self.status, DEVICE_STATUSES)
        _check_revocation_id(self.revocation_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceRecord:
    """A stored device identity. Update it with ``dataclasses.replace`` + ``update_device``."""

    device_id: str
    namespace_id: int
    status: DeviceStatus
    status_reason: str | None
    auth_type: AuthType
    primary_key: str | None
    secondary_key: str | None
    primary_thumbprint: str | None
    secondary_thumbprint: str | None
    revocation_id: bytes
    generation_id: str
    etag: str
    policy_name: str | None
    enrollment_id: int | None
    connection_state: ConnectionState
    connection_state_updated_at: dt.datetime | None
    last_activity_at: dt.datetime | None
    status_updated_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class TwinRecord:
    """A device twin: sections, their versions, and ``$metadata`` bookkeeping."""

    device_id: str
    tags: Mapping[str, Any]
    desired: Mapping[str, Any]
    reported: Mapping[str, Any]
    desired_version: int
    reported_version: int
    version: int
    etag: str
    metadata: Mapping[str, Any]
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewCertificate:
    """An issued leaf certificate to record (the hot path: keep it plain)."""

    serial_hex: str
    device_id: str
    policy_id: int
    issuer_ca_id: int
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    sha1: str
    public_key_sha256: str
    key_type: str
    revocation_id: bytes
    requested_via: RequestedVia
    cert_der: bytes
    created_at: dt.datetime
    state: CertificateState = "issued"
    operation_id: int | None = None

    def __post_init__(self) -> None:
        check_choice("requested_via", self.requested_via, REQUESTED_VIA)
        check_choice("state", self.state, CERTIFICATE_STATES)
        _check_hex("serial_hex", self.serial_hex)
        _check_hex("sha256", self.sha256, 64)
        _check_revocation_id(self.revocation_id)
        for name in ("not_before", "not_after", "created_at"):
            check_aware(name, getattr(self, name))


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateRecord:
    """A certificate the server issued (kept after its device is deleted)."""

    serial_hex: str
    device_id: str
    policy_id: int
    issuer_ca_id: int
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    sha1: str
    public_key_sha256: str
    key_type: str
    revocation_id: bytes
    requested_via: RequestedVia
    state: CertificateState
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    first_used_at: dt.datetime | None
    operation_id: int | None
    cert_der: bytes
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NewOperation:
    """A credential (CSR) operation received from a device over the hub."""

    device_id: str
    rid: str
    correlation_id: str
    csr_der: bytes
    expires_at: dt.datetime
    created_at: dt.datetime

    def __post_init__(self) -> None:
        check_aware("expires_at", self.expires_at)
        check_aware("created_at", self.created_at)


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationRecord:
    """A stored credential operation and, once finished, its response."""

    id: int
    device_id: str
    rid: str
    correlation_id: str
    state: OperationState
    csr_der: bytes
    certificate_serial: str | None
    response_status: int | None
    response_body: Any
    delivered: bool
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """One entry to append to the audit log."""

    at: dt.datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_aware("at", self.at)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """An audit log entry as stored; ``id`` grows with insertion order."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    reason: str | None
    details: Mapping[str, Any]
