"""Running several certhub processes on one store.

* :class:`Coordinator` — this node's heartbeat row, the live-node count, named leases
  and :meth:`~Coordinator.singleton` work that runs on one node of the cluster.
* :class:`LeaseStore` / :class:`NodeRegistry` — the tables behind it (``cluster_leases``,
  ``cluster_nodes``; SQLite and PostgreSQL alike).
* :func:`per_node_rate` — a node's share of a cluster-wide rate.
* :func:`health_router` — ``/healthz`` and ``/readyz``.
* :class:`Supervisor` — ``certhub serve --workers N``.

Cross-node delivery to device sessions (closing, desired patches, methods, C2D) travels
through the store's ``events`` table and lives in :mod:`certhub.hub`. See
``docs/scale-out.md``.
"""

from certhub.cluster.coordinator import Coordinator, Job
from certhub.cluster.errors import ClusterError, LeaseError, WorkersRefused
from certhub.cluster.health import ReadinessCheck, health_router
from certhub.cluster.leases import LeaseRecord, LeaseStore
from certhub.cluster.nodes import NodeRecord, NodeRegistry, per_node_rate
from certhub.cluster.supervisor import Supervisor, check_workers, child_command, worker_name

__all__ = [
    "ClusterError",
    "Coordinator",
    "Job",
    "LeaseError",
    "LeaseRecord",
    "LeaseStore",
    "NodeRecord",
    "NodeRegistry",
    "ReadinessCheck",
    "Supervisor",
    "WorkersRefused",
    "check_workers",
    "child_command",
    "health_router",
    "per_node_rate",
    "worker_name",
]
