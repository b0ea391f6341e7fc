"""The device agent: keeps one device connected to the hub on a fresh certificate.

:meth:`Agent.run` is the daemon loop — establish a connection (provisioning or
recovering through DPS when needed), report the certificate, sleep until the renewal
time, renew, reconnect on the new certificate — with capped, jittered backoff after
failures and a slow pace while the device is disabled. :meth:`Agent.run_once` does one
pass for cron or a systemd timer. Applications register handlers (desired properties,
direct methods, cloud-to-device) and use :attr:`Agent.connection` to send telemetry on
the same connection; the handlers follow the agent across reconnects.

Everything that waits goes through an injected sleeper and everything that reads the
time through an injected clock, so a simulator can run thousands of agents in one
event loop and tests can run a 30-day certificate in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from certhub import __version__
from certhub.agent.certs import CertificateInfo
from certhub.agent.config import AgentConfig
from certhub.agent.errors import AgentError, DeviceDisabled, RenewalError, ReonboardRequired
from certhub.agent.hub import C2dHandler, DesiredHandler, Handlers, HubConnection, MethodHandler
from certhub.agent.keystore import AgentState
from certhub.agent.lifecycle import Checkpoint, Lifecycle
from certhub.agent.logs import EventLog
from certhub.agent.schedule import backoff_delay
from certhub.agent.transport import TlsTransport, Transport
from certhub.clock import Clock, SystemClock
from certhub.rand import Random, SystemRandom

__all__ = ["Agent", "AsyncioSleeper", "ExitCode", "Sleeper"]

T = TypeVar("T")
_MAX_SLEEP = 3600.0  # re-read the clock at least hourly (suspend, clock steps)
_HEALTHY_SESSION = dt.timedelta(minutes=1)
_ONCE_ATTEMPTS = 3


class ExitCode(enum.IntEnum):
    """Exit status of ``certhub agent`` (documented in docs/agent.md)."""

    OK = 0
    ERROR = 1
    CONFIG = 2
    REONBOARD = 3
    DISABLED = 4
    TEMPORARY = 75  # EX_TEMPFAIL: try again later


class Sleeper(Protocol):
    """Waits; the agent's only source of delay (tests and simulators inject their own)."""

    async def sleep(self, seconds: float) -> None: ...


class AsyncioSleeper:
    """``asyncio.sleep``."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class _Stopped(Exception):
    """stop() was called while a step was running."""


class Agent:
    """One device's agent; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        rng: Random | None = None,
        sleeper: Sleeper | None = None,
        checkpoint: Checkpoint | None = None,
        lock_state: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.rng: Random = rng or SystemRandom()
        self.sleeper: Sleeper = sleeper or AsyncioSleeper()
        self.handlers = Handlers(desired=[self._on_desired])
        self.log = EventLog(config.dps.registration_id, logger)
        self._lock_state = lock_state
        self._life = Lifecycle(
            config,
            transport=transport or TlsTransport(config.trust_anchor),
            clock=self.clock,
            rng=self.rng,
            sleep=self.sleeper.sleep,
            checkpoint=checkpoint or (lambda _step: None),
            log=self.log,
            handlers=self.handlers,
            client_version=f"certhub-agent/{__version__}",
        )
        self._stop = asyncio.Event()
        self._reschedule = asyncio.Event()
        self._connected = asyncio.Event()
        self._connection: HubConnection | None = None

    # -- application API --------------------------------------------------------------

    def on_desired(self, handler: DesiredHandler) -> None:
        """Call ``handler(patch)`` for every desired-properties patch."""
        self.handlers.desired.append(handler)

    def on_method(self, handler: MethodHandler) -> None:
        """Answer direct methods with ``await handler(name, payload) -> (status, body)``."""
        self.handlers.method = handler

    def on_c2d(self, handler: C2dHandler) -> None:
        """Receive cloud-to-device messages (subscribed from the next connect on)."""
        self.handlers.c2d = handler

    @property
    def connection(self) -> HubConnection | None:
        """The live hub connection, or None between connections."""
        return self._connection

    async def wait_connected(self) -> HubConnection:
        """Wait until the agent is connected and has reported its certificate."""
        while True:
            await self._connected.wait()
            if self._connection is not None:
                return self._connection

    @property
    def certificate(self) -> CertificateInfo | None:
        """The current certificate, if any."""
        return self._life.current_info()

    @property
    def state(self) -> AgentState:
        """The saved state (current and pending generations)."""
        return self._life.state

    def server_now(self) -> dt.datetime:
        """The server's time as the agent estimates it."""
        return self._life.server_now()

    def stop(self) -> None:
        """Ask :meth:`run` to close the connection and return (safe from signal handlers)."""
        self._stop.set()

    # -- daemon ---------------------------------------------------------------------------

    async def run(self) -> ExitCode:
        """Run until :meth:`stop`; returns REONBOARD if the device can no longer connect."""
        self._life.open(lock=self._lock_state)
        try:
            return await self._daemon()
        finally:
            self._life.close()

    async def _daemon(self) -> ExitCode:
        failures = 0
        while not self._stop.is_set():
            started = self.clock.now()
            try:
                ended = await self._stoppable(self._session())
            except _Stopped:
                break
            except ReonboardRequired as exc:
                self.log.emit("reonboard-required", exc.message, level=logging.CRITICAL)
                return ExitCode.REONBOARD
            except DeviceDisabled as exc:
                delay = self._slow_delay()
                self.log.emit(
                    "device-disabled",
                    f"{exc.message}; retrying in {delay:.0f} s",
                    level=logging.ERROR,
                    source=exc.source,
                    retry_in=delay,
                )
                await self._pause(delay)
                continue
            except AgentError as exc:
                delay = self._backoff(failures, exc)
                failures += 1
                self.log.emit(
                    "retry",
                    f"{exc.message}; retrying in {delay:.1f} s",
                    level=logging.WARNING,
                    reason=exc.reason,
                    retry_in=delay,
                )
                await self._pause(delay)
                continue
            if ended == "renewed" or self.clock.now() - started >= _HEALTHY_SESSION:
                failures = 0
            elif not self._stop.is_set():
                delay = self._backoff(failures, None)
                failures += 1
                await self._pause(delay)
        self.log.emit("stopped", "agent stopped")
        return ExitCode.OK

    async def _session(self) -> str:
        conn = await self._life.establish()
        try:
            await self._life.after_connect(conn)
            self._set_connection(conn)
            return await self._serve(conn)
        finally:
            self._set_connection(None)
            await conn.close()

    async def _serve(self, conn: HubConnection) -> str:
        while True:
            due = self._life.due_at()
            self.log.emit("renewal-scheduled", f"renewal at {due.isoformat()}", renew_at=due)
            outcome = await self._wait_until(due, conn)
            if outcome == "closed":
                self.log.emit(
                    "hub-disconnected",
                    f"connection closed: {conn.closed.result()}",
                    level=logging.WARNING,
                )
                return "connection-lost"
            if outcome == "window":
                continue
            renewed = await self._renew(conn, attempts=None)
            return "renewed" if renewed else "connection-lost"

    async def _wait_until(self, due: dt.datetime, conn: HubConnection) -> str:
        while True:
            remaining = (due - self.clock.now()).total_seconds()
            if remaining <= 0:
                return "due"
            self._reschedule.clear()
            outcome = await self._first(
                {
                    "due": self.sleeper.sleep(min(remaining, _MAX_SLEEP)),
                    "window": self._reschedule.wait(),
                },
                conn,
            )
            if outcome != "due":
                return outcome

    async def _renew(self, conn: HubConnection, *, attempts: int | None) -> bool:
        """Renew while ``conn`` is up and the certificate valid; True once a new chain is
        saved (the caller reconnects with it)."""
        wants_dps = self.config.renewal.method == "dps" or not conn.credentials_available
        use_dps = wants_dps and self._life.onboarding() is not None
        failures = 0
        while True:
            current = self._life.state.current
            if conn.closed.done() or current is None or self._life.expired(current):
                return False
            try:
                if use_dps:
                    onboarding = self._life.onboarding()
                    if onboarding is None:
                        use_dps = False
                        continue
                    await self._life.provision(onboarding, "renewal")
                else:
                    await self._life.renew_via_hub(conn)
                return True
            except (DeviceDisabled, ReonboardRequired):
                raise
            except RenewalError as exc:
                if not exc.transient and not use_dps and self._life.onboarding() is not None:
                    self.log.emit(
                        "renewal-fallback",
                        f"{exc.message}; renewing through DPS",
                        level=logging.WARNING,
                        error_code=exc.error_code,
                    )
                    use_dps = True
                    continue
                error: AgentError = exc
            except AgentError as exc:
                error = exc
            failures += 1
            if attempts is not None and failures >= attempts:
                raise error
            delay = self._backoff(failures - 1, error)
            self.log.emit(
                "renewal-retry",
                f"{error.message}; retrying in {delay:.1f} s",
                level=logging.WARNING,
                reason=error.reason,
                retry_in=delay,
            )
            if await self._first({"due": self.sleeper.sleep(delay)}, conn) == "closed":
                return False

    # -- one shot -------------------------------------------------------------------------

    async def run_once(self) -> ExitCode:
        """Provision or renew if due, report, and return (for cron and systemd timers)."""
        self._life.open(lock=self._lock_state)
        try:
            return await self._stoppable(self._once())
        except _Stopped:
            return ExitCode.TEMPORARY
        except ReonboardRequired as exc:
            self.log.emit("reonboard-required", exc.message, level=logging.CRITICAL)
            return ExitCode.REONBOARD
        except DeviceDisabled as exc:
            self.log.emit("device-disabled", exc.message, level=logging.ERROR, source=exc.source)
            return ExitCode.DISABLED
        except AgentError as exc:
            self.log.emit("failed", exc.message, level=logging.ERROR, reason=exc.reason)
            return ExitCode.TEMPORARY
        finally:
            self._life.close()

    async def _once(self) -> ExitCode:
        conn = await self._life.establish()
        try:
            await self._life.after_connect(conn)
            due = self._life.due_at()
            if due > self.clock.now():
                self.log.emit("renewal-not-due", f"renewal at {due.isoformat()}", renew_at=due)
                return ExitCode.OK
            if not await self._renew(conn, attempts=_ONCE_ATTEMPTS):
                return ExitCode.TEMPORARY
        finally:
            await conn.close()
        conn = await self._life.establish()
        try:
            await self._life.after_connect(conn)
        finally:
            await conn.close()
        return ExitCode.OK

    # -- plumbing -------------------------------------------------------------------------

    def _set_connection(self, conn: HubConnection | None) -> None:
        self._connection = conn
        if conn is None:
            self._connected.clear()
        else:
            self._connected.set()

    def _on_desired(self, patch: dict[str, Any]) -> None:
        if "certificateRenewal" in patch and self._life.update_window(patch["certificateRenewal"]):
            self._reschedule.set()

    def _backoff(self, failures: int, exc: AgentError | None) -> float:
        renewal = self.config.renewal
        retry_after = getattr(exc, "retry_after", None)
        return backoff_delay(
            failures,
            self.rng,
            initial=renewal.retry_initial,
            cap=renewal.retry_max,
            retry_after=retry_after if isinstance(retry_after, int | float) else None,
        )

    def _slow_delay(self) -> float:
        base = self.config.renewal.disabled_retry
        return backoff_delay(0, self.rng, initial=base * 2, cap=base * 2)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(_Stopped):
            await self._stoppable(self.sleeper.sleep(seconds))

    async def _first(self, waits: dict[str, Coroutine[Any, Any, Any]], conn: HubConnection) -> str:
        """Run ``waits`` until the first finishes (its name) or ``conn`` closes ("closed")."""
        tasks = {asyncio.ensure_future(coro): name for name, coro in waits.items()}
        try:
            done, _ = await asyncio.wait([*tasks, conn.closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task, name in tasks.items():
            if task in done and not task.cancelled():
                return name
        return "closed"

    async def _stoppable(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro``; cancel it and raise _Stopped when :meth:`stop` is called."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise _Stopped()
        return task.result()
