"""The IoT Hub device endpoint: authentication, sessions and topics on the shared listener.

* :class:`HubFrontend` — the listener frontend for ``{host}/{deviceId}/?api-version=…``:
  X.509 (policy issuing CA, self-signed thumbprint) and SAS authentication, one session per
  device, reactions to the store's change feed.
* :class:`HubService` — the service side: twins, desired patches, direct methods,
  cloud-to-device messages, the telemetry buffer.
* :class:`EventPoller` — follows the store's ``events`` table (every ~200 ms).
* Pure modules: :mod:`.twin` (twin semantics), :mod:`.topics`, :mod:`.auth`.
* The frontend's collaborators: :mod:`.admission` (the CONNECT path), :mod:`.sessions`
  (live and remote sessions), :mod:`.presence` (connection state written behind),
  :mod:`.changes` (the change-feed reaction), :mod:`.c2d` (cloud-to-device queues).

Scope on several nodes: a disable/delete/revocation and a desired patch reach the device's
session on any node (through ``events``); while other nodes are live, direct methods,
cloud-to-device messages, renewal responses and "one connection per device" are relayed
through ``events`` too (:mod:`.relay`, ``docs/scale-out.md``).
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
