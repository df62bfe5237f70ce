"""pytest plugin (registered through the ``pytest11`` entry point): Braze emulator fixtures.

Fixtures:

* ``braze_emulator`` — a fresh, running :class:`~braze_cohorts.testing.BrazeEmulator` per test,
  stopped afterwards. Options go through the ``braze_emulator`` marker, e.g.
  ``@pytest.mark.braze_emulator(requests_per_hour=100, latency=0.01)``.
* ``braze_client`` — a :class:`~braze_cohorts.CohortClient` bound to that emulator with its
  default partner, partner API key and data import key; closed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from braze_cohorts.testing._emulator import BrazeEmulator

if TYPE_CHECKING:
    from braze_cohorts import CohortClient

__all__ = ["braze_client", "braze_emulator"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``braze_emulator`` marker."""
    config.addinivalue_line(
        "markers",
        "braze_emulator(**options): keyword arguments for the braze_emulator fixture's "
        "BrazeEmulator (partner, region, latency, requests_per_hour, ...)",
    )


@pytest.fixture
def braze_emulator(request: pytest.FixtureRequest) -> Iterator[BrazeEmulator]:
    """A running Braze emulator on loopback, fresh for each test and stopped after it."""
    marker = request.node.get_closest_marker("braze_emulator")
    options = dict(marker.kwargs) if marker is not None else {}
    with BrazeEmulator(**options) as emulator:
        yield emulator


@pytest.fixture
def braze_client(braze_emulator: BrazeEmulator) -> Iterator[CohortClient]:
    """A ``CohortClient`` talking to ``braze_emulator`` with its default keys."""
    from braze_cohorts import CohortClient

    with CohortClient(
        braze_emulator.url,
        partner=braze_emulator.partner,
        partner_api_key=braze_emulator.partner_api_key,
        data_import_key=braze_emulator.data_import_key,
    ) as client:
        yield client
