"""What the service API needs from the hub, as a protocol the wiring fills in.

The service layer never imports :mod:`certhub.hub` (the two meet only in the wiring,
:mod:`certhub.service_hub`): twin reads and writes (with the hub's twin rules and the
``twin.desired`` change event that reaches the device's session on any node), direct
methods and cloud-to-device messages go through a :class:`HubGateway`.

Gateways raise the errors of :mod:`certhub.service.errors`: NotFound (no such
device), PreconditionFailed (etag), BadRequest (a patch the twin rules refuse),
DeviceOffline and GatewayTimeout (methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["HubGateway", "MethodResult", "TwinChange"]


@dataclass(frozen=True, kw_only=True)
class TwinChange:
    """A service-side twin write.

    ``replace`` False merges ``tags``/``desired`` as JSON merge patches (``null``
    deletes); True replaces them whole. None leaves a section alone. ``expected_etag``
    None or ``"*"`` skips the etag check.
    """

    tags: Mapping[str, Any] | None = None
    desired: Mapping[str, Any] | None = None
    replace: bool = False
    expected_etag: str | None = None


@dataclass(frozen=True, kw_only=True)
class MethodResult:
    """A direct method's answer: the device's status and JSON payload."""

    status: int
    payload: Any


class HubGateway(Protocol):
    """The hub's service-side operations as the REST API uses them."""

    def is_connected(self, device_id: str) -> bool:
        """True when the device has a live session this process can reach."""
        ...

    async def get_twin(self, device_id: str) -> dict[str, Any]:
        """``{"etag", "version", "tags", "properties": {"desired", "reported"}}``.

        Sections carry ``$metadata`` and ``$version`` as IoT Hub shows them.
        """
        ...

    async def update_twin(self, device_id: str, change: TwinChange) -> dict[str, Any]:
        """Apply ``change`` in one transaction and return the twin as :meth:`get_twin`."""
        ...

    async def invoke_method(
        self, device_id: str, name: str, payload: Any, timeout: float
    ) -> MethodResult:
        """Call a direct method on the device's live session."""
        ...

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> bool:
        """Send a cloud-to-device message; True when delivered to a live session now."""
        ...
