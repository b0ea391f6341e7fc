"""Topic filter matching, topic validation, IoT Hub property bags and query strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certhub.mqtt import (
    LocalProtocolError,
    format_property_bag,
    parse_property_bag,
    split_query,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

MATCHES = [
    # MQTT 3.1.1 §4.7 examples
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("ACCOUNTS", "Accounts", False),
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    # $-topics are not matched by a leading wildcard (MQTT-4.7.2-1)
    ("#", "$SYS/broker", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    # IoT Hub subscriptions
    ("devices/d1/messages/devicebound/#", "devices/d1/messages/devicebound/%24.mid=1", True),
    ("devices/+/messages/devicebound/#", "devices/d1/messages/devicebound/", True),
    ("devices/d1/messages/devicebound/#", "devices/d2/messages/devicebound/x", False),
    ("devices/d1/modules/m1/inputs/#", "devices/d1/modules/m1/inputs/in1/%24.to=x", True),
    ("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", True),
    (
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/twin/PATCH/properties/desired/?$version=4",
        True,
    ),
    ("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1", True),
    ("$iothub/methods/POST/#", "$iothub/twin/res/200/?$rid=1", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "topic", "rule"),
    [
        pytest.param("a/b#", "a/b", "MQTT-4.7.1-2", id="reject/hash-inside-level"),
        pytest.param("#/a", "a", "MQTT-4.7.1-2", id="reject/hash-not-last"),
        pytest.param("a/+b", "a/b", "MQTT-4.7.1-3", id="reject/plus-inside-level"),
        pytest.param("", "a", "MQTT-4.7.3-1", id="reject/empty-filter"),
        pytest.param("a", "", "MQTT-4.7.3-1", id="reject/empty-topic"),
        pytest.param("a/+", "a/+", "MQTT-3.3.2-2", id="reject/wildcard-topic"),
        pytest.param("a\x00", "a", "MQTT-1.5.3-2", id="reject/nul-filter"),
    ],
)
def test_topic_matches_rejects_invalid_arguments(topic_filter: str, topic: str, rule: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        topic_matches(topic_filter, topic)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    "topic_filter", ["#", "+", "+/+", "a/#", "/#", "+/#", "a//b", "/", "$iothub/twin/res/#"]
)
def test_valid_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic", ["/", "a//b", "$iothub/twin/GET/?$rid=1", "é/✓"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


level = st.text(st.characters(codec="utf-8", exclude_characters="\x00/+#"), max_size=4)


@settings(max_examples=100)
@given(st.lists(level, min_size=1, max_size=5).filter(lambda ls: "/".join(ls) != ""))
def test_a_topic_matches_itself_and_hash(levels: list[str]) -> None:
    topic = "/".join(levels)
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic) is not topic.startswith("$")
    plus = "/".join("+" for _ in levels)
    assert topic_matches(plus, topic) is not topic.startswith("$")


# --- property bags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=full",
            {"$.mid": "abc", "$.ct": "application/json", "$.ce": "utf-8", "iothub-ack": "full"},
            id="encoded-system-keys",
        ),
        pytest.param("$.mid=abc&$.cid=x", {"$.mid": "abc", "$.cid": "x"}, id="literal-dollar"),
        pytest.param("flag&empty=&k=v", {"flag": None, "empty": "", "k": "v"}, id="null-vs-empty"),
        pytest.param("", {}, id="empty"),
        pytest.param("a=1&&b=2&", {"a": "1", "b": "2"}, id="empty-segments"),
        pytest.param("a=x%3Dy%26z", {"a": "x=y&z"}, id="escaped-separators"),
        pytest.param("a=b=c", {"a": "b=c"}, id="raw-equals-in-value"),
        pytest.param("a=1+2%20", {"a": "1+2 "}, id="plus-is-not-space"),
        pytest.param("a=1&a=2", {"a": "2"}, id="last-wins"),
        pytest.param(
            "%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound",
            {"$.to": "/devices/d/messages/deviceBound"},
            id="c2d-to",
        ),
    ],
)
def test_parse_property_bag(text: str, expected: dict[str, str | None]) -> None:
    assert parse_property_bag(text) == expected


@pytest.mark.parametrize(
    ("bag", "expected"),
    [
        pytest.param(
            {"$.mid": "abc", "$.ct": "application/json", "iothub-ack": "full"},
            "%24.mid=abc&%24.ct=application%2Fjson&iothub-ack=full",
            id="system-keys",
        ),
        pytest.param({"flag": None, "empty": ""}, "flag&empty=", id="null-vs-empty"),
        pytest.param({"k": "a&b=c d+e#f/g"}, "k=a%26b%3Dc%20d%2Be%23f%2Fg", id="escapes"),
        pytest.param({}, "", id="empty"),
    ],
)
def test_format_property_bag(bag: dict[str, str | None], expected: str) -> None:
    assert format_property_bag(bag) == expected
    assert parse_property_bag(expected) == bag


def test_format_property_bag_rejects_empty_key() -> None:
    with pytest.raises(LocalProtocolError, match="key must not be empty"):
        format_property_bag({"": "x"})


@settings(max_examples=100)
@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
        st.none() | st.text(st.characters(codec="utf-8"), max_size=8),
        max_size=5,
    )
)
def test_property_bag_round_trips_and_is_a_valid_topic_level(bag: dict[str, str | None]) -> None:
    text = format_property_bag(bag)
    assert parse_property_bag(text) == bag
    assert not set(text) & set("/+#\x00")


@pytest.mark.parametrize(
    ("topic", "path", "query"),
    [
        (
            "$iothub/twin/res/200/?$rid=1&$version=3",
            "$iothub/twin/res/200/",
            {"$rid": "1", "$version": "3"},
        ),
        (
            "$iothub/twin/res/204/?$rid=2&$version=5",
            "$iothub/twin/res/204/",
            {"$rid": "2", "$version": "5"},
        ),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=12",
            "$iothub/twin/PATCH/properties/desired/",
            {"$version": "12"},
        ),
        ("$iothub/methods/POST/reboot/?$rid=7", "$iothub/methods/POST/reboot/", {"$rid": "7"}),
        (
            "$iothub/credentials/POST/issueCertificate/?$rid=abc",
            "$iothub/credentials/POST/issueCertificate/",
            {"$rid": "abc"},
        ),
        (
            "$dps/registrations/res/202/?$rid=1&retry-after=3",
            "$dps/registrations/res/202/",
            {"$rid": "1", "retry-after": "3"},
        ),
        ("$iothub/twin/GET/?$rid=", "$iothub/twin/GET/", {"$rid": ""}),
        ("devices/d/messages/events/", "devices/d/messages/events/", {}),
    ],
)
def test_split_query(topic: str, path: str, query: dict[str, str | None]) -> None:
    assert split_query(topic) == (path, query)
