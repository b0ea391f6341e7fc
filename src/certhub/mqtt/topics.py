"""Topic names, topic filters and IoT Hub property bags.

* :func:`topic_matches` — MQTT 3.1.1 filter matching (``+`` one level, ``#`` the rest,
  ``$``-topics not matched by a leading wildcard, MQTT-4.7.2-1).
* :func:`parse_property_bag` / :func:`format_property_bag` — IoT Hub's URL-encoded
  ``k=v&k2=v2`` (a key alone means None, ``key=`` means ""); encoded with
  ``quote(safe="")`` as the Azure SDKs do, so ``$.mid`` goes out as ``%24.mid``.
* :func:`split_query` — ``$iothub/twin/res/200/?$rid=1`` into path and parameters.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from certhub.mqtt._checks import check_string
from certhub.mqtt.errors import LocalProtocolError

__all__ = [
    "format_property_bag",
    "parse_property_bag",
    "split_query",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]


def validate_topic_name(topic: str, packet_type: str | None = None) -> None:
    """Raise :class:`LocalProtocolError` unless ``topic`` is a valid topic name."""
    check_string(topic, "topic name", packet_type)
    if not topic:
        raise LocalProtocolError("empty topic name", rule="MQTT-4.7.3-1", packet_type=packet_type)
    if "+" in topic or "#" in topic:
        raise LocalProtocolError(
            f"wildcard in topic name {topic!r}", rule="MQTT-3.3.2-2", packet_type=packet_type
        )


def validate_topic_filter(topic_filter: str, packet_type: str | None = None) -> None:
    """Raise :class:`LocalProtocolError` unless ``topic_filter`` is a valid topic filter."""
    check_string(topic_filter, "topic filter", packet_type)
    if not topic_filter:
        raise LocalProtocolError("empty topic filter", rule="MQTT-4.7.3-1", packet_type=packet_type)
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise LocalProtocolError(
                f"'#' must be a whole last level in {topic_filter!r}",
                rule="MQTT-4.7.1-2",
                packet_type=packet_type,
            )
        if "+" in level and level != "+":
            raise LocalProtocolError(
                f"'+' must be a whole level in {topic_filter!r}",
                rule="MQTT-4.7.1-3",
                packet_type=packet_type,
            )


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when the topic name ``topic`` matches ``topic_filter``.

    Both are validated first (:class:`LocalProtocolError` on a bad one).
    """
    validate_topic_filter(topic_filter)
    validate_topic_name(topic)
    if topic[0] == "$" and topic_filter[0] in "+#":  # MQTT-4.7.2-1
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for i, want in enumerate(wanted):
        if want == "#":  # also matches the parent level: "a/#" matches "a"
            return True
        if i >= len(levels) or (want != "+" and want != levels[i]):
            return False
    return len(wanted) == len(levels)


def parse_property_bag(text: str) -> dict[str, str | None]:
    """Decode an IoT Hub property bag: ``k=v&flag&empty=`` -> ``{k: v, flag: None, empty: ""}``.

    Keys and values are percent-decoded; empty segments are skipped; a repeated key keeps
    its last value.
    """
    bag: dict[str, str | None] = {}
    for segment in text.split("&"):
        if not segment:
            continue
        key, eq, value = segment.partition("=")
        bag[unquote(key)] = unquote(value) if eq else None
    return bag


def format_property_bag(properties: dict[str, str | None]) -> str:
    """Encode a property bag; the inverse of :func:`parse_property_bag`."""
    parts = []
    for key, value in properties.items():
        if not key:
            raise LocalProtocolError("property bag key must not be empty")
        encoded = quote(key, safe="")
        parts.append(encoded if value is None else f"{encoded}={quote(value, safe='')}")
    return "&".join(parts)


def split_query(topic: str) -> tuple[str, dict[str, str | None]]:
    """Split ``path/?k=v&…`` at the first ``?``: ``("path/", {"k": "v"})``.

    A topic without ``?`` gives ``(topic, {})``.
    """
    path, _, query = topic.partition("?")
    return path, parse_property_bag(query)
