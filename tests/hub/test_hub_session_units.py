"""HubSession against a recording link (no sockets): the paths the server wiring hides."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hub_support import RecordingLink

from certhub.clock import SystemClock
from certhub.hub import HubFrontend
from certhub.hub.auth import Identity
from certhub.hub.session import HubSession
from certhub.mqtt import Publish, RemoteProtocolError
from certhub.rand import SystemRandom
from certhub.registry import Store


async def _run(fn_store: Store) -> tuple[RecordingLink, HubSession]:
    async def run(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    frontend = HubFrontend(
        fn_store, run=run, clock=SystemClock(), rng=SystemRandom(), hosts=["localhost"]
    )
    link = RecordingLink()
    return link, HubSession(frontend, link, Identity("d1", "sas"), None)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as s:
        yield s


def test_without_a_credentials_handler_requests_get_403010(store: Store) -> None:
    async def scenario() -> RecordingLink:
        link, session = await _run(store)
        assert session.on_subscribe([("$iothub/credentials/res/#", 1)]) == [1]
        topic = "$iothub/credentials/POST/issueCertificate/?$rid=9"
        assert session.on_publish(Publish(topic=topic, payload=b"{}", qos=1, packet_id=1)) is None
        return link

    link = asyncio.run(scenario())
    ((topic, payload, qos),) = link.sent
    assert topic == "$iothub/credentials/res/403/?$rid=9"
    assert json.loads(payload)["errorCode"] == 403010
    assert qos == 0


def test_foreign_publish_raises_a_protocol_error(store: Store) -> None:
    async def scenario() -> None:
        _, session = await _run(store)
        with pytest.raises(RemoteProtocolError):
            session.on_publish(Publish(topic="devices/d2/messages/events/", payload=b""))

    asyncio.run(scenario())
