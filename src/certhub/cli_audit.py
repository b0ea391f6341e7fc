"""``certhub audit``: the audit log, read from the store like the other admin commands.

::

    certhub audit [--device ID] [--action NAME|PREFIX*] [--since 1h|2026-11-27T10:00Z]
                  [--limit N] [--json]

Newest entries first. ``--action device.*`` matches every action starting ``device.``;
``--since`` takes a duration back from now (``30m``, ``12h``, ``7d``) or an ISO 8601 time
(UTC when it has no offset). The log is append-only: the database refuses UPDATE and
DELETE on it, and no command changes it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from certhub.cli_common import Refused, console, data_options, emit_json, json_option
from certhub.registry.records import AuditRecord

__all__ = ["audit", "audit_record_json", "parse_since", "register"]


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``--since``: a duration back from ``now`` or an ISO 8601 time (naive means UTC)."""
    from certhub.pki import PolicyError, parse_duration

    try:
        return now - parse_duration(text)
    except PolicyError:
        pass
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Refused(
            f"--since: {text!r} is neither a duration (30m, 12h, 7d) nor an ISO 8601 time"
        ) from exc
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def audit_record_json(a: AuditRecord) -> dict[str, Any]:
    """An audit entry as ``--json`` prints it (the admin API's shape)."""
    return {
        "id": a.id,
        "at": a.at.isoformat().replace("+00:00", "Z"),
        "actor": a.actor,
        "action": a.action,
        "subjectType": a.subject_type,
        "subjectId": a.subject_id,
        "reason": a.reason,
        "details": dict(a.details),
    }


def _read(
    data_dir: Path, database: str | None, device: str | None, **filters: Any
) -> list[AuditRecord]:
    from certhub.datadir import DataDir
    from certhub.registry import Store

    dd = DataDir(data_dir)
    if database is None and not dd.database_path.exists():
        raise Refused(f"{data_dir} is not initialised; run `certhub init --data-dir {data_dir}`")
    with Store.open(database or dd.database_url, migrate=False) as store:
        subject_type = None if device is None else "device"
        return store.list_audit(subject_type, device, **filters)


@click.command("audit")
@data_options
@click.option("--device", help="Only entries about this device.")
@click.option("--action", help="Only this action (e.g. device.revoke), or a prefix ending in *.")
@click.option("--since", help="Only entries since a duration ago (12h) or an ISO 8601 time.")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="At most."
)
@json_option
def audit(
    data_dir: Path,
    database: str | None,
    device: str | None,
    action: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the audit log (newest first): who did what to which subject, when and why."""
    start = None if since is None else parse_since(since, dt.datetime.now(dt.UTC))
    items = _read(data_dir, database, device, limit=limit, action=action, since=start)
    if as_json:
        emit_json([audit_record_json(a) for a in items])
        return
    table = Table("id", "at (UTC)", "actor", "action", "subject", "reason")
    for a in items:
        at = a.at.strftime("%Y-%m-%d %H:%M:%S")
        subject = f"{a.subject_type} {a.subject_id}"
        table.add_row(str(a.id), at, a.actor, a.action, subject, a.reason or "")
    console.print(table)


def register(cli: click.Group) -> None:
    """Attach ``certhub audit`` to the top-level command."""
    cli.add_command(audit)
