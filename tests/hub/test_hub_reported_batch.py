"""Reported patches go through the hub's group-commit writer: order and versions kept."""

from __future__ import annotations

import json
from pathlib import Path

from serverkit import DeviceClient, RunningServer, device_with_certificate


def test_pipelined_reported_patches_keep_their_order_and_versions(
    hub: RunningServer, device_id: str, pems_dir: Path
) -> None:
    pems = device_with_certificate(hub, device_id, pems_dir)
    with DeviceClient(hub, device_id, pems) as device:
        assert device.connect() == 0
        assert device.subscribe("$iothub/twin/res/#") == [1]
        for n in range(10):  # sent back to back: they share writer batches
            topic = f"$iothub/twin/PATCH/properties/reported/?$rid=p{n}"
            device.publish(topic, json.dumps({f"k{n}": n, "last": n}))
        topics = [device.expect("$iothub/twin/res/").topic for _ in range(10)]
    assert sorted(topics) == sorted(
        f"$iothub/twin/res/204/?$rid=p{n}&$version={n + 2}" for n in range(10)
    )
    twin = hub.store.get_twin(device_id)
    assert twin.reported_version == 11
    assert twin.reported == {**{f"k{n}": n for n in range(10)}, "last": 9}
