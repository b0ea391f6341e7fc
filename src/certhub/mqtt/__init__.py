"""certhub's sans-I/O MQTT 3.1.1: packets, codec, connection state machines, topic helpers.

Bytes in, packets out; no sockets, TLS, threads or event loop (the hub's listener and the
device agent are thin adapters)::

    conn = ServerConnection()
    for packet in conn.receive_data(chunk):   # RemoteProtocolError: write, then close
        ...
        conn.send(ConnAck())
    transport.write(conn.data_to_send())

Modules: :mod:`.packets` (frozen validated packet classes), :mod:`.codec` (``encode``,
``Decoder``), :mod:`.session` (the transition table, ``ServerConnection``,
``ClientConnection``), :mod:`.topics` (filters, IoT Hub property bags), :mod:`.errors`.
"""

from certhub.mqtt.codec import DEFAULT_MAX_PACKET_SIZE, MAX_REMAINING_LENGTH, Decoder, encode
from certhub.mqtt.errors import LocalProtocolError, MqttError, RemoteProtocolError
from certhub.mqtt.packets import (
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    SubAckReturnCode,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from certhub.mqtt.session import (
    KEEPALIVE_TIMEOUT_CAP,
    TRANSITIONS,
    ClientConnection,
    Role,
    ServerConnection,
    State,
)
from certhub.mqtt.topics import (
    format_property_bag,
    parse_property_bag,
    split_query,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "KEEPALIVE_TIMEOUT_CAP",
    "MAX_REMAINING_LENGTH",
    "TRANSITIONS",
    "ClientConnection",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Decoder",
    "Disconnect",
    "LocalProtocolError",
    "MqttError",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "RemoteProtocolError",
    "Role",
    "ServerConnection",
    "State",
    "SubAck",
    "SubAckReturnCode",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode",
    "format_property_bag",
    "parse_property_bag",
    "split_query",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]
