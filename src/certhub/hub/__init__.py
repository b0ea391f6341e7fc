"""The IoT Hub device endpoint: authentication, sessions and topics on the shared listener.

* :class:`HubFrontend` — the listener frontend for ``{host}/{deviceId}/?api-version=…``:
  X.509 (policy issuing CA, self-signed thumbprint) and SAS authentication, one session per
  device, reactions to the store's change feed.
* :class:`HubService` — the service side: twins, desired patches, direct methods,
  cloud-to-device messages, the telemetry buffer.
* :class:`EventPoller` — follows the store's ``events`` table (every ~200 ms).
* Pure modules: :mod:`.twin` (twin semantics), :mod:`.topics`, :mod:`.auth`.

Scope on several nodes: a disable/delete/revocation and a desired patch reach the device's
session on any node (through ``events``); direct methods and cloud-to-device messages are
served by the node that holds the session, and the "one connection per device" rule holds
per node.
"""

from certhub.hub.errors import (
    DeviceNotConnected,
    DeviceNotFound,
    HubError,
    MethodTimeout,
    TwinError,
)
from certhub.hub.events import EventCursor, EventPoller
from certhub.hub.frontend import HubFrontend, Runner
from certhub.hub.service import HubService
from certhub.hub.telemetry import TelemetryBuffer, TelemetryMessage

__all__ = [
    "DeviceNotConnected",
    "DeviceNotFound",
    "EventCursor",
    "EventPoller",
    "HubError",
    "HubFrontend",
    "HubService",
    "MethodTimeout",
    "Runner",
    "TelemetryBuffer",
    "TelemetryMessage",
    "TwinError",
]
