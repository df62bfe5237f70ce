"""Settings for the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from braze_cohorts.testing import BrazeEmulator
from helpers import braze_environ
from postgres_server import postgres_server

# In CI the property tests draw the same examples every run, so a submission's result does not
# depend on luck; on a developer's machine they keep exploring new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def braze_env(
    braze_emulator: BrazeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> BrazeEmulator:
    """The emulator, with the CLI's Braze settings and ``tmp_path/state.db`` in the environment."""
    for name, value in braze_environ(braze_emulator).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BRAZE_COHORTS_STATE", str(tmp_path / "state.db"))
    return braze_emulator


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (tests/postgres_server.py)."""
    with postgres_server() as url:
        yield url
