"""Errors of renewal through the hub: each one is a credentials-API error response.

::

    RenewalError                 base; ``error_code`` (6 digits), ``message``, ``info``,
     │                           ``retry_after`` (seconds or None); ``status`` = code // 1000
     ├── RequestInvalid          400004  the request body is not {"id", "csr", "replace"}
     ├── CsrRefused              400040  the authority refused the CSR (``reason``,
     │                                   ``credential_error``)
     ├── NotAuthenticatedDevice  401002  ``id`` is not the device that is connected
     ├── DeviceMissing           404001  the device does not exist (any more)
     ├── OperationActive         409005  another operation is active (``request_id``,
     │                                   ``operation_expires``): use ``replace``
     ├── ReplaceMismatch         412001  ``replace`` names no active request
     ├── NotCertificateManaged   412005  the device has no credential policy
     ├── Throttled               429002  over the admission rate (``retry_after``)
     └── ServerError             500001  the store failed; retry (``retry_after``)

Configuration, not the wire, has its own small root::

    RenewalSettingInvalid (ValueError)  a ``renewal.*`` setting of the store's ``settings``
                                        table cannot be used (``key``, ``value``, ``reason``)

The wire errors are values as much as exceptions: the service turns each into the error body of
the wire protocol (:func:`certhub.renewal.wire.error_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CsrRefused",
    "DeviceMissing",
    "NotAuthenticatedDevice",
    "NotCertificateManaged",
    "OperationActive",
    "RenewalError",
    "RenewalSettingInvalid",
    "ReplaceMismatch",
    "RequestInvalid",
    "ServerError",
    "Throttled",
]


class RenewalError(Exception):
    """A credentials-API error: the code, message and ``info`` members of its body."""

    error_code = 500001

    def __init__(
        self,
        message: str,
        *,
        info: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.message = message
        self.info: dict[str, Any] = dict(info or {})
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def status(self) -> int:
        """The status in the response topic (``errorCode / 1000``)."""
        return self.error_code // 1000

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_code}, {self.message!r})"


class RequestInvalid(RenewalError):
    """The body is not JSON, or ``id``/``csr``/``replace`` are missing or mistyped."""

    error_code = 400004


class CsrRefused(RenewalError):
    """The authority refused the CSR; ``reason`` is the pki reason."""

    error_code = 400040

    def __init__(self, reason: str, credential_error: str, message: str) -> None:
        self.reason = reason
        self.credential_error = credential_error
        info = {"credentialError": credential_error, "credentialMessage": message}
        super().__init__("A Certificate signing request operation failed", info=info)


class NotAuthenticatedDevice(RenewalError):
    """``id`` names a device other than the one that is connected."""

    error_code = 401002


class DeviceMissing(RenewalError):
    """The device does not exist."""

    error_code = 404001


class OperationActive(RenewalError):
    """Another operation of the device is active."""

    error_code = 409005

    def __init__(self, request_id: str, operation_expires: str) -> None:
        self.request_id = request_id
        self.operation_expires = operation_expires
        super().__init__(
            f"credential operation {request_id!r} is active; send replace to replace it",
            info={"requestId": request_id, "operationExpires": operation_expires},
        )


class ReplaceMismatch(RenewalError):
    """``replace`` names a request that is not the device's active one."""

    error_code = 412001


class NotCertificateManaged(RenewalError):
    """The device has no credential policy, so nothing can be issued for it."""

    error_code = 412005


class Throttled(RenewalError):
    """Over the admission rate; ``retry_after`` lands inside the device's window."""

    error_code = 429002

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Too many certificate renewals right now; retry later", retry_after=retry_after
        )


class ServerError(RenewalError):
    """A transient failure (the store); retry after ``retry_after`` seconds."""

    error_code = 500001


class RenewalSettingInvalid(ValueError):
    """A ``renewal.*`` setting cannot be used: ``key``, the stored ``value``, ``reason``."""

    def __init__(self, key: str, value: str, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"setting {key}={value!r}: {reason}")
