"""Fixtures of the fault-injection tests: the URL of the session's Prefect test server, for the killed runs.
The helpers (`kill_support`) live beside this file; test modules import them by module name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server: str) -> str:
    """The session's Prefect test server (tests/conftest.py), whose URL the killed run processes use."""
    assert prefect_server, "the test harness started no server"
    return prefect_server
