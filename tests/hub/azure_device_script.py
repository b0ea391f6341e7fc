"""Runs under .venv-azure (azure-iot-device 2.14.0, paho-mqtt 1.6) against certhub.

Usage: python azure_device_script.py HOST DEVICE_ID CERT_CHAIN KEY TRUST_ANCHOR

Prints one JSON line per step; after "ready" it waits for a desired patch, a direct method
call (answered with status 200) and a cloud-to-device message, then disconnects.
"""

import json
import sys
import threading

from azure.iot.device import X509, IoTHubDeviceClient, MethodResponse

_OUT = threading.Lock()


def say(step, **fields):
    """One JSON line per step (handlers run on the SDK's threads: keep lines whole)."""
    with _OUT:
        sys.stdout.write(json.dumps({"step": step, **fields}) + "\n")
        sys.stdout.flush()


def main():
    host, device_id, cert_file, key_file, anchor = sys.argv[1:6]
    with open(anchor) as f:
        trust = f.read()
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=cert_file, key_file=key_file),
        hostname=host,
        device_id=device_id,
        server_verification_cert=trust,
    )
    got = {"desired": threading.Event(), "method": threading.Event(), "c2d": threading.Event()}

    def on_desired(patch):
        say("desired", patch=patch)
        got["desired"].set()

    def on_method(request):
        say("method", name=request.name, payload=request.payload)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"done": True})
        )
        got["method"].set()

    def on_message(message):
        say(
            "c2d",
            data=message.data.decode(),
            properties=message.custom_properties,
            message_id=message.message_id,
        )
        got["c2d"].set()

    client.connect()
    say("connected")
    twin = client.get_twin()
    say("twin", twin=twin)
    client.patch_twin_reported_properties({"sdk": {"ok": True, "n": 1}})
    say("patched")
    client.on_twin_desired_properties_patch_received = on_desired
    client.on_method_request_received = on_method
    client.on_message_received = on_message
    say("ready")
    ok = all(event.wait(60) for event in got.values())
    client.shutdown()
    say("done", ok=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
