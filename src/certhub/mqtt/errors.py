"""Errors of the MQTT codec and session.

Exception tree::

    MqttError                      base; fields: rule, packet_type, state, connack_code
    ├── RemoteProtocolError        the peer broke the protocol: close the connection
    │                              (after a CONNACK with ``connack_code`` when it is set)
    └── LocalProtocolError         our own code misused the API (a bug): an invalid packet,
                                   or a send that is illegal in the current state

``rule`` is the MQTT 3.1.1 normative statement broken (``"MQTT-3.1.2-3"``) or the spec section
(``"§2.2.3"``) when the statement has no number. ``packet_type`` and ``state`` are names
(``"PUBLISH"``, ``"CONNECTED"``) and appear in the message too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certhub.mqtt.packets import ConnectReturnCode

__all__ = ["LocalProtocolError", "MqttError", "RemoteProtocolError"]


class MqttError(Exception):
    """Base of every error raised by :mod:`certhub.mqtt`.

    ``connack_code`` is the CONNACK return code the violation maps to, or None when the
    right answer is simply to close the connection.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        packet_type: str | None = None,
        state: str | None = None,
        connack_code: ConnectReturnCode | None = None,
    ) -> None:
        self.message = message
        self.rule = rule
        self.packet_type = packet_type
        self.state = state
        self.connack_code = connack_code
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.packet_type is not None:
            text = f"{self.packet_type}: {text}"
        if self.state is not None:
            text = f"{text} (state {self.state})"
        if self.rule is not None:
            text = f"{text} [{self.rule}]"
        return text


class RemoteProtocolError(MqttError):
    """The peer broke the protocol; the connection must be closed.

    When ``connack_code`` is set the right answer is a CONNACK with that code before closing
    (a :class:`~certhub.mqtt.session.ServerConnection` has already queued it).
    """

    @classmethod
    def from_error(cls, exc: MqttError, *, state: str | None = None) -> RemoteProtocolError:
        """The same violation as ``exc``, committed by the peer, optionally naming the state.

        Used when a value off the wire fails a packet's validation, and by the session to add
        its state to a decoding error.
        """
        return cls(
            exc.message,
            rule=exc.rule,
            packet_type=exc.packet_type,
            state=state if state is not None else exc.state,
            connack_code=exc.connack_code,
        )


class LocalProtocolError(MqttError):
    """Our code misused the API: a bug on this side, never caused by the peer's bytes."""
