"""The registry store: one object over one pooled engine, safe to share between threads.

Every method runs in its own transaction unless given ``conn=`` (a connection from
:meth:`Store.transaction`), in which case it joins that transaction, so a higher
layer can make several steps atomic::

    with store.transaction() as conn:
        device = store.create_device(new_device, now, conn=conn)
        store.record_issuance(cert, audit_event, conn=conn)

The store is synchronous; the server calls it from a bounded thread executor.
Lookups named ``get_*`` return ``None`` when nothing matches (``get_twin`` raises
NotFound: every device has a twin); writes raise the errors of
:mod:`certhub.registry.errors`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from certhub.rand import Random, SystemRandom
from certhub.registry._audit import AuditMixin
from certhub.registry._base import record
from certhub.registry._certificates import CertificateMixin
from certhub.registry._crl import CrlMixin
from certhub.registry._devices import DeviceMixin
from certhub.registry._dps import DpsMixin
from certhub.registry._enrollments import EnrollmentMixin
from certhub.registry._events import EventsMixin
from certhub.registry._fleet import FleetMixin
from certhub.registry._issuance import IssuanceWriter
from certhub.registry._operations import OperationMixin
from certhub.registry._pki import PkiMixin
from certhub.registry._renewal import RenewalMixin
from certhub.registry._service import ServiceMixin
from certhub.registry.engine import create_store_engine
from certhub.registry.migrate import upgrade
from certhub.registry.records import NamespaceRecord, check_aware
from certhub.registry.schema import namespaces, settings

__all__ = ["Store"]


class Store(
    ServiceMixin,
    AuditMixin,
    CertificateMixin,
    CrlMixin,
    DeviceMixin,
    DpsMixin,
    EnrollmentMixin,
    EventsMixin,
    FleetMixin,
    OperationMixin,
    PkiMixin,
    RenewalMixin,
):
    """Devices, twins, enrollments, CAs, policies, certificates, operations and audit."""

    def __init__(self, engine: Engine, random: Random) -> None:
        """Wrap an engine made by :func:`~certhub.registry.engine.create_store_engine`.

        Prefer :meth:`open`, which also migrates.
        """
        super().__init__(engine, random)
        self._issuance = IssuanceWriter(engine)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        random: Random | None = None,
        pool_size: int | None = None,
    ) -> Store:
        """Connect to ``url`` (``sqlite:///…`` or ``postgresql[+psycopg]://…``).

        With ``migrate`` the schema is first upgraded to the newest revision. The
        parent directory of a SQLite file must exist. ``random`` makes etags and
        generation ids (default: the operating system's).
        """
        engine = create_store_engine(url, pool_size=pool_size)
        try:
            if migrate:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, random or SystemRandom())

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings ---------------------------------------------------------------

    def get_setting(self, key: str, conn: Connection | None = None) -> str | None:
        """The setting's value, or None."""
        with self._read(conn) as c:
            stmt = sa.select(settings.c.value).where(settings.c.key == key)
            value: str | None = c.execute(stmt).scalar_one_or_none()
            return value

    def set_setting(self, key: str, value: str, conn: Connection | None = None) -> None:
        """Create or overwrite a setting."""
        stmt = self._upsert_setting().values(key=key, value=value)
        with self._write(conn, "setting", key) as c:
            c.execute(stmt)

    def _upsert_setting(self) -> Any:
        if self.dialect_name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(settings)
            return pg.on_conflict_do_update(
                index_elements=[settings.c.key], set_={"value": pg.excluded.value}
            )
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(settings)
        return lite.on_conflict_do_update(
            index_elements=[settings.c.key], set_={"value": lite.excluded.value}
        )

    # -- namespaces -------------------------------------------------------------

    def create_namespace(
        self, name: str, id_scope: str, now: dt.datetime, conn: Connection | None = None
    ) -> NamespaceRecord:
        """Create a namespace; AlreadyExists if the name or ID scope is taken."""
        check_aware("now", now)
        values = {"name": name, "id_scope": id_scope, "created_at": now}
        stmt = sa.insert(namespaces).values(values).returning(*namespaces.c)
        with self._write(conn, "namespace", name) as c:
            return NamespaceRecord(**c.execute(stmt).one()._mapping)

    def get_namespace(self, name: str, conn: Connection | None = None) -> NamespaceRecord | None:
        """The namespace with this name, or None."""
        return self._one_namespace(namespaces.c.name == name, conn)

    def get_namespace_by_scope(
        self, id_scope: str, conn: Connection | None = None
    ) -> NamespaceRecord | None:
        """The namespace with this DPS ID scope, or None."""
        return self._one_namespace(namespaces.c.id_scope == id_scope, conn)

    def get_namespace_by_id(
        self, namespace_id: int, conn: Connection | None = None
    ) -> NamespaceRecord | None:
        """The namespace with this id, or None."""
        return self._one_namespace(namespaces.c.id == namespace_id, conn)

    def list_namespaces(self, conn: Connection | None = None) -> list[NamespaceRecord]:
        """All namespaces by name."""
        with self._read(conn) as c:
            rows = c.execute(sa.select(namespaces).order_by(namespaces.c.name))
            return [NamespaceRecord(**row._mapping) for row in rows]

    def _one_namespace(
        self, where: sa.ColumnElement[bool], conn: Connection | None
    ) -> NamespaceRecord | None:
        with self._read(conn) as c:
            return record(NamespaceRecord, c.execute(sa.select(namespaces).where(where)).first())
