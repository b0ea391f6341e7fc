"""IoT Hub queries over a large fleet, on SQLite and PostgreSQL, through the same path
``POST /devices/query`` takes (parse → compile → execute → page), minus HTTP.

    .venv/bin/python benchmarks/query.py [--devices 1000000] [--runs 7]
        [--store sqlite|postgresql|both] [--pg postgresql://postgres@127.0.0.1/postgres]

Loads N devices and twins with bulk inserts (sqlite3 ``executemany`` in one
transaction; PostgreSQL ``COPY``) into a freshly migrated store — so the expression
indexes of migration 0005 are in place — with ``validUntil`` spread evenly over 30 days
and 10% of devices disabled, then measures (p50 of ``--runs`` after one warm-up run):

* ``COUNT()`` of ``properties.reported.certificate.validUntil < X`` at 0.1%, 1% and 10%
  of the fleet (indexed);
* the ids of the matching devices (first page of 1000, ordered by id) at 1%;
* ``SELECT status, COUNT() … GROUP BY status`` (the whole fleet);
* an unindexed filter (``properties.reported.firmware = …``, a scan).

Target (issue "Service API, IoT Hub query language, and the operator CLI"): the indexed
count at p50 under 20 ms on both stores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from certhub.registry import Store
from certhub.service.query import compile_page

console = Console()
T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SPAN = 30 * 86400
VALID_UNTIL = "properties.reported.certificate.validUntil"
DEVICE_COLUMNS = (
    "device_id, namespace_id, status, auth_type, revocation_id, generation_id, etag,"
    " connection_state, created_at, updated_at"
)
TWIN_COLUMNS = (
    "device_id, tags, desired, reported, desired_version, reported_version, version, etag,"
    " metadata, updated_at"
)
STAMP = "2026-05-01 00:00:00.000000"


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def valid_until(i: int, n: int) -> str:
    """Device i's expiry: an even spread over 30 days, shuffled against the device id."""
    return iso(T0 + dt.timedelta(seconds=((i * 7919) % n) * SPAN / n))


def cutoff(fraction: float) -> str:
    """The X for which ``validUntil < X`` matches ``fraction`` of the fleet."""
    return iso(T0 + dt.timedelta(seconds=fraction * SPAN))


def device_rows(n: int, namespace_id: int) -> Iterator[tuple[Any, ...]]:
    rid = b"\x01" * 32
    for i in range(n):
        status = "disabled" if i % 10 == 0 else "enabled"
        yield (f"dev-{i:07d}", namespace_id, status, "certificateAuthority", rid,
               f"{i:018d}", "AAAAAAAAAAA=", "Disconnected", STAMP, STAMP)  # fmt: skip


def twin_rows(n: int) -> Iterator[tuple[Any, ...]]:
    metadata = '{"desired": {}, "reported": {}}'
    for i in range(n):
        reported = {
            "certificate": {"validFrom": "2026-05-01T00:00:00Z", "validUntil": valid_until(i, n)},
            "firmware": f"1.{i % 50}.0",
        }
        yield (f"dev-{i:07d}", "{}", "{}", json.dumps(reported), 1, 1, 1, "AAAAAAAAAAA=",
               metadata, STAMP)  # fmt: skip


def namespace_id(store: Store) -> int:
    ns = store.create_namespace("default", "0ne" + secrets.token_hex(4), T0)
    return ns.id


def load_sqlite(path: Path, n: int, ns: int) -> None:
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("BEGIN")
        raw.executemany(f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                        device_rows(n, ns))  # fmt: skip
        raw.executemany(f"INSERT INTO twins ({TWIN_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                        twin_rows(n))  # fmt: skip
        raw.execute("COMMIT")
        raw.execute("ANALYZE")
    finally:
        raw.close()


def load_postgresql(dsn: str, n: int, ns: int) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY devices ({DEVICE_COLUMNS}) FROM STDIN") as copy:
            for row in device_rows(n, ns):
                copy.write_row(row)
        with cur.copy(f"COPY twins ({TWIN_COLUMNS}) FROM STDIN") as copy:
            for row in twin_rows(n):
                copy.write_row(row)
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE devices")
        conn.execute("VACUUM ANALYZE twins")


def run_query(store: Store, text: str, page_size: int | None) -> list[dict[str, Any]]:
    """What POST /devices/query does for one page (without HTTP and JSON encoding)."""
    compiled, statement = compile_page(text, store.dialect_name, page_size, None)
    return compiled.page(store.run_select(statement)).items


def p50(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    result = fn()  # warm-up (and the result to print)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def plan(store: Store, text: str, page_size: int | None) -> str:
    _, statement = compile_page(text, store.dialect_name, page_size, None)
    compiled = statement.compile(
        dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    sql = str(compiled)
    explain = "EXPLAIN QUERY PLAN " if store.dialect_name == "sqlite" else "EXPLAIN "
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(explain + sql)).all()
    text_plan = " | ".join(str(r[-1]) for r in rows)
    found = re.findall(r"ix_\w+|Seq Scan on \w+|SCAN \w+\b(?! USING)", text_plan)
    return ", ".join(dict.fromkeys(found)) or text_plan[:60]


QUERIES: list[tuple[str, str, int | None]] = [
    ("count validUntil < X (0.1%)",
     f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < '{cutoff(0.001)}'", None),
    ("count validUntil < X (1%)",
     f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < '{cutoff(0.01)}'", None),
    ("count validUntil < X (10%)",
     f"SELECT COUNT() AS n FROM devices WHERE {VALID_UNTIL} < '{cutoff(0.10)}'", None),
    ("ids validUntil < X (1%, first 1000)",
     f"SELECT deviceId FROM devices WHERE {VALID_UNTIL} < '{cutoff(0.01)}'", 1000),
    ("GROUP BY status", "SELECT status, COUNT() AS n FROM devices GROUP BY status", None),
    ("unindexed: firmware = X (2%)",
     "SELECT COUNT() AS n FROM devices WHERE properties.reported.firmware = '1.7.0'", None),
]  # fmt: skip


def measure(store: Store, runs: int) -> list[tuple[str, float, str, str]]:
    out = []
    for name, text, page in QUERIES:
        ms, items = p50(lambda text=text, page=page: run_query(store, text, page), runs)
        shown = json.dumps(items) if len(items) <= 2 else f"{len(items)} ids"
        out.append((name, ms, shown, plan(store, text, page)))
    return out


def bench_sqlite(n: int, runs: int) -> tuple[float, list[tuple[str, float, str, str]]]:
    with tempfile.TemporaryDirectory(prefix="certhub-bench-") as tmp:
        path = Path(tmp) / "certhub.db"
        with Store.open(f"sqlite:///{path}") as store:
            ns = namespace_id(store)
            start = time.perf_counter()
            load_sqlite(path, n, ns)
            loaded = time.perf_counter() - start
            return loaded, measure(store, runs)


def bench_postgresql(admin_dsn: str, n: int, runs: int) -> tuple[float, list[Any]]:
    name = "certhub_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    try:
        with Store.open(dsn) as store:
            ns = namespace_id(store)
            start = time.perf_counter()
            load_postgresql(dsn, n, ns)
            loaded = time.perf_counter() - start
            return loaded, measure(store, runs)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(store: str, n: int, loaded: float, rows: list[tuple[str, float, str, str]]) -> None:
    table = Table(title=f"{store}: {n:,} devices + twins, loaded in {loaded:.1f} s "
                        f"({n / loaded:,.0f} rows/s each)")  # fmt: skip
    table.add_column("query")
    table.add_column("p50 ms", justify="right")
    table.add_column("result")
    table.add_column("indexes / scans in the plan", overflow="fold")
    for name, ms, result, query_plan in rows:
        table.add_row(name, f"{ms:.1f}", result, query_plan)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--pg",
        default=os.environ.get("CERTHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL admin DSN (a database is created and dropped)",
    )
    args = parser.parse_args()
    if args.store in ("sqlite", "both"):
        report("SQLite", args.devices, *bench_sqlite(args.devices, args.runs))
    if args.store in ("postgresql", "both"):
        report("PostgreSQL", args.devices, *bench_postgresql(args.pg, args.devices, args.runs))
    console.print("target: indexed count (validUntil < X) p50 < 20 ms on both stores")


if __name__ == "__main__":
    main()
