"""``/healthz`` and ``/readyz`` name the node; ``/readyz`` is 503 while a check fails."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from certhub.cluster import health_router


def _client(checks: Mapping[str, bool] | Exception) -> TestClient:
    async def ready() -> Mapping[str, bool]:
        if isinstance(checks, Exception):
            raise checks
        return checks

    app = FastAPI()
    app.include_router(health_router("hub-2", ready))
    return TestClient(app)


def test_healthz_answers_with_the_node_name() -> None:
    response = _client({"store": False}).get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "node": "hub-2"})


def test_readyz_is_200_when_every_check_passes() -> None:
    response = _client({"listener": True, "store": True, "cluster": True}).get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


@pytest.mark.parametrize(
    ("checks", "body"),
    [
        pytest.param(
            {"listener": True, "store": False, "cluster": True},
            {"listener": True, "store": False, "cluster": True},
            id="reject/store-down",
        ),
        pytest.param(
            {"listener": True, "store": True, "cluster": False},
            {"listener": True, "store": True, "cluster": False},
            id="reject/heartbeat-failing",
        ),
        pytest.param(RuntimeError("boom"), {"error": False}, id="reject/check-raised"),
    ],
)
def test_readyz_is_503_naming_the_failed_check(
    checks: Mapping[str, bool] | Exception, body: Mapping[str, bool]
) -> None:
    response = _client(checks).get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unready"
    assert response.json()["checks"] == body
    assert response.json()["node"] == "hub-2"
