"""A synthetic fleet written straight into the store's tables (no signing, bulk inserts).

:func:`load_fleet` gives ``n`` devices every lifecycle the admin API knows, in
proportions drawn from a seeded :class:`random.Random`: disabled devices, devices
without certificates, newest certificates revoked, stored ``expired`` or
``superseded``, live ones of several validities at every age (healthy, renewal-due,
overdue, expired by time), renewal windows for most of them (a few pointing at an older
certificate), earlier certificates, same-instant ties, certificates of deleted devices,
microsecond timestamps and ids needing ``LIKE`` escapes. Used by
``test_fleet_sql.py`` (compared with the reference computation) and by
``benchmarks/dashboard.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from certhub.registry import Store
from certhub.registry._renewal import renewal_status
from certhub.registry.schema import cas, certificates, devices

__all__ = [
    "FleetRows",
    "certificate_row",
    "device_row",
    "fleet_rows",
    "insert_rows",
    "load_fleet",
    "prepare",
    "window_row",
]

_DAY = 86400.0
#: Validities (seconds) and their weights: mostly 30 days, some shorter.
_VALIDITIES = ((30 * _DAY, 6), (7 * _DAY, 2), (2 * 3600.0, 1))
_RID = b"\x01" * 32
_BATCH = 5000


@dataclass
class FleetRows:
    """Rows for ``devices``, ``certificates`` and ``renewal_status``."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)


def _device_id(i: int, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.03:
        return f"Dev_{i:07d}%X"  # LIKE wildcards and capitals
    if roll < 0.06:
        return f"DEV-{i:07d}"
    return f"dev-{i:07d}"


def _jitter(rng: random.Random) -> dt.timedelta:
    return dt.timedelta(microseconds=rng.randrange(1_000_000))


class _Builder:
    def __init__(self, now: dt.datetime, namespace_id: int, policy_id: int, ca_id: int) -> None:
        self.now = now
        self.namespace_id, self.policy_id, self.ca_id = namespace_id, policy_id, ca_id
        self.rows = FleetRows()
        self._serial = 0

    def device(self, device_id: str, rng: random.Random) -> None:
        status = "disabled" if rng.random() < 0.05 else "enabled"
        connected = rng.random() < 0.3
        row = device_row(device_id, self.namespace_id, self.now, status, connected)
        self.rows.devices.append(row)
        if rng.random() >= 0.04:
            self.history(device_id, rng)

    def history(self, device_id: str, rng: random.Random) -> None:
        validity = rng.choices([v for v, _ in _VALIDITIES], [w for _, w in _VALIDITIES])[0]
        age = rng.uniform(-0.02, 1.15) * validity  # a few not yet valid, some expired
        newest_at = self.now - dt.timedelta(seconds=age) + _jitter(rng)
        older = rng.choice((0, 0, 1, 2))
        serials = []
        for k in range(older, 0, -1):
            at = newest_at - dt.timedelta(seconds=k * validity * 0.8)
            state = rng.choice(("superseded", "expired", "superseded"))
            serials.append(self.certificate(device_id, at, validity, state))
        tie = rng.random() < 0.02  # same created_at as the previous one: serial decides
        at = newest_at if not tie or not serials else self.rows.certificates[-1]["created_at"]
        roll = rng.random()
        state = (
            "revoked"
            if roll < 0.04
            else "expired"
            if roll < 0.06
            else "superseded"
            if roll < 0.08
            else rng.choice(("issued", "active", "active"))
        )
        serial = self.certificate(device_id, at, validity, state)
        if rng.random() < 0.7:
            target = serials[-1] if serials and rng.random() < 0.05 else serial
            self.window(device_id, target, at, validity, rng)

    def certificate(self, device_id: str, at: dt.datetime, validity: float, state: str) -> str:
        self._serial += 1
        serial = f"{self._serial:016x}"
        not_before = at - dt.timedelta(seconds=60)
        not_after = not_before + dt.timedelta(seconds=validity)
        ids = (self.policy_id, self.ca_id)
        row = certificate_row(serial, device_id, ids, (not_before, not_after), at, state)
        self.rows.certificates.append(row)
        return serial

    def window(
        self, device_id: str, serial: str, at: dt.datetime, validity: float, rng: random.Random
    ) -> None:
        not_before = at - dt.timedelta(seconds=60)
        after = not_before + dt.timedelta(seconds=rng.uniform(0.5, 0.85) * validity)
        before = not_before + dt.timedelta(seconds=rng.uniform(0.86, 0.97) * validity)
        self.rows.windows.append(
            window_row(device_id, serial, (not_before, validity), after, before, at)
        )


def device_row(
    device_id: str, namespace_id: int, now: dt.datetime, status: str, connected: bool
) -> dict[str, Any]:
    """A ``devices`` row."""
    return {
        "device_id": device_id,
        "namespace_id": namespace_id,
        "status": status,
        "auth_type": "certificateAuthority",
        "revocation_id": _RID,
        "generation_id": hashlib.sha1(device_id.encode()).hexdigest()[:18],
        "etag": "AAAAAAAAAAA=",
        "connection_state": "Connected" if connected else "Disconnected",
        "created_at": now - dt.timedelta(days=90),
        "updated_at": now - dt.timedelta(days=90),
    }


def certificate_row(
    serial: str,
    device_id: str,
    ids: tuple[int, int],
    validity: tuple[dt.datetime, dt.datetime],
    created_at: dt.datetime,
    state: str,
) -> dict[str, Any]:
    """A ``certificates`` row; ``ids`` are the policy's and the CA's, ``validity``
    (notBefore, notAfter)."""
    digest = hashlib.sha256(serial.encode()).hexdigest()
    return {
        "serial_hex": serial,
        "device_id": device_id,
        "policy_id": ids[0],
        "issuer_ca_id": ids[1],
        "not_before": validity[0],
        "not_after": validity[1],
        "sha256": digest,
        "sha1": digest[:40],
        "public_key_sha256": digest,
        "key_type": "ec-p256",
        "revocation_id": _RID,
        "requested_via": "hub",
        "state": state,
        "cert_der": b"\x30\x00",
        "created_at": created_at,
    }


def window_row(
    device_id: str,
    serial: str,
    validity: tuple[dt.datetime, float],
    renew_after: dt.datetime,
    renew_before: dt.datetime,
    at: dt.datetime,
) -> dict[str, Any]:
    """A ``renewal_status`` row; ``validity`` is (notBefore, seconds)."""
    not_before, seconds = validity
    return {
        "device_id": device_id,
        "serial_hex": serial,
        "not_before": not_before,
        "not_after": not_before + dt.timedelta(seconds=seconds),
        "renew_after": renew_after,
        "renew_before": renew_before,
        "state": "scheduled",
        "state_changed_at": at,
        "updated_at": at,
    }


def insert_rows(store: Store, rows: FleetRows) -> None:
    """Insert the rows in one transaction (batches of 5,000)."""
    with store.transaction() as conn:
        for table, data in (
            (devices, rows.devices),
            (certificates, rows.certificates),
            (renewal_status, rows.windows),
        ):
            for batch in _batches(data):
                conn.execute(sa.insert(table), batch)


def fleet_rows(
    n: int, now: dt.datetime, seed: int, *, namespace_id: int, policy_id: int, ca_id: int
) -> FleetRows:
    """The rows of ``n`` devices (plus a few certificates of deleted devices)."""
    rng = random.Random(seed)
    builder = _Builder(now, namespace_id, policy_id, ca_id)
    for i in range(n):
        builder.device(_device_id(i, rng), rng)
    for i in range(max(1, n // 100)):
        builder.history(f"deleted-{i:07d}", rng)
    live = {d["device_id"] for d in builder.rows.devices}
    builder.rows.windows = [w for w in builder.rows.windows if w["device_id"] in live]
    return builder.rows


def prepare(store: Store, now: dt.datetime, namespace: str = "default") -> tuple[int, int, int]:
    """The namespace (created if missing), a 30-day policy and an issuing CA: their ids."""
    with store.transaction() as conn:
        ns = store.get_namespace(namespace, conn=conn)
        ns_id = ns.id if ns else store.create_namespace(namespace, "0ne00000001", now, conn).id
        policy = store.create_policy(
            ns_id, "fleet", 30 * 86400, ["ec-p256"], 60, False, now, 0, conn
        )
        ca_values = {
            "namespace_id": ns_id,
            "kind": "issuing",
            "name": "fleet-issuing",
            "policy_id": policy.id,
            "cert_pem": "-",
            "subject": "CN=fleet",
            "serial_hex": "01",
            "sha256": hashlib.sha256(b"fleet-ca").hexdigest(),
            "not_before": now - dt.timedelta(days=365),
            "not_after": now + dt.timedelta(days=20),
            "state": "active",
            "created_at": now,
        }
        ca_id = conn.execute(sa.insert(cas).values(ca_values).returning(cas.c.id)).scalar_one()
    return ns_id, policy.id, ca_id


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), _BATCH):
        yield rows[start : start + _BATCH]


def load_fleet(store: Store, n: int, now: dt.datetime, seed: int = 1) -> FleetRows:
    """Write a fleet of ``n`` devices into ``store`` (one transaction) and return its rows."""
    ns_id, policy_id, ca_id = prepare(store, now)
    rows = fleet_rows(n, now, seed, namespace_id=ns_id, policy_id=policy_id, ca_id=ca_id)
    insert_rows(store, rows)
    if store.dialect_name == "postgresql":
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return rows
