"""The shared MQTT-over-TLS listener (port 8883) that carries both IoT Hub device
sessions and DPS registrations.

The listener owns sockets, TLS and the sans-I/O :mod:`certhub.mqtt` session; it hands
each CONNECT to the first :class:`~certhub.listener.api.Frontend` whose
``accepts(connect)`` is true (the username tells DPS from the hub), and from then on
passes that frontend's :class:`~certhub.listener.api.Session` the client's SUBSCRIBE
and PUBLISH packets. Frontends answer through the :class:`~certhub.listener.api.Link`
they are given.
"""

from certhub.listener.api import Frontend, Link, PeerInfo, Refusal, Session

__all__ = ["Frontend", "Link", "PeerInfo", "Refusal", "Session"]
