"""certhub's HTTPS endpoint: one FastAPI app on uvicorn that callers add routers to.

* :func:`create_http_app` — the app factory (DPS-over-HTTPS routes today; the IoT Hub
  service REST API, admin API and dashboard add their routers the same way).
* :class:`HttpsServer` — uvicorn in the caller's event loop on a given SSL context
  (client certificates optional); the client certificate reaches the app
  (:func:`client_certificate_der`, and the ASGI TLS extension).
"""

from certhub.service.http import (
    CLIENT_CERT_SCOPE_KEY,
    ClientCertH11Protocol,
    HttpsServer,
    client_certificate_der,
    create_http_app,
)

__all__ = [
    "CLIENT_CERT_SCOPE_KEY",
    "ClientCertH11Protocol",
    "HttpsServer",
    "client_certificate_der",
    "create_http_app",
]
