"""``POST /devices/query``: the IoT Hub query language over the registry's tables.

Collections: ``devices`` (``devices JOIN twins``, IoT Hub's twin documents) and
certhub's ``certificates`` (the certificates table joined to ``policies`` for the
policy name; ``issuedVia`` is the ``requested_via`` column). ``devices.modules`` is not
stored and answers 400.

Paging: ``x-ms-max-item-count`` (default 100; above 1000 counts as 1000) is the page
size and ``x-ms-continuation`` the token from the previous page; the response carries
``x-ms-item-type`` (``twin`` for ``SELECT * FROM devices``, else ``raw``) and, when more
results follow, ``x-ms-continuation``. A query that does not parse answers 400 with its
line and column in the message (``ErrorCode:ArgumentInvalid;… (line 1, column 8)``).

Filters on ``properties.reported.certificate.validUntil`` and ``status`` use the
expression indexes of migration 0005 (the compiler emits their exact text).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.sql import visitors

from certhub.query import (
    CollectionMapping,
    CompiledQuery,
    QueryError,
    ScalarField,
    compile_query,
    devices_mapping,
    parse,
)
from certhub.query.mapping import CERTIFICATE_COLUMNS
from certhub.registry.schema import certificates, devices, policies, twins
from certhub.service.auth import Permission
from certhub.service.context import ServiceContext, ServiceRoute, guard
from certhub.service.errors import BadRequest

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "QueryIn",
    "QueryPage",
    "compile_page",
    "mappings",
    "query_router",
    "run_query",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class QueryIn(BaseModel):
    """IoT Hub's ``QuerySpecification``."""

    model_config = ConfigDict(extra="ignore")
    query: str = Field(min_length=1, max_length=8192)


@cache
def mappings() -> dict[str, CollectionMapping]:
    """The query collections over the registry's real tables."""
    fields: dict[tuple[str, ...], Any] = {}
    for name, (column, kind) in CERTIFICATE_COLUMNS.items():
        col = policies.c.name if name == "policy" else certificates.c[column]
        fields[(name,)] = ScalarField(column=col, type=kind, nullable=bool(col.nullable))
    certs = CollectionMapping(
        collection="certificates",
        from_clause=certificates.join(policies, certificates.c.policy_id == policies.c.id),
        fields=fields,
    )
    return {"devices": devices_mapping(devices, twins), "certificates": certs}


class QueryPage:
    """One page of results: items, item type and the continuation token (or None)."""

    def __init__(self, items: list[Any], item_type: str, continuation: str | None) -> None:
        self.items = items
        self.item_type = item_type
        self.continuation = continuation


def compile_page(
    text: str, dialect: str, page_size: int | None, continuation: str | None
) -> tuple[CompiledQuery, sa.Select[Any]]:
    """Parse and compile one page of a query: the compiled query and the statement to run.

    The statement carries its values inline (``literal_execute``): the planners choose
    by them (SQLite walks the ``validUntil`` index for a narrow range but the id order
    for a wide one; a generic plan guesses), so what ``EXPLAIN`` shows is what runs.
    Raises BadRequest (with line and column for syntax errors).
    """
    try:
        query = parse(text)
        mapping = mappings().get(query.collection)
        if mapping is None:
            raise BadRequest(
                f"collection {query.collection!r} is not supported",
                reason="unsupported-collection",
            )
        compiled = compile_query(query, mapping, dialect, page_size, continuation)
    except QueryError as exc:
        raise BadRequest(str(exc), reason=f"query-{exc.reason}") from exc
    return compiled, _inline_values(compiled.statement)


def _inline_values(statement: sa.Select[Any]) -> sa.Select[Any]:
    def inline(bind: Any) -> None:
        value = bind.value
        # NUL cannot be written inline (SQLite refuses the statement): keep it a parameter.
        if not (isinstance(value, str) and "\x00" in value) and not isinstance(value, bytes):
            bind.literal_execute = True

    inlined: sa.Select[Any] = visitors.cloned_traverse(statement, {}, {"bindparam": inline})
    return inlined


async def run_query(
    ctx: ServiceContext, text: str, page_size: int, continuation: str | None
) -> QueryPage:
    """Run one page of a query for the REST API."""
    compiled, statement = compile_page(text, ctx.store.dialect_name, page_size, continuation)
    rows = await ctx.call(ctx.store.run_select, statement)
    page = compiled.page(rows)
    return QueryPage(page.items, compiled.item_type, page.continuation)


def _page_size(value: str | None) -> int:
    if value is None or value.strip() == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError as exc:
        raise BadRequest("x-ms-max-item-count must be an integer", reason="bad-page-size") from exc
    if size < 1:
        raise BadRequest("x-ms-max-item-count must be positive", reason="bad-page-size")
    return min(size, MAX_PAGE_SIZE)  # "the service may use a different value" (SDK docs)


def query_router(ctx: ServiceContext) -> APIRouter:
    """The query route."""
    router = APIRouter(route_class=ServiceRoute, tags=["query"])
    read = guard(ctx, Permission.REGISTRY_READ, Permission.SERVICE_CONNECT)

    @router.post("/devices/query", dependencies=[read], summary="Query twins or certificates")
    async def query_devices(
        body: QueryIn = Body(...),
        max_items: str | None = Header(None, alias="x-ms-max-item-count"),
        continuation: str | None = Header(None, alias="x-ms-continuation"),
    ) -> JSONResponse:
        page = await run_query(ctx, body.query, _page_size(max_items), continuation or None)
        headers = {"x-ms-item-type": page.item_type}
        if page.continuation is not None:
            headers["x-ms-continuation"] = page.continuation
        return JSONResponse(page.items, headers=headers)

    return router
