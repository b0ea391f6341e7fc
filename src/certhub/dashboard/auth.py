"""Who may use the dashboard: a token derived from the service connection string.

The token is ``base64url(HMAC-SHA256(iothubowner key, "certhub-dashboard/v1"))`` for the
policy's primary or secondary key: whoever holds the owner connection string can derive
it (``certhub demo`` prints it), and rotating the key revokes every token. The page sends
it as ``Authorization: Bearer <token>`` and keeps it in ``sessionStorage``.

Without a token the dashboard is open only when all three hold: the data directory is
in the development profile, the server binds a loopback address, and the request comes
from loopback. It is never open on another interface unless configured so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

__all__ = [
    "OWNER_POLICY",
    "TOKEN_CONTEXT",
    "dashboard_token",
    "is_loopback",
    "token_matches",
]

OWNER_POLICY = "iothubowner"
TOKEN_CONTEXT = b"certhub-dashboard/v1"


def dashboard_token(owner_key_b64: str) -> str:
    """The dashboard token of one ``iothubowner`` key (base64, as in the connection string)."""
    key = base64.b64decode(owner_key_b64)
    mac = hmac.new(key, TOKEN_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_matches(presented: str | None, keys: Mapping[str, Mapping[str, str]]) -> bool:
    """True when ``presented`` is the token of the owner policy's primary or secondary key."""
    if not presented:
        return False
    owner = keys.get(OWNER_POLICY, {})
    ok = False
    for name in ("primaryKey", "secondaryKey"):
        key = owner.get(name)
        if key:
            ok |= hmac.compare_digest(presented.encode(), dashboard_token(key).encode())
    return ok


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
