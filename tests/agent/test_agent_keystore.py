"""The key store: atomic writes, modes, the state file, cleanup and the lock."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from certhub.agent import KeyStore, KeyStoreError
from certhub.agent.keystore import AgentState, Issued, Pending, atomic_write
from certhub.pki import KeyType, generate_private_key

T = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def issued(generation: int) -> Issued:
    return Issued(generation=generation, device_id="d", assigned_hub="h", issued_at=T, source="dps")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old_umask = os.umask(0o077)
    try:
        atomic_write(path, b"new content", 0o640)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new content"
    assert mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary left


def test_keys_are_0600_and_roundtrip(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "s")
    store.open(lock=False)
    assert mode(tmp_path / "s") == 0o700
    key = generate_private_key(KeyType.P256)
    store.write_key(3, key)
    assert mode(store.key_path(3)) == 0o600
    assert store.load_key(3).private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_state_roundtrip(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert store.load() == AgentState()
    state = AgentState(
        current=issued(3),
        pending=Pending(generation=4, method="hub", rid="ab12", csr="Q1NS", issued=issued(4)),
        next_generation=5,
        clock_offset_seconds=-1.5,
    )
    store.save(state)
    assert store.load() == state
    assert mode(tmp_path / "state.json") == 0o600
    assert json.loads((tmp_path / "state.json").read_text())["format"] == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="reject/not-json"),
        pytest.param(b'{"format": 99, "nextGeneration": 1}', id="reject/unknown-format"),
        pytest.param(b'{"format": 1}', id="reject/missing-field"),
        pytest.param(
            b'{"format": 1, "nextGeneration": 2, "current": {"generation": 1, "deviceId": "d",'
            b' "assignedHub": "h", "issuedAt": null, "source": "carrier-pigeon"}}',
            id="reject/unknown-source",
        ),
    ],
)
def test_corrupt_state_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    with pytest.raises(KeyStoreError) as info:
        KeyStore(tmp_path).load()
    assert info.value.reason == "corrupt"
    assert info.value.path == str(tmp_path / "state.json")


def test_cleanup_keeps_current_and_pending_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    for name in (
        "key-000001.pem",
        "chain-000001.pem",
        "key-000002.pem",
        "chain-000002.pem",
        "key-000003.pem",
        ".tmp-state.json-77",
        "notes.txt",
    ):
        (tmp_path / name).write_text("x")
    state = AgentState(
        current=issued(2),
        pending=Pending(generation=3, method="hub", rid="r", csr="c"),
        next_generation=4,
    )
    removed = store.cleanup(state)
    assert removed == [".tmp-state.json-77", "chain-000001.pem", "key-000001.pem"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chain-000002.pem",
        "key-000002.pem",
        "key-000003.pem",
        "notes.txt",
    ]


def test_lock_refuses_a_second_agent(tmp_path: Path) -> None:
    first, second = KeyStore(tmp_path), KeyStore(tmp_path)
    first.open()
    with pytest.raises(KeyStoreError) as info:
        second.open()
    assert info.value.reason == "locked"
    first.close()
    second.open()
    second.close()


def test_unloadable_key_and_chain(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.key_path(1).write_text("garbage")
    with pytest.raises(KeyStoreError) as info:
        store.load_key(1)
    assert info.value.reason == "bad-key"
    with pytest.raises(KeyStoreError) as chain_info:
        store.load_chain(1)
    assert chain_info.value.reason == "bad-chain"


def test_allocate_reserves_numbers(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    generation, state = store.allocate(AgentState(next_generation=7))
    assert generation == 7 and state.next_generation == 8
