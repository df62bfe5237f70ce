"""Shared helpers for the end-to-end tests against the Braze emulator."""

from __future__ import annotations

import threading

import pytest

from braze_cohorts import CohortClient
from braze_cohorts.testing import BrazeEmulator


class FakeTime:
    """A clock and a sleep that advance together, so waits cost no real time.

    ``sleep(d)`` moves the time to ``d`` seconds after what the sleeping thread last read (or
    leaves it if another thread already moved it further), which is how real time behaves for a
    thread that reads the clock and then sleeps. Every requested wait is recorded.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._local.last = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            base = getattr(self._local, "last", self.now)
            self.now = max(self.now, base + max(seconds, 0.0))


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    """The pytest plugin's emulator, under a shorter name."""
    return braze_emulator


@pytest.fixture
def client(braze_client: CohortClient) -> CohortClient:
    """The pytest plugin's client of that emulator, under a shorter name."""
    return braze_client
