"""Protocols for the pluggable parts of braze_cohorts.

This module is a leaf: at run time it imports only the standard library, and every other part
of the package depends on it, never the other way round. A plain class (or, where a Protocol has
a single ``__call__``, a plain function) that has the right methods satisfies a Protocol;
nothing needs to inherit from these classes. :mod:`braze_cohorts.testing` ships small in-memory
doubles for each of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # type-only imports: this module imports nothing of the package at run time
    from braze_cohorts._delta import Delta
    from braze_cohorts._identifiers import UserRef
    from braze_cohorts._models import CohortResponse, ImportRun, RateLimitInfo, Trigger
    from braze_cohorts._profiles import ConnectionProfile
    from braze_cohorts._schedule import ScheduledImport, ScheduleState

__all__ = [
    "BudgetStore",
    "Clock",
    "Importer",
    "MemberSource",
    "MembersClient",
    "Notifier",
    "ProfileStore",
    "RecipientNotifier",
    "RequestLimiter",
    "ScheduleStore",
    "StateStore",
    "SyncClient",
]

#: Returns the current time as a timezone-aware datetime (``datetime.now(timezone.utc)``).
Clock = Callable[[], dt.datetime]

#: A function of no arguments that returns a cohort's members (records, identifiers or plain
#: external-id strings), read afresh at each scheduled run.
MemberSource = Callable[[], Iterable[object]]


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


class RequestLimiter(Protocol):
    """Paces request starts for :class:`~braze_cohorts.BatchUploader` (its ``limiter=``).

    The default is the in-process :class:`~braze_cohorts.RateLimiter`; an implementation backed
    by a shared store can give several processes one budget (see ``docs/uploader.md``). Worker
    threads call it concurrently, so it must be thread-safe. Every request is bracketed:
    ``acquire`` before it starts, ``finish`` once it has an answer or an error.
    """

    def acquire(self, sleep: Callable[[float], object]) -> None:
        """Return when a request may start, waiting with ``sleep`` only (never ``time.sleep``).

        ``sleep`` may raise to abandon the wait (the uploader's deadline passed, or it
        stopped); the caller then sends nothing and does not call :meth:`finish`, so an
        implementation must not count the request as started until it returns.
        """
        ...

    def finish(self, rate_limit: RateLimitInfo | None = None) -> None:
        """Note that a started request ended; ``rate_limit`` is what its answer's headers said."""
        ...

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` from now (Braze answered 429 ``Retry-After``)."""
        ...


@runtime_checkable
class BudgetStore(Protocol):
    """A store that keeps request budgets shared by every job using it, one per workspace.

    :class:`~braze_cohorts.SQLiteStore` implements it; :class:`~braze_cohorts.SharedRateLimiter`
    paces request starts with it, and :class:`~braze_cohorts.CohortSync` uses one by default
    when its store is a ``BudgetStore``. Times are UTC epoch seconds (``time.time()``): they are
    compared between processes. Each method is one short transaction, safe across threads and
    processes.
    """

    def reserve_start(self, workspace: str, interval: float, now: float) -> float:
        """Reserve the next request start of ``workspace``'s budget and return its time.

        The start is the latest of the budget's next free start, ``now`` and its hold; the
        next free start becomes that start plus ``interval``.
        """
        ...

    def hold_budget(self, workspace: str, until: float) -> None:
        """Let no request of ``workspace`` start before ``until`` (a later hold stays)."""
        ...

    def claim_start(self, workspace: str, now: float, window: float, limit: int) -> float:
        """Start a request of ``workspace`` at ``now`` if the budget allows it.

        Returns ``0.0`` if granted (and counted), else the seconds to wait: the budget is
        held, or ``limit`` requests of it started within the last ``window`` seconds.
        """
        ...


class SyncClient(MembersClient, Protocol):
    """What :class:`~braze_cohorts.CohortSync` needs from a client: naming and membership updates.

    :class:`~braze_cohorts.CohortClient` satisfies it. A client may also have a ``workspace``
    attribute (a string that identifies the Braze workspace it sends to, from which no key can
    be recovered); :class:`~braze_cohorts.CohortSync` then binds each cohort's state to it.
    """

    def name_cohort(
        self, cohort_id: str, name: str, created_at: dt.datetime | None = None
    ) -> CohortResponse:
        """Create or rename a cohort; raise the library's errors when Braze refuses."""
        ...


class Notifier(Protocol):
    """Who is told after an import that was not a dry run.

    :class:`~braze_cohorts.SmtpNotifier` satisfies it. An exception it raises never fails the
    import: it is recorded as the run's ``notification_error``.
    """

    def notify(self, run: ImportRun) -> None:
        """Tell whoever needs to know that ``run`` finished."""
        ...


@runtime_checkable
class RecipientNotifier(Protocol):
    """A notifier that can mail a schedule's own recipients (:class:`~braze_cohorts.SmtpNotifier`).

    The scheduler uses this method when the notifier has it, else the plain
    :meth:`Notifier.notify` (which then picks its own recipients).
    """

    def notify_recipients(
        self,
        run: ImportRun,
        recipients: Sequence[str],
        *,
        paused_reason: str | None = None,
    ) -> None:
        """Tell ``recipients`` about ``run``; ``paused_reason`` says the run paused the schedule."""
        ...


class Importer(Protocol):
    """What :class:`~braze_cohorts.Scheduler` runs: the contract of ``CohortSync.sync``.

    ``sync`` records every import it starts and returns the recorded run, failed or not; it
    raises only before a run is recorded (for example
    :class:`~braze_cohorts.ImportInProgressError`). For a schedule that sets its own
    full-resync period, the scheduler also passes ``resync_every=`` (a ``timedelta``, or
    ``None`` for off), as :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>` takes it.
    """

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        trigger: Trigger = ...,
        notify: bool = ...,
    ) -> ImportRun:
        """Import ``members`` into the cohort and return the recorded run."""
        ...


class StateStore(Protocol):
    """What :class:`~braze_cohorts.CohortSync` remembers between imports.

    :class:`~braze_cohorts.SQLiteStore` implements it, and so does
    :class:`braze_cohorts.testing.MemoryStore`; see ``docs/store.md`` for the contract in full.
    Keys are canonical identifier keys (:attr:`ExternalId.key <braze_cohorts.ExternalId.key>`
    ...). Every method may raise :class:`~braze_cohorts.StoreError`; a store may be called from
    several threads.
    """

    def start_run(self, run: ImportRun) -> ImportRun:
        """Take the cohort's import lock and record ``run`` as running; return it with its id.

        Raises ImportInProgressError when another live import of the cohort holds the lock.
        """
        ...

    def update_run(self, run: ImportRun) -> None:
        """Record a running run's counts so far (the lock stays held)."""
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

    def created_at(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort was first named in its workspace, or ``None``."""
        ...

    def record_name(
        self,
        cohort_id: str,
        name: str,
        *,
        named_at: dt.datetime,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Remember that Braze acknowledged ``name`` (sent with ``created_at``) for the cohort."""
        ...

    def workspace(self, cohort_id: str) -> str | None:
        """The workspace fingerprint the cohort's snapshot describes, or ``None``."""
        ...

    def bind_workspace(self, cohort_id: str, workspace: str | None) -> None:
        """Say that the snapshot now describes ``workspace`` (a fingerprint; never a key)."""
        ...

    def last_full_resync(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort's last full resync succeeded, or ``None``."""
        ...

    def record_full_resync(self, cohort_id: str, *, at: dt.datetime) -> None:
        """Remember that a full resync of the cohort succeeded at ``at``."""
        ...

    def member_count(self, cohort_id: str) -> int:
        """How many members Braze acknowledged and still holds, as far as anyone can know."""
        ...

    def diff(
        self,
        cohort_id: str,
        desired: Iterable[str],
        *,
        full: bool = False,
        resend_since: dt.datetime | None = None,
    ) -> Delta:
        """What to send so that Braze holds exactly ``desired`` (uncertain ids included).

        ``full`` re-sends every desired key as an add; ``resend_since`` re-sends desired keys
        that entered at or after that time.
        """
        ...

    def diff_changes(self, cohort_id: str, entered: Iterable[str], left: Iterable[str]) -> Delta:
        """What to send for a caller's delta (uncertain ids re-sent as last sent)."""
        ...

    def mark_pending(self, cohort_id: str, delta: Delta) -> None:
        """Record every key of ``delta`` as uncertain before any of it is sent."""
        ...

    def apply_batch(
        self,
        cohort_id: str,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        *,
        entered_at: dt.datetime | None = None,
    ) -> None:
        """Apply acknowledged changes to the snapshot and clear them from pending, atomically.

        ``entered_at`` stamps keys that were not held yet as recent entrants (``None``: not
        recent, as after a first import or a full resync).
        """
        ...


class ScheduleStore(Protocol):
    """Where schedules live. :class:`~braze_cohorts.SQLiteStore` and SQLStore implement it.

    ``claim_schedule`` must be atomic across processes: it is how two schedulers agree on who
    runs.
    """

    def put_schedule(self, entry: ScheduledImport, *, replace: bool = False) -> None:
        """Store ``entry``; raise ScheduleConflictError if one exists and not ``replace``."""
        ...

    def get_schedule(self, cohort_id: str) -> ScheduledImport | None:
        """The cohort's schedule, or ``None``."""
        ...

    def list_schedules(self) -> list[ScheduledImport]:
        """Every stored schedule, by cohort id."""
        ...

    def delete_schedule(self, cohort_id: str) -> bool:
        """Remove the cohort's schedule; ``False`` if it had none."""
        ...

    def due_schedules(self, now: dt.datetime) -> list[ScheduledImport]:
        """Active schedules whose ``next_due`` is at or before ``now``, earliest first."""
        ...

    def next_due(self) -> dt.datetime | None:
        """The earliest ``next_due`` of the active schedules (UTC), or ``None`` if none is active.

        A long-running scheduler sleeps until then (see :meth:`Scheduler.run_forever
        <braze_cohorts.Scheduler.run_forever>`).
        """
        ...

    def claim_schedule(
        self,
        cohort_id: str,
        *,
        expected_due: dt.datetime,
        next_due: dt.datetime | None,
    ) -> bool:
        """Atomically move an active schedule's due time from ``expected_due`` to ``next_due``.

        ``next_due=None`` marks it done. Returns ``False`` (changing nothing) when the stored
        due time is no longer ``expected_due`` or the schedule is no longer active: another
        scheduler claimed it, or it was paused, replaced or cleared meanwhile.
        """
        ...

    def update_schedule(
        self,
        cohort_id: str,
        *,
        state: ScheduleState,
        paused_reason: str | None,
        next_due: dt.datetime | None,
    ) -> None:
        """Set the state, reason and due time of the cohort's schedule."""
        ...

    def set_schedule_last_run(self, cohort_id: str, run_id: int | None) -> None:
        """Remember the id of the schedule's latest import."""
        ...

    def record_notification_error(self, run_id: int, error: str) -> None:
        """Record on a run in the history that its notification failed."""
        ...


class ProfileStore(Protocol):
    """Where named connection profiles live. SQLiteStore and SQLStore implement it.

    A profile holds names and paths only (where the keys are found), never a key.
    """

    def put_profile(self, profile: ConnectionProfile, *, replace: bool = False) -> None:
        """Store ``profile``; ConfigurationError if its name is taken and not ``replace``."""
        ...

    def get_profile(self, name: str) -> ConnectionProfile | None:
        """The profile called ``name``, or ``None``."""
        ...

    def list_profiles(self) -> list[ConnectionProfile]:
        """Every stored profile, by name."""
        ...

    def delete_profile(self, name: str) -> bool:
        """Remove the profile called ``name``; ``False`` if there is none."""
        ...
