"""``certhub serve`` (``certhub demo`` lives in :mod:`certhub.cli_sim`).

Scale-out (see ``docs/scale-out.md``): ``--database postgresql://… --node-name NAME`` runs
one node of a cluster (its own ports, or shared ones with ``--reuse-port``);
``--workers N`` starts N such nodes on this machine sharing the ports with
``SO_REUSEPORT`` under a small supervisor (:mod:`certhub.cluster.supervisor`).
"""

from __future__ import annotations

from pathlib import Path

import click

from certhub.cli_common import data_options, warn_development

__all__ = ["register"]


@click.command()
@data_options
@click.option("--host", "hosts", multiple=True, help="Host name the endpoints answer to (repeat).")
@click.option("--dev", is_flag=True, help="Enable the development profile.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--mqtt-port",
    type=click.IntRange(0, 65535),
    help="MQTT/TLS port (default: the one `certhub init` recorded, 8883 unless told).",
)
@click.option(
    "--https-port",
    type=click.IntRange(0, 65535),
    help="HTTPS port (default: the one `certhub init` recorded, 8443 unless told).",
)
@click.option("--node-name", default=None, help="This node's name (default: the host name).")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Server processes sharing the ports (SO_REUSEPORT); > 1 needs PostgreSQL.",
)
@click.option("--reuse-port", is_flag=True, help="Bind with SO_REUSEPORT (share the ports).")
@click.option(
    "--heartbeat", type=float, default=2.0, show_default=True, help="Cluster heartbeat (s)."
)
@click.option(
    "--lease-ttl",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds before a dead node's scheduled work moves to another node.",
)
@click.option(
    "--tls-threads",
    type=click.IntRange(0, 64),
    default=1,
    show_default=True,
    help="Threads running the MQTT listener's TLS handshakes (0: on the event loop).",
)
@click.option(
    "--signing-processes",
    type=click.IntRange(0, 64),
    default=1,
    show_default=True,
    help="Child processes that validate CSRs and sign leaves (0: in the server process).",
)
@click.option("--worker", "is_worker", is_flag=True, hidden=True)
def serve(
    data_dir: Path,
    database: str | None,
    hosts: tuple[str, ...],
    dev: bool,
    bind: str,
    mqtt_port: int | None,
    https_port: int | None,
    node_name: str | None,
    workers: int,
    reuse_port: bool,
    heartbeat: float,
    lease_ttl: float,
    tls_threads: int,
    signing_processes: int,
    is_worker: bool,
) -> None:
    """Run the server (initialising the data directory when it is new)."""
    from certhub.app import ServerConfig, run_server
    from certhub.bootstrap import initialize
    from certhub.cluster import WorkersRefused, check_workers

    try:
        check_workers(workers, database)
    except WorkersRefused as exc:
        raise click.UsageError(str(exc)) from exc
    if not is_worker:
        result = initialize(data_dir, database_url=database, hosts=hosts, development=dev)
        if result.development:
            warn_development()
        mqtt_port = result.mqtt_port if mqtt_port is None else mqtt_port
        https_port = result.https_port if https_port is None else https_port
    mqtt_port = 8883 if mqtt_port is None else mqtt_port
    https_port = 8443 if https_port is None else https_port
    if workers > 1:
        argv = ["serve", "--data-dir", str(data_dir), "--bind", bind, "--reuse-port"]
        argv += ["--database", str(database), "--mqtt-port", str(mqtt_port)]
        argv += ["--https-port", str(https_port)]
        argv += ["--heartbeat", str(heartbeat), "--lease-ttl", str(lease_ttl)]
        argv += ["--tls-threads", str(tls_threads)]
        argv += ["--signing-processes", str(signing_processes)]
        raise SystemExit(_supervise(argv, workers, node_name))
    config = ServerConfig(
        data_dir=data_dir,
        database_url=database,
        bind=bind,
        mqtt_port=mqtt_port,
        https_port=https_port,
        node_name=node_name,
        reuse_port=reuse_port or is_worker,
        cluster_heartbeat=heartbeat,
        lease_ttl=lease_ttl,
        handshake_threads=tls_threads,
        signing_processes=signing_processes,
    )
    run_server(config)


def _supervise(argv: list[str], workers: int, base: str | None) -> int:
    """Run ``workers`` child servers under the supervisor until a signal."""
    import logging

    from certhub.cluster import Supervisor, child_command, worker_name
    from certhub.metrics import node_name

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    names = [worker_name(node_name(base), i) for i in range(workers)]
    return Supervisor([child_command(argv, name) for name in names]).run()


def register(cli: click.Group) -> None:
    cli.add_command(serve)
