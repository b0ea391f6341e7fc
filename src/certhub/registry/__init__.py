"""The registry: certhub's store of devices, twins, enrollments, CAs, policies,
issued certificates, credential operations and the audit log.

SQLAlchemy Core over SQLite (embedded default, WAL) or PostgreSQL (psycopg 3), with
Alembic migrations shipped in ``migrations/``. Start with :meth:`Store.open`.
"""

from certhub.registry.errors import AlreadyExists, Conflict, EtagMismatch, NotFound, StoreError
from certhub.registry.store import Store

__all__ = ["AlreadyExists", "Conflict", "EtagMismatch", "NotFound", "Store", "StoreError"]
