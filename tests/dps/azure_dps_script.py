"""Runs under .venv-azure (azure-iot-device 2.14.0, paho-mqtt 1.6) against certhub.

Usage:
  python azure_dps_script.py ID_SCOPE REGISTRATION_ID TRUST_ANCHOR WORKDIR CSR_B64 KEY_FILE \
      (--symmetric-key KEY | --cert ONBOARDING_CERT --key ONBOARDING_KEY)

Registers through ProvisioningDeviceClient on 127.0.0.1:8883 with the CSR in
``provisioning_payload`` (the SDK has no CSR support; .venv-azure has no cryptography,
so the test makes the key and CSR), writes the returned chain to WORKDIR, connects
IoTHubDeviceClient to the assigned hub with that certificate and KEY_FILE and sends one
telemetry message. Prints one JSON line per step.
"""

import argparse
import json
import os
import sys

from azure.iot.device import X509, IoTHubDeviceClient, Message, ProvisioningDeviceClient


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def pem(b64_der):
    body = "\n".join(b64_der[i : i + 64] for i in range(0, len(b64_der), 64))
    return "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n"


def main():
    parser = argparse.ArgumentParser()
    for name in ("id_scope", "registration_id", "anchor", "workdir", "csr", "key_file"):
        parser.add_argument(name)
    parser.add_argument("--symmetric-key")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    registration_id = args.registration_id
    with open(args.anchor) as f:
        trust = f.read()
    if args.symmetric_key:
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host="127.0.0.1",
            registration_id=registration_id,
            id_scope=args.id_scope,
            symmetric_key=args.symmetric_key,
            server_verification_cert=trust,
        )
    else:
        client = ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host="127.0.0.1",
            registration_id=registration_id,
            id_scope=args.id_scope,
            x509=X509(cert_file=args.cert, key_file=args.key),
            server_verification_cert=trust,
        )
    client.provisioning_payload = {"csr": args.csr}
    result = client.register()
    state = result.registration_state
    # response_payload is registrationState.payload, serialised to a JSON string.
    payload = json.loads(state.response_payload) if state is not None else None
    say(
        "registered",
        status=result.status,
        device_id=state.device_id if state else None,
        assigned_hub=state.assigned_hub if state else None,
        substatus=state.sub_status if state else None,
        payload_keys=sorted(payload) if isinstance(payload, dict) else None,
    )
    if result.status != "assigned" or not isinstance(payload, dict):
        return 1
    chain = payload["issuedCertificateChain"]
    chain_path = os.path.join(args.workdir, registration_id + "-chain.pem")
    with open(chain_path, "w") as f:
        f.write("".join(pem(c) for c in chain))
    say("chain", length=len(chain))
    hub = IoTHubDeviceClient.create_from_x509_certificate(
        x509=X509(cert_file=chain_path, key_file=args.key_file),
        hostname=state.assigned_hub,
        device_id=state.device_id,
        server_verification_cert=trust,
    )
    hub.connect()
    say("connected")
    hub.send_message(Message("hello from " + registration_id))
    say("sent")
    hub.shutdown()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
