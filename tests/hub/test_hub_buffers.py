"""Small in-process structures: the telemetry buffer and the device cache."""

from __future__ import annotations

import asyncio
import datetime as dt

from prometheus_client import REGISTRY

from certhub.hub import TelemetryBuffer, TelemetryMessage
from certhub.hub.devices import DeviceCache
from certhub.registry.records import DeviceRecord

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _message(n: int) -> TelemetryMessage:
    return TelemetryMessage("d", str(n).encode(), {}, NOW)


def test_a_full_telemetry_buffer_drops_the_oldest_and_counts_it() -> None:
    before = REGISTRY.get_sample_value("certhub_hub_telemetry_dropped_total") or 0.0
    buffer = TelemetryBuffer(maxlen=2)
    for n in range(3):
        buffer.put(_message(n))
    assert (buffer.accepted, buffer.dropped, len(buffer)) == (3, 1, 2)
    assert [buffer.get_nowait(), buffer.get_nowait(), buffer.get_nowait()] == [
        _message(1),
        _message(2),
        None,
    ]
    assert REGISTRY.get_sample_value("certhub_hub_telemetry_dropped_total") == before + 1


def test_get_waits_for_the_next_message() -> None:
    async def scenario() -> TelemetryMessage:
        buffer = TelemetryBuffer()
        waiting = asyncio.ensure_future(buffer.get())
        await asyncio.sleep(0)
        buffer.put(_message(7))
        return await asyncio.wait_for(waiting, 1)

    assert asyncio.run(scenario()) == _message(7)


def _device(device_id: str = "d1") -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id, namespace_id=1, status="enabled", status_reason=None,
        auth_type="certificateAuthority", primary_key=None, secondary_key=None,
        primary_thumbprint=None, secondary_thumbprint=None, revocation_id=bytes(32),
        generation_id="1", etag="e", policy_name=None, enrollment_id=None,
        connection_state="Disconnected", connection_state_updated_at=None,
        last_activity_at=None, status_updated_at=None, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_device_cache_hits_per_serial_until_ttl_or_forget() -> None:
    cache = DeviceCache(ttl=10)
    cache.put(_device(), "aa", "issued", now=100.0)
    assert cache.get("d1", "aa", 105.0) == (_device(), "issued")
    assert cache.get("d1", "bb", 105.0) is None  # another certificate: look it up
    assert cache.get("d1", "aa", 110.0) is None  # expired
    cache.put(_device(), "aa", "issued", now=200.0)
    cache.forget("d1")
    assert cache.get("d1", "aa", 201.0) is None


def test_device_cache_is_bounded() -> None:
    cache = DeviceCache(ttl=10, size=2)
    for name in ("a", "b", "c"):
        cache.put(_device(name), None, None, now=0.0)
    assert len(cache) == 2
    assert cache.get("a", None, 1.0) is None
