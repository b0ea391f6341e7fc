"""SAS authentication and authorization of the service API, as IoT Hub does it.

``Authorization: SharedAccessSignature sr=<urlenc(host[:port][/path])>&sig=…&se=…&skn=<policy>``

* ``skn`` names a shared access policy (``iothubowner``, ``service``, ``registryRead``,
  ``registryReadWrite``); the signature must verify with its primary or secondary key
  (constant-time, :mod:`certhub.sas`); ``se`` must lie in the future.
* ``sr`` must cover the request by segment: ``host:port`` (as the SDKs send it,
  ``quote_plus(host[:port])``) covers every path, ``host:port/devices/d1`` only that
  device's paths. Host names compare case-insensitively; the port is required unless
  the service listens on 443.
* Each route names the permissions that may call it (any one suffices); a valid token
  of a policy without one of them is refused with 403.

Policy rights (IoT Hub's, plus certhub's admin API)::

    iothubowner        RegistryRead RegistryWrite ServiceConnect DeviceConnect CerthubAdmin
    service            ServiceConnect
    registryRead       RegistryRead
    registryReadWrite  RegistryRead RegistryWrite
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from certhub.clock import Clock
from certhub.sas import SasError, SasToken, parse_sas_token, resource_within, verify_sas_token
from certhub.service.errors import Forbidden, Unauthorized

__all__ = [
    "POLICY_PERMISSIONS",
    "Caller",
    "Permission",
    "ServiceAuth",
]


class Permission(StrEnum):
    """Rights a shared access policy grants."""

    REGISTRY_READ = "RegistryRead"
    REGISTRY_WRITE = "RegistryWrite"
    SERVICE_CONNECT = "ServiceConnect"
    DEVICE_CONNECT = "DeviceConnect"
    CERTHUB_ADMIN = "CerthubAdmin"


P = Permission
POLICY_PERMISSIONS: Final[Mapping[str, frozenset[Permission]]] = {
    "iothubowner": frozenset(Permission),
    "service": frozenset({P.SERVICE_CONNECT}),
    "registryRead": frozenset({P.REGISTRY_READ}),
    "registryReadWrite": frozenset({P.REGISTRY_READ, P.REGISTRY_WRITE}),
}

_MESSAGES: Final = {
    "missing": "Authorization header missing",
    "malformed": "the Authorization header is not a SharedAccessSignature token",
    "expired": "the SAS token has expired",
    "wrong-resource": "the SAS token's resource (sr) does not cover this hub and path",
    "wrong-key-name": "the SAS token names no known shared access policy (skn)",
    "signature-mismatch": "the SAS token signature does not match the policy's keys",
}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the policy its token was signed with, and its rights."""

    policy: str
    permissions: frozenset[Permission]


class ServiceAuth:
    """Verifies SAS tokens against the service policies' keys.

    ``keys`` loads ``{policy: {"primaryKey", "secondaryKey"}}`` (from the store's
    settings); it is called again after ``cache_seconds`` through :meth:`refresh`, which
    the server runs off the event loop. ``hosts`` are the names the hub answers to and
    ``port`` the HTTPS port clients put in ``sr``.
    """

    def __init__(
        self,
        keys: Callable[[], Mapping[str, Mapping[str, str]]],
        *,
        hosts: Sequence[str],
        port: int,
        clock: Clock,
        cache_seconds: float = 5.0,
    ) -> None:
        self._load = keys
        self._keys: Mapping[str, Mapping[str, str]] = {}
        self._loaded_at: float | None = None
        self._cache_seconds = cache_seconds
        self.clock = clock
        self.port = port
        names = [h.lower() for h in hosts]
        self.prefixes = [f"{h}:{port}" for h in names] + (names if port == 443 else [])

    def stale(self) -> bool:
        """True when the keys should be read again (call :meth:`refresh`)."""
        loaded = self._loaded_at
        return loaded is None or time.monotonic() - loaded > self._cache_seconds

    def refresh(self) -> None:
        """Read the policies' keys now (blocking)."""
        self._keys = dict(self._load())
        self._loaded_at = time.monotonic()

    def authenticate(self, authorization: str | None, path: str) -> Caller:
        """The caller of a request for ``path``; raises Unauthorized."""
        if not authorization:
            raise _unauthorized("missing")
        if not authorization.strip().startswith("SharedAccessSignature "):
            raise _unauthorized("malformed")
        try:
            token = parse_sas_token(authorization)
        except SasError as exc:
            raise _unauthorized(exc.reason) from exc
        expected = self._expected_resource(token, path)
        policy = token.key_name
        keys = self._keys.get(policy or "")
        if policy is None or keys is None or policy not in POLICY_PERMISSIONS:
            raise _unauthorized("wrong-key-name")
        self._verify(token, keys, expected)
        return Caller(policy, POLICY_PERMISSIONS[policy])

    def _expected_resource(self, token: SasToken, path: str) -> str:
        for prefix in self.prefixes:
            candidate = prefix + path
            if resource_within(token.resource, candidate):
                return candidate
        # Report expiry before a resource mismatch, as verify_sas_token does.
        if token.expiry <= int(self.clock.now().timestamp()):
            raise _unauthorized("expired")
        raise _unauthorized("wrong-resource")

    def _verify(self, token: SasToken, keys: Mapping[str, str], expected: str) -> None:
        now: dt.datetime = self.clock.now()
        error: SasError | None = None
        for name in ("primaryKey", "secondaryKey"):
            key = keys.get(name)
            if not key:
                continue
            try:
                verify_sas_token(
                    token,
                    key,
                    now=now,
                    expected_resource=expected,
                    key_name=token.key_name,
                    require_key_name=True,
                )
                return
            except SasError as exc:
                error = exc
                if exc.reason != "signature-mismatch":
                    break
        raise _unauthorized(error.reason if error else "signature-mismatch")

    @staticmethod
    def authorize(caller: Caller, any_of: Iterable[Permission], operation: str) -> None:
        """Raise Forbidden unless the caller holds one of ``any_of``."""
        wanted = frozenset(any_of)
        if caller.permissions & wanted:
            return
        names = ", ".join(sorted(p.value for p in wanted))
        raise Forbidden(
            f"Authorization rule '{caller.policy}' does not allow access for '{operation}'"
            f" (needs one of: {names})",
            reason="insufficient-permission",
        )


def _unauthorized(reason: str) -> Unauthorized:
    return Unauthorized(_MESSAGES.get(reason, "the SAS token is not valid"), reason=reason)
