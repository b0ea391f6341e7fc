"""Fixtures of the app tests: one signing process for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certhub.signing import SigningProcesses


@pytest.fixture(scope="session")
def signer() -> Iterator[SigningProcesses]:
    """A started signing process (certhub.signing), shared by the tests that sign there."""
    processes = SigningProcesses(1)
    assert processes.wait_ready()
    yield processes
    processes.close()
