"""Test helpers for code that uses braze_cohorts: a local emulator of Braze's partner cohort API.

:class:`BrazeEmulator` is a real HTTP/1.1 server on loopback that behaves like Braze's partner
cohort endpoints (credentials, validation, matching, rate limit) and injects faults on demand.
The pytest plugin in this package (registered automatically) provides the ``braze_emulator`` and
``braze_client`` fixtures. See ``docs/testing.md``.
"""

from __future__ import annotations

from braze_cohorts.testing._emulator import (
    MAX_IDS_PER_REQUEST,
    BrazeEmulator,
    Identifier,
    RequestRecord,
    Workspace,
)

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "BrazeEmulator",
    "Identifier",
    "RequestRecord",
    "Workspace",
]
