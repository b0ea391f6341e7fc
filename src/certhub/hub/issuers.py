"""The policy issuing CAs that admit devices to the hub, and facts about presented leaves.

TLS has already checked that a client chain ends at *some* trusted CA, but the trust
store also holds the root, onboarding CAs and enrollment certificates (for DPS). The hub
admits a leaf only when one of the namespace's policy issuing CAs in a trusted state
(``active``/``successor``) signed it directly. A deleted policy's CAs stay trusted (its
certificates work until they expire, then the CAs are retired); rotated-away CAs stay
trusted until retired; revoked and retired CAs are not trusted
(:mod:`certhub.issuer_lifecycle`). :class:`IssuerIndex` answers that with one
signature check; :class:`LeafCache` remembers the answer per certificate (reconnecting
devices present the same leaf) and is rebuilt whenever the issuers change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from certhub.listener.trust import LIVE_CA_STATES
from certhub.pki import revocation_id_of
from certhub.registry import Store
from certhub.registry.errors import NotFound

__all__ = ["IssuerIndex", "LeafCache", "LeafFacts", "leaf_facts", "load_issuers"]


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """What the hub needs to know about a presented client certificate."""

    common_name: str | None
    serial_hex: str
    """Lower-case hex, zero-padded to 32 digits (the store's form)."""
    not_before: dt.datetime
    not_after: dt.datetime
    revocation_id: bytes | None
    sha1: str
    """Upper-case hex SHA-1 of the DER (the Azure thumbprint form)."""
    issuer_ca_id: int | None
    """Store id of the policy issuing CA that signed it directly, else None."""


class IssuerIndex:
    """Policy issuing CA certificates by subject, with their store ids."""

    def __init__(self, cas: Iterable[tuple[int, x509.Certificate]]) -> None:
        self._by_subject: dict[x509.Name, list[tuple[int, x509.Certificate]]] = {}
        for ca_id, cert in cas:
            self._by_subject.setdefault(cert.subject, []).append((ca_id, cert))
        self.ids = frozenset(ca_id for entries in self._by_subject.values() for ca_id, _ in entries)

    def issuer_of(self, leaf: x509.Certificate) -> int | None:
        """The id of the issuing CA whose key signed ``leaf``, or None."""
        for ca_id, ca in self._by_subject.get(leaf.issuer, ()):
            try:
                leaf.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca_id
        return None


def load_issuers(store: Store, namespace: str) -> IssuerIndex:
    """The namespace's live policy issuing CAs (blocking: run it in the executor)."""
    ns = store.get_namespace(namespace)
    if ns is None:
        raise NotFound("namespace", namespace)
    return IssuerIndex(
        (ca.id, x509.load_pem_x509_certificate(ca.cert_pem.encode()))
        for ca in store.list_cas(ns.id, kind="issuing")
        if ca.state in LIVE_CA_STATES and ca.policy_id is not None
    )


def leaf_facts(der: bytes, issuers: IssuerIndex) -> LeafFacts:
    """Parse ``der`` and find its issuer; ValueError if it is not a certificate."""
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if len(names) == 1 else None
    return LeafFacts(
        common_name=common_name if isinstance(common_name, str) else None,
        serial_hex=format(cert.serial_number, "032x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        revocation_id=revocation_id_of(cert),
        sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        issuer_ca_id=issuers.issuer_of(cert),
    )


class LeafCache:
    """:func:`leaf_facts` per certificate DER, least recently used dropped first."""

    def __init__(self, issuers: IssuerIndex, size: int = 20_000) -> None:
        self.issuers = issuers
        self._size = size
        self._facts: OrderedDict[bytes, LeafFacts | None] = OrderedDict()

    def facts(self, der: bytes) -> LeafFacts | None:
        """The facts of ``der``; None when it does not parse as a certificate."""
        key = hashlib.sha256(der).digest()
        if key in self._facts:
            self._facts.move_to_end(key)
            return self._facts[key]
        try:
            facts: LeafFacts | None = leaf_facts(der, self.issuers)
        except ValueError:
            facts = None
        self._facts[key] = facts
        if len(self._facts) > self._size:
            self._facts.popitem(last=False)
        return facts
