"""Protocols for the pluggable parts of braze_cohorts.

A plain class (or, where a Protocol has a single ``__call__``, a plain function) that has the
right methods satisfies a Protocol; nothing needs to inherit from these classes. Tests use them
to swap in fakes, and applications use them to wrap or replace a part.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from braze_cohorts._identifiers import UserRef
from braze_cohorts._models import CohortResponse, ImportRun
from braze_cohorts._runner import MemberSource, RecipientNotifier, ScheduleStore
from braze_cohorts._store import Delta

__all__ = [
    "MemberSource",
    "MembersClient",
    "Notifier",
    "RecipientNotifier",
    "ScheduleStore",
    "StateStore",
    "SyncClient",
]


class MembersClient(Protocol):
    """What :class:`~braze_cohorts.BatchUploader` needs from a client: one membership update.

    :class:`~braze_cohorts.CohortClient` satisfies it. An implementation sends exactly one
    request per call, raises the errors of :mod:`braze_cohorts.exceptions` (with ``retryable``
    set truthfully), and may refuse more than 1,000 ids with a ``ValueError``. It is called
    from several threads at once, so it must be thread-safe.
    """

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        """Add and remove users in one request.

        Args:
            cohort_id: The partner's cohort id.
            add: Users to add.
            remove: Users to remove.

        Returns:
            Braze's answer, or ``None`` when there was nothing to send.
        """
        ...


class SyncClient(MembersClient, Protocol):
    """What :class:`~braze_cohorts.CohortSync` needs from a client: naming and membership updates.

    :class:`~braze_cohorts.CohortClient` satisfies it.
    """

    def name_cohort(
        self, cohort_id: str, name: str, created_at: dt.datetime | None = None
    ) -> CohortResponse:
        """Create or rename a cohort; raise the library's errors when Braze refuses."""
        ...


class Notifier(Protocol):
    """Who is told after an import: :class:`~braze_cohorts.CohortSync` calls it after each run.

    :class:`~braze_cohorts.SmtpNotifier` satisfies it. An exception it raises never fails the
    import: the sync engine records it as the run's ``notification_error``.
    """

    def notify(self, run: ImportRun) -> None:
        """Tell whoever needs to know that ``run`` finished."""
        ...


class StateStore(Protocol):
    """What :class:`~braze_cohorts.CohortSync` remembers between imports.

    :class:`~braze_cohorts.SQLiteStore` implements it; see ``docs/store.md`` for the contract
    in full. Keys are canonical identifier keys (:attr:`ExternalId.key
    <braze_cohorts.ExternalId.key>` ...). Every method may raise
    :class:`~braze_cohorts.StoreError`; a store may be called from several threads.
    """

    def start_run(self, run: ImportRun) -> ImportRun:
        """Take the cohort's import lock and record ``run`` as running; return it with its id.

        Raises ImportInProgressError when another live import of the cohort holds the lock.
        """
        ...

    def finish_run(self, run: ImportRun) -> ImportRun:
        """Record the run's final state and release its lock."""
        ...

    def record_notification_error(self, run_id: int, error: str) -> None:
        """Note on a finished run why its notification failed."""
        ...

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's runs, newest first."""
        ...

    def known_name(self, cohort_id: str) -> str | None:
        """The name Braze acknowledged for the cohort, or ``None``."""
        ...

    def record_name(self, cohort_id: str, name: str, *, named_at: dt.datetime) -> None:
        """Remember that Braze acknowledged ``name`` for the cohort."""
        ...

    def member_count(self, cohort_id: str) -> int:
        """How many members Braze is known to hold."""
        ...

    def diff(self, cohort_id: str, desired: Iterable[str]) -> Delta:
        """What to send so that Braze holds exactly ``desired`` (uncertain ids included)."""
        ...

    def diff_changes(self, cohort_id: str, entered: Iterable[str], left: Iterable[str]) -> Delta:
        """What to send for a caller's delta (uncertain ids re-sent as last sent)."""
        ...

    def mark_pending(self, cohort_id: str, delta: Delta) -> None:
        """Record every key of ``delta`` as uncertain before any of it is sent."""
        ...

    def apply_batch(
        self, cohort_id: str, added: Iterable[str] = (), removed: Iterable[str] = ()
    ) -> None:
        """Apply acknowledged changes to the snapshot and clear them from pending, atomically."""
        ...
