"""The listener's TLS server contexts and their replacement when the trusted CAs change.

A listening server is bound to one :class:`ssl.SSLContext`, but the CAs it trusts change
at runtime (a new policy, a rotated issuing CA, an onboarding CA). OpenSSL offers one
hook that runs inside every handshake before the client certificate is verified: the
servername callback, which OpenSSL 1.1.1+ calls whether or not the client sent SNI
(``server_name`` is then None). :class:`ServerTls` installs it on the context the
server was started with and, in it, points the connection at the newest context
(``ssl_object.context = current``), whose certificate store is the one used to verify
the client. Rebuilding is a few milliseconds; connections already established keep
their context. The callback is installed on the first change only: until then every
handshake uses the base context and pays no Python call. These contexts serve HTTPS
(DPS over HTTPS, the service API) and the MQTT listener when it runs on the event
loop's TLS (``handshake_threads=0``). The MQTT listener's own transport (the default)
uses :attr:`ServerTls.listener_context` instead, which accepts any client certificate
and leaves its authentication to the frontends (:mod:`certhub.listener._tls`).

Every context: TLS 1.2 and 1.3, server certificate chain from files, client certificate
requested but optional (``CERT_OPTIONAL``), ``VERIFY_X509_PARTIAL_CHAIN`` (a chain may
end at an issuing CA), ``X509_V_FLAG_NO_CHECK_TIME`` (frontends check validity with
their own clock and refuse with a CONNACK) and no session tickets: ``num_tickets = 0``
for TLS 1.3 and ``OP_NO_TICKET`` for TLS 1.2, where OpenSSL would otherwise encrypt the
session (with the client's certificate chain) into a ticket on every full handshake with
a client that offers the extension, as the Azure device SDKs do (~0.1 ms of server CPU
each, measured; nothing resumes sessions).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path

from OpenSSL import SSL

from certhub.listener._tls import build_listener_context

__all__ = ["X509_V_FLAG_NO_CHECK_TIME", "ServerTls", "build_server_context"]

log = logging.getLogger("certhub.listener")

X509_V_FLAG_NO_CHECK_TIME = 0x200000
"""OpenSSL's flag to skip validity-period checks while verifying (not exported by ssl)."""


def build_server_context(
    cert_file: Path, key_file: Path, trust_pems: Sequence[str]
) -> ssl.SSLContext:
    """A server context trusting exactly ``trust_pems`` (PEM certificates) for clients."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags = (
        context.verify_flags | ssl.VERIFY_X509_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME
    )
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    cadata = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in trust_pems)
    if not cadata:
        return context
    try:
        context.load_verify_locations(cadata=cadata)
    except ssl.SSLError:  # one bad PEM (e.g. in an enrollment) must not drop the others
        for pem in trust_pems:
            try:
                context.load_verify_locations(cadata=pem)
            except ssl.SSLError as exc:
                log.warning("ignoring an unreadable trusted certificate: %s", exc)
    return context


class ServerTls:
    """The context a server starts with, whose handshakes use the newest trust store."""

    def __init__(self, cert_file: Path, key_file: Path, trust_pems: Sequence[str]) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._lock = threading.Lock()
        self._trust = tuple(trust_pems)
        self._base = build_server_context(cert_file, key_file, self._trust)
        self._current = self._base  # nothing to switch to until the trust changes
        self._listener_context: SSL.Context | None = None
        self.handshakes_switched = 0
        """Handshakes that the callback pointed at the current context (for tests)."""

    @property
    def context(self) -> ssl.SSLContext:
        """The context to give the listening server (stable for its lifetime)."""
        return self._base

    @property
    def listener_context(self) -> SSL.Context:
        """The MQTT listener's pyOpenSSL context (same endpoint certificate; built once)."""
        if self._listener_context is None:
            self._listener_context = build_listener_context(self._cert_file, self._key_file)
        return self._listener_context

    @property
    def trust_pems(self) -> tuple[str, ...]:
        """The PEM certificates new handshakes trust."""
        return self._trust

    def update_trust(self, trust_pems: Sequence[str]) -> bool:
        """Trust ``trust_pems`` from the next handshake on; False when nothing changed."""
        trust = tuple(trust_pems)
        with self._lock:
            if trust == self._trust:
                return False
            context = build_server_context(self._cert_file, self._key_file, trust)
            self._current, self._trust = context, trust
            if self._base.sni_callback is None:
                self._base.sni_callback = self._on_hello
            return True

    def _on_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        current = self._current
        if ssl_object.context is not current:
            ssl_object.context = current
            self.handshakes_switched += 1
