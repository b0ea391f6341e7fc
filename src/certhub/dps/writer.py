"""Group commit for registrations: the DPS service's :class:`BatchWriter`.

Every registration goes through one writer thread (see
:mod:`certhub.registry.group_commit`): each in its own SAVEPOINT of one transaction per
batch, the CSRs signed before the transaction begins (:mod:`certhub.dps.presign`).
"""

from __future__ import annotations

from certhub.registry.group_commit import BatchWriter

__all__ = ["BatchWriter"]
