"""Runs under .venv-azure (azure-iot-hub 2.7.0) against certhub's service API.

Usage: python azure_service_script.py PHASE CONNECTION_STRING DEVICE_ID

Phases (one JSON line each on stdout):
  create  create DEVICE_ID with certificate-authority authentication, read its twin
  twin    update the twin (tags + desired) with its etag, read it back
  finish  disable the device, run a paged query, read statistics, provoke errors
  bulk    bulk-create DEVICE_ID-0..2, then a bulk call that partly fails
The trust anchor comes from REQUESTS_CA_BUNDLE.
"""

import json
import sys

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    ExportImportDevice,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError


def say(**fields):
    print(json.dumps(fields, default=str), flush=True)


def status_of(call):
    try:
        call()
    except HttpOperationError as exc:
        return {
            "status": exc.response.status_code,
            "body": exc.response.text,
            "code": exc.response.headers.get("iothub-errorcode"),
        }
    return {"status": 200}


def create(manager, device_id):
    device = manager.create_device_with_certificate_authority(device_id, "enabled")
    twin = manager.get_twin(device_id)
    say(
        device_id=device.device_id,
        auth=device.authentication.type,
        status=device.status,
        etag=device.etag,
        twin_etag=twin.etag,
        desired_version=twin.properties.desired["$version"],
    )


def twin(manager, device_id):
    current = manager.get_twin(device_id)
    patch = Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"interval": 7}))
    updated = manager.update_twin(device_id, patch, current.etag)
    again = manager.get_twin(device_id)
    stale = status_of(lambda: manager.update_twin(device_id, patch, current.etag))
    say(
        tags=updated.tags,
        desired=updated.properties.desired.get("interval"),
        version=again.properties.desired["$version"],
        version_before=current.properties.desired["$version"],
        same_etag=again.etag == updated.etag,
        stale=stale,
    )


def finish(manager, device_id):
    device = manager.get_device(device_id)
    disabled = manager.update_device_with_certificate_authority(
        device_id, device.etag, "disabled", status_reason="sdk test"
    )
    ids, pages, token = [], 0, None
    while True:
        result = manager.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), token, 2)
        ids += [item.device_id for item in result.items]
        pages += 1
        token = result.continuation_token
        if not token:
            break
    stats = manager.get_device_registry_statistics()
    bad_query = status_of(lambda: manager.query_iot_hub(QuerySpecification(query="SELECT FROM")))
    missing = status_of(lambda: manager.get_device("no-such-device"))
    say(
        status=disabled.status,
        reason=disabled.status_reason,
        ids=ids,
        pages=pages,
        item_type=result.type,
        total=stats.total_device_count,
        disabled_count=stats.disabled_device_count,
        bad_query=bad_query,
        missing=missing,
    )


def bulk(manager, device_id):
    ca = AuthenticationMechanism(type="certificateAuthority")
    created = manager.bulk_create_or_update_devices(
        [
            ExportImportDevice(
                id=f"{device_id}-{i}", import_mode="create", status="enabled", authentication=ca
            )
            for i in range(3)
        ]
    )
    mixed = manager.bulk_create_or_update_devices(
        [
            ExportImportDevice(id=f"{device_id}-0", import_mode="create", authentication=ca),
            ExportImportDevice(id=f"{device_id}-1", import_mode="delete"),
        ]
    )
    say(
        created=created.is_successful,
        created_errors=len(created.errors or []),
        mixed=mixed.is_successful,
        errors=[(e.device_id, e.error_code, e.operation) for e in mixed.errors],
        remaining=sorted(
            d.device_id for d in manager.get_devices() if d.device_id.startswith(device_id)
        ),
        auth=manager.get_device(f"{device_id}-2").authentication.type,
    )


def main():
    phase, connection_string, device_id = sys.argv[1:4]
    manager = IoTHubRegistryManager.from_connection_string(connection_string)
    {"create": create, "twin": twin, "finish": finish, "bulk": bulk}[phase](manager, device_id)


if __name__ == "__main__":
    main()
