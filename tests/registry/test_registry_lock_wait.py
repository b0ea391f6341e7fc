"""Writes wait out a taken SQLite write lock (retrying BEGIN) instead of failing at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from certhub.registry import Store


def _short_busy_timeout(store: Store) -> None:
    """50 ms instead of 5 s per attempt, so a test sees several retries quickly."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=50")

    event.listen(store.engine, "connect", on_connect)
    store.engine.dispose()


def _hold_lock(sqlite_url: str, seconds: float) -> threading.Thread:
    path = sa.make_url(sqlite_url).database
    assert path is not None
    taken = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(5)
    return thread


def test_a_write_waits_for_the_lock_past_the_busy_timeout(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        _short_busy_timeout(store)
        holder = _hold_lock(sqlite_url, 0.6)
        started = time.monotonic()
        store.set_setting("k", "v")  # its own transaction
        with store.transaction() as conn:
            store.set_setting("k2", "v2", conn=conn)
        holder.join()
        assert time.monotonic() - started >= 0.5
        assert (store.get_setting("k"), store.get_setting("k2")) == ("v", "v2")


def test_reject_lock_held_longer_than_lock_wait_seconds(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        _short_busy_timeout(store)
        store.lock_wait_seconds = 0.2
        holder = _hold_lock(sqlite_url, 1.0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            store.set_setting("k", "v")
        holder.join()
        assert store.get_setting("k") is None
        store.set_setting("k", "v")  # the connection is still usable
        assert store.get_setting("k") == "v"
