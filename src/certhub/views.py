"""JSON shapes of store records shared by the admin API and the admin CLI.

One rendering per record kind; the caller passes how to write a timestamp (the admin API
writes IoT Hub's ``…Z`` form, the CLI ``datetime.isoformat``). Kept free of FastAPI and
the query engine so the CLI starts without them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from certhub.registry.records import EnrollmentRecord, PolicyRecord

__all__ = ["Stamp", "enrollment_json", "policy_json"]

Stamp = Callable[[dt.datetime], str]
"""How a timestamp is written."""


def policy_json(
    p: PolicyRecord, *, stamp: Stamp, issuer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A policy; ``issuer`` (the issuing CA's facts) is added as ``issuingCa`` when given."""
    out: dict[str, Any] = {
        "name": p.name,
        "validitySeconds": p.validity_seconds,
        "keyTypes": list(p.key_types),
        "backdateSeconds": p.backdate_seconds,
        "development": p.development,
        "state": p.state,
        "createdAt": stamp(p.created_at),
    }
    if issuer is not None:
        out["issuingCa"] = issuer
    return out


def enrollment_json(e: EnrollmentRecord, *, stamp: Stamp) -> dict[str, Any]:
    """An enrollment in DPS's shape (``enrollmentGroupId`` or ``registrationId``)."""
    key = "enrollmentGroupId" if e.kind == "group" else "registrationId"
    attestation: dict[str, Any] = {"type": e.attestation_type}
    if e.attestation_type == "symmetricKey":
        attestation["symmetricKey"] = {"primaryKey": e.primary_key, "secondaryKey": e.secondary_key}
    else:
        attestation["x509"] = {
            "certificates": list(e.x509_certificates),
            "thumbprints": list(e.x509_thumbprints),
        }
    return {
        key: e.name,
        "attestation": attestation,
        "credentialPolicyName": e.credential_policy_name,
        "provisioningStatus": e.provisioning_status,
        "initialTwin": dict(e.initial_twin),
        "reprovisionPolicy": dict(e.reprovision_policy),
        "etag": e.etag,
        "createdDateTimeUtc": stamp(e.created_at),
        "lastUpdatedDateTimeUtc": stamp(e.updated_at),
    }
