"""What the listener's TLS layer trusts for client certificates, read from the store.

The trust store is the union of what any frontend may accept, so TLS can verify the
chain: every issuing CA (states ``active`` and ``successor``) of the namespace — a
deleted policy's CAs included, since its certificates keep working until they expire
(revoked and retired CAs are out) — the namespace roots, its onboarding CAs and the
certificates of its x509 enrollments (DPS). Which of these admits a client is each
frontend's decision: the hub admits only leaves issued directly by a policy issuing CA.
"""

from __future__ import annotations

from certhub.registry import Store
from certhub.registry.errors import NotFound

__all__ = ["LIVE_CA_STATES", "trust_pems"]

LIVE_CA_STATES = ("active", "successor")
"""CA states whose certificates are trusted."""


def trust_pems(store: Store, namespace: str) -> list[str]:
    """The PEM certificates client chains may end at, in a stable order (blocking)."""
    ns = store.get_namespace(namespace)
    if ns is None:
        raise NotFound("namespace", namespace)
    pems: list[str] = []
    for ca in store.list_cas(ns.id):
        if ca.state not in LIVE_CA_STATES:
            continue
        issuing = ca.kind == "issuing" and ca.policy_id is not None
        if issuing or ca.kind in ("root", "onboarding"):
            pems.append(ca.cert_pem)
    for enrollment in store.list_enrollments(ns.id):
        if enrollment.attestation_type == "x509":
            pems.extend(enrollment.x509_certificates)
    return list(dict.fromkeys(pem.strip() + "\n" for pem in pems))
