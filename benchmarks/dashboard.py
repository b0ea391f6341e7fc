"""The dashboard's fleet snapshot at 1,000 / 10,000 / 100,000 devices, next to references.

    .venv/bin/python benchmarks/dashboard.py [--sizes 1000,10000,100000] [--runs 15]
        [--database postgresql://postgres@127.0.0.1:5432/postgres] [--no-python]

For each size a fresh store (SQLite in a temporary directory; with ``--database``, a
fresh PostgreSQL database created on that server and dropped afterwards) gets the
synthetic fleet of ``tests/dashboard/fleetrows.py`` — every lifecycle, renewal windows,
certificate history — by bulk insert. Then, in the same run and through the same engine:

* ``count(*)``: ``SELECT count(*) FROM devices``, the floor of any statement;
* ``scan``: :meth:`~certhub.registry.Store.device_statistics` (``GROUP BY status`` over
  ``devices``, ``GET /statistics/devices``): one pass over one table;
* ``snapshot``: :func:`certhub.dashboard.fleet.take_snapshot` as the server's cache
  calls it (with the previous horizon as hint: counts and histograms in one
  ``GROUP BY``, issuance in another, the at-risk list by ``ORDER BY … LIMIT 500``,
  settings and CAs);
* ``cold``: the same without the hint (the first snapshot after a start: two
  ``GROUP BY`` passes);
* ``python``: the former computation (:mod:`certhub.dashboard.reference`: every
  device's row into Python, then counted, bucketed and sorted), fewer runs.

It prints p50/p99 of each (p99 of few runs is close to the maximum) and the ratios
snapshot / count(*), snapshot / scan and python / snapshot. PostgreSQL gets ``VACUUM
ANALYZE`` after the load (what autovacuum would have done). Not a timed assertion.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dashboard"))

from fleetrows import load_fleet

from certhub.dashboard.fleet import take_snapshot
from certhub.dashboard.reference import at_risk, reference_fleet, timeline
from certhub.registry import Store
from certhub.registry._service import LifecycleRule
from certhub.registry.schema import devices

console = Console(width=150)
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
RULE = LifecycleRule()


def timings(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of ``runs`` calls after one warm-up (nearest rank)."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, max(0, -(-99 * len(samples) // 100) - 1))]
    return statistics.median(samples), p99


def python_snapshot(store: Store) -> None:
    """What ``take_snapshot`` did before: every row into Python."""
    ref = reference_fleet(store, NOW, rule=RULE)
    _ = (ref.counts, ref.connected, timeline(ref), at_risk(ref.devices, limit=500))


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/bench.db") as store:
        yield store


@contextmanager
def postgresql_store(server: str) -> Iterator[Store]:
    admin = server.replace("postgresql+psycopg://", "postgresql://", 1)
    name = "certhub_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        with Store.open(f"{base}/{name}") as store:
            yield store
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(store: Store, n: int, runs: int, python: bool) -> dict[str, Any]:
    start = time.perf_counter()
    load_fleet(store, n, NOW, seed=n)
    loaded = time.perf_counter() - start
    count = sa.select(sa.func.count()).select_from(devices)
    hint = take_snapshot(store, NOW, rule=RULE).horizon_seconds
    row: dict[str, Any] = {"devices": n, "load": loaded}
    row["count"] = timings(lambda: store.run_select(count), runs)
    row["scan"] = timings(store.device_statistics, runs)
    row["snapshot"] = timings(lambda: take_snapshot(store, NOW, rule=RULE, horizon_hint=hint), runs)
    row["cold"] = timings(lambda: take_snapshot(store, NOW, rule=RULE), max(3, runs // 3))
    slow_runs = max(3, min(runs, 300_000 // n))
    row["python"] = timings(lambda: python_snapshot(store), slow_runs) if python else None
    return row


def report(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    columns: tuple[str, ...] = ("devices", "load s", "count(*) p50/p99", "scan p50/p99")
    columns += ("snapshot p50/p99",)
    columns += ("cold p50", "python p50", "snap/count", "snap/scan", "python/snap")
    for name in columns:
        table.add_column(name, justify="right")
    for r in rows:
        snap, count, scan = r["snapshot"], r["count"], r["scan"]
        cold, py = r["cold"], r["python"]
        table.add_row(
            f"{r['devices']:,}",
            f"{r['load']:.1f}",
            f"{count[0]:.2f} / {count[1]:.2f} ms",
            f"{scan[0]:.1f} / {scan[1]:.1f} ms",
            f"{snap[0]:.1f} / {snap[1]:.1f} ms",
            f"{cold[0]:.1f} ms",
            "-" if py is None else f"{py[0]:.0f} ms",
            f"{snap[0] / count[0]:,.0f}x",
            f"{snap[0] / scan[0]:.1f}x",
            "-" if py is None else f"{py[0] / snap[0]:.1f}x",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database", help="a PostgreSQL server URL (a fresh database per size)")
    parser.add_argument("--no-python", action="store_true", help="skip the former computation")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stores: list[tuple[str, Callable[[], Any]]] = [("SQLite", sqlite_store)]
    if args.database:
        stores.append(("PostgreSQL", lambda: postgresql_store(args.database)))
    started = time.perf_counter()
    for title, open_store in stores:
        rows = []
        for n in sizes:
            with open_store() as store:
                rows.append(measure(store, n, args.runs, not args.no_python))
        report(f"Dashboard snapshot, {title} ({args.runs} runs)", rows)
    console.print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
