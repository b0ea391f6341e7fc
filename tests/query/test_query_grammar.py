"""Parsing: the AST, names, escapes, limits, and every rejection with its position."""

from __future__ import annotations

import pytest

from certhub.query import QueryError, QuerySyntaxError, parse
from certhub.query import ast as q
from certhub.query.names import MAX_QUERY_LENGTH
from certhub.query.values import UNDEFINED


def path(text: str) -> q.Path:
    return q.Path(parts=tuple(text.split(".")))


def const(value: object) -> q.Const:
    return q.Const(value=value)


def test_ast_of_a_full_query() -> None:
    query = parse(
        "SELECT TOP 5 status, COUNT() AS n FROM devices"
        " WHERE NOT tags.a.b <> -2 AND x IN ['s', -1.5, 0x1F] OR STARTS_WITH(deviceId, 'd')"
        " GROUP BY status"
    )
    where = q.Or(
        left=q.And(
            left=q.Not(operand=q.Compare(op="!=", left=path("tags.a.b"), right=const(-2))),
            right=q.InList(operand=path("x"), values=(const("s"), const(-1.5), const(31))),
        ),
        right=q.Call(name="STARTSWITH", args=(path("deviceId"), const("d"))),
    )
    assert query == q.Query(
        collection="devices",
        projections=(
            q.Projection(expr=path("status"), name="status"),
            q.Projection(expr=q.Aggregate(name="COUNT"), name="n"),
        ),
        where=where,
        group_by=(path("status"),),
        top=5,
    )


def test_precedence_of_arithmetic_and_comparison() -> None:
    where = parse("SELECT * FROM devices WHERE -a + b * c % 2 >= (d - e) / f").where
    assert where == q.Compare(
        op=">=",
        left=q.Arith(
            op="+",
            left=q.Neg(operand=path("a")),
            right=q.Arith(
                op="%", left=q.Arith(op="*", left=path("b"), right=path("c")), right=const(2)
            ),
        ),
        right=q.Arith(
            op="/", left=q.Arith(op="-", left=path("d"), right=path("e")), right=path("f")
        ),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("null", None),
        ("undefined", UNDEFINED),
        ("TRUE", True),
        ("false", False),
        ("42", 42),
        ("4.5", 4.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("0xff", 255),
        ("-0x10", -16),
        ("'single'", "single"),
        ('"double"', "double"),
    ],
)
def test_constants(text: str, value: object) -> None:
    where = parse(f"SELECT * FROM devices WHERE x = {text}").where
    assert isinstance(where, q.Compare)
    assert where.right == q.Const(value=value)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        pytest.param(r"'it\'s'", "it's", id="single-quote"),
        pytest.param(r'"say \"hi\""', 'say "hi"', id="double-quote"),
        pytest.param(r"'back\\slash'", "back\\slash", id="backslash"),
        pytest.param(r"'\u00e9t\u00E9'", "été", id="unicode"),
        pytest.param(r"'\ud83d\ude00'", "\U0001f600", id="surrogate-pair"),
        pytest.param(r"'a\nb\tc\/'", "a\nb\tc/", id="json-escapes"),
        pytest.param("'it''s'", None, id="sql-doubling-is-not-an-escape"),
        pytest.param('"\'"', "'", id="quote-in-other-quotes"),
    ],
)
def test_string_escapes(literal: str, value: str | None) -> None:
    text = f"SELECT * FROM devices WHERE x = {literal}"
    if value is None:
        with pytest.raises(QuerySyntaxError):
            parse(text)
        return
    where = parse(text).where
    assert isinstance(where, q.Compare)
    assert where.right == q.Const(value=value)


def test_keywords_and_functions_are_case_insensitive() -> None:
    upper = parse(
        "SELECT TOP 1 status AS s, COUNT() AS n FROM devices WHERE NOT IS_DEFINED(a) AND b IN [1]"
        " OR STARTSWITH(c, 'x') GROUP BY status"
    )
    lower = parse(
        "select top 1 status as s, count() as n from devices where not is_defined(a) and b in [1]"
        " or startswith(c, 'x') group by status"
    )
    mixed = parse(
        "SeLeCt ToP 1 status As s, CoUnT() aS n FrOm DeViCeS wHeRe NoT iS_dEfInEd(a) AnD b In [1]"
        " oR sTaRtS_wItH(c, 'x') GrOuP bY status"
    )
    assert upper == lower == mixed


def test_top_level_names_are_case_insensitive() -> None:
    query = parse(
        "SELECT DeviceId, LastActivityTime, TAGS.Floor, Properties.Reported.Temp FROM devices"
    )
    assert query.projections is not None
    assert [p.expr for p in query.projections] == [
        path("deviceId"),
        path("lastActivityTime"),
        path("tags.Floor"),  # names inside tags are JSON keys: case kept
        path("properties.reported.Temp"),
    ]
    assert [p.name for p in query.projections] == ["deviceId", "lastActivityTime", "Floor", "Temp"]


def test_certificate_names_are_case_insensitive() -> None:
    query = parse("SELECT SerialNumber, NOTAFTER FROM certificates GROUP BY serialnumber, notafter")
    assert query.group_by == (path("serialNumber"), path("notAfter"))


def test_keywords_inside_names() -> None:
    where = parse("SELECT * FROM devices WHERE notable = 1 AND tags.select.from = orders").where
    assert where == q.And(
        left=q.Compare(op="=", left=path("notable"), right=const(1)),
        right=q.Compare(op="=", left=path("tags.select.from"), right=path("orders")),
    )


def test_collections() -> None:
    assert parse("SELECT * FROM devices.modules").collection == "devices.modules"
    assert parse("SELECT * FROM Certificates").collection == "certificates"


def test_unaliased_aggregates_are_numbered() -> None:
    query = parse("SELECT COUNT(), MAX(version), MIN(version) AS low FROM devices")
    assert query.projections is not None
    assert [p.name for p in query.projections] == ["$1", "$2", "low"]


def test_length_limit_is_inclusive() -> None:
    head = "SELECT * FROM devices WHERE x = '"
    text = head + "a" * (MAX_QUERY_LENGTH - len(head) - 1) + "'"
    assert len(text) == MAX_QUERY_LENGTH
    parse(text)


def test_parse_is_cached() -> None:
    text = "SELECT deviceId FROM devices WHERE tags.cached = 1"
    assert parse(text) is parse(text)


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        pytest.param("SELECT * FORM devices", 1, 10, id="reject/misspelt-from"),
        pytest.param("SELECT * FROM devices\nWHERE x = = 1", 2, 11, id="reject/second-line"),
        pytest.param("", 1, 1, id="reject/empty"),
        pytest.param("SELECT * FROM devices WHERE", 1, 28, id="reject/eof"),
        pytest.param("SELECT * FROM devices WHERE x = 'open", 1, 33, id="reject/unterminated"),
        pytest.param("SELECT * FROM devices WHERE x = 'a\\qb'", 1, 35, id="reject/bad-escape"),
        pytest.param(
            "SELECT * FROM devices WHERE x = '\\ud83d'", 1, 33, id="reject/lone-surrogate"
        ),
        pytest.param(
            "SELECT * FROM devices WHERE a < b < c", 1, 35, id="reject/chained-comparison"
        ),
        pytest.param("SELECT * FROM devices WHERE a IN [b]", 1, 35, id="reject/path-in-array"),
        pytest.param("SELECT * FROM devices WHERE a IN 1", 1, 34, id="reject/in-without-array"),
        pytest.param("SELECT * FROM devices WHERE a = #", 1, 33, id="reject/bad-character"),
        pytest.param("SELECT a., b FROM devices", 1, 10, id="reject/dangling-dot"),
        pytest.param("SELECT *, a FROM devices", 1, 9, id="reject/star-and-list"),
        pytest.param("SELECT TOP devices FROM devices", 1, 12, id="reject/top-without-number"),
        pytest.param("SELECT * FROM devices ORDER BY deviceId", 1, 23, id="reject/order-by"),
        pytest.param("SELECT * FROM devices WHERE x = 5abc", 1, 34, id="reject/number-then-name"),
        pytest.param("SELECT * FROM devices GROUP BY COUNT()", 1, 37, id="reject/group-by-call"),
    ],
)
def test_syntax_errors(text: str, line: int, column: int) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(text)
    assert (info.value.reason, info.value.line, info.value.column) == ("syntax", line, column)


def test_syntax_error_names_expected_tokens() -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse("SELECT * FORM devices")
    assert info.value.expected == ("FROM",)
    assert str(info.value) == "unexpected 'FORM' (line 1, column 10)"


@pytest.mark.parametrize(
    ("text", "reason", "message"),
    [
        pytest.param(
            "SELECT * FROM devices WHERE FOO(a)",
            "unknown-function",
            "unknown function 'FOO'",
            id="reject/unknown-function",
        ),
        pytest.param(
            "SELECT * FROM devices WHERE STARTSWITH(a)",
            "arity",
            "STARTSWITH takes 2 argument(s), got 1",
            id="reject/function-arity",
        ),
        pytest.param(
            "SELECT COUNT(a, b) FROM devices",
            "arity",
            "COUNT does not take 2 argument(s)",
            id="reject/aggregate-arity",
        ),
        pytest.param(
            "SELECT AVG() FROM devices",
            "arity",
            "AVG does not take 0 argument(s)",
            id="reject/avg-without-argument",
        ),
        pytest.param(
            "SELECT * FROM devices WHERE COUNT() > 1",
            "aggregate-outside-select",
            "aggregate COUNT is only allowed in SELECT",
            id="reject/aggregate-in-where",
        ),
        pytest.param(
            "SELECT SUM(MAX(a)) FROM devices",
            "nested-aggregate",
            "aggregates cannot be nested",
            id="reject/nested-aggregate",
        ),
        pytest.param(
            "SELECT LOWER(status) FROM devices",
            "bad-projection",
            "a projection must be a property path or an aggregate",
            id="reject/function-projection",
        ),
        pytest.param(
            "SELECT COUNT() + 1 FROM devices",
            "bad-projection",
            "a projection must be a property path or an aggregate",
            id="reject/aggregate-in-expression",
        ),
        pytest.param(
            "SELECT 'x' FROM devices",
            "bad-projection",
            "a projection must be a property path or an aggregate",
            id="reject/constant-projection",
        ),
        pytest.param(
            "SELECT deviceId, COUNT() FROM devices",
            "ungrouped-projection",
            "deviceId is neither grouped nor aggregated",
            id="reject/aggregate-without-group-by",
        ),
        pytest.param(
            "SELECT deviceId, COUNT() FROM devices GROUP BY status",
            "ungrouped-projection",
            "deviceId is neither grouped nor aggregated",
            id="reject/ungrouped-field",
        ),
        pytest.param(
            "SELECT * FROM devices GROUP BY status",
            "star-with-group-by",
            "SELECT * cannot be used with GROUP BY",
            id="reject/star-with-group-by",
        ),
        pytest.param(
            "SELECT TOP 0 * FROM devices",
            "bad-top",
            "TOP must be a positive integer, got 0",
            id="reject/top-zero",
        ),
        pytest.param(
            "SELECT TOP -3 * FROM devices",
            "bad-top",
            "TOP must be a positive integer, got -3",
            id="reject/top-negative",
        ),
        pytest.param(
            "SELECT TOP 1.5 * FROM devices",
            "bad-top",
            "TOP must be a positive integer, got 1.5",
            id="reject/top-fraction",
        ),
        pytest.param(
            "SELECT tags.a, properties.reported.a FROM devices",
            "duplicate-name",
            "two projections are named 'a'; use AS",
            id="reject/duplicate-name",
        ),
        pytest.param(
            "SELECT * FROM things",
            "unknown-collection",
            "unknown collection 'things'",
            id="reject/unknown-collection",
        ),
        pytest.param(
            "SELECT * FROM devices.jobs",
            "unsupported-collection",
            "devices.jobs queries are not supported",
            id="reject/jobs",
        ),
        pytest.param(
            "SELECT * FROM devices WHERE x = '" + "a" * MAX_QUERY_LENGTH + "'",
            "query-too-long",
            f"query is {MAX_QUERY_LENGTH + 34} characters long; the limit is {MAX_QUERY_LENGTH}",
            id="reject/too-long",
        ),
    ],
)
def test_semantic_errors(text: str, reason: str, message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    assert not isinstance(info.value, QuerySyntaxError)
    assert (info.value.reason, info.value.message) == (reason, message)


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        pytest.param("SELECT *\nFROM devices\nWHERE  foo(a)", 3, 8, id="function"),
        pytest.param("SELECT TOP 0 * FROM devices", 1, 12, id="top"),
        pytest.param("SELECT a,\n  LOWER(b) FROM devices", 2, 3, id="projection"),
        pytest.param("SELECT * FROM stuff", 1, 15, id="collection"),
    ],
)
def test_semantic_errors_point_at_the_text(text: str, line: int, column: int) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column)
