"""The Device Provisioning Service: enrollments, attestation, registration, issuance.

* :class:`ProvisioningService` — the synchronous core over the store and the
  authority (attest, register, poll, status lookup), configured by :class:`DpsSettings`.
* :class:`DpsFrontend` — DPS over MQTT on the shared 8883 listener
  (:mod:`certhub.listener.api`).
* :func:`dps_router` — DPS over HTTPS (a FastAPI router for :mod:`certhub.service`).

Errors: :mod:`certhub.dps.errors` (``DpsError`` with the 6-digit ``error_code``).
"""

from certhub.dps.attestation import (
    Attestation,
    Attestor,
    Credential,
    SasCredential,
    X509Credential,
)
from certhub.dps.errors import DpsError
from certhub.dps.http import dps_router
from certhub.dps.mqtt import DpsFrontend, DpsSession
from certhub.dps.service import DpsResponse, DpsSettings, ProvisioningService

__all__ = [
    "Attestation",
    "Attestor",
    "Credential",
    "DpsError",
    "DpsFrontend",
    "DpsResponse",
    "DpsSession",
    "DpsSettings",
    "ProvisioningService",
    "SasCredential",
    "X509Credential",
    "dps_router",
]
