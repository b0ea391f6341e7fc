"""Where a collection's document fields live in SQL.

A :class:`CollectionMapping` maps document paths to columns: a :class:`ScalarField` is
one SQL column holding a primitive (``deviceId`` -> ``devices.device_id``), a
:class:`DocumentField` a JSON column holding the whole subtree at that path (``tags`` ->
``twins.tags``). Paths below a DocumentField are read with the dialect's JSON
functions; a path that is a proper prefix of mapped fields (``properties``) is an
object assembled from them. Everything else is undefined.

The mapping is plain data built from Table objects, so the store can point it at its
real tables: :func:`devices_mapping` and :func:`certificates_mapping` take the tables
and use the conventional column names, skipping columns a table does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import sqlalchemy as sa

from certhub.query.names import COLLECTION_KEYS

__all__ = [
    "CERTIFICATE_COLUMNS",
    "DEVICE_COLUMNS",
    "TWIN_COLUMNS",
    "CollectionMapping",
    "DocumentField",
    "FieldType",
    "ScalarField",
    "certificates_mapping",
    "devices_mapping",
]

#: ``timestamp`` columns hold aware datetimes and read as ISO-8601 "Z" strings.
FieldType = Literal["string", "number", "bool", "timestamp"]


@dataclass(frozen=True, kw_only=True)
class ScalarField:
    """A document field stored in one SQL column; SQL NULL reads as JSON null."""

    column: sa.ColumnElement[Any]
    type: FieldType
    nullable: bool = True


@dataclass(frozen=True, kw_only=True)
class DocumentField:
    """A JSON column (JSONB on PostgreSQL) holding the subtree at the field's path.

    SQL NULL reads as undefined.
    """

    column: sa.ColumnElement[Any]


@dataclass(frozen=True, kw_only=True, eq=False)
class CollectionMapping:
    """How one query collection is stored.

    ``fields`` maps document paths to columns. ``key`` lists the paths of the document
    key (ScalarFields, not nullable): results are ordered by it and paging continues
    after it. ``collation`` is the PostgreSQL collation used for string comparison and
    ordering ("C" gives code-point order, like the reference and SQLite); set it to None
    when the database's default collation already is "C"/"C.UTF-8" so that plain column
    indexes serve ordered comparisons.

    ``narrow_to`` names one table of ``from_clause`` that alone holds exactly its rows
    (for ``devices JOIN twins``: ``twins``, since every twin has its device by foreign
    key and primary key), and ``same_columns`` the columns of the other tables that
    equal one of that table's (the join key). A query that reads nothing else runs on
    that table alone: the join is skipped (see :meth:`narrowed`).
    """

    collection: str
    from_clause: sa.FromClause
    fields: Mapping[tuple[str, ...], ScalarField | DocumentField]
    key: tuple[tuple[str, ...], ...] = field(default=())
    star_item_type: str = "raw"
    collation: str | None = "C"
    narrow_to: sa.Table | None = None
    same_columns: Mapping[str, sa.ColumnElement[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", tuple((k,) for k in COLLECTION_KEYS[self.collection]))
        for path in self.key:
            f = self.fields.get(path)
            if not isinstance(f, ScalarField) or f.nullable:
                raise ValueError(f"key {'.'.join(path)} must be a non-nullable ScalarField")

    def key_columns(self) -> list[sa.ColumnElement[Any]]:
        """The SQL columns of the document key, in order."""
        return [self._scalar(p).column for p in self.key]

    def same_column(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``column``, or its equal in :attr:`narrow_to` (the join key's other side)."""
        return self.same_columns.get(_qualified(column), column)

    def narrowed(self, tables: set[str]) -> sa.FromClause:
        """What to select from when a query reads only columns of ``tables``."""
        if self.narrow_to is not None and tables <= {self.narrow_to.name}:
            return self.narrow_to
        return self.from_clause

    def _scalar(self, path: tuple[str, ...]) -> ScalarField:
        f = self.fields[path]
        assert isinstance(f, ScalarField)
        return f


#: devices: document name -> (column, type).
DEVICE_COLUMNS: Final[dict[str, tuple[str, FieldType]]] = {
    "deviceId": ("device_id", "string"),
    "status": ("status", "string"),
    "statusReason": ("status_reason", "string"),
    "statusUpdateTime": ("status_updated_at", "timestamp"),
    "connectionState": ("connection_state", "string"),
    "connectionStateUpdatedTime": ("connection_state_updated_at", "timestamp"),
    "lastActivityTime": ("last_activity_at", "timestamp"),
    "authenticationType": ("auth_type", "string"),
}

#: twins: document path -> (column, type or "json").
TWIN_COLUMNS: Final[dict[tuple[str, ...], tuple[str, str]]] = {
    ("version",): ("version", "number"),
    ("etag",): ("etag", "string"),
    ("tags",): ("tags", "json"),
    ("properties", "desired"): ("desired", "json"),
    ("properties", "reported"): ("reported", "json"),
}

#: certificates: document name -> (column, type).
CERTIFICATE_COLUMNS: Final[dict[str, tuple[str, FieldType]]] = {
    "serialNumber": ("serial_hex", "string"),
    "deviceId": ("device_id", "string"),
    "policy": ("policy_name", "string"),
    "notBefore": ("not_before", "timestamp"),
    "notAfter": ("not_after", "timestamp"),
    "state": ("state", "string"),
    "issuedVia": ("requested_via", "string"),
    "thumbprint": ("sha256", "string"),
}


def _scalars(
    table: sa.Table, columns: Mapping[str, tuple[str, FieldType]]
) -> dict[tuple[str, ...], ScalarField | DocumentField]:
    out: dict[tuple[str, ...], ScalarField | DocumentField] = {}
    for name, (column, kind) in columns.items():
        if column in table.c:
            col = table.c[column]
            out[(name,)] = ScalarField(column=col, type=kind, nullable=bool(col.nullable))
    return out


def devices_mapping(
    devices: sa.Table, twins: sa.Table, *, collation: str | None = "C"
) -> CollectionMapping:
    """The ``devices`` collection over ``devices JOIN twins``."""
    fields = _scalars(devices, DEVICE_COLUMNS)
    for path, (column, kind) in TWIN_COLUMNS.items():
        if column not in twins.c:
            continue
        col = twins.c[column]
        fields[path] = (
            DocumentField(column=col)
            if kind == "json"
            else ScalarField(column=col, type=kind, nullable=bool(col.nullable))  # type: ignore[arg-type]
        )
    # An inner join: every device has a twin row, and SQLite only drives a query from an
    # expression index on twins when twins may be the outer loop.
    join = devices.join(twins, devices.c.device_id == twins.c.device_id)
    return CollectionMapping(
        collection="devices",
        from_clause=join,
        fields=fields,
        star_item_type="twin",
        collation=collation,
        narrow_to=twins,
        same_columns={_qualified(devices.c.device_id): twins.c.device_id},
    )


def _qualified(column: sa.ColumnElement[Any]) -> str:
    table = getattr(column, "table", None)
    return f"{getattr(table, 'name', '')}.{getattr(column, 'name', '')}"


def certificates_mapping(
    certificates: sa.Table, *, collation: str | None = "C"
) -> CollectionMapping:
    """The certhub-only ``certificates`` collection over the certificates table."""
    return CollectionMapping(
        collection="certificates",
        from_clause=certificates,
        fields=_scalars(certificates, CERTIFICATE_COLUMNS),
        collation=collation,
    )
