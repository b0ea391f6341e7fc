"""Property tests: garbage only ever raises RemoteProtocolError; valid packets round-trip."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certhub.mqtt import (
    ClientConnection,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    ServerConnection,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies for valid packets ------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
level = st.text(st.characters(codec="utf-8", exclude_characters="\x00/+#"), max_size=6)
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join).filter(bool)
topic_filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(level | st.just("+"), min_size=1, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool)
packet_ids = st.integers(1, 65535)
payloads = st.binary(max_size=300)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.sampled_from([0, 1, 2]))
    return Publish(
        topic=draw(topic_names),
        payload=draw(payloads),
        qos=qos,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(packet_ids) if qos else None,
    )


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    clean = draw(st.booleans())
    username = draw(st.none() | text)
    return Connect(
        client_id=draw(text.filter(lambda s: bool(s) or clean)),
        clean_session=clean,
        keepalive=draw(st.integers(0, 65535)),
        username=username,
        password=None if username is None else draw(st.none() | st.binary(max_size=20)),
        will=draw(
            st.none()
            | st.builds(
                Will,
                topic=topic_names,
                payload=st.binary(max_size=20),
                qos=st.sampled_from([0, 1, 2]),
                retain=st.booleans(),
            )
        ),
    )


@st.composite
def connacks(draw: st.DrawFn) -> ConnAck:
    code = draw(st.sampled_from(list(ConnectReturnCode)))
    return ConnAck(return_code=code, session_present=draw(st.booleans()) if not code else False)


packets: st.SearchStrategy[Packet] = st.one_of(
    connects(),
    connacks(),
    publishes(),
    *(st.builds(cls, packet_id=packet_ids) for cls in (PubAck, PubRec, PubRel, PubComp, UnsubAck)),
    st.builds(
        Subscribe,
        packet_id=packet_ids,
        topics=st.lists(
            st.tuples(topic_filters, st.sampled_from([0, 1, 2])), min_size=1, max_size=4
        ).map(tuple),
    ),
    st.builds(
        SubAck,
        packet_id=packet_ids,
        return_codes=st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        Unsubscribe,
        packet_id=packet_ids,
        topics=st.lists(topic_filters, min_size=1, max_size=4).map(tuple),
    ),
    st.sampled_from([PingReq(), PingResp(), Disconnect()]),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- round trip --------------------------------------------------------------------------


@SETTINGS
@given(st.lists(packets, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=8))
def test_encode_then_decode_round_trips(batch: list[Packet], cuts: list[int]) -> None:
    wire = b"".join(encode(p) for p in batch)
    assert Decoder().feed(wire) == batch
    decoder = Decoder()
    got = [p for chunk in chunked(wire, cuts) for p in decoder.feed(chunk)]
    assert got == batch
    assert decoder.buffered == 0


# --- garbage -----------------------------------------------------------------------------


def feed_all(feed: Callable[[bytes], object], chunks: list[bytes]) -> None:
    """Feed every chunk; only RemoteProtocolError may escape (anything else fails the test)."""
    try:
        for chunk in chunks:
            feed(chunk)
    except RemoteProtocolError:
        pass


@pytest.mark.timeout(60)
@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_arbitrary_bytes_only_raise_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    chunks = chunked(data, cuts)
    feed_all(Decoder(max_packet_size=1024).feed, chunks)
    feed_all(ServerConnection(max_packet_size=1024).receive_data, chunks)
    feed_all(ClientConnection(max_packet_size=1024).receive_data, chunks)


@pytest.mark.timeout(60)
@SETTINGS
@given(
    st.lists(packets, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_corrupted_valid_streams_only_raise_remote_protocol_error(
    batch: list[Packet], edits: list[tuple[int, int]], cuts: list[int]
) -> None:
    wire = bytearray(b"".join(encode(p) for p in batch))
    for where, value in edits:
        wire[where % len(wire)] = value
    chunks = chunked(bytes(wire), cuts)
    feed_all(Decoder().feed, chunks)
    feed_all(ServerConnection().receive_data, chunks)


@pytest.mark.timeout(60)
@SETTINGS
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_garbage_after_connect_only_raises_remote_protocol_error(
    data: bytes, cuts: list[int]
) -> None:
    conn = ServerConnection()
    conn.receive_data(encode(Connect(client_id="dev-1")))
    conn.send(ConnAck())
    feed_all(conn.receive_data, chunked(data, cuts))
