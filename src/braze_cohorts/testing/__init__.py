"""Test helpers for code that uses braze_cohorts: a Braze emulator and in-memory doubles.

:class:`BrazeEmulator` is a real HTTP/1.1 server on loopback that behaves like Braze's partner
cohort endpoints (credentials, validation, matching, rate limit) and injects faults on demand,
from Python or through its admin HTTP API under ``/_emulator/``. The pytest plugin in this
package (registered automatically) provides the ``braze_emulator`` and ``braze_client``
fixtures. :class:`FakeClient`, :class:`MemoryStore` and :class:`SettableClock` are in-memory
doubles of the client, the store and the clock. See ``docs/testing.md``.
"""

from __future__ import annotations

from braze_cohorts.testing._doubles import FakeCall, FakeClient, MemoryStore, SettableClock
from braze_cohorts.testing._emulator import BrazeEmulator
from braze_cohorts.testing._faults import Fault, FaultKind
from braze_cohorts.testing._partner import MAX_IDS_PER_REQUEST
from braze_cohorts.testing._records import RequestRecord
from braze_cohorts.testing._world import Identifier, Workspace

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "BrazeEmulator",
    "FakeCall",
    "FakeClient",
    "Fault",
    "FaultKind",
    "Identifier",
    "MemoryStore",
    "RequestRecord",
    "SettableClock",
    "Workspace",
]
