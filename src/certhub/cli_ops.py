"""Operator commands against a running certhub, mirroring ``az iot hub``.

``certhub device list|show|create|update|disable|enable|delete|revoke|health``,
``certhub twin show|update``, ``certhub query "…"``, ``certhub certs list``.

They talk to the server's HTTPS service API with the service connection string
(``--connection-string`` or env ``CERTHUB_CONNECTION_STRING``; ``certhub init`` prints
it) and trust the server through ``--ca-file`` (env ``CERTHUB_CA_FILE``; the trust
anchor ``init`` prints). Tables for people, ``--json`` for scripts. Exit status 2 when
the input or the request is refused (with the server's message), 1 when the server
fails or cannot be reached.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.table import Table

from certhub.cli_common import Refused, console, emit_json, err_console, json_option
from certhub.pki import PolicyError, parse_duration
from certhub.sas import generate_sas_token

__all__ = [
    "ServerFailed",
    "ServiceClient",
    "client_for",
    "parse_connection_string",
    "register",
    "service_options",
    "show",
]

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_TTL = 3600


class ServerFailed(click.ClickException):
    """The server failed or could not be reached: ``error: …`` with exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.message}", highlight=False)


def parse_connection_string(text: str) -> dict[str, str]:
    """``HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`` as a dict (Refused if not)."""
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise Refused(f"connection string: {part!r} is not Name=value")
        fields[name.strip()] = value.strip()
    missing = {"HostName", "SharedAccessKeyName", "SharedAccessKey"} - fields.keys()
    if missing:
        raise Refused(f"connection string: missing {', '.join(sorted(missing))}")
    return fields


class ServiceClient:
    """A small client of the service API (SAS per request, trust anchor pinned)."""

    def __init__(self, connection_string: str, ca_file: Path | None, transport: Any = None) -> None:
        fields = parse_connection_string(connection_string)
        self.host = fields["HostName"]
        self._policy = fields["SharedAccessKeyName"]
        self._key = fields["SharedAccessKey"]
        verify: Any = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise Refused(f"--ca-file: {ca_file} is not a PEM certificate") from exc
        self._http = httpx.Client(
            base_url=f"https://{self.host}", verify=verify, timeout=60, transport=transport
        )

    def _token(self) -> str:
        try:
            expiry = int(time.time()) + TOKEN_TTL
            return generate_sas_token(self.host, self._key, expiry, self._policy)
        except ValueError as exc:
            raise Refused("connection string: SharedAccessKey is not base64") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; Refused for 4xx, ServerFailed for 5xx or no connection."""
        headers = {"Authorization": self._token(), **kwargs.pop("headers", {})}
        params = {"api-version": "2021-04-12", **kwargs.pop("params", {})}
        try:
            response = self._http.request(method, path, headers=headers, params=params, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerFailed(f"cannot reach https://{self.host}: {exc}") from exc
        if response.status_code >= 500:
            raise ServerFailed(f"server error {response.status_code}: {_message(response)}")
        if response.status_code >= 400:
            raise Refused(f"{response.status_code} {_message(response)}")
        return response

    def close(self) -> None:
        self._http.close()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    message = str(body.get("Message", body)) if isinstance(body, dict) else str(body)
    if message.startswith("ErrorCode:"):
        code, _, text = message[len("ErrorCode:") :].partition(";")
        return f"{code}: {text}"
    return message


# -- options ------------------------------------------------------------------------------


def service_options(fn: F) -> F:
    """``--connection-string``, ``--ca-file`` and ``--json``."""
    fn = json_option(fn)
    fn = click.option(
        "--ca-file",
        envvar="CERTHUB_CA_FILE",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Trust anchor PEM of the server (env CERTHUB_CA_FILE).",
    )(fn)
    fn = click.option(
        "--connection-string",
        "connection_string",
        envvar="CERTHUB_CONNECTION_STRING",
        required=True,
        help="Service connection string (env CERTHUB_CONNECTION_STRING).",
    )(fn)
    return fn


def client_for(connection_string: str, ca_file: Path | None) -> ServiceClient:
    """A service client for this command invocation (closed with the click context)."""
    client = ServiceClient(connection_string, ca_file)
    click.get_current_context().call_on_close(client.close)
    return client


def _json_arg(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f"{option}: not valid JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise Refused(f"{option}: expected a JSON object")
    return value


def _etag_header(etag: str | None) -> dict[str, str]:
    return {"If-Match": f'"{etag}"' if etag and etag != "*" else "*"}


def show(value: Any, as_json: bool, columns: list[str] | None = None) -> None:
    """Print ``value`` as JSON (``--json``) or as a table (a list) / key-value rows."""
    if as_json:
        emit_json(value)
        return
    if isinstance(value, list):
        _table(value, columns)
        return
    table = Table(show_header=False, box=None)
    for key, item in value.items():
        table.add_row(key, json.dumps(item) if isinstance(item, dict | list) else str(item))
    console.print(table)


def _table(items: list[Any], columns: list[str] | None) -> None:
    rows = [i if isinstance(i, dict) else {"value": i} for i in items]
    names = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(*names)
    for row in rows:
        table.add_row(*(_cell(row.get(n)) for n in names))
    console.print(table)
    console.print(f"{len(rows)} item(s)", style="dim")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


DEVICE_COLUMNS = ["deviceId", "status", "auth", "connectionState", "lastActivityTime"]


def _device_row(d: Mapping[str, Any]) -> dict[str, Any]:
    return {**d, "auth": d.get("authentication", {}).get("type")}


# -- device -------------------------------------------------------------------------------


@click.group()
def device() -> None:
    """Device identities on a running server (like `az iot hub device-identity`)."""


@device.command("list")
@service_options
@click.option("--top", type=click.IntRange(1, 1000), default=1000, show_default=True)
def device_list(connection_string: str, ca_file: Path | None, as_json: bool, top: int) -> None:
    """List devices."""
    items = client_for(connection_string, ca_file).request("GET", "/devices", params={"top": top})
    devices = items.json()
    show(devices if as_json else [_device_row(d) for d in devices], as_json, DEVICE_COLUMNS)


@device.command("show")
@service_options
@click.argument("device_id")
def device_show(
    connection_string: str, ca_file: Path | None, as_json: bool, device_id: str
) -> None:
    """Show one device."""
    show(
        client_for(connection_string, ca_file).request("GET", f"/devices/{device_id}").json(),
        as_json,
    )


_AUTH = {"ca": "certificateAuthority", "self-signed": "selfSigned", "sas": "sas"}


@device.command("create")
@service_options
@click.argument("device_id")
@click.option("--auth", type=click.Choice(sorted(_AUTH)), default="ca", show_default=True)
@click.option("--primary-thumbprint", help="self-signed: SHA-1 or SHA-256 hex.")
@click.option("--secondary-thumbprint")
@click.option("--primary-key", help="sas: base64 key (generated when omitted).")
@click.option("--secondary-key")
@click.option("--policy", "policy_name", help="ca: the policy issuing its certificates.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--status-reason")
def device_create(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str,
    auth: str,
    primary_thumbprint: str | None,
    secondary_thumbprint: str | None,
    primary_key: str | None,
    secondary_key: str | None,
    policy_name: str | None,
    disabled: bool,
    status_reason: str | None,
) -> None:
    """Create a device (certificate-authority authentication by default)."""
    authentication: dict[str, Any] = {"type": _AUTH[auth]}
    if auth == "self-signed":
        if not primary_thumbprint:
            raise Refused("--auth self-signed needs --primary-thumbprint")
        authentication["x509Thumbprint"] = {
            "primaryThumbprint": primary_thumbprint,
            "secondaryThumbprint": secondary_thumbprint,
        }
    elif auth == "sas":
        authentication["symmetricKey"] = {"primaryKey": primary_key, "secondaryKey": secondary_key}
    body = {
        "deviceId": device_id,
        "status": "disabled" if disabled else "enabled",
        "statusReason": status_reason,
        "authentication": authentication,
        "policyName": policy_name,
    }
    client = client_for(connection_string, ca_file)
    show(client.request("PUT", f"/devices/{device_id}", json=body).json(), as_json)


def _update_device(
    client: ServiceClient, device_id: str, etag: str | None, changes: dict[str, Any]
) -> dict[str, Any]:
    current = client.request("GET", f"/devices/{device_id}").json()
    body = {**current, **changes}
    response = client.request(
        "PUT", f"/devices/{device_id}", json=body, headers=_etag_header(etag or current["etag"])
    )
    result: dict[str, Any] = response.json()
    return result


@device.command("update")
@service_options
@click.argument("device_id")
@click.option("--status", type=click.Choice(["enabled", "disabled"]))
@click.option("--status-reason")
@click.option("--etag", help="Only if the device's etag is still this.")
def device_update(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str,
    status: str | None,
    status_reason: str | None,
    etag: str | None,
) -> None:
    """Change a device's status or status reason."""
    changes = {k: v for k, v in {"status": status, "statusReason": status_reason}.items() if v}
    if not changes:
        raise Refused("nothing to change: give --status or --status-reason")
    client = client_for(connection_string, ca_file)
    show(_update_device(client, device_id, etag, changes), as_json)


@device.command("disable")
@service_options
@click.argument("device_id")
@click.option("--reason", help="statusReason to record.")
@click.option("--etag")
def device_disable(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str,
    reason: str | None,
    etag: str | None,
) -> None:
    """Disable a device: its live session is closed and it cannot connect."""
    changes = {"status": "disabled", "statusReason": reason}
    client = client_for(connection_string, ca_file)
    show(_update_device(client, device_id, etag, changes), as_json)


@device.command("enable")
@service_options
@click.argument("device_id")
@click.option("--etag")
def device_enable(
    connection_string: str, ca_file: Path | None, as_json: bool, device_id: str, etag: str | None
) -> None:
    """Enable a device again."""
    changes = {"status": "enabled", "statusReason": None}
    client = client_for(connection_string, ca_file)
    show(_update_device(client, device_id, etag, changes), as_json)


@device.command("delete")
@service_options
@click.argument("device_id")
@click.option("--etag")
def device_delete(
    connection_string: str, ca_file: Path | None, as_json: bool, device_id: str, etag: str | None
) -> None:
    """Delete a device and its twin (its certificates stay in the inventory)."""
    client = client_for(connection_string, ca_file)
    client.request("DELETE", f"/devices/{device_id}", headers=_etag_header(etag))
    show({"deleted": device_id}, as_json)


@device.command("revoke")
@service_options
@click.argument("device_id")
@click.option("--reason", default="revoked by operator", show_default=True)
@click.option("--disable", is_flag=True, help="Also disable the device.")
def device_revoke(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str,
    reason: str,
    disable: bool,
) -> None:
    """Revoke every certificate of a device (it must register again to get a new one)."""
    client = client_for(connection_string, ca_file)
    body = {"reason": reason, "disable": disable}
    show(
        client.request("POST", f"/certhub/v1/devices/{device_id}/revoke", json=body).json(), as_json
    )


# -- twin ---------------------------------------------------------------------------------


@click.group()
def twin() -> None:
    """Device twins (like `az iot hub device-twin`)."""


@twin.command("show")
@service_options
@click.argument("device_id")
def twin_show(connection_string: str, ca_file: Path | None, as_json: bool, device_id: str) -> None:
    """Show a twin."""
    show(
        client_for(connection_string, ca_file).request("GET", f"/twins/{device_id}").json(), as_json
    )


@twin.command("update")
@service_options
@click.argument("device_id")
@click.option("--tags", help="JSON merge patch of the tags.")
@click.option("--desired", help="JSON merge patch of the desired properties.")
@click.option("--etag", help="Only if the twin's etag is still this.")
def twin_update(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str,
    tags: str | None,
    desired: str | None,
    etag: str | None,
) -> None:
    """Merge tags and desired properties (null deletes); the device is notified."""
    body: dict[str, Any] = {}
    if (patch := _json_arg(tags, "--tags")) is not None:
        body["tags"] = patch
    if (patch := _json_arg(desired, "--desired")) is not None:
        body["properties"] = {"desired": patch}
    if not body:
        raise Refused("nothing to change: give --tags and/or --desired")
    client = client_for(connection_string, ca_file)
    response = client.request("PATCH", f"/twins/{device_id}", json=body, headers=_etag_header(etag))
    show(response.json(), as_json)


# -- query --------------------------------------------------------------------------------


@click.command("query")
@service_options
@click.argument("text")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--top", "max_items", type=click.IntRange(min=1), help="Stop after this many.")
def query(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    text: str,
    page_size: int,
    max_items: int | None,
) -> None:
    """Run an IoT Hub query (devices, or certhub's certificates), following every page."""
    client = client_for(connection_string, ca_file)
    items: list[Any] = []
    token: str | None = None
    while max_items is None or len(items) < max_items:
        headers = {"x-ms-max-item-count": str(page_size)}
        if token:
            headers["x-ms-continuation"] = token
        response = client.request("POST", "/devices/query", json={"query": text}, headers=headers)
        items.extend(response.json())
        token = response.headers.get("x-ms-continuation")
        if not token:
            break
    show(items[:max_items] if max_items else items, as_json)


# -- certs --------------------------------------------------------------------------------


@click.group()
def certs() -> None:
    """The certificate inventory."""


@certs.command("list")
@service_options
@click.option("--device", "device_id", help="Only this device's certificates.")
@click.option(
    "--state",
    help="issued, active, superseded, revoked, expired, or healthy, renewal-due, overdue.",
)
@click.option("--expiring-within", help="Only those expiring within this time: 7d, 12h.")
@click.option("--limit", type=click.IntRange(1, 1000), default=1000, show_default=True)
def certs_list(
    connection_string: str,
    ca_file: Path | None,
    as_json: bool,
    device_id: str | None,
    state: str | None,
    expiring_within: str | None,
    limit: int,
) -> None:
    """List certificates, newest serial last (filters combine)."""
    params: dict[str, Any] = {"limit": limit}
    if device_id:
        params["deviceId"] = device_id
    if state:
        params["state"] = state
    if expiring_within:
        try:
            window = parse_duration(expiring_within)
        except PolicyError as exc:
            raise Refused(f"--expiring-within: {exc}") from exc
        params["expiringBefore"] = (dt.datetime.now(dt.UTC) + window).isoformat()
    response = client_for(connection_string, ca_file).request(
        "GET", "/certhub/v1/certificates", params=params
    )
    items = response.json()["items"]
    columns = ["serialNumber", "deviceId", "policy", "notAfter", "state", "lifecycle"]
    show(items, as_json, columns)


def register(cli: click.Group) -> None:
    """Attach the operator commands to the top-level command."""
    from certhub.cli_health import health

    device.add_command(health)
    for command in (device, twin, query, certs):
        cli.add_command(command)
