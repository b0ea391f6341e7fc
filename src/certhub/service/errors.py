"""Errors of the HTTPS service API, rendered the way IoT Hub renders them.

Exception tree::

    ServiceError                 base; ``status`` (HTTP), ``code`` (IoT Hub error code
    │                            name, also sent as header ``iothub-errorcode``),
    │                            ``number`` (its six-digit form), ``reason`` (certhub's
    │                            machine-readable detail, header ``certhub-reason``)
    ├── BadRequest               400 ArgumentInvalid: malformed JSON, bad field, bad query
    ├── Unauthorized             401 IotHubUnauthorizedAccess: missing/invalid SAS token
    ├── Forbidden                403 IotHubUnauthorizedAccess: the policy lacks the right
    ├── NotFound                 404 DeviceNotFound (or another ``code``)
    ├── DeviceOffline            404 DeviceNotOnline: a method needs a live session
    ├── AlreadyExists            409 DeviceAlreadyExists
    ├── PreconditionFailed       412 PreconditionFailed: ``If-Match`` etag is not current
    ├── GatewayTimeout           504 GatewayTimeout: the device did not answer in time
    └── NotImplementedYet        501 NotImplemented: a placeholder for a later issue

The body is IoT Hub's: ``{"Message": "ErrorCode:<code>;<text>", "ExceptionMessage":
"Tracking ID:<id>-TimeStamp:<utc>", "errorCode": <number>}``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "DeviceOffline",
    "Forbidden",
    "GatewayTimeout",
    "NotFound",
    "NotImplementedYet",
    "PreconditionFailed",
    "ServiceError",
    "Unauthorized",
    "error_body",
]


class ServiceError(Exception):
    """An error the service API answers with; see the module docstring."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "ServerError"
    numbers: ClassVar[dict[str, int]] = {
        "ArgumentInvalid": 400004,
        "IotHubUnauthorizedAccess": 401002,
        "DeviceNotFound": 404001,
        "JobNotFound": 404002,
        "DeviceNotOnline": 404103,
        "DeviceAlreadyExists": 409001,
        "PreconditionFailed": 412001,
        "ServerError": 500001,
        "NotImplemented": 501001,
        "GatewayTimeout": 504101,
    }

    def __init__(self, message: str, *, reason: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code or self.default_code

    @property
    def number(self) -> int:
        """The six-digit IoT Hub error number (``status * 1000 + 1`` when unknown)."""
        return self.numbers.get(self.code, self.status * 1000 + 1)

    def headers(self) -> dict[str, str]:
        """Response headers: ``iothub-errorcode`` and ``certhub-reason``."""
        return {"iothub-errorcode": self.code, "certhub-reason": self.reason}


class BadRequest(ServiceError):
    """400: the request cannot be used as sent."""

    status = 400
    default_code = "ArgumentInvalid"


class Unauthorized(ServiceError):
    """401: no valid SAS token."""

    status = 401
    default_code = "IotHubUnauthorizedAccess"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": "SharedAccessSignature"}


class Forbidden(ServiceError):
    """403: a valid token whose policy does not grant the operation."""

    status = 403
    default_code = "IotHubUnauthorizedAccess"


class NotFound(ServiceError):
    """404: the addressed entity does not exist."""

    status = 404
    default_code = "DeviceNotFound"


class DeviceOffline(ServiceError):
    """404: the device has no live session (direct methods)."""

    status = 404
    default_code = "DeviceNotOnline"


class AlreadyExists(ServiceError):
    """409: the entity exists already."""

    status = 409
    default_code = "DeviceAlreadyExists"


class PreconditionFailed(ServiceError):
    """412: the ``If-Match`` etag is not the current one."""

    status = 412
    default_code = "PreconditionFailed"


class GatewayTimeout(ServiceError):
    """504: the device did not answer within the timeout."""

    status = 504
    default_code = "GatewayTimeout"


class NotImplementedYet(ServiceError):
    """501: the operation is planned for a later issue."""

    status = 501
    default_code = "NotImplemented"


def error_body(error: ServiceError, now: dt.datetime | None = None) -> dict[str, Any]:
    """The IoT Hub error body for ``error``."""
    at = (now or dt.datetime.now(dt.UTC)).strftime("%m/%d/%Y %H:%M:%S")
    tracking = uuid.uuid4().hex
    return {
        "Message": f"ErrorCode:{error.code};{error.message}",
        "ExceptionMessage": f"Tracking ID:{tracking}-TimeStamp:{at}",
        "errorCode": error.number,
    }
