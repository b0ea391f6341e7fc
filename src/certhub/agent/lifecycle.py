"""The certificate lifecycle steps: establish a hub connection, provision through DPS,
renew through the hub, promote a new certificate, report it.

Why shaped so: each step is a method that reads and writes :class:`AgentState`
through the :class:`KeyStore` *before* it moves on, and calls the checkpoint hook at the
named points (``key-generated``, ``csr-sent``, ``response-received``, ``files-written``,
``reconnected``, ``promoted``). Whatever step a crash interrupts, the state on disk
says what to do next: a pending key with its CSR is resubmitted (same ``$rid``), a
pending chain is tried first at the next connect and promoted once it connected, and
the current certificate is kept until then. The loops, waits and retries around these
steps live in :mod:`certhub.agent.agent`.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from cryptography import x509

from certhub.agent.certs import CertificateInfo, check_chain_matches, csr_base64, make_csr
from certhub.agent.config import AgentConfig, Onboarding, X509Onboarding
from certhub.agent.dps import DpsClient, Registration, Sleep
from certhub.agent.errors import (
    ConnectionRefused,
    DeviceDisabled,
    KeyStoreError,
    ProtocolError,
    ProvisioningError,
    RenewalError,
    ReonboardRequired,
)
from certhub.agent.hub import Handlers, HubConnection
from certhub.agent.keystore import AgentState, Issued, KeyStore, Pending
from certhub.agent.logs import EventLog
from certhub.agent.schedule import RenewalWindow, estimate_offset, next_renewal, parse_window
from certhub.agent.transport import Endpoint, Transport
from certhub.clock import Clock
from certhub.pki import generate_private_key
from certhub.rand import Random

__all__ = ["STEPS", "Checkpoint", "Lifecycle"]

STEPS = (
    "key-generated",
    "csr-sent",
    "response-received",
    "files-written",
    "reconnected",
    "promoted",
)
"""The named points of a renewal or registration where the checkpoint hook runs."""

Checkpoint = Callable[[str], None]
_OPERATION_ACTIVE = 409005


class Lifecycle:
    """One device's certificate state and the steps that change it."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: Transport,
        clock: Clock,
        rng: Random,
        sleep: Sleep,
        checkpoint: Checkpoint,
        log: EventLog,
        handlers: Handlers,
        client_version: str,
    ) -> None:
        self.config = config
        self.transport = transport
        self.clock = clock
        self.rng = rng
        self.sleep = sleep
        self.checkpoint = checkpoint
        self.log = log
        self.handlers = handlers
        self.client_version = client_version
        self.store = KeyStore(config.state_dir)
        self.state = AgentState()
        self.window: RenewalWindow | None = None
        self._infos: dict[int, CertificateInfo] = {}

    # -- state ------------------------------------------------------------------------

    def open(self, *, lock: bool = True) -> None:
        """Open the state directory, load the state, delete leftovers of a crash."""
        self.store.open(lock=lock)
        self.state = self.store.load()
        removed = self.store.cleanup(self.state)
        if removed:
            self.log.emit("state-cleaned", "removed leftover files", files=",".join(removed))

    def close(self) -> None:
        self.store.close()

    @property
    def offset(self) -> dt.timedelta:
        """Server clock minus device clock, as last estimated."""
        return dt.timedelta(seconds=self.state.clock_offset_seconds)

    def server_now(self) -> dt.datetime:
        return self.clock.now() + self.offset

    def info(self, issued: Issued) -> CertificateInfo:
        """Facts of a generation's leaf (KeyStoreError if its files are unusable)."""
        cached = self._infos.get(issued.generation)
        if cached is None:
            cached = CertificateInfo.of(self.store.load_chain(issued.generation)[0])
            self._infos[issued.generation] = cached
        return cached

    def current_info(self) -> CertificateInfo | None:
        current = self.state.current
        return None if current is None else self.info(current)

    def expired(self, issued: Issued) -> bool:
        return self.server_now() >= self.info(issued).not_after

    def issue_start(self, issued: Issued) -> dt.datetime:
        """When the certificate was issued (server time): the start of its real validity."""
        info = self.info(issued)
        start = issued.issued_at or info.not_before
        if not info.not_before <= start < info.not_after:  # a wrong backdate setting
            return info.not_before
        return start

    def due_at(self) -> dt.datetime:
        """When to renew the current certificate (device clock)."""
        current = self.state.current
        pending = self.state.pending
        now = self.clock.now()
        if current is None or (pending is not None and pending.issued is None):
            return now  # a renewal was already under way: resume it
        renewal = self.config.renewal
        return next_renewal(
            self.issue_start(current),
            self.info(current).not_after,
            now,
            self.window,
            self.rng,
            renewal.fraction,
            renewal.jitter,
            self.offset,
        )

    def _save(self, state: AgentState) -> None:
        self.store.save(state)
        self.state = state

    # -- establishing a connection ----------------------------------------------------

    async def establish(self) -> HubConnection:
        """A live hub connection on a usable certificate, provisioning through DPS when
        there is none. Raises DeviceDisabled, ReonboardRequired or a transient error."""
        pending = self.state.pending
        if pending is not None and pending.issued is not None:
            conn = await self._connect(pending.issued, "pending")
            if conn is not None:
                self._promote()
                return conn
            self._drop_pending("the new certificate was refused")
        reason = await self._current_unusable_reason()
        if reason is None:
            conn = await self._connect(self.state.current, "current")  # type: ignore[arg-type]
            if conn is not None:
                return conn
            reason = "refused"
        await self.recover(reason)
        issued = self.state.pending.issued if self.state.pending else None
        conn = None if issued is None else await self._connect(issued, "new")
        if conn is None:
            raise ProvisioningError(
                "new-certificate-refused",
                "the hub refused the certificate DPS just issued",
                transient=True,
            )
        self._promote()
        return conn

    async def _current_unusable_reason(self) -> str | None:
        current = self.state.current
        if current is None:
            return "first-start"
        try:
            if self.expired(current):
                self.log.emit("certificate-expired", "the certificate has expired", level=30)
                return "expired"
        except KeyStoreError as exc:
            self.log.emit("certificate-unreadable", exc.message, level=40)
            return "unreadable"
        return None

    async def _connect(self, issued: Issued, which: str) -> HubConnection | None:
        hub = self.config.hub
        endpoint = Endpoint(hub.address or issued.assigned_hub, hub.port, issued.assigned_hub)
        try:
            conn = await HubConnection.open(
                self.transport,
                endpoint,
                device_id=issued.device_id,
                api_version=hub.api_version,
                client_cert=self.store.credential(issued.generation),
                handlers=self.handlers,
                keepalive=hub.keepalive,
                timeout=self.config.renewal.request_timeout,
                client_type=self.client_version,
            )
        except ConnectionRefused as exc:
            if exc.transient:
                raise
            self.log.emit(
                "hub-refused",
                f"the hub refused the {which} certificate (CONNACK {exc.code})",
                level=30,
                code=exc.code,
                generation=issued.generation,
            )
            return None
        info = self.info(issued)
        self.log.emit(
            "hub-connected",
            f"connected to {issued.assigned_hub} as {issued.device_id}",
            certificate=which,
            serial=info.serial_hex,
            valid_until=info.not_after,
        )
        return conn

    def _promote(self) -> None:
        self.checkpoint("reconnected")
        pending = self.state.pending
        assert pending is not None and pending.issued is not None
        self._save(replace(self.state, current=pending.issued, pending=None))
        self.checkpoint("promoted")
        self.store.cleanup(self.state)
        self.log.emit(
            "certificate-activated",
            "the new certificate is now current",
            generation=pending.issued.generation,
            source=pending.issued.source,
        )

    def _drop_pending(self, why: str) -> None:
        self.log.emit("renewal-abandoned", why, level=30)
        self._save(replace(self.state, pending=None))
        self.store.cleanup(self.state)

    # -- DPS ------------------------------------------------------------------------------

    def onboarding(self) -> Onboarding | None:
        """The onboarding credential if it can be used now."""
        onboarding = self.config.onboarding
        if not isinstance(onboarding, X509Onboarding):
            return onboarding
        try:
            cert = x509.load_pem_x509_certificates(onboarding.certificate.read_bytes())[0]
            usable = onboarding.key.is_file()
        except (OSError, ValueError, IndexError):
            self.log.emit("onboarding-unusable", "cannot read the onboarding certificate", level=40)
            return None
        if not usable or self.server_now() >= cert.not_valid_after_utc:
            self.log.emit("onboarding-unusable", "the onboarding certificate expired", level=40)
            return None
        return onboarding

    async def recover(self, reason: str) -> None:
        """Get a new certificate through DPS because the current one is unusable."""
        onboarding = self.onboarding()
        if onboarding is None:
            if reason == "refused":
                raise DeviceDisabled(
                    "the hub refuses the certificate (device disabled or revoked) and there is "
                    "no onboarding credential to register again",
                    source="hub",
                )
            raise ReonboardRequired(
                "no-onboarding-credential",
                f"no usable certificate ({reason}) and no usable onboarding credential: "
                "the device must be re-onboarded",
            )
        await self.provision(onboarding, reason)

    async def provision(self, onboarding: Onboarding, reason: str) -> None:
        """Register through DPS with a new key (or resume a registration under way)."""
        pending = self.state.pending
        if pending is None or pending.method != "dps" or pending.issued is not None:
            pending = self._new_pending("dps", self.config.dps.registration_id)
        key = self.store.load_key(pending.generation)
        self.log.emit("dps-register", f"registering through DPS ({reason})", reason=reason)
        client = DpsClient(
            self.transport,
            self.config.dps,
            onboarding,
            clock=self.clock,
            sleep=self.sleep,
            timeout=self.config.renewal.request_timeout,
            client_version=self.client_version,
        )
        registration = await client.register(
            base64.b64decode(pending.csr),
            server_now=self.server_now(),
            on_sent=lambda: self.checkpoint("csr-sent"),
        )
        self.checkpoint("response-received")
        check_chain_matches(registration.chain, key, self.config.dps.registration_id)
        device_id, hub, issued_at, offset = self._dps_timing(registration)
        self._store_issued(pending, registration.chain, device_id, hub, issued_at, offset, "dps")
        self.log.emit(
            "dps-assigned",
            f"DPS assigned {registration.device_id} to {registration.assigned_hub}",
            substatus=registration.substatus,
        )

    def _dps_timing(self, reg: Registration) -> tuple[str, str, dt.datetime, dt.timedelta]:
        leaf = reg.chain[0]
        issued_at = reg.server_time
        if issued_at is None or not (
            leaf.not_valid_before_utc <= issued_at < leaf.not_valid_after_utc
        ):
            issued_at = self._backdated_start(leaf)
        offset = estimate_offset(issued_at, reg.sent_at, reg.answered_at)
        return reg.device_id, reg.assigned_hub, issued_at, offset

    def _backdated_start(self, leaf: x509.Certificate) -> dt.datetime:
        """``notBefore`` + the server's backdate: when the server issued ``leaf``. A
        backdate setting that puts this at or past ``notAfter`` is wrong: ``notBefore``."""
        start = leaf.not_valid_before_utc + dt.timedelta(seconds=self.config.clock.server_backdate)
        return start if start < leaf.not_valid_after_utc else leaf.not_valid_before_utc

    # -- hub renewal ----------------------------------------------------------------------

    async def renew_via_hub(self, conn: HubConnection) -> None:
        """Renew through the credentials API; the new chain is saved as pending."""
        current = self.state.current
        assert current is not None
        pending = self.state.pending
        resumed = pending is not None and pending.method == "hub" and pending.issued is None
        if not resumed:
            pending = self._new_pending("hub", current.device_id)
        assert pending is not None
        try:
            chain, sent_at = await self._issue(conn, pending)
        except RenewalError as exc:
            if exc.transient or not resumed:
                raise
            self.log.emit("renewal-restart", f"resumed request refused ({exc.message}); new key")
            pending = self._new_pending("hub", current.device_id)
            chain, sent_at = await self._issue(conn, pending)
        self.checkpoint("response-received")
        check_chain_matches(chain, self.store.load_key(pending.generation), current.device_id)
        issued_at = self._backdated_start(chain[0])
        offset = estimate_offset(issued_at, sent_at, self.clock.now())
        self._store_issued(
            pending, chain, current.device_id, current.assigned_hub, issued_at, offset, "hub"
        )

    async def _issue(
        self, conn: HubConnection, pending: Pending
    ) -> tuple[list[x509.Certificate], dt.datetime]:
        self.log.emit("renewal-request", "asking the hub for a certificate", rid=pending.rid)
        replace_rid: str | None = None
        for attempt in range(2):
            sent_at = self.clock.now()
            try:
                chain = await conn.issue_certificate(
                    pending.csr,
                    pending.rid,
                    replace=replace_rid,
                    timeout=self.config.renewal.request_timeout,
                    on_sent=lambda: self.checkpoint("csr-sent"),
                )
                return chain, sent_at
            except RenewalError as exc:
                if exc.error_code != _OPERATION_ACTIVE or attempt:
                    raise
                active = exc.info.get("requestId")
                replace_rid = active if isinstance(active, str) and active else "*"
                self.log.emit(
                    "renewal-replace", "an operation is active; replacing it", replace=replace_rid
                )
        raise AssertionError("unreachable")

    # -- shared ---------------------------------------------------------------------------

    def _new_pending(self, method: Literal["hub", "dps"], common_name: str) -> Pending:
        generation, state = self.store.allocate(self.state)
        key = generate_private_key(self.config.renewal.key_type)
        self.store.write_key(generation, key)
        pending = Pending(
            generation=generation,
            method=method,
            rid=self.rng.token_bytes(8).hex(),
            csr=csr_base64(make_csr(key, common_name)),
        )
        self._save(replace(state, pending=pending))
        self.store.cleanup(self.state)
        self.checkpoint("key-generated")
        return pending

    def _store_issued(
        self,
        pending: Pending,
        chain: list[x509.Certificate],
        device_id: str,
        assigned_hub: str,
        issued_at: dt.datetime,
        offset: dt.timedelta,
        source: Literal["hub", "dps"],
    ) -> None:
        self.store.write_chain(pending.generation, chain)
        issued = Issued(
            generation=pending.generation,
            device_id=device_id,
            assigned_hub=assigned_hub,
            issued_at=issued_at,
            source=source,
        )
        state = replace(
            self.state,
            pending=replace(pending, issued=issued),
            clock_offset_seconds=round(offset.total_seconds(), 3),
        )
        self._save(state)
        self.checkpoint("files-written")
        info = self.info(issued)
        self.log.emit(
            "certificate-issued",
            f"new certificate valid until {info.not_after.isoformat()}",
            serial=info.serial_hex,
            valid_from=info.not_before,
            valid_until=info.not_after,
            source=source,
        )
        self._check_skew(offset)

    def _check_skew(self, offset: dt.timedelta) -> None:
        if abs(offset.total_seconds()) > self.config.clock.max_skew:
            self.log.emit(
                "clock-skew",
                f"the device clock is {-offset.total_seconds():+.1f} s off the server's",
                level=30,
                offset_seconds=offset.total_seconds(),
            )

    # -- after connecting -----------------------------------------------------------------

    async def after_connect(self, conn: HubConnection) -> None:
        """Read the twin (renewal window) and report the certificate if it changed."""
        info = self.current_info()
        assert info is not None
        try:
            twin = await conn.get_twin()
        except ProtocolError as exc:
            self.log.emit("twin-unavailable", exc.message, level=30)
            twin = {}
        desired = _object(twin.get("desired"))
        self.update_window(desired.get("certificateRenewal"))
        reported = _object(twin.get("reported"))
        if reported.get("certificate") == info.report():
            return
        try:
            version = await conn.report({"certificate": info.report()})
        except ProtocolError as exc:  # the certificate works; the report can wait
            self.log.emit("report-failed", exc.message, level=30)
            return
        self.log.emit(
            "certificate-reported",
            "reported the certificate in the twin",
            serial=info.serial_hex,
            version=version,
        )

    def update_window(self, value: object) -> bool:
        """Take a new ``certificateRenewal`` value; True when the window changed."""
        window = parse_window(value)
        if window == self.window:
            return False
        self.window = window
        if window is not None:
            self.log.emit(
                "renewal-window",
                "the server suggests a renewal window",
                renew_after=window.renew_after,
                renew_before=window.renew_before,
            )
        return True


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
