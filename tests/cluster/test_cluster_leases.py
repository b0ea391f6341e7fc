"""Leases, the node table, the rate split and the worker checks (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest

from certhub.clock import FixedClock
from certhub.cluster import (
    Coordinator,
    LeaseError,
    LeaseStore,
    NodeRegistry,
    WorkersRefused,
    check_workers,
    per_node_rate,
    worker_name,
)
from certhub.registry import Store

T0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=10)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One store per kind for the module (each test uses its own lease names)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('leases') / 'certhub.db'}"
    else:
        url = str(request.getfixturevalue("module_pg_url"))
    with Store.open(url) as opened:
        yield opened


@pytest.fixture
def jobs(request: pytest.FixtureRequest) -> str:
    """A lease name of this test's own."""
    return "jobs-" + request.node.name


def test_a_free_lease_is_taken_and_held_against_others(store: Store, jobs: str) -> None:
    leases = LeaseStore(store.engine)
    assert leases.acquire(jobs, "a", TTL, T0)
    assert not leases.acquire(jobs, "b", TTL, T0 + dt.timedelta(seconds=5))
    assert leases.holder(jobs, T0 + dt.timedelta(seconds=5)) == "a"


def test_renewing_extends_the_lease_and_keeps_its_start(store: Store, jobs: str) -> None:
    leases = LeaseStore(store.engine)
    assert leases.acquire(jobs, "a", TTL, T0)
    assert leases.acquire(jobs, "a", TTL, T0 + dt.timedelta(seconds=8))
    lease = leases.get(jobs)
    assert lease is not None
    assert (lease.acquired_at, lease.expires_at) == (T0, T0 + dt.timedelta(seconds=18))
    assert not leases.acquire(jobs, "b", TTL, T0 + dt.timedelta(seconds=12))


def test_an_expired_lease_is_taken_over(store: Store, jobs: str) -> None:
    leases = LeaseStore(store.engine)
    assert leases.acquire(jobs, "a", TTL, T0)
    later = T0 + dt.timedelta(seconds=10)
    assert leases.holder(jobs, later) is None
    assert leases.acquire(jobs, "b", TTL, later)
    lease = leases.get(jobs)
    assert lease is not None and (lease.holder, lease.acquired_at) == ("b", later)


def test_release_frees_only_the_holders_lease(store: Store, jobs: str) -> None:
    leases = LeaseStore(store.engine)
    assert leases.acquire(jobs, "a", TTL, T0)
    assert not leases.release(jobs, "b")
    assert leases.release(jobs, "a")
    assert leases.acquire(jobs, "b", TTL, T0)


@pytest.mark.parametrize(
    ("name", "ttl", "reason"),
    [
        pytest.param("", TTL, "empty-name", id="reject/empty-name"),
        pytest.param("jobs", dt.timedelta(0), "bad-ttl", id="reject/zero-ttl"),
        pytest.param("jobs", -TTL, "bad-ttl", id="reject/negative-ttl"),
    ],
)
def test_invalid_lease_requests_are_refused(
    store: Store, name: str, ttl: dt.timedelta, reason: str
) -> None:
    with pytest.raises(LeaseError) as caught:
        LeaseStore(store.engine).acquire(name, "a", ttl, T0)
    assert (caught.value.name, caught.value.reason) == (name, reason)


def test_nodes_are_live_until_their_heartbeat_ages_out(store: Store) -> None:
    nodes = NodeRegistry(store.engine)
    nodes.heartbeat("id-a", "a", T0, {"mqtt_port": 1})
    nodes.heartbeat("id-b", "b", T0 + dt.timedelta(seconds=5))
    live = nodes.live(T0 + dt.timedelta(seconds=9), TTL)
    assert [(n.name, dict(n.info)) for n in live] == [("a", {"mqtt_port": 1}), ("b", {})]
    assert [n.name for n in nodes.live(T0 + dt.timedelta(seconds=12), TTL)] == ["b"]
    nodes.remove("id-b")
    assert nodes.live(T0 + dt.timedelta(seconds=12), TTL) == []
    assert nodes.prune(T0 + dt.timedelta(seconds=1)) == 1


@pytest.mark.parametrize(
    ("total", "live", "share"),
    [(100.0, 1, 100.0), (100.0, 4, 25.0), (100.0, 0, 100.0), (None, 3, None)],
)
def test_a_cluster_rate_is_split_between_live_nodes(
    total: float | None, live: int, share: float | None
) -> None:
    assert per_node_rate(total, live) == share


@pytest.mark.parametrize(
    ("workers", "url", "reason"),
    [
        pytest.param(2, None, "sqlite-store", id="reject/workers-on-default-sqlite"),
        pytest.param(2, "sqlite:///x.db", "sqlite-store", id="reject/workers-on-sqlite"),
        pytest.param(0, "postgresql://h/db", "bad-count", id="reject/zero-workers"),
    ],
)
def test_workers_are_refused_where_they_cannot_share_the_store(
    workers: int, url: str | None, reason: str
) -> None:
    with pytest.raises(WorkersRefused) as caught:
        check_workers(workers, url)
    assert caught.value.reason == reason


def test_workers_are_allowed_on_postgresql_and_named_by_index() -> None:
    check_workers(4, "postgresql://127.0.0.1/certhub")
    check_workers(1, None)
    assert [worker_name("hub", i) for i in range(2)] == ["hub-1", "hub-2"]


def test_a_singleton_job_runs_on_one_coordinator_and_moves_when_it_stops(
    store: Store, jobs: str
) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        ran: list[str] = []
        clock = FixedClock(T0)

        async def run(fn, *args):  # type: ignore[no-untyped-def]
            return fn(*args)

        def coordinator(name: str) -> Coordinator:
            c = Coordinator(
                store.engine, node_id=name, name=name, clock=clock, run=run,
                heartbeat=0.05, lease_ttl=0.5,
            )  # fmt: skip
            c.singleton(jobs, 0.02, lambda: _record(ran, name))
            return c

        first, second = coordinator("a"), coordinator("b")
        await first.start()
        await second.start()
        await asyncio.sleep(0.3)
        before = list(ran)
        ran.clear()
        await first.stop()  # releases the lease: b takes it at its next heartbeat
        await asyncio.sleep(0.3)
        await second.stop()
        return before, ran

    before, after = asyncio.run(scenario())
    assert before and set(before) == {"a"}
    assert after and set(after) == {"b"}


async def _record(ran: list[str], name: str) -> None:
    ran.append(name)
