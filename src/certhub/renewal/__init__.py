"""Certificate renewal through the hub (the IoT Hub credentials API) and its fleet pacing.

* :class:`RenewalService` — what the hub calls: credential requests
  (``$iothub/credentials/POST/issueCertificate/?$rid=…``), subscription to the
  responses, and the two-phase check of a certificate at connect.
* :mod:`.window` — pure window arithmetic (band, stable hash point, fleet histogram,
  rebalancing); :mod:`.admission` — the token bucket and ``retryAfter``.
* :mod:`.wire` — request parsing and response bodies; :mod:`.errors` — the error tree.
* Jobs: overdue/expired detection, webhook alerts, rebalancing (:mod:`.jobs`).

The desired property ``properties.desired.certificateRenewal`` =
``{"renewAfter", "renewBefore"}`` tells each device its window. See ``docs/renewal.md``.
"""

from certhub.renewal.config import RenewalConfig
from certhub.renewal.errors import RenewalError, RenewalSettingInvalid
from certhub.renewal.jobs import DetectionReport
from certhub.renewal.service import Admission, CredentialsPublisher, RenewalService, Runner
from certhub.renewal.twin import RENEWAL_PROPERTY
from certhub.renewal.window import Validity, Window, WindowPolicy

__all__ = [
    "RENEWAL_PROPERTY",
    "Admission",
    "CredentialsPublisher",
    "DetectionReport",
    "RenewalConfig",
    "RenewalError",
    "RenewalService",
    "RenewalSettingInvalid",
    "Runner",
    "Validity",
    "Window",
    "WindowPolicy",
]
