"""Copied by .ci/run into a fresh venv holding only the built wheel, and run there (pytest never
collects it from tests/: its name does not start with test_).

It checks that the installed package, not the checkout, is what runs; that its version is the one
source's; that the type marker ships; and that the pytest plugin's fixtures work from the wheel.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import braze_cohorts as bc
from braze_cohorts.testing import BrazeEmulator


def test_the_wheel_is_what_runs() -> None:
    """braze_cohorts comes from this venv's site-packages, with its version and py.typed."""
    package = Path(bc.__file__).resolve().parent
    assert Path(sys.prefix).resolve() in package.parents, package
    assert "site-packages" in package.parts
    assert importlib.metadata.version("braze-cohorts") == bc.__version__
    assert (package / "py.typed").is_file()


def test_plugin_fixtures_import_a_cohort(
    braze_emulator: BrazeEmulator, braze_client: bc.CohortClient, tmp_path: Path
) -> None:
    """The braze_emulator and braze_client fixtures come from the installed plugin and work."""
    ids = braze_emulator.add_users(50, prefix="w")
    with bc.SQLiteStore(tmp_path / "state.db") as store:
        run = bc.CohortSync(braze_client, store).sync("wheel", "Wheel", ids)
    assert (run.result, run.added) == ("succeeded", 50)
    assert {ident[1] for ident in braze_emulator.members("wheel")} == set(ids)
