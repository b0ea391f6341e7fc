"""Errors raised by the certificate authority.

::

    PkiError                   base; every error carries ``reason`` (machine-readable)
     ├── CsrRejected           a device's CSR was refused: "csr-too-large", "csr-malformed",
     │                         "csr-signature-invalid", "cn-missing", "cn-mismatch",
     │                         "key-type-not-allowed", "key-reused"
     ├── PolicyError           a leaf policy or duration is invalid: "validity-out-of-range",
     │                         "no-key-types", "unknown-key-type", "backdate-out-of-range",
     │                         "invalid-name", "invalid-duration"
     ├── PrivateKeyError       a private key cannot be protected or loaded: "empty-passphrase",
     │                         "decrypt-failed" (wrong passphrase or not a key),
     │                         "not-encrypted", "unsupported-key-type"
     └── IssuanceError         the authority cannot issue with the inputs it was given:
                               "ca-key-type-not-allowed", "issuer-not-valid", "invalid-validity",
                               "invalid-revocation-id", "invalid-common-name", "no-hosts",
                               "invalid-host"

Exceptions from ``cryptography`` (``ValueError``, ``TypeError``, ``UnsupportedAlgorithm``)
are translated to these at the package boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["CsrRejected", "IssuanceError", "PkiError", "PolicyError", "PrivateKeyError"]


class PkiError(Exception):
    """Base of every error the PKI package raises on purpose."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        self.message = message or reason
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class CsrRejected(PkiError):
    """A certificate signing request was refused; ``reason`` says which rule failed."""


class PolicyError(PkiError):
    """A leaf policy (or a duration string for one) is invalid."""


class PrivateKeyError(PkiError):
    """A private key could not be encrypted, decrypted or loaded."""


class IssuanceError(PkiError):
    """The authority cannot issue a certificate with the inputs it was given."""
