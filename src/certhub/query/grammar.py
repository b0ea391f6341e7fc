"""The IoT Hub query grammar (one lark LALR grammar) and the parse step.

Keywords are regexes with a word boundary and a higher priority than NAME, so
``NOT`` is a keyword but ``notable`` is a name, in any letter case. Function names are
plain NAMEs followed by ``(`` and are checked later (an unknown one is a
:class:`~certhub.query.errors.QueryError`, not a syntax error). The lark parser is built
once per process and reused (building it costs ~0.15 s; a 200-character query then
parses in ~0.7 ms, and :func:`certhub.query.parse` caches parsed queries by text).
"""

from __future__ import annotations

import functools
from typing import Any

from lark import Lark, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from certhub.query.errors import QueryError, QuerySyntaxError
from certhub.query.names import MAX_QUERY_LENGTH

__all__ = ["GRAMMAR", "parse_tree"]

GRAMMAR = r"""
start: select_clause from_clause where_clause? group_clause?

select_clause: _SELECT top? projection_list
top: _TOP signed_number
projection_list: "*"                            -> star
               | projection ("," projection)*   -> projections
projection: expr (_AS NAME)?
from_clause: _FROM NAME ("." NAME)?
where_clause: _WHERE expr
group_clause: _GROUP _BY path ("," path)*

?expr: or_expr
?or_expr: and_expr
        | or_expr _OR and_expr          -> or_
?and_expr: not_expr
         | and_expr _AND not_expr       -> and_
?not_expr: cmp_expr
         | _NOT not_expr                -> not_
?cmp_expr: sum_expr
         | sum_expr comp_op sum_expr    -> compare
         | sum_expr _IN array           -> in_
         | sum_expr _NIN array          -> nin
!comp_op: "=" | "!=" | "<>" | "<" | ">" | "<=" | ">="
?sum_expr: product
         | sum_expr "+" product         -> add
         | sum_expr "-" product         -> sub
?product: unary
        | product "*" unary             -> mul
        | product "/" unary             -> div
        | product "%" unary             -> mod
?unary: atom
      | "-" unary                       -> neg
?atom: constant
     | path
     | call
     | "(" expr ")"
call: NAME "(" (expr ("," expr)*)? ")"
path: NAME ("." NAME)*
array: "[" (array_item ("," array_item)*)? "]"
?array_item: signed_number | string | true | false | null | undefined
!signed_number: "-"? number
?constant: number | string | true | false | null | undefined
number: NUMBER | HEX
string: STRING
true: _TRUE
false: _FALSE
null: _NULL
undefined: _UNDEFINED

_SELECT.2: /select\b/i
_TOP.2: /top\b/i
_AS.2: /as\b/i
_FROM.2: /from\b/i
_WHERE.2: /where\b/i
_GROUP.2: /group\b/i
_BY.2: /by\b/i
_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_NIN.2: /nin\b/i
_TRUE.2: /true\b/i
_FALSE.2: /false\b/i
_NULL.2: /null\b/i
_UNDEFINED.2: /undefined\b/i
NAME: /[A-Za-z_][A-Za-z0-9_]*/
HEX.3: /0[xX][0-9a-fA-F]+\b/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /'(?:[^'\\]|\\.)*'/s | /"(?:[^"\\]|\\.)*"/s

%ignore /\s+/
"""


@functools.cache
def _parser() -> Any:
    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


def parse_tree(text: str) -> Tree[Any]:
    """Parse ``text`` into a lark tree; raise QuerySyntaxError or QueryError (too long)."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}",
            reason="query-too-long",
        )
    try:
        tree: Tree[Any] = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from exc
    return tree


def _syntax_error(exc: UnexpectedInput, text: str) -> QuerySyntaxError:
    expected = tuple(sorted(_expected(exc)))
    line, column = exc.line, exc.column
    if isinstance(exc, UnexpectedEOF) or line is None or column is None or line < 1:
        line, column = _end_position(text)
        return QuerySyntaxError("unexpected end of query", line, column, expected)
    if isinstance(exc, UnexpectedToken):
        if exc.token.type == "$END":
            line, column = _end_position(text)
            return QuerySyntaxError("unexpected end of query", line, column, expected)
        return QuerySyntaxError(f"unexpected {exc.token.value!r}", line, column, expected)
    if isinstance(exc, UnexpectedCharacters):
        at = exc.pos_in_stream or 0
        found = text[at : at + 1]
        return QuerySyntaxError(f"unexpected character {found!r}", line, column, expected)
    return QuerySyntaxError(str(exc), line, column, expected)  # pragma: no cover


def _expected(exc: UnexpectedInput) -> set[str]:
    names = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set()
    return {n.lstrip("_") for n in names}


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1
