"""Errors of the device agent.

Exception tree::

    AgentError                     base; field: reason (machine-readable)
    ├── ConfigError                invalid configuration; field: key ("renewal.fraction")
    ├── KeyStoreError              the state directory cannot be read or written; field: path
    ├── TransportError             the server could not be reached or the connection was
    │                              lost or timed out (always transient); field: endpoint
    ├── ProtocolError              the server answered something the agent cannot use
    ├── ConnectionRefused          a CONNACK refused the CONNECT; fields: code, service
    ├── ProvisioningError          DPS answered with an error; fields: status, error_code,
    │                              retry_after, transient
    ├── DeviceDisabled             DPS says the device (or its enrollment) is disabled, or
    │                              the hub refuses a valid certificate and nothing can
    │                              replace it; field: source ("dps" or "hub")
    ├── RenewalError               the hub's credentials API answered with an error;
    │                              fields: status, error_code, retry_after, transient, info
    └── ReonboardRequired          the certificate is unusable and no onboarding credential
                                   can replace it: a person must re-onboard the device

Foreign exceptions (``OSError``, ``ssl.SSLError``, ``ValueError`` from ``cryptography``,
``json`` errors) are translated at the module boundaries with ``raise … from exc``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentError",
    "ConfigError",
    "ConnectionRefused",
    "DeviceDisabled",
    "KeyStoreError",
    "ProtocolError",
    "ProvisioningError",
    "RenewalError",
    "ReonboardRequired",
    "TransportError",
]


class AgentError(Exception):
    """Base of every error the agent raises on purpose; ``reason`` is machine-readable."""

    transient: bool = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ConfigError(AgentError):
    """The configuration is invalid; ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__("invalid-config", f"{key}: {message}")
        self.key = key


class KeyStoreError(AgentError):
    """The state directory (keys, chains, state file) cannot be used."""

    def __init__(self, reason: str, message: str, *, path: str) -> None:
        super().__init__(reason, message)
        self.path = path


class TransportError(AgentError):
    """The endpoint was unreachable, the TLS handshake failed, or the link dropped."""

    transient = True

    def __init__(self, reason: str, message: str, *, endpoint: str = "") -> None:
        super().__init__(reason, message)
        self.endpoint = endpoint


class ProtocolError(AgentError):
    """The server sent something that does not follow the protocol the agent speaks."""

    transient = True


class ConnectionRefused(AgentError):
    """A CONNACK with a non-zero return ``code`` from ``service`` ("hub" or "dps")."""

    def __init__(self, code: int, *, service: str) -> None:
        super().__init__(f"connack-{code}", f"{service} refused the connection (CONNACK {code})")
        self.code = code
        self.service = service
        # 3 = server unavailable: try again later; 1, 2, 4, 5 are about the credential.
        self.transient = code == 3


class ProvisioningError(AgentError):
    """DPS refused or failed a registration."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        retry_after: float | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after
        self.transient = transient


class DeviceDisabled(AgentError):
    """The device may not connect now: DPS answered ``status: disabled`` (``source``
    "dps"), or the hub refused a certificate that is still valid and there is no
    onboarding credential to find out more (``source`` "hub")."""

    def __init__(self, message: str, *, source: str, error_code: int | None = None) -> None:
        super().__init__("device-disabled", message)
        self.source = source
        self.error_code = error_code


class RenewalError(AgentError):
    """The hub's credentials API answered an error (wire doc §2.2 error body)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        retry_after: float | None = None,
        transient: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after
        self.transient = transient
        self.info = info or {}


class ReonboardRequired(AgentError):
    """No usable certificate and no usable onboarding credential: re-onboard the device."""
