"""The renewal service: what the hub calls for the credentials API and at connect.

The hub owns the sessions; this service owns the operations. The hub calls

* :meth:`RenewalService.handle_request` for a PUBLISH to
  ``$iothub/credentials/POST/issueCertificate/?$rid={rid}`` (it answers on the
  device's session through the :class:`CredentialsPublisher` given at construction);
* :meth:`RenewalService.on_subscribed` when a device subscribes to
  ``$iothub/credentials/res/#`` (responses kept for it are delivered then);
* :meth:`RenewalService.on_authenticated` when a device authenticated with a
  certificate, before its session is registered (two-phase renewal: the first use of an
  ``issued`` certificate activates it and supersedes the older ones; a superseded one is
  refused unless within the policy's ``superseded_grace_seconds``).

All state is in the store; a restarted server completes the operations it accepted
(:meth:`RenewalService.recover`). See ``docs/renewal.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from certhub.authority import CertificateAuthorityService
from certhub.clock import Clock
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry.errors import StoreError
from certhub.registry.records import CertificateRecord, OperationRecord
from certhub.renewal.admission import TokenBucket, retry_after_seconds
from certhub.renewal.alerts import WebhookNotifier
from certhub.renewal.config import RenewalConfig
from certhub.renewal.errors import (
    NotAuthenticatedDevice,
    RenewalError,
    RequestInvalid,
    ServerError,
    Throttled,
)
from certhub.renewal.flow import Accepted, Refused, Replayed, StatusLookup, Submission
from certhub.renewal.jobs import DetectionReport, RenewalJobs
from certhub.renewal.metrics import LATENCY, REQUESTS, TRANSITIONS
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.window import Window
from certhub.renewal.wire import (
    ISSUE_CERTIFICATE,
    accepted_body,
    error_body,
    parse_request,
    response_topic,
)
from certhub.renewal.writer import RenewalWriter

__all__ = ["Admission", "CredentialsPublisher", "RenewalService", "Runner"]

log = logging.getLogger("certhub.renewal")
T = TypeVar("T")
_FINISHED = ("completed", "failed")


class Runner(Protocol):
    """Runs a blocking call off the event loop (a bounded executor)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class CredentialsPublisher(Protocol):
    """Publishes on the device's live session if it is subscribed to the credentials
    responses; returns whether it did (``False``: keep the response for later)."""

    def __call__(self, device_id: str, topic: str, payload: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a certificate may connect now, and why (a short machine-readable reason)."""

    admitted: bool
    reason: str


class RenewalService:
    """Certificate renewal through the hub (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        authority: CertificateAuthorityService,
        *,
        clock: Clock,
        rng: Random,
        run: Runner,
        config: RenewalConfig | None = None,
        publisher: CredentialsPublisher | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config or RenewalConfig()
        self._authority = authority
        self._rng = rng
        self._run = run
        self._publisher = publisher
        self.placer = WindowPlacer(self.config.window_policy())
        rate = self.config.admission_rate
        self._bucket = None if rate is None else TokenBucket(rate, self.config.admission_burst)
        self._notifier = self._webhook(webhook_transport)
        self.jobs = RenewalJobs(
            store,
            clock=clock,
            run=run,
            config=self.config,
            placer=self.placer,
            notifier=self._notifier,
        )
        self._writer: RenewalWriter | None = None
        self._task: asyncio.Task[None] | None = None

    def _webhook(self, transport: httpx.AsyncBaseTransport | None) -> WebhookNotifier | None:
        c = self.config
        if c.alert_webhook_url is None:
            return None
        return WebhookNotifier(
            c.alert_webhook_url,
            rng=self._rng,
            attempts=c.alert_attempts,
            backoff=c.alert_backoff,
            backoff_cap=c.alert_backoff_cap,
            timeout=c.alert_timeout,
            transport=transport,
        )

    def attach(self, publisher: CredentialsPublisher) -> None:
        """Set where responses go (the hub, once it exists)."""
        self._publisher = publisher

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the fleet histogram, start the writer, complete what a crash left pending,
        and start the periodic jobs (unless ``detection_interval`` is 0)."""
        rows = await self._run(self.store.renewal_windows_after, self.clock.now())
        self.placer.load(r.renew_after for r in rows)
        self._writer = RenewalWriter(
            self.store,
            self._authority,
            clock=self.clock,
            config=self.config,
            placer=self.placer,
            admit=self._admit,
            new_id=self._new_id,
        )
        await self._run(self.store.expire_operations, self.clock.now())
        await self.recover()
        if self.config.detection_interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._periodic())

    async def stop(self) -> None:
        """Stop the jobs and the writer (after what is queued)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._notifier is not None:
            await self._notifier.aclose()

    @property
    def writer(self) -> RenewalWriter:
        assert self._writer is not None, "renewal service not started"
        return self._writer

    # -- the credentials API ------------------------------------------------------------------

    async def handle_request(
        self, device_id: str, rid: str, payload: bytes, operation: str = ISSUE_CERTIFICATE
    ) -> None:
        """Answer one request of the authenticated ``device_id`` (202 then 200, or an error).

        Returns when the final response was sent (or kept for later delivery).
        """
        started = time.perf_counter()
        try:
            submission = _submission(device_id, rid, payload, operation)
            result = await asyncio.wrap_future(self.writer.accept(submission))
        except RenewalError as error:
            self._send_error(device_id, rid, error)
            return
        except Exception:
            log.exception("credential request of %r failed", device_id)
            self._send_error(device_id, rid, ServerError("try again", retry_after=5))
            return
        outcome = result.outcome
        if isinstance(outcome, Refused):
            self._send_error(device_id, rid, outcome.error)
            return
        op = outcome.operation
        REQUESTS.labels("accepted" if isinstance(outcome, Accepted) else "replayed").inc()
        self._send(device_id, 202, rid, accepted_body(op.correlation_id, op.expires_at))
        if isinstance(outcome, Replayed) or result.final is None:
            if op.state in _FINISHED:
                self._deliver(op)
            return
        try:
            finished = await asyncio.wrap_future(result.final)
        except LookupError:
            return  # replaced before it was issued: no final response
        except Exception:
            log.exception("issuing for %r failed; the operation stays pending", device_id)
            return
        self._deliver(finished.operation)
        LATENCY.observe(time.perf_counter() - started)

    async def on_subscribed(self, device_id: str) -> int:
        """Deliver the responses kept for ``device_id``; returns how many went out."""
        ops = await self._run(self.store.undelivered_operations, device_id, self.clock.now())
        return sum(self._deliver(op) for op in ops)

    async def recover(self) -> int:
        """Complete every pending operation (after a restart, or stuck); returns how many."""
        cutoff = self.clock.now() + dt.timedelta(seconds=1)
        return await self._recover(cutoff)

    async def _recover(self, created_before: dt.datetime) -> int:
        ops = await self._run(self.store.pending_operations, created_before)
        futures = [asyncio.wrap_future(self.writer.issue(op.id)) for op in ops]
        done = 0
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("recovering an operation failed: %s", result)
            elif result is not None:
                self._deliver(result.operation)
                done += 1
        return done

    # -- two-phase renewal -----------------------------------------------------------------------

    async def on_authenticated(
        self, device_id: str, serial_hex: str, state: str | None = None
    ) -> Admission:
        """Whether the device may connect with this certificate (``state`` if known)."""
        if state == "active":
            return Admission(True, "active")
        cert = await self._run(self.store.get_certificate, serial_hex)
        if cert is None:
            return Admission(True, "not-in-inventory")
        if cert.device_id != device_id:
            return Admission(False, "certificate-of-another-device")
        if cert.state == "active":
            return Admission(True, "active")
        if cert.state == "issued":
            return await self._activate(cert)
        if cert.state == "superseded":
            admission = await self._run(self._superseded, cert, self.clock.now())
            TRANSITIONS.labels("grace" if admission.admitted else "refused").inc()
            return admission
        return Admission(False, f"certificate-{cert.state}")

    async def _activate(self, cert: CertificateRecord) -> Admission:
        try:
            _, superseded = await asyncio.wrap_future(self.writer.activate(cert.serial_hex))
        except StoreError as exc:
            log.info("activating %s failed: %s", cert.serial_hex, exc)
            return Admission(False, "certificate-not-live")
        TRANSITIONS.labels("activated").inc()
        TRANSITIONS.labels("superseded").inc(len(superseded))
        return Admission(True, "activated")

    def _superseded(self, cert: CertificateRecord, now: dt.datetime) -> Admission:
        successor_used = self.store.successor_first_used_at(cert)
        if successor_used is None:
            return Admission(True, "superseded-successor-unused")
        policy = self.store.get_policy_by_id(cert.policy_id)
        grace = dt.timedelta(seconds=policy.superseded_grace_seconds if policy else 0)
        if now < successor_used + grace:
            return Admission(True, "superseded-within-grace")
        return Admission(False, "certificate-superseded")

    # -- periodic jobs ---------------------------------------------------------------------------

    async def run_detection(self) -> DetectionReport:
        """One detection run now, plus recovery of operations stuck pending."""
        report = await self.jobs.detect()
        await self._recover(self.clock.now() - self.config.stuck_after)
        return report

    async def run_rebalance(self) -> int:
        """One rebalancing pass now; returns how many windows moved."""
        return await self.jobs.rebalance()

    async def _periodic(self) -> None:
        loop = asyncio.get_running_loop()
        next_rebalance = loop.time() + self.config.rebalance_interval
        while True:
            await asyncio.sleep(self.config.detection_interval)
            try:
                await self.run_detection()
                if loop.time() >= next_rebalance:
                    next_rebalance = loop.time() + self.config.rebalance_interval
                    await self.run_rebalance()
            except Exception:
                log.exception("renewal jobs failed")

    # -- helpers ---------------------------------------------------------------------------------

    def _admit(self, device_id: str, status_of: StatusLookup) -> RenewalError | None:
        """Admission control (the writer thread calls it for each new operation)."""
        if self._bucket is None:
            return None
        now = self.clock.now()
        wait = self._bucket.take(now.timestamp())
        if wait <= 0:
            return None
        status = status_of()
        window = None if status is None else Window(status.renew_after, status.renew_before)
        return Throttled(retry_after_seconds(now, wait, window, device_id))

    def _new_id(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    def _send(self, device_id: str, status: int, rid: str, body: Any) -> bool:
        if self._publisher is None:
            return False
        return self._publisher(device_id, response_topic(status, rid), json.dumps(body).encode())

    def _send_error(self, device_id: str, rid: str, error: RenewalError) -> None:
        REQUESTS.labels(str(error.error_code)).inc()
        body = error_body(error, tracking_id=self._new_id(), now=self.clock.now())
        self._send(device_id, error.status, rid, body)

    def _deliver(self, op: OperationRecord) -> bool:
        assert op.response_status is not None
        if not self._send(op.device_id, op.response_status, op.rid, op.response_body):
            return False
        self.writer.delivered(op.id)
        return True


def _submission(device_id: str, rid: str, payload: bytes, operation: str) -> Submission:
    if operation != ISSUE_CERTIFICATE:
        raise RequestInvalid(f"unknown credentials operation {operation!r}")
    request = parse_request(payload)
    if request.device_id != device_id:
        raise NotAuthenticatedDevice(
            f"'id' {request.device_id!r} is not the authenticated device {device_id!r}"
        )
    return Submission(device_id, rid, request.csr_der, request.replace)
