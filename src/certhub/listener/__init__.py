"""The shared MQTT-over-TLS listener (port 8883) that carries both IoT Hub device
sessions and DPS registrations.

The listener owns sockets, TLS and the sans-I/O :mod:`certhub.mqtt` session; it hands
each CONNECT to the first :class:`~certhub.listener.api.Frontend` whose
``accepts(connect)`` is true (the username tells DPS from the hub), and from then on
passes that frontend's :class:`~certhub.listener.api.Session` the client's SUBSCRIBE
and PUBLISH packets. Frontends answer through the :class:`~certhub.listener.api.Link`
they are given.

Modules: :mod:`.api` (the contract), :mod:`.server` (:class:`Listener`), :mod:`.tls`
(contexts, trust replacement at runtime), :mod:`._tls` (the TLS transport whose
handshakes run on worker threads), :mod:`.trust` (the trusted CAs from the store).
"""

from certhub.listener.api import CLIENT_DISCONNECT, Frontend, Link, PeerInfo, Refusal, Session
from certhub.listener.server import Listener
from certhub.listener.tls import ServerTls, build_server_context
from certhub.listener.trust import trust_pems

__all__ = [
    "CLIENT_DISCONNECT",
    "Frontend",
    "Link",
    "Listener",
    "PeerInfo",
    "Refusal",
    "ServerTls",
    "Session",
    "build_server_context",
    "trust_pems",
]
