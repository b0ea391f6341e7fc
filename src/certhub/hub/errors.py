"""Errors of the hub.

Exception tree::

    HubError                     base
    ├── TwinError                a twin request is refused: ``status`` (the IoT Hub
    │                            status code, 400) and ``reason`` ("malformed-json",
    │                            "not-an-object", "too-large", "too-deep", "invalid-key")
    ├── DeviceNotConnected       a service call needs the device's live session:
    │                            ``device_id``, ``reason`` ("offline", "not-subscribed",
    │                            "disconnected")
    ├── MethodTimeout            the device did not answer a direct method in time:
    │                            ``device_id``, ``method``, ``timeout``
    └── DeviceNotFound           no such device: ``device_id``

Store errors (:mod:`certhub.registry.errors`) are translated at the service boundary.
"""

from __future__ import annotations

__all__ = ["DeviceNotConnected", "DeviceNotFound", "HubError", "MethodTimeout", "TwinError"]


class HubError(Exception):
    """Base of the errors the hub raises on purpose."""


class TwinError(HubError):
    """A twin request the hub refuses; ``status`` goes on the response topic."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class DeviceNotConnected(HubError):
    """The device has no live session here (or has not subscribed to what is needed)."""

    def __init__(self, device_id: str, reason: str = "offline") -> None:
        super().__init__(f"device {device_id!r} is not connected ({reason})")
        self.device_id = device_id
        self.reason = reason


class MethodTimeout(HubError):
    """The device did not answer a direct method within the timeout."""

    def __init__(self, device_id: str, method: str, timeout: float) -> None:
        super().__init__(f"device {device_id!r} did not answer {method!r} within {timeout} s")
        self.device_id = device_id
        self.method = method
        self.timeout = timeout


class DeviceNotFound(HubError):
    """No device with this id exists."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} not found")
        self.device_id = device_id
