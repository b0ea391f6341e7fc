"""Engine setup: SQLite PRAGMAs and BEGIN IMMEDIATE, URL handling, concurrent writers."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from certhub.registry import Store
from certhub.registry.engine import create_store_engine, normalize_url
from certhub.registry.records import NewDevice

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _pragmas(conn: sa.Connection) -> tuple[str, int, int, int]:
    def one(name: str) -> object:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

    return (
        str(one("journal_mode")),
        int(str(one("foreign_keys"))),
        int(str(one("synchronous"))),
        int(str(one("busy_timeout"))),
    )


def test_sqlite_pragmas_on_every_connection(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        with store.engine.connect() as a, store.engine.connect() as b:
            assert _pragmas(a) == ("wal", 1, 2, 5000)
            assert _pragmas(b) == ("wal", 1, 2, 5000)

        seen: list[tuple[str, int, int, int]] = []

        def from_thread() -> None:
            with store.engine.connect() as conn:
                seen.append(_pragmas(conn))

        thread = threading.Thread(target=from_thread)
        thread.start()
        thread.join()
        assert seen == [("wal", 1, 2, 5000)]


def test_sqlite_write_transaction_takes_the_lock_at_begin(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        path = sa.make_url(sqlite_url).database
        assert path is not None
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            # Nothing written yet, but BEGIN IMMEDIATE already holds the write lock.
            locked = pytest.raises(sqlite3.OperationalError, match="database is locked")
            with store.transaction(), locked:
                other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


def test_sqlite_reads_do_not_take_the_write_lock(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store, store.engine.connect() as reader:
        reader.exec_driver_sql("SELECT count(*) FROM devices").scalar()
        assert reader.in_transaction()
        store.set_setting("k", "v")  # a writer proceeds while the read transaction is open
        assert store.get_setting("k") == "v"


def test_sqlite_transaction_rolls_back_on_error(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store.set_setting("k", "v", conn=conn)
            raise RuntimeError("boom")
        assert store.get_setting("k") is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////data/certhub.db", "sqlite:////data/certhub.db"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql"):
        create_store_engine("mysql://u@h/db")


def test_plain_postgresql_url_uses_psycopg(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with Store.open(plain) as store:
        assert store.dialect_name == "postgresql"
        assert store.engine.dialect.driver == "psycopg"
        store.set_setting("hub_host", "hub.example")
        assert store.get_setting("hub_host") == "hub.example"


def test_sqlite_concurrent_writers_from_four_threads(sqlite_url: str, tmp_path: Path) -> None:
    with Store.open(sqlite_url) as store:
        ns = store.create_namespace("default", "0ne1", NOW)

        def writer(worker: int) -> int:
            for i in range(25):
                device_id = f"w{worker}-d{i}"
                with store.transaction() as conn:
                    store.create_device(
                        NewDevice(device_id=device_id, namespace_id=ns.id, revocation_id=bytes(32)),
                        NOW,
                        conn=conn,
                    )
                    store.set_setting(f"last-{worker}", device_id, conn=conn)
                store.replace_twin_sections(device_id, now=NOW, reported={"i": i})
            return worker

        with ThreadPoolExecutor(4) as pool:
            assert sorted(pool.map(writer, range(4))) == [0, 1, 2, 3]
        assert store.count_devices() == 100
        assert store.get_setting("last-3") == "w3-d24"
        assert store.get_twin("w2-d10").reported_version == 2
