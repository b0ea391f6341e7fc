"""The coordinator: this node's heartbeat, its leases, and work that runs once per cluster.

Every ``heartbeat`` seconds the coordinator refreshes the node's row, counts the live
nodes and takes or renews each lease it was asked to want. A lease is believed held for
``lease_ttl`` minus one heartbeat after the last successful renewal (by the local
monotonic clock), so a node that cannot reach the store stops its singleton work before
another node can take the lease over.

:meth:`Coordinator.singleton` registers periodic work (overdue detection, CRL refresh,
CA retirement): every node runs the timer, only the lease holder runs the job. A node
stopping cleanly releases its leases and deletes its row, so the others take over at
their next heartbeat; a killed node's leases run out after ``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine

from certhub.clock import Clock
from certhub.cluster.leases import LeaseStore
from certhub.cluster.nodes import NodeRecord, NodeRegistry

__all__ = ["Coordinator", "Job", "Runner"]

log = logging.getLogger("certhub.cluster")
T = TypeVar("T")
Job = Callable[[], Awaitable[Any]]


class Runner(Protocol):
    """Runs a blocking call off the event loop (a bounded executor)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class Coordinator:
    """Heartbeat, live-node count, leases and singleton jobs of one node."""

    def __init__(
        self,
        engine: Engine,
        *,
        node_id: str,
        name: str,
        clock: Clock,
        run: Runner,
        heartbeat: float = 2.0,
        lease_ttl: float = 10.0,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if lease_ttl <= 2 * heartbeat:
            raise ValueError("lease_ttl must exceed two heartbeats")
        self.node_id = node_id
        self.name = name
        self.heartbeat = heartbeat
        self.lease_ttl = lease_ttl
        self.info = dict(info or {})
        self.live_nodes = 1
        self.live_ids: frozenset[str] = frozenset({node_id})
        """Node ids of the live nodes (this one included), as of the last heartbeat."""
        self.leases = LeaseStore(engine)
        self.nodes = NodeRegistry(engine)
        self._clock = clock
        self._run = run
        self._wanted: dict[str, float] = {}  # lease -> monotonic time it is believed held until
        self._jobs: list[tuple[str, float, Job]] = []
        self._listeners: list[Callable[[int], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.healthy = False

    # -- registration ---------------------------------------------------------------------

    def want(self, lease: str) -> None:
        """Take and keep lease ``lease`` whenever it is free."""
        self._wanted.setdefault(lease, 0.0)

    def singleton(self, lease: str, interval: float, job: Job) -> None:
        """Run ``job`` every ``interval`` seconds on the one node holding ``lease``."""
        self.want(lease)
        self._jobs.append((lease, interval, job))
        if self._tasks:
            self._tasks.append(
                asyncio.get_running_loop().create_task(self._job_loop(lease, interval, job))
            )

    def on_live_nodes(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(count)`` now and whenever the set of live nodes changes."""
        self._listeners.append(listener)
        listener(self.live_nodes)

    def holds(self, lease: str) -> bool:
        """True while this node believes it holds ``lease``."""
        until = self._wanted.get(lease, 0.0)
        return asyncio.get_running_loop().time() < until

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Register this node, take free leases, start the heartbeat and the jobs."""
        await self.tick()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat_loop()))
        for lease, interval, job in self._jobs:
            self._tasks.append(loop.create_task(self._job_loop(lease, interval, job)))

    async def stop(self) -> None:
        """Stop the jobs, release the leases, delete this node's row."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            for lease in self._wanted:
                await self._run(self.leases.release, lease, self.node_id)
            await self._run(self.nodes.remove, self.node_id)
        self._wanted = dict.fromkeys(self._wanted, 0.0)

    async def tick(self) -> None:
        """One heartbeat: refresh the row, count live nodes, take or renew the leases."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = self._clock.now()
        await self._run(self.nodes.heartbeat, self.node_id, self.name, now, self.info)
        live = await self._run(self.nodes.live, now, self._liveness)
        self._set_live(frozenset(n.node_id for n in live) | {self.node_id})
        ttl = dt.timedelta(seconds=self.lease_ttl)
        for lease in list(self._wanted):
            held = await self._run(self.leases.acquire, lease, self.node_id, ttl, now)
            if held and self._wanted[lease] <= loop.time():
                log.info("node %s took lease %r", self.name, lease)
            self._wanted[lease] = started + self.lease_ttl - self.heartbeat if held else 0.0
        self.healthy = True

    async def live(self) -> list[NodeRecord]:
        """The live nodes as registered."""
        return await self._run(self.nodes.live, self._clock.now(), self._liveness)

    @property
    def _liveness(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.lease_ttl)

    def _set_live(self, ids: frozenset[str]) -> None:
        if ids == self.live_ids:
            return
        count = len(ids)
        log.info("node %s: %d live nodes (was %d)", self.name, count, self.live_nodes)
        self.live_nodes, self.live_ids = count, ids
        for listener in self._listeners:
            listener(count)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.tick()
            except Exception:
                self.healthy = False
                log.exception("cluster heartbeat failed")

    async def _job_loop(self, lease: str, interval: float, job: Job) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.holds(lease):
                continue
            try:
                await job()
            except Exception:
                log.exception("scheduled job %r failed", lease)
