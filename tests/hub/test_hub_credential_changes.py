"""A change to a device's credentials closes exactly the sessions it no longer admits.

The change feed is read a little after each change commits, so the event of a change the
CONNECT lookup already saw can arrive after the session opened (a device given a new
thumbprint and connecting at once). The hub therefore re-checks the live record before it
closes a session: a change that keeps the session's credential valid (a secondary key or
thumbprint added, a key the device does not use regenerated) leaves it connected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY

from serverkit import (
    DeviceClient,
    DevicePems,
    RunningServer,
    create_device,
    device_with_certificate,
    issue_certificate,
    make_key_and_csr,
    open_authority,
    random_key,
    sas_password,
    write_pems,
)


def _closed(reason: str) -> float:
    value = REGISTRY.get_sample_value("certhub_hub_sessions_closed_total", {"reason": reason})
    return value or 0.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _update(hub: RunningServer, device_id: str, **changes: object) -> None:
    device = hub.store.get_device(device_id)
    assert device is not None
    hub.store.update_device(dataclasses.replace(device, **changes), None, now=_now())  # type: ignore[arg-type]


def _stays_connected(client: DeviceClient, seconds: float = 1.0) -> bool:
    return not client.wait_disconnected(seconds)


def _closed_within_a_second(client: DeviceClient, change: Callable[[], object]) -> bool:
    """Make ``change`` and tell whether the hub closed ``client`` less than 1 s later."""
    change()
    changed = time.monotonic()
    return client.wait_disconnected(3.0) and time.monotonic() - changed < 1.0


def _sas_device(hub: RunningServer, device_id: str) -> str:
    """A new SAS device; its primary key."""
    key = random_key()
    create_device(hub.store, device_id, auth_type="sas", primary_key=key)
    return key


def _thumbprint_device(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> tuple[DevicePems, str]:
    """A ``selfSigned`` device (no thumbprint yet), a certificate for it and its thumbprint."""
    create_device(hub.store, device_id, auth_type="selfSigned")
    key, csr = make_key_and_csr(device_id)
    leaf = issue_certificate(open_authority(hub.data_dir, hub.store), device_id, csr)
    return write_pems(pems_dir, device_id, key, leaf), leaf.sha1_thumbprint


def _sas_client(hub: RunningServer, device_id: str, key: str) -> DeviceClient:
    return DeviceClient(hub, device_id, password=sas_password(hub.hub_host, device_id, key))


def test_a_thumbprint_set_just_before_connecting_keeps_the_session(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    """The device.auth event of the change the CONNECT already saw does not close it."""
    pems, thumbprint = _thumbprint_device(hub, device_id, pems_dir)
    before = _closed("device-credentials-changed")
    for _ in range(5):  # the event sometimes lands before CONNECT, sometimes after
        _update(hub, device_id, primary_thumbprint=thumbprint)
        with DeviceClient(hub, device_id, pems=pems) as client:
            assert client.connect() == 0
            assert _stays_connected(client, 0.5)
            assert device_id in hub.server.hub_frontend.sessions
        _update(hub, device_id, primary_thumbprint=None)
    assert _closed("device-credentials-changed") == before


def test_self_signed_session_survives_an_added_thumbprint_and_ends_when_replaced(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems, thumbprint = _thumbprint_device(hub, device_id, pems_dir)
    _update(hub, device_id, primary_thumbprint=thumbprint)
    before = _closed("device-credentials-changed")
    with DeviceClient(hub, device_id, pems=pems) as client:
        assert client.connect() == 0
        _update(hub, device_id, secondary_thumbprint="AB" * 20)
        assert _stays_connected(client)
        assert _closed_within_a_second(
            client, lambda: _update(hub, device_id, primary_thumbprint="CD" * 20)
        )
    assert _closed("device-credentials-changed") == before + 1


def test_sas_session_survives_the_other_key_and_ends_with_its_own(
    hub: RunningServer, device_id: str
) -> None:
    key = _sas_device(hub, device_id)
    before = _closed("device-credentials-changed")
    with _sas_client(hub, device_id, key) as client:
        assert client.connect() == 0
        _update(hub, device_id, secondary_key=random_key())
        assert _stays_connected(client)
        _update(hub, device_id, primary_key=random_key())
        assert client.wait_disconnected(3.0)
    assert _closed("device-credentials-changed") == before + 1
    with _sas_client(hub, device_id, key) as again:
        assert again.connect() == 5


def test_rotating_the_revocation_id_twice_closes_once(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    before = _closed("revocation-id-rotated")
    with DeviceClient(hub, device_id, pems) as client:
        assert client.connect() == 0
        hub.store.rotate_revocation_id(device_id, secrets.token_bytes(32), _now())
        hub.store.rotate_revocation_id(device_id, secrets.token_bytes(32), _now())
        assert client.wait_disconnected(3.0)
    time.sleep(0.5)
    assert _closed("revocation-id-rotated") == before + 1


def test_a_device_disabled_and_enabled_just_before_connecting_keeps_the_session(
    hub: RunningServer, device_id: str
) -> None:
    """The late ``device.status`` event (disabled) of a device enabled again since does not
    close the session the enabled device opened in between."""
    key = _sas_device(hub, device_id)
    before = _closed("device-disabled")
    for _ in range(5):
        _update(hub, device_id, status="disabled")
        _update(hub, device_id, status="enabled")
        with _sas_client(hub, device_id, key) as client:
            assert client.connect() == 0
            assert _stays_connected(client, 0.5)
    assert _closed("device-disabled") == before


def test_a_device_deleted_and_created_again_keeps_its_new_session(
    hub: RunningServer, device_id: str
) -> None:
    before = _closed("device-deleted")
    for _ in range(5):
        key = random_key()
        create_device(hub.store, device_id, auth_type="sas", primary_key=key)
        with _sas_client(hub, device_id, key) as client:
            assert client.connect() == 0
            assert _stays_connected(client, 0.5)
        hub.store.delete_device(device_id)
    assert _closed("device-deleted") == before


def test_a_disabled_device_still_loses_its_session_within_a_second(
    hub: RunningServer, device_id: str
) -> None:
    key = _sas_device(hub, device_id)
    before = _closed("device-disabled")
    with _sas_client(hub, device_id, key) as client:
        assert client.connect() == 0
        assert _closed_within_a_second(client, lambda: _update(hub, device_id, status="disabled"))
    assert _closed("device-disabled") == before + 1


def test_a_new_key_works_at_once_though_the_old_record_is_cached(
    hub: RunningServer, device_id: str
) -> None:
    """A refusal from the hub's device cache is confirmed against the store: a device whose
    key was just regenerated connects with the new one before the change event arrives."""
    old = random_key()
    create_device(hub.store, device_id, auth_type="sas", primary_key=old)
    with _sas_client(hub, device_id, old) as c:
        assert c.connect() == 0  # the record is cached now
    before = _refusals("sas-signature-mismatch")
    for _ in range(5):
        new = random_key()
        _update(hub, device_id, primary_key=new)
        with _sas_client(hub, device_id, new) as client:
            assert client.connect() == 0
    assert _refusals("sas-signature-mismatch") == before
    with _sas_client(hub, device_id, old) as c:
        assert c.connect() == 5  # the old key, refused from the store
    assert _refusals("sas-signature-mismatch") == before + 1


def _refusals(reason: str) -> float:
    value = REGISTRY.get_sample_value("certhub_hub_refusals_total", {"reason": reason})
    return value or 0.0
