"""IoT Hub device topics (wire doc §3): what a device may publish and subscribe to, and
the topics the hub answers on. Pure string work.

A device may only use its own topics; anything else closes its connection. Subscriptions
are kept as a small set of flags (one per topic family) rather than filter strings: the
hub only ever publishes into these five families, so a flag says all it needs to know.
Response topics end with the ``$rid`` (and ``$version``) the SDKs parse: nothing after.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "PublishKind",
    "Request",
    "Subscription",
    "c2d_topic",
    "classify_filter",
    "classify_publish",
    "credentials_response_topic",
    "desired_topic",
    "method_request_topic",
    "telemetry_prefix",
    "twin_response_topic",
]

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_PATCH = "$iothub/twin/PATCH/properties/reported/"
_METHOD_RES = "$iothub/methods/res/"
_CREDENTIALS = "$iothub/credentials/POST/"


class Subscription(enum.IntFlag):
    """Topic families a device can subscribe to."""

    NONE = 0
    C2D = 1
    TWIN_RESPONSES = 2
    DESIRED = 4
    METHODS = 8
    CREDENTIALS = 16


class PublishKind(enum.Enum):
    """What a device's PUBLISH asks for (telemetry is recognised before this)."""

    TWIN_GET = "twin-get"
    TWIN_PATCH_REPORTED = "twin-patch-reported"
    METHOD_RESPONSE = "method-response"
    CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class Request:
    """A classified device PUBLISH: its kind, ``$rid`` (as sent), status and operation."""

    kind: PublishKind
    rid: str
    status: int | None = None
    operation: str = ""


def telemetry_prefix(device_id: str) -> str:
    """``devices/{id}/messages/events/``; the property bag follows it."""
    return f"devices/{device_id}/messages/events/"


def _rid(query: str) -> str | None:
    """The raw ``$rid`` value of a topic's query (everything up to the next ``&``)."""
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if key == "$rid" and eq and value:
            return value
    return None


def classify_publish(topic: str) -> Request | None:
    """The request a device PUBLISH to a ``$iothub/…`` topic makes, or None if forbidden."""
    path, sep, query = topic.partition("?")
    if not sep:
        return None
    rid = _rid(query)
    if rid is None:
        return None
    if path == _TWIN_GET:
        return Request(PublishKind.TWIN_GET, rid)
    if path == _TWIN_PATCH:
        return Request(PublishKind.TWIN_PATCH_REPORTED, rid)
    if path.startswith(_METHOD_RES):
        status = path[len(_METHOD_RES) :].rstrip("/")
        if status.isdigit():
            return Request(PublishKind.METHOD_RESPONSE, rid, int(status))
        return None
    if path.startswith(_CREDENTIALS):
        operation = path[len(_CREDENTIALS) :].rstrip("/")
        if operation and "/" not in operation:
            return Request(PublishKind.CREDENTIALS, rid, operation=operation)
    return None


def _families(device_id: str) -> tuple[tuple[str, Subscription], ...]:
    return (
        (f"devices/{device_id}/messages/devicebound/", Subscription.C2D),
        ("devices/+/messages/devicebound/", Subscription.C2D),  # azure-sdk-for-c
        ("$iothub/twin/res/", Subscription.TWIN_RESPONSES),
        ("$iothub/twin/PATCH/properties/desired/", Subscription.DESIRED),
        ("$iothub/methods/POST/", Subscription.METHODS),
        ("$iothub/credentials/res/", Subscription.CREDENTIALS),
        ("$iothub/credential/", Subscription.CREDENTIALS),  # the Learn page's spelling
    )


def classify_filter(device_id: str, topic_filter: str) -> Subscription | None:
    """The family a SUBSCRIBE filter selects, or None when it reaches beyond the device's own.

    A filter is accepted when it starts with a family's base path (``…/#``, ``…/+/#`` or
    an exact topic below it).
    """
    for base, family in _families(device_id):
        if topic_filter.startswith(base) or topic_filter == base.rstrip("/"):
            return family
    return None


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    """``$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]``."""
    topic = f"$iothub/twin/res/{status}/?$rid={rid}"
    return topic if version is None else f"{topic}&$version={version}"


def desired_topic(version: int) -> str:
    """``$iothub/twin/PATCH/properties/desired/?$version={version}``."""
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def method_request_topic(name: str, rid: str) -> str:
    """``$iothub/methods/POST/{name}/?$rid={rid}``."""
    return f"$iothub/methods/POST/{name}/?$rid={rid}"


def c2d_topic(device_id: str, property_bag: str) -> str:
    """``devices/{id}/messages/devicebound/{property_bag}``."""
    return f"devices/{device_id}/messages/devicebound/{property_bag}"


def credentials_response_topic(status: int, rid: str) -> str:
    """``$iothub/credentials/res/{status}/?$rid={rid}``."""
    return f"$iothub/credentials/res/{status}/?$rid={rid}"
