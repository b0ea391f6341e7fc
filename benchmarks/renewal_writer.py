"""The renewal lifecycle's store work, in process: what one device's renewal costs the
server besides MQTT and TLS, next to the raw issuance rate measured in the same run.

    .venv/bin/python benchmarks/renewal_writer.py [--devices 256] [--rounds 6]

* **raw** — ``benchmarks/issuance.py``'s ``raw_loop`` on this machine, now (the reference
  of ``benchmarks/renewal.py``).
* **renewals** — :class:`certhub.renewal.writer.RenewalWriter` (the real writer thread,
  SQLite in a temporary data directory, one signing process) with ``--devices`` requests
  queued at once, ``--rounds`` times: renewals per second and this process's CPU per
  renewal (the signing child's not counted: its work is the raw loop's).
* **activations** — the same writer activating each device's new certificate (the
  device's first connection with it: ``issued`` -> ``active``, the old one superseded, the
  window kept on the newest): activations per second and CPU per activation.
* **reported patches** — :func:`certhub.hub.storage.patch_reported` (the twin write a
  device makes after each renewal: ``validFrom``/``validUntil``), 64 per transaction as
  the hub's group commit does: CPU per patch.

No MQTT, no TLS: ``benchmarks/renewal.py`` measures the whole path; this one shows the
store's share of it and moves when the writer's statements do.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

from certhub.authority import CertificateAuthorityService
from certhub.clock import SystemClock
from certhub.datadir import DataDir
from certhub.hub.storage import patch_reported
from certhub.rand import SystemRandom
from certhub.registry import Store
from certhub.renewal.config import RenewalConfig
from certhub.renewal.flow import Finished, Submission
from certhub.renewal.placer import WindowPlacer
from certhub.renewal.writer import RenewalWriter
from certhub.signing import SigningProcesses
from renewal import csr_b64, prepare, raw_rates  # benchmarks/ is the script's directory


def renew_all(writer: RenewalWriter, devices: list[str], csrs: list[bytes], tag: str) -> list[str]:
    """One request per device, queued at once; the new certificates' serials."""
    futures = [
        writer.accept(Submission(d, f"{tag}-{d}", csr, None))
        for d, csr in zip(devices, csrs, strict=True)
    ]
    finals = []
    for future in futures:
        final = future.result().final
        assert final is not None, "the request was not accepted"
        finals.append(final)
    done: list[Finished] = [f.result() for f in finals]
    serials = [f.operation.certificate_serial for f in done]
    assert all(serials), "a renewal failed"
    return [s for s in serials if s is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=256, help="requests per round (256)")
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds (6)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="certhub-writer-bench-"))
    print(f"preparing {args.devices} devices ...", flush=True)
    fixture = prepare(root, args.devices, None)
    devices = [d for d, _, _ in fixture.devices]
    csrs = [[base64.b64decode(csr_b64(d)) for d in devices] for _ in range(args.rounds + 1)]
    data = DataDir(fixture.data_dir)
    rng, clock = SystemRandom(), SystemClock()
    signer = SigningProcesses(1)
    signer.start()
    signer.wait_ready()
    store = Store.open(data.database_url)
    authority = CertificateAuthorityService(
        store, clock=clock, rng=rng, passphrase=data.passphrase(rng), signer=signer
    )
    config = RenewalConfig()
    writer = RenewalWriter(
        store,
        authority,
        clock=clock,
        config=config,
        placer=WindowPlacer(config.window_policy()),
        admit=lambda _device, _status: None,
        new_id=lambda: rng.token_bytes(12).hex(),
    )
    try:
        serials = renew_all(writer, devices, csrs[0], "warm-up")
        for future in [writer.activate(s) for s in serials]:
            future.result()
        renew_cpu = renew_wall = act_cpu = act_wall = 0.0
        for rnd in range(1, args.rounds + 1):
            cpu, wall = time.process_time(), time.perf_counter()
            serials = renew_all(writer, devices, csrs[rnd], f"r{rnd}")
            renew_cpu += time.process_time() - cpu
            renew_wall += time.perf_counter() - wall
            cpu, wall = time.process_time(), time.perf_counter()
            for future in [writer.activate(s) for s in serials]:
                future.result()
            act_cpu += time.process_time() - cpu
            act_wall += time.perf_counter() - wall
        now = dt.datetime.now(dt.UTC)
        cpu = time.process_time()
        patches = 0
        for rnd in range(args.rounds):
            for start in range(0, len(devices), 64):
                with store.transaction() as conn:
                    for device in devices[start : start + 64]:
                        patch = {"certificate": {"validFrom": now.isoformat(), "round": rnd}}
                        patch_reported(store, device, patch, now, conn)
                        patches += 1
        patch_cpu = time.process_time() - cpu
    finally:
        writer.close()
        signer.close()
        store.close()
    raw, _ = raw_rates(1000)
    n = args.devices * args.rounds
    print()
    print(f"raw issuance (issuance.py's reference)   {raw:>8,.0f} /s")
    print(
        f"renewals through the writer              {n / renew_wall:>8,.0f} /s   "
        f"ratio {n / renew_wall / raw:.2f}; CPU {renew_cpu / n * 1e6:,.0f} us each"
    )
    print(
        f"activations through the writer           {n / act_wall:>8,.0f} /s   "
        f"ratio {n / act_wall / raw:.2f}; CPU {act_cpu / n * 1e6:,.0f} us each"
    )
    print(f"twin reported patches (64 per commit)    CPU {patch_cpu / patches * 1e6:,.0f} us each")
    print(f"({platform.python_version()}, SQLite, {args.devices} devices x {args.rounds} rounds)")


if __name__ == "__main__":
    main()
