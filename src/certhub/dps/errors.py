"""Errors of the provisioning service, each carrying its DPS wire error code.

::

    DpsError                    base; ``error_code`` (6 digits), ``status`` (= code // 1000),
     │                          ``reason`` (machine-readable), ``retry_after`` (seconds or None)
     ├── BadRequest             400xxx: malformed body, registration id, CSR, api-version
     ├── Unauthorized           401xxx: missing or failed attestation (bad SAS, wrong cert)
     ├── NotFound               404xxx: unknown ID scope, enrollment, operation, registration
     ├── Conflict               409xxx: the device id belongs to another namespace
     ├── Throttled              429xxx: above the registration rate (``retry_after`` set)
     └── InternalError          500xxx: the store or the authority failed unexpectedly

Errors from the store, the authority and the SAS module are translated to these at
the service boundary (``raise … from exc``). The code table is certhub's lenient
reading of DPS (only ``401002`` is confirmed by Azure sources); see docs/dps.md.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CODES",
    "BadRequest",
    "Conflict",
    "DpsError",
    "InternalError",
    "NotFound",
    "Throttled",
    "Unauthorized",
]

#: errorCode -> short name (the table in docs/dps.md).
CODES: dict[int, str] = {
    400001: "InvalidRequestBody",
    400002: "InvalidRegistrationId",
    400003: "CsrNotSupported",
    400004: "CsrRejected",
    400005: "NoCredentialPolicy",
    401001: "MissingCredential",
    401002: "AttestationFailed",
    401003: "EnrollmentDisabled",
    401004: "DeviceDisabled",
    404001: "EnrollmentNotFound",
    404002: "OperationNotFound",
    404003: "RegistrationNotFound",
    404004: "IdScopeNotFound",
    409001: "DeviceConflict",
    429001: "Throttled",
    500001: "InternalServerError",
}


class DpsError(Exception):
    """A refused DPS request; ``error_code`` is what goes on the wire."""

    default_code: ClassVar[int] = 500001

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        error_code: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.error_code = error_code or self.default_code
        self.retry_after = retry_after
        if self.error_code // 1000 != self.default_code // 1000:
            raise ValueError(f"{type(self).__name__} cannot carry errorCode {self.error_code}")

    @property
    def status(self) -> int:
        """The HTTP (and MQTT topic) status: ``error_code // 1000``."""
        return self.error_code // 1000

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_code}, reason={self.reason!r})"


class BadRequest(DpsError):
    """400: the request is malformed or carries a CSR the authority refused."""

    default_code = 400001


class Unauthorized(DpsError):
    """401: no credential, or the attestation did not verify."""

    default_code = 401002


class NotFound(DpsError):
    """404: unknown ID scope, enrollment, operation or registration."""

    default_code = 404001


class Conflict(DpsError):
    """409: the request clashes with existing data."""

    default_code = 409001


class Throttled(DpsError):
    """429: above the registration rate; retry after ``retry_after`` seconds."""

    default_code = 429001


class InternalError(DpsError):
    """500: an unexpected failure behind the service."""

    default_code = 500001
