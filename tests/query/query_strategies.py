"""Hypothesis strategies: small fleets with messy twins, and queries over the grammar.

Numbers are small integers and halves, so every store computes them exactly (SQLite and
PostgreSQL agree with Python's doubles for those); strings use a small alphabet with
upper/lower case, a non-ASCII letter and a quote, so ordering, case functions and
escapes are exercised.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st
from query_fixtures import T0, Device

KEYS = ["a", "b", "c"]
TEXT = st.text(alphabet="aAbé'", max_size=2)
NUMBERS = st.integers(-3, 3) | st.sampled_from([0.5, -1.5, 2.0, 2.5])
JSON_LEAF = st.none() | st.booleans() | NUMBERS | TEXT


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        JSON_LEAF,
        lambda inner: (
            st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
        ),
        max_leaves=5,
    )


#: Mostly numbers and strings, so typed comparisons split fleets; the odd null, bool,
#: array or object keeps the undefined/mismatch rules busy.
SECTION_VALUE = NUMBERS | TEXT | NUMBERS | TEXT | st.booleans() | json_values()
SECTION = st.fixed_dictionaries(
    {}, optional={"a": SECTION_VALUE, "b": SECTION_VALUE, "c": json_values()}
) | st.fixed_dictionaries({"a": SECTION_VALUE, "b": SECTION_VALUE})
VALID_UNTIL = st.sampled_from(["2026-05-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-03-01"])


@st.composite
def reported(draw: st.DrawFn) -> dict[str, Any]:
    section = draw(SECTION)
    if draw(st.booleans()):
        section["certificate"] = {"validUntil": draw(VALID_UNTIL | NUMBERS)}
    return section


@st.composite
def devices(draw: st.DrawFn, device_id: str) -> Device:
    hours = draw(st.none() | st.integers(0, 3))
    micro = draw(st.sampled_from([0, 500_000, 999_999]))
    last = T0 + dt.timedelta(hours=hours, microseconds=micro) if hours is not None else None
    return Device(
        device_id=device_id,
        status=draw(st.sampled_from(["enabled", "disabled"])),
        status_reason=draw(st.none() | st.sampled_from(["", "x", "Y"])),
        connection_state=draw(st.sampled_from(["Connected", "Disconnected"])),
        last_activity_at=last,
        tags=draw(SECTION),
        desired=draw(SECTION),
        reported=draw(reported()),
        version=draw(st.integers(1, 4)),
    )


@st.composite
def fleets(draw: st.DrawFn) -> list[Device]:
    ids = draw(
        st.lists(
            st.sampled_from(["d0", "d1", "d2", "D3", "dé", "e4", "d10"]), unique=True, max_size=6
        )
    )
    return [draw(devices(i)) for i in ids]


# --- queries ------------------------------------------------------------------------

PATHS = [
    "deviceId",
    "DeviceId",
    "status",
    "statusReason",
    "connectionState",
    "lastActivityTime",
    "version",
    "etag",
    "tags",
    "tags.a",
    "Tags.b",
    "tags.a.b",
    "tags.b.c",
    "tags.x",
    "properties",
    "properties.desired.a",
    "properties.Reported.a",
    "properties.reported.b.a",
    "properties.reported.certificate.validUntil",
    "properties.reported.certificate",
    "nothing.here",
]
STRING_CONSTS = [
    "'enabled'",
    "'Connected'",
    "'a'",
    "'A'",
    "'é'",
    "''",
    "'a'",
    '"A"',
    "'b'",
    "'é'",
    "'\\u0061'",
    "'it\\'s'",
    '"1"',
    "'2026-06-01'",
    "'enabled'",
    "'2026-01-01T02'",
]
CONSTS = st.sampled_from(
    ["null", "undefined", "true", "FALSE", "0", "1", "-1", "2.5", "0x2", *STRING_CONSTS]
)
#: Paths that usually hold a value come up more often than the odd ones.
COMMON_PATHS = [
    "status",
    "version",
    "lastActivityTime",
    "tags.a",
    "tags.b",
    "properties.reported.a",
]
path_texts = st.sampled_from(PATHS) | st.sampled_from(COMMON_PATHS)


def _values(depth: int) -> st.SearchStrategy[str]:
    base = path_texts | path_texts | CONSTS
    if depth == 0:
        return base
    inner = _values(depth - 1)
    return (
        base
        | st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        | inner.map(lambda v: f"-{v}" if not v.startswith("-") else v)
        | st.tuples(st.sampled_from(["LOWER", "upper", "LENGTH"]), inner).map(
            lambda t: f"{t[0]}({t[1]})"
        )
    )


ARRAYS = st.lists(CONSTS.filter(lambda c: c != "undefined"), max_size=3).map(
    lambda cs: "[" + ", ".join(cs) + "]"
)
COMPARE_OPS = st.sampled_from(["=", "!=", "<>", "<", ">", "<=", ">="])
PREDICATES = st.sampled_from(
    [
        "IS_DEFINED",
        "is_null",
        "IS_STRING",
        "IS_NUMBER",
        "IS_BOOL",
        "IS_OBJECT",
        "IS_ARRAY",
        "IS_PRIMITIVE",
    ]
)
STRING_TESTS = st.sampled_from(["STARTSWITH", "starts_with", "ENDSWITH", "ENDS_WITH", "CONTAINS"])


SECTION_PATHS = ["tags.a", "tags.b", "properties.reported.a", "properties.desired.b"]


def typed_comparisons() -> st.SearchStrategy[str]:
    """Comparisons whose two sides often have the same type, so they split a fleet."""
    numbers = st.tuples(
        st.sampled_from([*SECTION_PATHS, "version"]),
        COMPARE_OPS,
        st.sampled_from(["-1", "0", "0.5", "1", "2", "3"]),
    )
    strings = st.tuples(
        st.sampled_from([*SECTION_PATHS, "status", "lastActivityTime", "deviceId", "statusReason"]),
        COMPARE_OPS,
        st.sampled_from(["''", "'a'", "'b'", "'e'", "'enabled'", "'2026-01-01T02'", "'d1'", "'x'"]),
    )
    bools = st.tuples(
        st.sampled_from(SECTION_PATHS),
        st.sampled_from(["=", "!="]),
        st.sampled_from(["true", "false"]),
    )
    return (numbers | strings | bools).map(lambda t: f"{t[0]} {t[1]} {t[2]}")


def conditions(depth: int = 2) -> st.SearchStrategy[str]:
    value = _values(1)
    simple = st.tuples(path_texts, COMPARE_OPS, CONSTS).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
    typed = typed_comparisons()
    atoms = (
        typed
        | typed
        | typed
        | simple
        | st.tuples(value, COMPARE_OPS, value).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
        | st.tuples(value, st.sampled_from(["IN", "nin"]), ARRAYS).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        )
        | st.tuples(PREDICATES, value).map(lambda t: f"{t[0]}({t[1]})")
        | st.tuples(STRING_TESTS, value, value).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
        | path_texts
    )
    if depth == 0:
        return atoms
    inner = conditions(depth - 1)
    return (
        atoms
        | st.tuples(inner, st.sampled_from(["AND", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        | inner.map(lambda c: f"NOT ({c})")
    )


AGGREGATES = st.sampled_from(
    ["COUNT()", "COUNT({v})", "SUM({v})", "AVG({v})", "MIN({v})", "MAX({v})"]
)


@st.composite
def queries(draw: st.DrawFn) -> str:
    top = draw(st.none() | st.integers(1, 4))
    where = draw(st.none() | conditions())
    kind = draw(st.sampled_from(["star", "projection", "aggregate", "group"]))
    select = "SELECT " + (f"TOP {top} " if top else "")
    tail = f" WHERE {where}" if where else ""
    if kind == "star":
        return f"{select}* FROM devices{tail}"
    if kind == "projection":
        paths = draw(st.lists(path_texts, min_size=1, max_size=3))
        items = [
            f"{p} AS p{i}" if draw(st.booleans()) else f"{p} AS {p.split('.')[-1]}{i}"
            for i, p in enumerate(paths)
        ]
        return f"{select}{', '.join(items)} FROM devices{tail}"
    aggs = draw(st.lists(st.tuples(AGGREGATES, _values(1)), min_size=1, max_size=3))
    agg_items = [a.format(v=v) + f" AS a{i}" for i, (a, v) in enumerate(aggs)]
    if kind == "aggregate":
        return f"{select}{', '.join(agg_items)} FROM devices{tail}"
    groups = draw(st.lists(path_texts, min_size=1, max_size=2, unique_by=lambda p: p.lower()))
    group_items = [f"{g} AS g{i}" for i, g in enumerate(groups)]
    items = ", ".join(group_items + agg_items)
    return f"{select}{items} FROM devices{tail} GROUP BY {', '.join(groups)}"
