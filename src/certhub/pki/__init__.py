"""certhub's certificate authority: CAs, leaf policies, CSR validators and signing.

A pure library: no database, no network. Time and randomness are passed in
(``certhub.clock.Clock``, ``certhub.rand.Random``). Errors form one tree rooted at
:class:`PkiError` (see :mod:`certhub.pki.errors`).
"""

from __future__ import annotations

from .authority import Authority, IssuanceRequest, IssuedLeaf, chain_base64, chain_pem
from .ca import (
    CaKeyPair,
    create_issuing_ca,
    create_root_ca,
    create_server_certificate,
    random_serial,
)
from .errors import CsrRejected, IssuanceError, PkiError, PolicyError, PrivateKeyError
from .extensions import (
    REVOCATION_ID_LENGTH,
    REVOCATION_ID_OID,
    revocation_id_extension,
    revocation_id_of,
)
from .keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    certificate_sha1,
    certificate_sha256,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    key_type_of,
    public_key_sha256,
)
from .policy import LeafPolicy, parse_duration
from .validators import (
    DEFAULT_VALIDATORS,
    MAX_CSR_DER_BYTES,
    CommonNameIsDeviceId,
    CsrContext,
    CsrValidator,
    KeyNotReused,
    KeyTypeAllowed,
    MaxCsrSize,
    ProofOfPossession,
    WellFormedCsr,
    csr_der_from_base64,
)

__all__ = [
    "DEFAULT_VALIDATORS",
    "MAX_CSR_DER_BYTES",
    "REVOCATION_ID_LENGTH",
    "REVOCATION_ID_OID",
    "Authority",
    "CaKeyPair",
    "CommonNameIsDeviceId",
    "CsrContext",
    "CsrRejected",
    "CsrValidator",
    "IssuanceError",
    "IssuanceRequest",
    "IssuedLeaf",
    "KeyNotReused",
    "KeyType",
    "KeyTypeAllowed",
    "LeafPolicy",
    "MaxCsrSize",
    "PkiError",
    "PolicyError",
    "PrivateKey",
    "PrivateKeyError",
    "ProofOfPossession",
    "PublicKey",
    "WellFormedCsr",
    "certificate_sha1",
    "certificate_sha256",
    "chain_base64",
    "chain_pem",
    "create_issuing_ca",
    "create_root_ca",
    "create_server_certificate",
    "csr_der_from_base64",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "key_type_of",
    "parse_duration",
    "public_key_sha256",
    "random_serial",
    "revocation_id_extension",
    "revocation_id_of",
]
