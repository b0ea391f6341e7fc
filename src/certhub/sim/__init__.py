"""certhub's fleet simulator: thousands of real device agents in one asyncio loop.

* :mod:`.fleet` — :class:`Fleet` (the agents), :class:`FleetSpec`, :class:`Target`.
* :mod:`.stats` — :class:`FleetStats`, fed by the agents' log events.
* :mod:`.runner` — :func:`run_fleet`: live display, Ctrl-C, :class:`RunResult` report.
* :mod:`.target` — the server side: :func:`prepare_target` (policy + enrollment group on a
  data directory), :class:`EmbeddedServer`; the only module importing the server.
* :mod:`.demo` — :func:`run_demo`, what ``certhub demo`` runs.

Only :mod:`.fleet`, :mod:`.stats`, :mod:`.runner` and :mod:`.display` are imported here,
so ``import certhub.sim`` does not load the server.
"""

from certhub.sim.errors import SetupError, SimError
from certhub.sim.fleet import Fleet, FleetSpec, Target, device_ids
from certhub.sim.runner import RunResult, run_fleet
from certhub.sim.stats import DeviceStats, FleetStats, percentile

__all__ = [
    "DeviceStats",
    "Fleet",
    "FleetSpec",
    "FleetStats",
    "RunResult",
    "SetupError",
    "SimError",
    "Target",
    "device_ids",
    "percentile",
    "run_fleet",
]
