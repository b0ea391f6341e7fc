"""The provisioning service: attestation, registration, operation polls, status lookups.

The store is synchronous: attestation, polls and status lookups run on the caller's
thread (the frontends use a thread executor). A register request does all its work at
once — the enrollment is re-checked, the device created or updated, the CSR signed and
the registration record written in one transaction — on the group-commit writer
(:class:`~certhub.dps.writer.BatchWriter`), and stores the final
``RegistrationOperationStatus`` under a new operation id. The device is told
``202 assigning`` and gets the stored result on its first poll; a retried poll reads
the same row, so one request never yields two certificates. A register repeating the
CSR of the registration's newest live operation gets that operation back. The writer
signs a batch's CSRs before it opens the transaction (:mod:`certhub.dps.presign`), so
the write lock is held only to check and record.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, ParamSpec

from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService
from certhub.clock import Clock
from certhub.dps.assign import Assigner, Outcome, registration_state
from certhub.dps.attestation import Attestation, Attestor, Credential
from certhub.dps.errors import DpsError, InternalError, NotFound, Throttled
from certhub.dps.presign import Presigned, Presigner
from certhub.dps.throttle import TokenBucket
from certhub.dps.wire import (
    RegisterRequest,
    check_registration_id,
    error_body,
    parse_register_body,
    parse_status_body,
)
from certhub.dps.writer import BatchWriter
from certhub.metrics import DPS_REGISTRATIONS
from certhub.rand import Random
from certhub.registry import AlreadyExists, Store
from certhub.registry._dps import NewDpsOperation

__all__ = ["PURGE_INTERVAL", "DpsResponse", "DpsSettings", "ProvisioningService"]

_ATTEMPTS = 3
PURGE_INTERVAL = dt.timedelta(minutes=10)
"""Expired operations are deleted by the writer at most this often."""
_P = ParamSpec("_P")
log = logging.getLogger("certhub.dps")


@dataclass(frozen=True, kw_only=True)
class DpsSettings:
    """How the provisioning service behaves."""

    hub_host: str
    """``assignedHub``: the host name devices connect to (setting ``hub_host``)."""
    retry_after_seconds: int = 1
    """``retry-after`` told to devices with ``202 assigning``."""
    operation_ttl: dt.timedelta = dt.timedelta(hours=1)
    """How long an operation's result can be polled."""
    registration_rate: float | None = None
    """Register requests per second per process (token bucket); None: unlimited."""
    registration_burst: int = 200
    strict_api_version: bool = False
    """Refuse a top-level ``csr`` with an api-version before 2025-07-01-preview (400003)."""

    @classmethod
    def from_store(cls, store: Store, *, hub_host: str | None = None) -> DpsSettings:
        """Settings from the store's ``settings`` table; absent keys keep the defaults.

        Keys: ``hub_host``, ``dps.retry_after_seconds``, ``dps.operation_ttl_seconds``,
        ``dps.registration_rate`` (per second; empty or 0: unlimited),
        ``dps.registration_burst``, ``dps.strict_api_version`` (``1``/``true``).
        """
        get = store.get_setting
        values: dict[str, Any] = {"hub_host": hub_host or get("hub_host") or "localhost"}
        if (retry := get("dps.retry_after_seconds")) is not None:
            values["retry_after_seconds"] = int(retry)
        if (ttl := get("dps.operation_ttl_seconds")) is not None:
            values["operation_ttl"] = dt.timedelta(seconds=int(ttl))
        if rate := get("dps.registration_rate"):
            values["registration_rate"] = float(rate) or None
        if (burst := get("dps.registration_burst")) is not None:
            values["registration_burst"] = int(burst)
        if (strict := get("dps.strict_api_version")) is not None:
            values["strict_api_version"] = strict.strip().lower() in ("1", "true", "yes")
        return cls(**values)


@dataclass(frozen=True)
class _Job:
    attestation: Attestation
    request: RegisterRequest
    now: dt.datetime
    presigned: Presigned | None = None


@dataclass(frozen=True)
class DpsResponse:
    """A status, a JSON body and an optional ``retry-after`` (seconds)."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None


class ProvisioningService:
    """DPS over the store and the authority; thread-safe."""

    def __init__(
        self,
        store: Store,
        authority: CertificateAuthorityService,
        *,
        settings: DpsSettings,
        clock: Clock,
        rng: Random,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._rng = rng
        self.attestor = Attestor(store)
        self._assigner = Assigner(store, authority, hub_host=settings.hub_host, rng=rng)
        self._presigner = Presigner(store, authority, rng)
        self._bucket = (
            TokenBucket(settings.registration_rate, settings.registration_burst)
            if settings.registration_rate
            else None
        )
        self._lock = threading.Lock()
        self._writer: BatchWriter[_Job, str] | None = None
        self._purged_at = dt.datetime.min.replace(tzinfo=dt.UTC)

    # -- requests ---------------------------------------------------------------------

    def attest(self, id_scope: str, registration_id: str, credential: Credential) -> Attestation:
        """Prove the credential; raises BadRequest, Unauthorized or NotFound."""
        check_registration_id(registration_id)
        return self.attestor.attest(id_scope, registration_id, credential, self.clock.now())

    def register(self, att: Attestation, body: bytes, api_version: str | None) -> DpsResponse:
        """Handle ``iotdps-register`` / ``PUT …/register``: 202 with an operation id.

        Blocks until the writer has committed; from the event loop use
        :meth:`register_async`.
        """
        job = self._job(att, body, api_version)
        for attempt in range(_ATTEMPTS):
            try:
                return self._assigning(self._writer_for().submit(job).result())
            except AlreadyExists as exc:  # a concurrent first registration won the race
                self._give_up(attempt, exc)
        raise AssertionError("unreachable")

    async def register_async(
        self, att: Attestation, body: bytes, api_version: str | None
    ) -> DpsResponse:
        """:meth:`register` for the event loop (the writer thread does the work)."""
        job = self._job(att, body, api_version)
        for attempt in range(_ATTEMPTS):
            try:
                return self._assigning(await self._writer_for().run(job))
            except AlreadyExists as exc:
                self._give_up(attempt, exc)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the writer thread after the queued registrations."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def operation_status(self, att: Attestation, operation_id: str) -> DpsResponse:
        """Handle a poll: 200 with the stored result (202 while still assigning)."""
        op = self.store.get_dps_operation(operation_id)
        now = self.clock.now()
        if (
            op is None
            or op.namespace_id != att.namespace_id
            or op.registration_id != att.registration_id
            or op.expires_at <= now
        ):
            raise NotFound(
                f"no operation {operation_id[:100]!r} for this registration",
                reason="operation-not-found",
                error_code=404002,
            )
        if op.status == "assigning":
            return self._assigning(op.operation_id)
        return DpsResponse(200, dict(op.response))

    def registration_status(self, att: Attestation, body: bytes) -> DpsResponse:
        """Handle ``POST /{idScope}/registrations/{id}``: the record, never a chain."""
        parse_status_body(body, att.registration_id)
        rec = self.store.get_dps_registration(att.namespace_id, att.registration_id)
        if rec is None:
            raise NotFound(
                f"registration {att.registration_id!r} has no record",
                reason="registration-not-found",
                error_code=404003,
            )
        return DpsResponse(200, registration_state(rec))

    def respond(
        self, handler: Callable[_P, DpsResponse], *args: _P.args, **kwargs: _P.kwargs
    ) -> DpsResponse:
        """Run a request handler; any failure becomes its wire error (500001 if unexpected)."""
        try:
            return handler(*args, **kwargs)
        except DpsError as err:
            return self.error_response(err)
        except Exception as exc:  # the boundary: never leave a device without an answer
            log.exception("DPS request failed")
            return self.error_response(InternalError(f"internal error: {exc}", reason="internal"))

    async def respond_async(
        self, handler: Callable[_P, Awaitable[DpsResponse]], *args: _P.args, **kwargs: _P.kwargs
    ) -> DpsResponse:
        """:meth:`respond` for coroutine handlers."""
        try:
            return await handler(*args, **kwargs)
        except DpsError as err:
            return self.error_response(err)
        except Exception as exc:  # the boundary: never leave a device without an answer
            log.exception("DPS request failed")
            return self.error_response(InternalError(f"internal error: {exc}", reason="internal"))

    def error_response(self, err: DpsError) -> DpsResponse:
        """The wire answer to a refused request."""
        body = error_body(err, self._uuid(), self.clock.now())
        return DpsResponse(err.status, body, err.retry_after)

    def purge_expired(self) -> int:
        """Delete operations that can no longer be polled; returns how many."""
        return int(self.store.purge_dps_operations(self.clock.now()))

    # -- internals --------------------------------------------------------------------

    def _throttle(self) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.take()
        if wait:
            raise Throttled(
                "too many registrations; retry later", reason="throttled", retry_after=wait
            )

    def _repeated(
        self,
        att: Attestation,
        req: RegisterRequest,
        now: dt.datetime,
        conn: Connection | None = None,
    ) -> str | None:
        """The operation id of a live operation for the very same CSR, if any."""
        if req.csr_sha256 is None:
            return None
        op = self.store.latest_dps_operation(att.namespace_id, att.registration_id, conn=conn)
        if op is None or op.request_sha256 != req.csr_sha256 or op.expires_at <= now:
            return None
        return str(op.operation_id)

    def _job(self, att: Attestation, body: bytes, api_version: str | None) -> _Job:
        self._throttle()
        req = parse_register_body(
            body,
            att.registration_id,
            api_version,
            strict_api_version=self.settings.strict_api_version,
        )
        return _Job(att, req, self.clock.now())

    def _writer_for(self) -> BatchWriter[_Job, str]:
        with self._lock:
            if self._writer is None:
                self._writer = BatchWriter(
                    self.store, self._write, prepare=self._presign, name="certhub-dps-writer"
                )
            return self._writer

    @staticmethod
    def _give_up(attempt: int, exc: AlreadyExists) -> None:
        if attempt == _ATTEMPTS - 1:
            raise InternalError("registration kept conflicting", reason="write-conflict") from exc

    def _presign(self, jobs: list[_Job]) -> list[_Job]:
        """Sign the batch's CSRs before its transaction (repeats of a live operation are
        left alone: they get that operation back)."""
        now = self.clock.now()
        todo = [j for j in jobs if self._repeated(j.attestation, j.request, now) is None]
        signed = self._presigner.presign([(j.attestation, j.request) for j in todo])
        by_job = {id(job): leaf for job, leaf in zip(todo, signed, strict=True)}
        return [replace(j, presigned=by_job.get(id(j))) for j in jobs]

    def _write(self, conn: Connection, job: _Job) -> str:
        """One registration inside the writer's transaction; returns its operation id."""
        att, req, now = job.attestation, job.request, job.now
        if now - self._purged_at >= PURGE_INTERVAL:
            self._purged_at = now
            self.store.purge_dps_operations(now, conn=conn)
        repeated = self._repeated(att, req, now, conn)
        if repeated is not None:
            return repeated
        outcome = self._assigner.assign(conn, att, req, now, job.presigned)
        DPS_REGISTRATIONS.labels(outcome.status).inc()
        operation_id = self._new_operation_id()
        op = self._operation(operation_id, att, req, outcome, now)
        self.store.create_dps_operation(op, conn=conn)
        return operation_id

    def _operation(
        self,
        operation_id: str,
        att: Attestation,
        req: RegisterRequest,
        outcome: Outcome,
        now: dt.datetime,
    ) -> NewDpsOperation:
        response = {
            "operationId": operation_id,
            "status": outcome.status,
            "registrationState": outcome.registration_state,
        }
        return NewDpsOperation(
            operation_id=operation_id,
            namespace_id=att.namespace_id,
            registration_id=att.registration_id,
            status=outcome.status,
            response=response,
            created_at=now,
            expires_at=now + self.settings.operation_ttl,
            request_sha256=req.csr_sha256,
            certificate_serial=outcome.certificate_serial,
        )

    def _assigning(self, operation_id: str) -> DpsResponse:
        body = {"operationId": operation_id, "status": "assigning"}
        return DpsResponse(202, body, self.settings.retry_after_seconds)

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    def _new_operation_id(self) -> str:
        # Azure's shape: "4.<16 hex>.<uuid>".
        return f"4.{self._rng.token_bytes(8).hex()}.{self._uuid()}"
