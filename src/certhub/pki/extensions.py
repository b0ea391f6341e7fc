"""The certhub revocation identifier extension.

Every leaf certhub issues carries a per-device random 32-byte value, the device's
*revocation identifier*. The hub compares it with the value stored for the device at
connect time; rotating the stored value therefore invalidates every certificate the
device holds at once. This is how Azure enforces device-level revocation (wire doc §6):
IoT Hub does not consult CRLs at connect.

Choice of OID: ``2.25.183013645863222542283909142398898550952`` — the UUID arc of
ITU-T X.667 / ISO/IEC 9834-8, built from the fixed UUID
``89af2565-7ecf-4d46-b3b7-944240e438a8`` generated once for certhub. The arc needs no
registration and cannot collide with anyone else's OID. Azure's preview service uses
``1.3.6.1.4.1.311.133.1.1.1`` (Microsoft's private arc) for what is very likely the
same purpose; certhub must not issue under another organisation's arc.

Criticality: the extension is **non-critical**. An unknown critical extension makes
``openssl verify`` and other third-party verifiers reject the whole chain ("unhandled
critical extension"), as happens with Azure-issued leaves. The hub enforces the value
itself, so nothing is gained by marking it critical.

Encoding: the extension value is the DER OCTET STRING of the 32 bytes, the same shape
as Azure's. A certificate whose extension is absent or not exactly that shape has no
revocation identifier (:func:`revocation_id_of` returns ``None``), so the hub refuses it.
"""

from __future__ import annotations

from cryptography import x509

from .errors import IssuanceError

__all__ = [
    "REVOCATION_ID_LENGTH",
    "REVOCATION_ID_OID",
    "revocation_id_extension",
    "revocation_id_of",
]

REVOCATION_ID_OID = x509.ObjectIdentifier("2.25.183013645863222542283909142398898550952")
"""OID of the revocation identifier extension (UUID arc, X.667)."""

REVOCATION_ID_LENGTH = 32
"""Length in bytes of a revocation identifier."""

_OCTET_STRING_HEADER = bytes([0x04, REVOCATION_ID_LENGTH])


def revocation_id_extension(value: bytes) -> x509.UnrecognizedExtension:
    """The extension carrying ``value`` (exactly 32 bytes); add it non-critical."""
    if len(value) != REVOCATION_ID_LENGTH:
        raise IssuanceError(
            "invalid-revocation-id",
            f"a revocation identifier is {REVOCATION_ID_LENGTH} bytes, got {len(value)}",
        )
    return x509.UnrecognizedExtension(REVOCATION_ID_OID, _OCTET_STRING_HEADER + value)


def revocation_id_of(cert: x509.Certificate) -> bytes | None:
    """The certificate's revocation identifier, or ``None`` if absent or malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(REVOCATION_ID_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    der = value.value
    if len(der) != len(_OCTET_STRING_HEADER) + REVOCATION_ID_LENGTH:
        return None
    if not der.startswith(_OCTET_STRING_HEADER):
        return None
    return der[len(_OCTET_STRING_HEADER) :]
