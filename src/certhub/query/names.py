"""Names the language knows: collections, canonical property names, functions.

IoT Hub treats top-level twin property names case-insensitively (``SELECT DeviceId``
returns ``deviceId``); nested names (inside tags and properties) are JSON keys and stay
case-sensitive, except ``properties.desired``/``properties.reported``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AGGREGATES",
    "COLLECTIONS",
    "COLLECTION_KEYS",
    "FUNCTIONS",
    "FUNCTION_ALIASES",
    "MAX_QUERY_LENGTH",
    "canonical_path",
]

#: IoT Hub rejects longer queries.
MAX_QUERY_LENGTH: Final = 8192

COLLECTIONS: Final = ("devices", "devices.modules", "certificates")

#: The document key of each collection: results are ordered by it, paging follows it.
COLLECTION_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "devices": ("deviceId",),
    "devices.modules": ("deviceId", "moduleId"),
    "certificates": ("serialNumber",),
}

_TWIN_NAMES: Final = (
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
    "statusUpdateTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
    "version",
    "tags",
    "properties",
    "capabilities",
)

_CERTIFICATE_NAMES: Final = (
    "serialNumber",
    "deviceId",
    "policy",
    "notBefore",
    "notAfter",
    "state",
    "issuedVia",
    "thumbprint",
)

_TOP_LEVEL: Final[dict[str, dict[str, str]]] = {
    "devices": {n.lower(): n for n in _TWIN_NAMES},
    "devices.modules": {n.lower(): n for n in _TWIN_NAMES},
    "certificates": {n.lower(): n for n in _CERTIFICATE_NAMES},
}

_PROPERTY_SECTIONS: Final = {"desired": "desired", "reported": "reported"}

#: Scalar functions: canonical name -> number of arguments.
FUNCTIONS: Final[dict[str, int]] = {
    "IS_DEFINED": 1,
    "IS_NULL": 1,
    "IS_STRING": 1,
    "IS_NUMBER": 1,
    "IS_BOOL": 1,
    "IS_OBJECT": 1,
    "IS_ARRAY": 1,
    "IS_PRIMITIVE": 1,
    "STARTSWITH": 2,
    "ENDSWITH": 2,
    "CONTAINS": 2,
    "LOWER": 1,
    "UPPER": 1,
    "LENGTH": 1,
}

#: Both spellings work: twin queries use STARTSWITH, routing queries STARTS_WITH.
FUNCTION_ALIASES: Final[dict[str, str]] = {"STARTS_WITH": "STARTSWITH", "ENDS_WITH": "ENDSWITH"}

#: Aggregates: name -> allowed argument counts.
AGGREGATES: Final[dict[str, tuple[int, ...]]] = {
    "COUNT": (0, 1),
    "AVG": (1,),
    "SUM": (1,),
    "MIN": (1,),
    "MAX": (1,),
}


def canonical_path(collection: str, parts: tuple[str, ...]) -> tuple[str, ...]:
    """Fix the case of the known leading names of a path in ``collection``."""
    first = _TOP_LEVEL[collection].get(parts[0].lower(), parts[0])
    rest = parts[1:]
    if first == "properties" and rest and collection != "certificates":
        rest = (_PROPERTY_SECTIONS.get(rest[0].lower(), rest[0]), *rest[1:])
    return (first, *rest)
