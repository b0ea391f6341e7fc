"""CRLs and OCSP over HTTPS, for third parties that verify certhub certificates.

Routes (public: no authentication, as relying parties fetch them anonymously):

* ``GET /crl/{caId}.crl`` — the CA's current CRL, DER (``application/pkix-crl``); PEM
  (``application/x-pem-file``) with ``?format=pem`` or ``Accept: application/x-pem-file``.
  A root CA's CRL lists the revoked issuing CAs it signed; an issuing CA's CRL lists the
  device certificates it signed and that were revoked.
* ``POST /ocsp`` (``application/ocsp-request``) and ``GET /ocsp/{base64 request}`` — an
  RFC 6960 responder answering ``good`` / ``revoked`` (time, reason) / ``unknown`` for
  every certificate the store knows, signed by the issuing CA itself. A request that does
  not parse gets ``malformedRequest``; a CertID naming a CA certhub does not hold gets
  ``unauthorized`` (RFC 6960 §2.3: the responder cannot answer for that issuer).

Publishing (:class:`PkiPublisher`): a CRL is built from the store in one go
(:func:`certhub.pki.crl.build_crl`), numbered ``previous + 1`` and stored in the registry
(:mod:`certhub.registry._crl`), so every server process serves the same bytes. It is
rebuilt when the revocations under the CA changed (their fingerprint) or when less than
``renew_margin`` is left before nextUpdate — checked on every download, on every
``certificate.revoked`` / ``ca.changed`` event, and on a timer (:class:`CrlRefresher`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509 import ocsp
from fastapi import APIRouter, Request, Response

from certhub.clock import Clock
from certhub.pki import CaKeyPair, PolicyError, parse_duration
from certhub.pki.crl import RevokedEntry, build_crl, crl_der_to_pem, reason_flag
from certhub.pki.ocsp import (
    CertStatus,
    OcspQuery,
    issuer_hashes,
    parse_request,
    signed_response,
    unsuccessful_response,
)
from certhub.registry import Store
from certhub.registry._crl import RevokedRow, StoredCrl, fingerprint_of
from certhub.registry.records import CaRecord
from certhub.service.context import ServiceRoute
from certhub.service.errors import BadRequest, NotFound

__all__ = [
    "CRL_EVENT_KINDS",
    "CrlRefresher",
    "CrlSettings",
    "KeyHolder",
    "PkiPublisher",
    "crl_base_url",
    "pki_router",
]

log = logging.getLogger("certhub.crl")

CRL_EVENT_KINDS = frozenset({"certificate.revoked", "ca.changed"})
"""Change-feed kinds after which CRLs are checked (and rebuilt if needed)."""

MAX_OCSP_REQUEST_BYTES = 16 * 1024
_CRL_KINDS = ("root", "issuing")
_CA_CACHE_SECONDS = 2.0
_PUBLISH_ATTEMPTS = 3
_PEM_TYPE = "application/x-pem-file"
_OCSP_RESPONSE_TYPE = "application/ocsp-response"


class KeyHolder(Protocol):
    """Gives a CA's certificate and private key (``CertificateAuthorityService`` does)."""

    def ca_pair(self, record: CaRecord) -> CaKeyPair: ...


@dataclass(frozen=True, kw_only=True)
class CrlSettings:
    """How long CRLs and OCSP answers are valid, and how early a CRL is rebuilt."""

    crl_validity: dt.timedelta = dt.timedelta(hours=24)
    renew_margin: dt.timedelta = dt.timedelta(hours=6)
    ocsp_validity: dt.timedelta = dt.timedelta(hours=1)
    refresh_interval: float = 300.0
    """Seconds between scheduled checks (events trigger checks in between)."""
    recheck_seconds: float = 1.0
    """How long a process serves a CRL from memory before checking the store again."""

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.renew_margin < self.crl_validity:
            raise ValueError("expected 0 < renew_margin < crl_validity")
        if self.ocsp_validity <= dt.timedelta(0) or self.refresh_interval <= 0:
            raise ValueError("ocsp_validity and refresh_interval must be positive")
        if self.recheck_seconds < 0:
            raise ValueError("recheck_seconds must not be negative")

    @classmethod
    def from_store(cls, store: Store) -> CrlSettings:
        """Defaults, overridden by the store settings ``crl_validity``, ``crl_renew_margin``
        and ``ocsp_validity`` (durations such as ``24h``, ``90m``, ``7d``).

        Raises ``ValueError`` naming the setting when one is not a usable duration.
        """
        values: dict[str, Any] = {}
        for name in ("crl_validity", "crl_renew_margin", "ocsp_validity"):
            text = store.get_setting(name)
            if text is None:
                continue
            try:
                values[name.replace("crl_renew", "renew")] = parse_duration(text)
            except PolicyError as exc:
                raise ValueError(f"setting {name}={text!r}: {exc.message}") from exc
        if "crl_validity" in values and "renew_margin" not in values:
            values["renew_margin"] = values["crl_validity"] / 4
        return cls(**values)


def crl_base_url(configured: str | None, host: str, https_port: int | None) -> str | None:
    """The base URL put in leaves' CRL distribution points.

    The ``crl_base_url`` setting when an operator set one (a public name or proxy),
    else ``https://{host}:{port}`` of the server's HTTPS listener; None when the port is
    not known in advance (no HTTPS, or an ephemeral port).
    """
    if configured:
        return configured.rstrip("/")
    if not https_port:
        return None
    return f"https://{host}:{https_port}"


class PkiPublisher:
    """Builds, stores and serves CRLs, and answers OCSP requests (blocking; thread-safe)."""

    def __init__(
        self,
        store: Store,
        keys: KeyHolder,
        *,
        clock: Clock,
        settings: CrlSettings | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self.settings = settings or CrlSettings()
        self._lock = threading.Lock()
        self._served: dict[int, tuple[float, StoredCrl]] = {}
        self._cas: tuple[float, list[CaRecord]] = (0.0, [])
        self._hashes: dict[tuple[int, str], tuple[bytes, bytes]] = {}

    # -- CRLs ------------------------------------------------------------------------

    def crl_ca(self, ca_id: int) -> CaRecord | None:
        """The CA if certhub publishes a CRL for it (a root or issuing CA with its key)."""
        ca = self.store.get_ca(ca_id)
        if ca is None or ca.kind not in _CRL_KINDS or ca.key_pem_encrypted is None:
            return None
        return ca

    def current_crl(self, ca_id: int) -> StoredCrl | None:
        """The CA's CRL, rebuilt first if it is missing, stale or near nextUpdate.

        A process re-checks a CA's CRL against the store at most every
        ``settings.recheck_seconds``; in between, downloads are served from memory.
        """
        served = self._served.get(ca_id)
        if served is not None and time.monotonic() - served[0] < self.settings.recheck_seconds:
            return served[1]
        ca = self.crl_ca(ca_id)
        if ca is None:
            return None
        meta = self.store.get_crl(ca_id, with_der=False)
        if meta is None or self._due(meta, self._fingerprint(ca)):
            return self.publish(ca)
        if served is not None and served[1].number == meta.number:
            crl: StoredCrl | None = served[1]
        else:
            crl = self.store.get_crl(ca_id)
        if crl is None or crl.der is None:
            return self.publish(ca)
        return self._remember(crl)

    def _remember(self, crl: StoredCrl) -> StoredCrl:
        """Serve ``crl`` from memory for a while — unless a newer one is already held."""
        with self._lock:
            held = self._served.get(crl.ca_id)
            if held is not None and held[1].number > crl.number:
                return held[1]
            self._served[crl.ca_id] = (time.monotonic(), crl)
        return crl

    def forget(self) -> None:
        """Check the store at the next download (after a revocation event)."""
        with self._lock:
            self._served = {k: (0.0, crl) for k, (_, crl) in self._served.items()}

    def publish(self, ca: CaRecord, *, force: bool = False) -> StoredCrl:
        """Build and store the next CRL of ``ca`` unless the stored one is current.

        Safe against other processes publishing at the same time: the number is written
        as ``previous + 1`` only if ``previous`` is still the stored number.
        """
        for _ in range(_PUBLISH_ATTEMPTS):
            meta = self.store.get_crl(ca.id, with_der=False)
            fingerprint, rows = self._entries(ca)
            if meta is not None and not force and not self._due(meta, fingerprint):
                current = self.store.get_crl(ca.id)
                if current is not None and current.der is not None:
                    return self._remember(current)
            number = (meta.number if meta else 0) + 1
            candidate = self._sign(ca, rows, number, fingerprint)
            with self.store.transaction() as conn:
                locked = self.store.lock_crl(ca.id, conn)
                won = (locked.number if locked else 0) == number - 1
                if won:
                    self.store.save_crl(candidate, conn)
            if won:
                log.info("published CRL %d of CA %d (%d entries)", number, ca.id, len(rows))
                return self._remember(candidate)
            force = False  # someone else published in between: check theirs
        latest = self.store.get_crl(ca.id)
        if latest is None:
            raise RuntimeError(f"could not publish a CRL for CA {ca.id}")
        return latest

    def refresh_all(self) -> list[int]:
        """Check every root and issuing CA; returns the ids whose CRL was (re)built."""
        rebuilt = []
        for ca in self._all_cas(fresh=True):
            if ca.kind not in _CRL_KINDS or ca.key_pem_encrypted is None:
                continue
            meta = self.store.get_crl(ca.id, with_der=False)
            if meta is None or self._due(meta, self._fingerprint(ca)):
                before = meta.number if meta else 0
                if self.publish(ca).number != before:
                    rebuilt.append(ca.id)
        return rebuilt

    def _due(self, meta: StoredCrl, fingerprint: str) -> bool:
        renew_at = meta.next_update - self.settings.renew_margin
        return meta.fingerprint != fingerprint or self.clock.now() >= renew_at

    def _fingerprint(self, ca: CaRecord) -> str:
        if ca.kind == "root":
            return self._entries(ca)[0]
        return self.store.revoked_leaves_fingerprint(ca.id)

    def _entries(self, ca: CaRecord) -> tuple[str, list[RevokedRow]]:
        """The fingerprint, then the rows (in that order: see ``revoked_leaves``).

        A revoked certificate stays listed until it has appeared on one CRL issued after
        it expired (RFC 5280 §3.3): rows that expired over one CRL validity ago are left out.
        """
        listed_from = self.clock.now() - self.settings.crl_validity
        if ca.kind == "issuing":
            fingerprint = self.store.revoked_leaves_fingerprint(ca.id)
            return fingerprint, self.store.revoked_leaves(ca.id, listed_from)
        every = self._signed_by(ca, self.store.revoked_issuing_cas(ca.namespace_id))
        fingerprint = fingerprint_of(len(every), max((r.revoked_at for r in every), default=None))
        listed = self.store.revoked_issuing_cas(ca.namespace_id, listed_from)
        return fingerprint, self._signed_by(ca, listed)

    @staticmethod
    def _signed_by(root: CaRecord, rows: Sequence[tuple[RevokedRow, str]]) -> list[RevokedRow]:
        subject = x509.load_pem_x509_certificate(root.cert_pem.encode()).subject
        return [
            row
            for row, pem in rows
            if x509.load_pem_x509_certificate(pem.encode()).issuer == subject
        ]

    def _sign(self, ca: CaRecord, rows: Sequence[RevokedRow], number: int, fp: str) -> StoredCrl:
        now = self.clock.now().replace(microsecond=0)
        entries = [RevokedEntry(int(s, 16), at, reason_flag(why)) for s, at, why in rows]
        next_update = now + self.settings.crl_validity
        der = build_crl(
            self.keys.ca_pair(ca), entries, number=number, this_update=now, next_update=next_update
        )
        return StoredCrl(
            ca_id=ca.id,
            number=number,
            this_update=now,
            next_update=next_update,
            fingerprint=fp,
            der=der,
        )

    # -- OCSP ------------------------------------------------------------------------

    def ocsp_response(self, request_der: bytes) -> bytes:
        """The DER OCSP response to a DER OCSP request (never raises for bad input)."""
        query = None if len(request_der) > MAX_OCSP_REQUEST_BYTES else parse_request(request_der)
        if query is None:
            return unsuccessful_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            issuer = self._issuer_of(query)
            if issuer is None:
                return unsuccessful_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)
            status = self._status(issuer, query)
            return signed_response(
                query,
                self.keys.ca_pair(issuer),
                status,
                now=self.clock.now(),
                validity=self.settings.ocsp_validity,
            )
        except Exception:
            log.exception("OCSP request failed")
            return unsuccessful_response(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _issuer_of(self, query: OcspQuery) -> CaRecord | None:
        wanted = (query.issuer_name_hash, query.issuer_key_hash)
        for ca in self._all_cas():
            usable = ca.kind in _CRL_KINDS and ca.key_pem_encrypted is not None
            if usable and self._hashes_of(ca, query) == wanted:
                return ca
        return None

    def _hashes_of(self, ca: CaRecord, query: OcspQuery) -> tuple[bytes, bytes]:
        key = (ca.id, query.algorithm.name)
        found = self._hashes.get(key)
        if found is None:
            cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
            found = self._hashes[key] = issuer_hashes(cert, query.algorithm)
        return found

    def _status(self, issuer: CaRecord, query: OcspQuery) -> CertStatus:
        if issuer.kind == "root":
            return self._ca_status(issuer, query.serial_hex)
        for serial in (format(query.serial, "032x"), query.serial_hex):
            cert = self.store.get_certificate(serial)
            if cert is not None and cert.issuer_ca_id == issuer.id:
                if cert.state != "revoked":
                    return CertStatus("good")
                revoked_at = cert.revoked_at or cert.created_at
                return CertStatus("revoked", revoked_at, reason_flag(cert.revocation_reason))
        return CertStatus("unknown")

    def _ca_status(self, root: CaRecord, serial_hex: str) -> CertStatus:
        subject = x509.load_pem_x509_certificate(root.cert_pem.encode()).subject
        for ca in self.store.list_cas(root.namespace_id, kind="issuing"):
            if ca.serial_hex != serial_hex:
                continue
            if x509.load_pem_x509_certificate(ca.cert_pem.encode()).issuer != subject:
                continue
            if ca.state == "revoked":
                revoked_at = ca.revoked_at or ca.retired_at or ca.created_at
                return CertStatus("revoked", revoked_at, reason_flag(ca.revocation_reason))
            return CertStatus("good")
        return CertStatus("unknown")

    def _all_cas(self, *, fresh: bool = False) -> list[CaRecord]:
        with self._lock:
            loaded_at, cas = self._cas
            if fresh or time.monotonic() - loaded_at > _CA_CACHE_SECONDS:
                cas = []
                for ns in self.store.list_namespaces():
                    cas += self.store.list_cas(ns.id)
                self._cas = (time.monotonic(), cas)
            return cas


# -- the schedule -----------------------------------------------------------------------


class CrlRefresher:
    """Keeps every CRL current: at once after revocation events, and on a schedule.

    * :meth:`on_events` — an ``EventPoller`` handler: a batch holding a revocation or a CA
      change starts a pass right away (passes never overlap; a burst makes one more pass).
    * :meth:`run_once` — one pass, for a scheduler (e.g. a cluster lease's periodic job).
    * :meth:`run` — self-contained: a pass every ``refresh_interval`` until ``stop`` is set.

    Passes on several processes at once are safe (see :meth:`PkiPublisher.publish`).
    """

    def __init__(self, publisher: PkiPublisher, run: Callable[..., Awaitable[Any]]) -> None:
        self.publisher = publisher
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.passes = 0

    def on_events(self, batch: Sequence[Any]) -> None:
        """Start a pass when ``batch`` holds a ``certificate.revoked`` or ``ca.changed``."""
        if any(getattr(event, "kind", None) in CRL_EVENT_KINDS for event in batch):
            self.publisher.forget()
            self.trigger()

    def trigger(self) -> None:
        """Start a pass now (or one more after the running one). Call on the loop."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._passes())

    async def _passes(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            await self.run_once()

    async def run_once(self) -> list[int]:
        """Check every CA's CRL and rebuild the stale ones; returns their ids."""
        try:
            rebuilt: list[int] = await self._run(self.publisher.refresh_all)
        except Exception:
            log.exception("refreshing CRLs failed")
            return []
        self.passes += 1
        return rebuilt

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every ``refresh_interval`` seconds until ``stop`` is set."""
        interval = self.publisher.settings.refresh_interval
        while not stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def stop(self) -> None:
        """Wait for a running event-triggered pass to end (call before closing the store)."""
        self._again = False
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


# -- the routes -------------------------------------------------------------------------


def _wants_pem(request: Request, fmt: str | None) -> bool:
    if fmt is None:
        return _PEM_TYPE in request.headers.get("accept", "")
    if fmt.lower() not in ("der", "pem"):
        raise BadRequest(f"format must be der or pem, not {fmt!r}", reason="invalid-format")
    return fmt.lower() == "pem"


def pki_router(publisher: PkiPublisher, run: Callable[..., Awaitable[Any]]) -> APIRouter:
    """``GET /crl/{caId}.crl``, ``POST /ocsp`` and ``GET /ocsp/{request}`` (no auth)."""
    router = APIRouter(route_class=ServiceRoute, tags=["pki"])

    @router.get("/crl/{ca_id}.crl", summary="A CA's certificate revocation list")
    async def get_crl(ca_id: int, request: Request, format: str | None = None) -> Response:
        pem = _wants_pem(request, format)
        crl: StoredCrl | None = await run(publisher.current_crl, ca_id)
        if crl is None or crl.der is None:
            raise NotFound(f"no CRL for CA {ca_id}", reason="not-found", code="NotFound")
        headers = {
            "ETag": f'"crl-{ca_id}-{crl.number}"',
            "Last-Modified": _http_date(crl.this_update),
            "Expires": _http_date(crl.next_update),
        }
        if pem:
            return Response(crl_der_to_pem(crl.der), media_type=_PEM_TYPE, headers=headers)
        return Response(crl.der, media_type="application/pkix-crl", headers=headers)

    @router.post("/ocsp", summary="OCSP responder (RFC 6960, POST)")
    async def ocsp_post(request: Request) -> Response:
        body = await request.body()
        der: bytes = await run(publisher.ocsp_response, body)
        return Response(der, media_type=_OCSP_RESPONSE_TYPE)

    @router.get("/ocsp/{encoded:path}", summary="OCSP responder (RFC 6960, GET)")
    async def ocsp_get(encoded: str) -> Response:
        text = encoded.replace("-", "+").replace("_", "/")
        try:
            body = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            body = b""
        der: bytes = await run(publisher.ocsp_response, body)
        return Response(der, media_type=_OCSP_RESPONSE_TYPE)

    return router


def _http_date(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
