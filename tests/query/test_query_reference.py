"""The reference evaluator against hand-written expectations."""

from __future__ import annotations

from typing import Any

import pytest
from query_cases import CERTIFICATE_CASES, CERTIFICATES, DEVICE_CASES, FLEET

from certhub.query import UNDEFINED, evaluate, parse
from certhub.query.reference import get_path


@pytest.mark.parametrize(("text", "expected"), DEVICE_CASES)
def test_devices(text: str, expected: list[dict[str, Any]]) -> None:
    assert evaluate(parse(text), [d.document() for d in FLEET]) == expected


@pytest.mark.parametrize(("text", "expected"), CERTIFICATE_CASES)
def test_certificates(text: str, expected: list[dict[str, Any]]) -> None:
    assert evaluate(parse(text), [c.document() for c in CERTIFICATES]) == expected


def test_select_star_returns_whole_documents_in_key_order() -> None:
    docs = [d.document() for d in reversed(FLEET)]
    assert evaluate(parse("SELECT * FROM devices"), docs) == [d.document() for d in FLEET]


def test_results_do_not_alias_input() -> None:
    docs = [FLEET[0].document()]
    result = evaluate(parse("SELECT tags FROM devices"), docs)
    result[0]["tags"]["site"] = "changed"
    assert docs[0]["tags"]["site"] == "north"


def test_get_path_stops_at_non_objects() -> None:
    doc = {"a": {"b": [1]}, "s": "text"}
    assert get_path(doc, ("a", "b")) == [1]
    assert get_path(doc, ("a", "b", "c")) is UNDEFINED
    assert get_path(doc, ("s", "length")) is UNDEFINED
