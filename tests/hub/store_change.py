"""Makes one registry change from a separate process, as the CLI or another node would.

Usage: python store_change.py DATABASE_URL DATA_DIR ACTION ARG
ACTION: disable DEVICE | delete DEVICE | rotate DEVICE | revoke-serial SERIAL
        | create-policy NAME | revoke-issuer POLICY
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import sys
from pathlib import Path

from certhub.authority import CertificateAuthorityService
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.pki import LeafPolicy
from certhub.rand import SystemRandom
from certhub.registry import Store


def main(url: str, data_dir: str, action: str, arg: str) -> None:
    now = dt.datetime.now(dt.UTC)
    with Store.open(url) as store:
        if action == "disable":
            device = store.get_device(arg)
            assert device is not None
            store.update_device(dataclasses.replace(device, status="disabled"), None, now=now)
        elif action == "delete":
            store.delete_device(arg)
        elif action == "rotate":
            store.rotate_revocation_id(arg, secrets.token_bytes(32), now)
        elif action == "revoke-serial":
            store.set_certificate_state(arg, "revoked", now, "test")
        elif action == "create-policy":
            passphrase = DataDir(Path(data_dir)).passphrase(SystemRandom())
            authority = CertificateAuthorityService(
                store, clock=SystemClock(), rng=SystemRandom(), passphrase=passphrase
            )
            authority.create_policy(LeafPolicy.create(arg, "30d"), actor="tests")
        elif action == "revoke-issuer":
            ns = store.get_namespace("default")
            assert ns is not None
            policy = store.get_policy(ns.id, arg)
            assert policy is not None
            for ca in store.list_cas(ns.id, kind="issuing", policy_id=policy.id):
                store.set_ca_state(ca.id, "revoked", now)
        else:
            raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
