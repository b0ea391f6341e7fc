"""Wiring: builds the store, the listener and its frontends, and the change feed.

``run_server`` is what ``certhub serve`` runs: one uvloop event loop per process holding
a :class:`Server`; blocking store work goes to a bounded thread executor. Tests start the
same :class:`Server` on an ephemeral port (see ``tests/serverkit.py``).

Where things plug in (:meth:`Server.start`): the MQTT/TLS listener takes an ordered list
of frontends (DPS, then the hub; the first whose ``accepts`` is true gets the CONNECT);
the hub calls the renewal service for the credentials API and at connect; the HTTP side
(service API, DPS over HTTPS, dashboard, metrics) starts after the listener.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from certhub.authority import CertificateAuthorityService
from certhub.clock import Clock, SystemClock
from certhub.cluster import Coordinator, health_router, per_node_rate
from certhub.dashboard import http_routers
from certhub.datadir import DataDir
from certhub.dps import DpsFrontend, DpsSettings, ProvisioningService, dps_router
from certhub.hub import EventPoller, HubFrontend, HubService, TelemetryBuffer
from certhub.issuer_lifecycle import IssuerLifecycle, RetirementLoop
from certhub.listener import Frontend, Listener, ServerTls, trust_pems
from certhub.metrics import node_name
from certhub.rand import Random, SystemRandom
from certhub.registry import Store
from certhub.registry._events import EventRecord
from certhub.renewal import RenewalConfig, RenewalService
from certhub.service.api import service_routers
from certhub.service.http import HttpsServer, create_http_app
from certhub.service.pki_http import (
    CrlRefresher,
    CrlSettings,
    PkiPublisher,
    crl_base_url,
    pki_router,
)
from certhub.service_hub import build_service_context
from certhub.signing import SigningProcesses

__all__ = [
    "Server",
    "ServerConfig",
    "freeze_startup_heap",
    "new_event_loop",
    "run_server",
    "serve_forever",
]

log = logging.getLogger("certhub")

T = TypeVar("T")
_TRUST_EVENTS = frozenset({"ca.changed", "policy.changed", "enrollment.changed"})


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps its data and where it listens."""

    data_dir: Path
    database_url: str | None = None
    bind: str = "127.0.0.1"
    mqtt_port: int = 8883
    namespace: str = "default"
    store_workers: int = 4
    event_poll_interval: float = 0.2
    telemetry_queue_size: int = 10_000
    connect_timeout: float = 30.0
    handshake_threads: int = 1
    """Threads running the MQTT listener's TLS handshakes (OpenSSL works without the GIL,
    so handshakes use a core the event loop is not on); 0: the event loop's own TLS."""
    signing_processes: int = 1
    """Child processes that validate CSRs and sign leaves (:mod:`certhub.signing`), so the
    authority's work runs beside the server's own, not under its GIL; 0: sign in the
    server process."""
    https_port: int | None = None
    """HTTPS (service API, DPS over HTTPS) port; None: no HTTPS listener, 0: any free."""
    node_name: str | None = None
    """This process's name in the cluster (``/readyz``, metrics, ``cluster_nodes``);
    None: the host name."""
    reuse_port: bool = False
    """Bind the MQTT and HTTPS ports with ``SO_REUSEPORT`` (several processes, one port)."""
    cluster_heartbeat: float = 2.0
    """Seconds between heartbeats (node row, live count, lease renewal)."""
    lease_ttl: float = 10.0
    """Seconds a lease outlives its holder's last heartbeat (takeover after a crash)."""
    renewal: RenewalConfig | None = None
    """Renewal settings (None: ``RenewalConfig.from_store``, the ``renewal.*`` settings);
    ``admission_rate`` is cluster-wide, split between the live nodes."""
    retirement_interval: float = 60.0
    """Seconds between checks for drained issuing CAs to retire (one node of the cluster)."""


class Server:
    """A running certhub: the store, the MQTT/TLS listener (DPS, hub), the change feed.

    ``await start()`` binds (``mqtt_port=0`` picks a free port, see :attr:`mqtt_address`);
    ``await stop()`` closes every connection, then the store. Both run on the caller's loop.
    """

    def __init__(
        self, config: ServerConfig, *, clock: Clock | None = None, rng: Random | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.rng: Random = rng or SystemRandom()
        self.data_dir = DataDir(config.data_dir)
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._listener: Listener | None = None
        self._frontend: HubFrontend | None = None
        self._hub: HubService | None = None
        self._events: EventPoller | None = None
        self._tls: ServerTls | None = None
        self._dps: ProvisioningService | None = None
        self._authority: CertificateAuthorityService | None = None
        self._renewal: RenewalService | None = None
        self._https: HttpsServer | None = None
        self._crl: CrlRefresher | None = None
        self._coordinator: Coordinator | None = None
        self._renewal_config = config.renewal
        self._next_rebalance = 0.0
        self._retirement: RetirementLoop | None = None

    # -- parts --------------------------------------------------------------------------

    @property
    def authority(self) -> CertificateAuthorityService:
        """The namespace's authority (its :attr:`~CertificateAuthorityService.signer` is
        the signing processes, if any)."""
        assert self._authority is not None, "server not started"
        return self._authority

    @property
    def store(self) -> Store:
        """The registry store (call it through :meth:`run` from async code)."""
        assert self._store is not None, "server not started"
        return self._store

    @property
    def hub(self) -> HubService:
        """The hub's service-side API."""
        assert self._hub is not None, "server not started"
        return self._hub

    @property
    def hub_frontend(self) -> HubFrontend:
        """The hub's listener frontend (live sessions)."""
        assert self._frontend is not None, "server not started"
        return self._frontend

    @property
    def listener(self) -> Listener:
        """The MQTT/TLS listener."""
        assert self._listener is not None, "server not started"
        return self._listener

    @property
    def tls(self) -> ServerTls:
        """The listener's TLS contexts."""
        assert self._tls is not None, "server not started"
        return self._tls

    @property
    def events(self) -> EventPoller:
        """The change-feed poller."""
        assert self._events is not None, "server not started"
        return self._events

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """Where the MQTT/TLS listener is bound."""
        return self.listener.address

    def run(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        """Run a blocking call (store work) in the bounded executor."""
        assert self._executor is not None, "server not started"
        call = functools.partial(fn, *args)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start the hub, the listener and the change feed."""
        config = self.config
        self._executor = ThreadPoolExecutor(config.store_workers, "certhub-store")
        url = config.database_url or self.data_dir.database_url
        self._store = await self.run(Store.open, url)
        hosts = await self.run(_hosts, self._store)
        trust = await self.run(trust_pems, self._store, config.namespace)
        self._tls = ServerTls(self.data_dir.server_cert_path, self.data_dir.server_key_path, trust)
        self._authority = await self.run(self._open_authority)
        if self._authority.signer is not None:
            self._authority.signer.start()  # ready by the first CSR (until then: in-process)
        if self._renewal_config is None:
            self._renewal_config = await self.run(RenewalConfig.from_store, self._store)
        self._renewal = RenewalService(
            self._store,
            self._authority,
            clock=self.clock,
            rng=self.rng,
            run=self.run,
            config=dataclasses.replace(self.renewal_config, detection_interval=0),
        )  # its periodic jobs run under a cluster lease (see _start_cluster)
        await self._renewal.start()
        self._frontend = HubFrontend(
            self._store,
            run=self.run,
            clock=self.clock,
            rng=self.rng,
            hosts=hosts,
            namespace=config.namespace,
            telemetry=TelemetryBuffer(config.telemetry_queue_size),
            credentials=self._renewal,
        )
        await self._frontend.start()
        self._hub = HubService(self._frontend)
        # DPS first: it accepts `{idScope}/registrations/…`, the hub `{host}/{deviceId}/?…`.
        self._dps = await self.run(self._provisioning, hosts)
        frontends: list[Frontend] = [DpsFrontend(self._dps, executor=self._executor)]
        frontends.append(self._frontend)
        await self._start_cluster()
        self._listener = Listener(
            frontends,
            self._tls,
            host=config.bind,
            port=config.mqtt_port,
            connect_timeout=config.connect_timeout,
            reuse_port=config.reuse_port,
            handshake_threads=config.handshake_threads,
        )
        await self._listener.start()
        self._events = EventPoller(
            self._store, self.run, self.clock, interval=config.event_poll_interval
        )
        self._events.subscribe(self._frontend.on_events)
        self._events.subscribe(self._on_trust_events)
        lifecycle = IssuerLifecycle(self._authority)
        self._events.subscribe(lifecycle.on_events)
        await self._events.start()
        self._retirement = RetirementLoop(lifecycle, self.run)
        self.coordinator.singleton(
            "ca.retirement", config.retirement_interval, self._retirement.run_once
        )
        host, port = self._listener.address
        names = ", ".join(f.name for f in frontends)
        log.info("MQTT/TLS listener on %s:%d (%s)", host, port, names)
        if config.https_port is not None:
            await self._start_https(config.https_port)

    async def _start_https(self, port: int) -> None:
        """The HTTP side: the service API and DPS over HTTPS (the dashboard goes here too)."""
        app = create_http_app()
        self._https = HttpsServer(
            app,
            host=self.config.bind,
            port=port,
            ssl_context=self.tls.context,
            reuse_port=self.config.reuse_port,
        )
        app.include_router(health_router(self.coordinator.name, self._readiness))
        context = await build_service_context(self, self._https.port, authority=self._authority)
        for router in service_routers(context):
            app.include_router(router)
        assert self._dps is not None
        app.include_router(dps_router(self._dps, executor=self._executor))
        await self._start_pki(app)
        for router in http_routers(self):  # dashboard + /metrics
            app.include_router(router)
        await self._https.start()
        log.info("HTTPS listener on %s:%d (service API, dps)", *self.https_address)

    @property
    def https_port(self) -> int | None:
        """The bound HTTPS port, None without an HTTPS listener."""
        return None if self._https is None else self._https.port

    @property
    def https_address(self) -> tuple[str, int]:
        """Where the HTTPS listener is bound."""
        assert self._https is not None, "no HTTPS listener"
        return self._https.host, self._https.port

    async def stop(self) -> None:
        """Close every connection, stop the background work and close the store."""
        if self._coordinator is not None:
            await self._coordinator.stop()  # releases the leases: others take over at once
            self._coordinator = None
        if self._https is not None:
            await self._https.stop()
            self._https = None
        if self._retirement is not None:
            await self._retirement.stop()
            self._retirement = None
        if self._crl is not None:
            await self._crl.stop()
        if self._events is not None:
            await self._events.stop()
        if self._listener is not None:
            await self._listener.stop()
        if self._frontend is not None:
            await self._frontend.stop()
        if self._renewal is not None:
            await self._renewal.stop()
            self._renewal = None
        if self._dps is not None:
            await self.run(self._dps.close)
            self._dps = None
        if self._authority is not None and self._authority.signer is not None:
            await self.run(self._authority.signer.close)
        if self._store is not None:
            await self.run(self._store.close)
            self._store = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        log.info("certhub stopped")

    # -- cluster ---------------------------------------------------------------------------

    @property
    def renewal_config(self) -> RenewalConfig:
        """The renewal settings (``admission_rate`` is the cluster-wide total)."""
        return self._renewal_config or RenewalConfig()

    @property
    def coordinator(self) -> Coordinator:
        """This node's cluster coordinator (heartbeat, leases, singleton jobs)."""
        assert self._coordinator is not None, "server not started"
        return self._coordinator

    async def _start_cluster(self) -> None:
        """Register this node; run the scheduled work under leases; share the rates."""
        config, frontend = self.config, self.hub_frontend
        self._coordinator = Coordinator(
            self.store.engine,
            node_id=frontend.node_id,
            name=node_name(config.node_name),
            clock=self.clock,
            run=self.run,
            heartbeat=config.cluster_heartbeat,
            lease_ttl=config.lease_ttl,
            info={"bind": config.bind, "mqtt_port": config.mqtt_port, "pid": os.getpid()},
        )
        renewal = self.renewal_config
        if renewal.detection_interval > 0:
            self._next_rebalance = asyncio.get_running_loop().time() + renewal.rebalance_interval
            self._coordinator.singleton(
                "renewal.jobs", renewal.detection_interval, self._renewal_jobs
            )
        await self._coordinator.start()
        self._coordinator.on_live_nodes(self._on_live_nodes)

    async def _renewal_jobs(self) -> None:
        """Overdue detection (and recovery of stuck operations), rebalancing when due."""
        assert self._renewal is not None
        await self._renewal.run_detection()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_rebalance:
            self._next_rebalance = loop.time() + self.renewal_config.rebalance_interval
            await self._renewal.run_rebalance()

    def _on_live_nodes(self, count: int) -> None:
        """Route to sessions on other nodes while there are any; split the admission rate."""
        frontend = self.hub_frontend
        if count > 1 and not frontend.clustered:
            frontend.spawn(frontend.load_remote_sessions())
        frontend.clustered = count > 1
        frontend.live_nodes = self.coordinator.live_ids
        config = self.renewal_config
        bucket = getattr(self._renewal, "_bucket", None)  # TODO(E): a public setter
        rate = per_node_rate(config.admission_rate, count)
        if bucket is not None and rate is not None:
            bucket.rate = rate
            burst = config.admission_burst or config.admission_rate or rate
            bucket.burst = max(1.0, burst / count)

    async def _readiness(self) -> dict[str, bool]:
        """``/readyz``: listener bound, store answering, heartbeat recent."""
        store = await self.run(_store_answers, self.store)
        return {
            "listener": self._listener is not None,
            "store": store,
            "cluster": self._coordinator is not None and self._coordinator.healthy,
        }

    def _open_authority(self) -> CertificateAuthorityService:
        """The namespace's CAs and policies (shared by DPS and hub renewal)."""
        processes = self.config.signing_processes
        return CertificateAuthorityService(
            self.store,
            clock=self.clock,
            rng=self.rng,
            passphrase=self.data_dir.passphrase(self.rng),
            namespace=self.config.namespace,
            crl_base_url=crl_base_url(
                self.store.get_setting("crl_base_url"),
                self.store.get_setting("hub_host") or _hosts(self.store)[0],
                self.config.https_port,
            ),
            signer=SigningProcesses(processes) if processes > 0 else None,
        )

    async def _start_pki(self, app: Any) -> None:
        """CRLs and OCSP on the HTTPS app; CRLs rebuilt on revocations and on a lease."""
        assert self._authority is not None
        settings = await self.run(CrlSettings.from_store, self.store)
        publisher = PkiPublisher(self.store, self._authority, clock=self.clock, settings=settings)
        app.include_router(pki_router(publisher, self.run))
        self._crl = CrlRefresher(publisher, self.run)
        self.events.subscribe(self._crl.on_events)
        interval = publisher.settings.refresh_interval
        self.coordinator.singleton("crl.refresh", interval, self._crl.run_once)

    def _provisioning(self, hosts: Sequence[str]) -> ProvisioningService:
        """The DPS core, sending devices to this hub's host name."""
        assert self._authority is not None
        hub_host = self.store.get_setting("hub_host") or hosts[0]
        settings = DpsSettings(hub_host=hub_host)
        return ProvisioningService(
            self.store, self._authority, settings=settings, clock=self.clock, rng=self.rng
        )

    async def reload_trust(self) -> bool:
        """Re-read the trusted CAs now; True when new handshakes trust a different set."""
        trust = await self.run(trust_pems, self.store, self.config.namespace)
        changed = self.tls.update_trust(trust)
        if changed:
            log.info("client trust store rebuilt (%d certificates)", len(trust))
        return changed

    def _on_trust_events(self, batch: Sequence[EventRecord]) -> None:
        if any(event.kind in _TRUST_EVENTS for event in batch):
            asyncio.get_running_loop().create_task(self._reload_trust_logged())

    async def _reload_trust_logged(self) -> None:
        try:
            await self.reload_trust()
        except Exception:
            log.exception("rebuilding the client trust store failed")


def _store_answers(store: Store) -> bool:
    try:
        store.last_event_id()
    except Exception:
        return False
    return True


def _hosts(store: Store) -> list[str]:
    """Host names the hub answers to (settings ``hosts`` and ``hub_host``)."""
    hosts = list(json.loads(store.get_setting("hosts") or "[]"))
    hub_host = store.get_setting("hub_host")
    if hub_host:
        hosts.append(hub_host)
    return hosts or ["localhost", "127.0.0.1"]


def freeze_startup_heap() -> None:
    """Take every object alive now out of the garbage collector's scans (``gc.freeze``).

    A server process keeps what it built at start-up (modules, the schema, SQLAlchemy's
    caches, TLS contexts, the CA keys) until it exits; left in the oldest generation,
    every full collection walks all of it again while the event loop and the writers
    wait. Measured in the renewal benchmark's server: full collections paused it for up
    to 106 ms (640 ms in all over a 25 s run); after freezing, 51 ms (147 ms). Only for
    a process that runs one server, as ``certhub serve`` does: frozen objects are never
    freed, so a process that starts many servers (the tests) must not call it.
    """
    gc.collect()
    gc.freeze()


async def serve_forever(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run a :class:`Server` until ``stop`` is set (this process runs only that server)."""
    log.info("certhub serving data directory %s", config.data_dir)
    server = Server(config)
    await server.start()
    freeze_startup_heap()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_server(config: ServerConfig) -> None:
    """Run the server on uvloop until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(config, stop)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop (lean TLS transports), or asyncio's where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
