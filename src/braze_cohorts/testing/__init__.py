"""Test helpers for code that uses braze_cohorts: a local emulator of Braze's partner cohort API."""

from __future__ import annotations

__all__: list[str] = []
