"""The hub frontend's collaborators without sockets: the CONNECT lookup racing change
events, connection state written behind, cloud-to-device queues."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hub_support import RecordingLink

from certhub.clock import SystemClock
from certhub.hub import HubFrontend
from certhub.hub.auth import Identity
from certhub.hub.presence import PresenceWriter
from certhub.hub.session import HubSession
from certhub.listener.api import Refusal
from certhub.mqtt import Connect, ConnectReturnCode
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.registry._events import EventRecord
from certhub.registry.records import NewDevice
from certhub.sas import generate_sas_token

HOST = "hub.example"
KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as s:
        now = dt.datetime.now(dt.UTC)
        ns = s.create_namespace("default", "0ne00000001", now)
        device = NewDevice(
            device_id="d1",
            namespace_id=ns.id,
            revocation_id=bytes(32),
            auth_type="sas",
            primary_key=KEY,
        )
        s.create_device(device, now)
        yield s


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _frontend(store: Store, run: Any = _direct, **kwargs: Any) -> HubFrontend:
    return HubFrontend(
        store, run=run, clock=SystemClock(), rng=SystemRandom(), hosts=[HOST], **kwargs
    )


def _connect(device_id: str = "d1") -> Connect:
    token = generate_sas_token(f"{HOST}/devices/{device_id}", KEY, int(time.time()) + 600)
    username = f"{HOST}/{device_id}/?api-version=2021-04-12"
    return Connect(client_id=device_id, username=username, password=token.encode())


def _change(device_id: str) -> EventRecord:
    now = dt.datetime.now(dt.UTC)
    return EventRecord(id=1, at=now, kind="device.auth", device_id=device_id, payload={})


@pytest.mark.parametrize(
    ("overtaken", "expected"),
    [
        pytest.param(4, None, id="admitted-on-the-fifth-lookup"),
        pytest.param(5, "device-changed-during-connect", id="reject/device-changed-during-connect"),
    ],
)
def test_lookups_overtaken_by_change_events(
    store: Store, overtaken: int, expected: str | None
) -> None:
    async def scenario() -> object:
        frontend: HubFrontend

        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            nonlocal overtaken
            result = fn(*args)
            if overtaken > 0:  # the change feed delivers an event while the lookup runs
                overtaken -= 1
                frontend.on_events([_change("d1")])
            return result

        frontend = _frontend(store, run)
        outcome = frontend.open_session(_connect(), RecordingLink())
        assert inspect.isawaitable(outcome)  # not cached yet: looked up first
        return await outcome

    outcome = asyncio.run(scenario())
    if expected is None:
        assert isinstance(outcome, HubSession)
    else:
        assert outcome == Refusal(code=ConnectReturnCode.NOT_AUTHORIZED, reason=expected)


def test_a_cached_device_is_admitted_without_a_lookup(store: Store) -> None:
    async def scenario() -> tuple[object, object, int]:
        frontend = _frontend(store)
        pending = frontend.open_session(_connect(), RecordingLink())
        assert inspect.isawaitable(pending)
        first = await pending
        second = frontend.open_session(_connect(), RecordingLink())  # answered at once
        return first, second, frontend.live_sessions

    first, second, live = asyncio.run(scenario())
    assert live == 2  # the replaced session's close is reported by its link, not here
    assert isinstance(first, HubSession) and isinstance(second, HubSession)
    assert first.link.closed_with == "replaced-by-new-connection"  # type: ignore[attr-defined]


def test_a_failed_presence_write_is_retried_and_newer_changes_win(store: Store) -> None:
    t1 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    t2 = t1 + dt.timedelta(seconds=1)

    async def scenario() -> None:
        failures = 1

        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            nonlocal failures
            if failures:
                failures -= 1
                writer.note("d1", "Disconnected", t2)  # noted while the write was under way
                raise OSError("store unavailable")
            return fn(*args)

        writer = PresenceWriter(store, run)
        writer.note("d1", "Connected", t1)
        with pytest.raises(OSError):
            await writer.flush()
        await writer.stop()

    asyncio.run(scenario())
    device = store.get_device("d1")
    assert device is not None
    assert (device.connection_state, device.connection_state_updated_at) == ("Disconnected", t2)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        pytest.param(3600.0, [b"2", b"3"], id="bounded-oldest-dropped"),
        pytest.param(0.0, [], id="expired"),
    ],
)
def test_queued_c2d_messages_reach_the_next_subscriber(
    store: Store, ttl: float, expected: list[bytes]
) -> None:
    topic = "devices/d1/messages/devicebound/"

    async def scenario() -> RecordingLink:
        frontend = _frontend(store, c2d_queue_size=2, c2d_ttl=ttl)
        for body in (b"1", b"2", b"3"):
            assert not frontend.queue_c2d("d1", f"{topic}n={body.decode()}", body)
        link = RecordingLink()
        session = HubSession(frontend, link, Identity("d1", "sas"), None)
        assert session.on_subscribe([(f"{topic}#", 1)]) == [1]
        await asyncio.sleep(0)  # delivery is scheduled right after the SUBACK
        return link

    link = asyncio.run(scenario())
    assert [body for _, body, _ in link.sent] == expected
    assert all(qos == 1 for _, _, qos in link.sent)


def test_forget_and_drop_remove_queued_c2d_messages(store: Store) -> None:
    topic = "devices/d1/messages/devicebound/"

    async def scenario() -> RecordingLink:
        frontend = _frontend(store)
        frontend.keep_c2d("d1", f"{topic}a", b"a")
        frontend.keep_c2d("d1", f"{topic}b", b"b")
        frontend.forget_c2d("d1", f"{topic}a")  # delivered by another node
        link = RecordingLink()
        session = HubSession(frontend, link, Identity("d1", "sas"), None)
        frontend.drop_c2d("d1", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))  # keeps b
        assert session.on_subscribe([(f"{topic}#", 1)]) == [1]
        await asyncio.sleep(0)
        return link

    link = asyncio.run(scenario())
    assert [body for _, body, _ in link.sent] == [b"b"]
