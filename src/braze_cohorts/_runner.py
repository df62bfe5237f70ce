"""Scheduled imports: one live schedule per cohort, the due-run loop, manual triggers, pausing.

The runner sits beside the import flow, not inside it. It keeps :class:`ScheduledImport` records
in a :class:`ScheduleStore` (the SQLite store by default), asks each record's
:class:`~braze_cohorts.Schedule` when it is due, and runs the same import anyone could run by
hand, with trigger ``"scheduled"`` (or ``"manual"`` for :meth:`ScheduleRunner.trigger`).

Guarantees:

* **At most once per due time.** A due schedule is *claimed* by an atomic compare-and-set on its
  ``next_due`` before it runs, so two runners (threads or processes, e.g. two overlapping cron
  jobs) never both run it; the per-cohort import lock is a second guard.
* **A missed run happens once.** After downtime, a schedule whose ``next_due`` is long past runs
  once, and its next due time is computed from *now*, not from the missed slot.
* **Revoked keys pause.** An import that fails with
  :class:`~braze_cohorts.AuthenticationError` pauses its schedule with the reason; the recipients
  are told in the same email; :meth:`ScheduleRunner.resume` re-activates it.
* **Mail never fails an import.** A notifier error is recorded on the run
  (``notification_error``) and logged, never raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, Protocol, Union, cast, get_args, runtime_checkable

import attrs

from braze_cohorts._models import ImportRun, Trigger
from braze_cohorts._notify import validate_recipients
from braze_cohorts._schedule import Schedule
from braze_cohorts.exceptions import (
    AuthenticationError,
    BrazeCohortsError,
    ConfigurationError,
    ImportInProgressError,
    ScheduleError,
    ScheduleNotFoundError,
    _authentication_cause,
)

__all__ = [
    "ImportFunction",
    "import_function",
    "keeps_schedules",
    "runner_for",
    "MemberSource",
    "RecipientNotifier",
    "ScheduleRunner",
    "ScheduleState",
    "ScheduleStore",
    "ScheduledImport",
]

log = logging.getLogger(__name__)

_UTC = dt.timezone.utc

#: The state of a stored schedule.
ScheduleState = Literal["active", "paused", "done"]
_STATES: tuple[str, ...] = get_args(ScheduleState)

#: What a registered member source is: a function of no arguments that returns the members
#: (records, identifiers or plain external-id strings), read afresh at each run.
MemberSource = Callable[[], Iterable[object]]

#: What the runner calls to import: ``(cohort_id, name, members, trigger) -> ImportRun``.
#: :class:`~braze_cohorts.CohortSync` provides it; it may raise the library's errors.
ImportFunction = Callable[[str, str, Iterable[object], Trigger], ImportRun]

#: Reason recorded when a person pauses a schedule without giving one.
PAUSED_BY_USER = "paused by user"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ConfigurationError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be timezone-aware (naive datetimes are refused)")
    return value.astimezone(_UTC)


def _check_text(what: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    def validator(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{what} must be a non-empty str, not {value!r}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ConfigurationError(f"{what} must not contain control characters")

    return validator


def _check_id(cohort_id: object) -> None:
    if not isinstance(cohort_id, str) or not cohort_id.strip():
        raise ConfigurationError(f"cohort_id must be a non-empty str, not {cohort_id!r}")


def _optional_utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value, "next_due")


def _source_text(value: str | os.PathLike[str] | None) -> str | None:
    if value is None:
        return None
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"a file source must be a non-empty path, not {value!r}")
    return os.path.abspath(text)


@attrs.frozen(slots=True, kw_only=True)
class ScheduledImport:
    """A cohort's live schedule as the store keeps it.

    Attributes:
        cohort_id: The cohort (one live schedule per cohort).
        name: The cohort's name, sent to Braze with each import.
        schedule: When it runs.
        source: The member file (made an absolute path; read at each run), or ``None`` for
            the function registered for the cohort with :meth:`ScheduleRunner.register_source`.
        recipients: Who gets the email after each import (validated addresses).
        state: ``"active"``, ``"paused"`` (see ``paused_reason``) or ``"done"`` (a one-time
            schedule that ran).
        paused_reason: Why it is paused (``None`` unless paused).
        next_due: When it runs next (UTC); ``None`` when paused or done.
        last_run_id: The history id of its last import, if any.

    Raises:
        ConfigurationError: If a field is invalid (empty id or name, bad address, naive time,
            paused without a reason).
    """

    cohort_id: str = attrs.field(validator=_check_text("cohort_id"))
    name: str = attrs.field(validator=_check_text("name"))
    schedule: Schedule = attrs.field(validator=attrs.validators.instance_of(Schedule))
    source: str | None = attrs.field(default=None, converter=_source_text)
    recipients: tuple[str, ...] = attrs.field(default=(), converter=validate_recipients)
    state: ScheduleState = "active"
    paused_reason: str | None = None
    next_due: dt.datetime | None = attrs.field(default=None, converter=_optional_utc)
    last_run_id: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.state not in _STATES:
            raise ConfigurationError(f"state must be one of {_STATES}, not {self.state!r}")
        if (self.state == "paused") != (self.paused_reason is not None):
            raise ConfigurationError("a paused schedule needs a reason, and only a paused one")


@runtime_checkable
class RecipientNotifier(Protocol):
    """A notifier that mails a schedule's own recipients (:class:`~braze_cohorts.SmtpNotifier`).

    The runner uses this method when the notifier has it, else the plain ``notify(run)`` of the
    :class:`~braze_cohorts.typing.Notifier` protocol (which then picks its own recipients).
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


class _PlainNotifier(Protocol):
    def notify(self, run: ImportRun) -> None: ...


_AnyNotifier = Union[RecipientNotifier, _PlainNotifier]  # noqa: UP007 - runtime alias on 3.10


class ScheduleStore(Protocol):
    """Where schedules live. :class:`~braze_cohorts.SQLiteStore` implements it.

    ``claim_schedule`` must be atomic across processes: it is how two runners agree on who runs.
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
        runner claimed it, or it was paused, replaced or cleared meanwhile.
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


class _Syncer(Protocol):
    """What :func:`import_function` needs: :class:`~braze_cohorts.CohortSync`'s two methods."""

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        trigger: Trigger = ...,
        notify: bool = ...,
    ) -> ImportRun: ...

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]: ...


def import_function(syncer: _Syncer) -> ImportFunction:
    """The runner's import function for a :class:`~braze_cohorts.CohortSync`.

    It imports with ``notify=False`` (the runner tells the schedule's own recipients). When the
    import records a failed run and then raises (the member source failed), it returns that
    recorded run instead, so the runner can report and mail it like any other failure.
    """

    def run_import(
        cohort_id: str, name: str, members: Iterable[object], trigger: Trigger
    ) -> ImportRun:
        before = syncer.history(cohort_id, limit=1)
        last_id = before[0].id if before and before[0].id is not None else 0
        try:
            return syncer.sync(cohort_id, name, members, trigger=trigger, notify=False)
        except ImportInProgressError:
            raise
        except Exception:
            after = syncer.history(cohort_id, limit=1)
            if (
                after
                and after[0].id is not None
                and after[0].id > last_id
                and after[0].trigger == trigger
                and after[0].result in ("failed", "interrupted")
            ):
                return after[0]
            raise

    return run_import


@runtime_checkable
class _ScheduleStoreCheck(Protocol):
    def claim_schedule(
        self, cohort_id: str, *, expected_due: dt.datetime, next_due: dt.datetime | None
    ) -> bool: ...

    def due_schedules(self, now: dt.datetime) -> list[ScheduledImport]: ...


def keeps_schedules(store: object) -> bool:
    """Whether ``store`` has the schedule methods (a quick check, not a full conformance test)."""
    return isinstance(store, _ScheduleStoreCheck)


def runner_for(
    syncer: _Syncer,
    store: object,
    *,
    notifier: _AnyNotifier | None,
    clock: Callable[[], dt.datetime],
) -> ScheduleRunner:
    """The runner of a :class:`~braze_cohorts.CohortSync`: imports through it, in its store.

    The store is not checked here (the sync checks :func:`keeps_schedules` before use).
    """
    return ScheduleRunner(
        cast(ScheduleStore, store), import_function(syncer), notifier=notifier, clock=clock
    )


class ScheduleRunner:
    """Keeps schedules and runs the due imports; :class:`~braze_cohorts.CohortSync` delegates here.

    Args:
        store: Where schedules live.
        run_import: Runs one import: ``(cohort_id, name, members, trigger) -> ImportRun``.
            Without it the runner manages schedules but cannot run them (the CLI's
            ``schedule`` commands need no Braze credentials).
        notifier: Who is told after each scheduled or triggered import (``None``: nobody).
        clock: Returns the current time (aware); injected by tests.
        read_file: Turns a file source into records (default: ``braze_cohorts.read_records``).
    """

    def __init__(
        self,
        store: ScheduleStore,
        run_import: ImportFunction | None = None,
        *,
        notifier: _AnyNotifier | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        read_file: Callable[[str], Iterable[object]] | None = None,
    ) -> None:
        self._store = store
        self._run_import = run_import
        self._notifier = notifier
        self._clock = clock
        self._read_file = read_file
        self._sources: dict[str, MemberSource] = {}
        self._lock = threading.Lock()

    # -- schedules ------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The injected clock's time, in UTC."""
        return _aware(self._clock(), "clock()")

    def register_source(self, cohort_id: str, source: MemberSource) -> None:
        """Register the function that returns a cohort's members for its scheduled imports.

        Registrations live in this process only: register again after a restart, before
        :meth:`run_due`.

        Raises:
            ConfigurationError: If ``source`` is not callable.
        """
        if not callable(source):
            raise ConfigurationError("a member source must be callable")
        _check_id(cohort_id)
        with self._lock:
            self._sources[cohort_id] = source

    def set_schedule(
        self,
        cohort_id: str,
        name: str,
        schedule: Schedule | str,
        *,
        source: str | os.PathLike[str] | MemberSource | None = None,
        recipients: Iterable[str] | str = (),
        replace: bool = False,
        now: dt.datetime | None = None,
    ) -> ScheduledImport:
        """Give a cohort its one live schedule.

        Args:
            cohort_id: The cohort.
            name: Its name in Braze.
            schedule: A :class:`~braze_cohorts.Schedule` or its text form (``"daily 09:00 UTC"``).
            source: A member file path, or a function returning the members (registered for the
                cohort, as with :meth:`register_source`), or ``None`` to use the function
                registered for the cohort.
            recipients: Who gets the email after each import.
            replace: Replace an existing schedule instead of failing.
            now: The time the first run is counted from (default: the clock). Aware.

        Returns:
            The stored schedule.

        Raises:
            ScheduleConflictError: If the cohort already has a schedule and ``replace`` is false.
            ScheduleError: If the schedule text is invalid, or a one-time schedule is past.
            ConfigurationError: If an address, the id or the name is invalid.
        """
        spec = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
        now = self.now() if now is None else _aware(now, "now")
        next_due = spec.next_run(now)
        if next_due is None:
            raise ScheduleError(f"the one-time schedule {spec} is not in the future")
        file_source = None if source is None or callable(source) else source
        entry = ScheduledImport(
            cohort_id=cohort_id,
            name=name,
            schedule=spec,
            source=file_source,
            recipients=recipients,
            next_due=next_due,
        )
        self._store.put_schedule(entry, replace=replace)
        if callable(source):
            self.register_source(cohort_id, source)
        log.info("schedule set for cohort %s: %s, next due %s", cohort_id, spec, next_due)
        return entry

    def get_schedule(self, cohort_id: str) -> ScheduledImport:
        """The cohort's schedule.

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
        """
        entry = self._store.get_schedule(cohort_id)
        if entry is None:
            raise ScheduleNotFoundError(f"cohort {cohort_id!r} has no schedule")
        return entry

    def schedules(self) -> list[ScheduledImport]:
        """Every schedule, by cohort id."""
        return self._store.list_schedules()

    def pause(self, cohort_id: str, reason: str = PAUSED_BY_USER) -> ScheduledImport:
        """Pause a cohort's schedule: it does not run until :meth:`resume`.

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
        """
        self.get_schedule(cohort_id)
        self._store.update_schedule(
            cohort_id, state="paused", paused_reason=reason or PAUSED_BY_USER, next_due=None
        )
        log.info("schedule of cohort %s paused", cohort_id)
        return self.get_schedule(cohort_id)

    def resume(self, cohort_id: str, *, now: dt.datetime | None = None) -> ScheduledImport:
        """Re-activate a paused (or done) schedule; its next due time is computed from now.

        A one-time schedule whose time has passed becomes due at once (it runs at the next
        :meth:`run_due`).

        Args:
            cohort_id: The cohort.
            now: The time to count from (default: the clock). Aware.

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
        """
        entry = self.get_schedule(cohort_id)
        now = self.now() if now is None else _aware(now, "now")
        next_due = entry.schedule.next_run(now) or now
        self._store.update_schedule(
            cohort_id, state="active", paused_reason=None, next_due=next_due
        )
        log.info("schedule of cohort %s resumed, next due %s", cohort_id, next_due)
        return self.get_schedule(cohort_id)

    def clear(self, cohort_id: str) -> None:
        """Delete a cohort's schedule (its history stays).

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
        """
        if not self._store.delete_schedule(cohort_id):
            raise ScheduleNotFoundError(f"cohort {cohort_id!r} has no schedule")
        with self._lock:
            self._sources.pop(cohort_id, None)
        log.info("schedule of cohort %s cleared", cohort_id)

    # -- running --------------------------------------------------------------------------

    def run_due(self, now: dt.datetime | None = None) -> list[ImportRun]:
        """Run every import whose time has come, each at most once per due time.

        Each due schedule is claimed atomically first (its next due time moves to the first run
        after ``now``; a one-time schedule becomes done), so a concurrent runner skips it. A
        failing import does not stop the others.

        Args:
            now: The time to run at (default: the clock). Aware.

        Returns:
            The imports that ran, in due order (failed ones included).
        """
        now = self.now() if now is None else _aware(now, "now")
        runs: list[ImportRun] = []
        for entry in self._store.due_schedules(now):
            assert entry.next_due is not None
            next_due = entry.schedule.next_run(now)
            if not self._store.claim_schedule(
                entry.cohort_id, expected_due=entry.next_due, next_due=next_due
            ):
                log.info("schedule of cohort %s was claimed by another runner", entry.cohort_id)
                continue
            run = self._run(entry, "scheduled")
            if run is not None:
                runs.append(run)
        return runs

    def trigger(self, cohort_id: str) -> ImportRun:
        """Run a cohort's scheduled import now, with trigger ``"manual"``.

        Its schedule is not moved; a paused or done schedule may be triggered too (and a
        manual run that fails authentication pauses an active schedule, like a scheduled one).

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
            ImportInProgressError: If an import of the cohort is already running.
        """
        entry = self.get_schedule(cohort_id)
        run = self._run(entry, "manual", raise_busy=True)
        assert run is not None
        return run

    def _members(self, entry: ScheduledImport) -> Iterator[object]:
        """The members of a run, read lazily so a failing source fails inside the import."""
        if entry.source is not None:
            reader = self._read_file
            if reader is None:
                from braze_cohorts._sources import read_records

                reader = read_records
            yield from reader(entry.source)
            return
        with self._lock:
            source = self._sources.get(entry.cohort_id)
        if source is None:
            raise ConfigurationError(
                f"no member source registered for cohort {entry.cohort_id!r}: call "
                "register_source(cohort_id, fn) or give the schedule a file source"
            )
        yield from source()

    def _run(
        self, entry: ScheduledImport, trigger: Trigger, *, raise_busy: bool = False
    ) -> ImportRun | None:
        if self._run_import is None:
            raise ConfigurationError("this ScheduleRunner was made without run_import")
        started = self.now()
        log.info("%s import of cohort %s starting", trigger, entry.cohort_id)
        paused_reason: str | None = None
        try:
            run = self._run_import(entry.cohort_id, entry.name, self._members(entry), trigger)
        except ImportInProgressError:
            if raise_busy:
                raise
            log.warning("cohort %s is being imported elsewhere; skipped", entry.cohort_id)
            return None
        except Exception as exc:  # one failing import (or member source) must not stop the rest
            # The import function records failed runs itself; if it raised instead, still
            # report what happened.
            if not isinstance(exc, BrazeCohortsError):
                log.error(
                    "%s import of cohort %s raised %s",
                    trigger,
                    entry.cohort_id,
                    type(exc).__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            run = ImportRun(
                cohort_id=entry.cohort_id,
                name=entry.name,
                trigger=trigger,
                started_at=started,
                finished_at=self.now(),
                result="failed",
                error=str(exc) if isinstance(exc, BrazeCohortsError) else _describe(exc),
            )
            if isinstance(exc, AuthenticationError):
                paused_reason = _auth_reason(exc)
        if paused_reason is None and run.result == "failed" and _looks_like_auth(run):
            paused_reason = _auth_reason(None, run.error)
        if paused_reason is not None and entry.state == "active":
            self._store.update_schedule(
                entry.cohort_id, state="paused", paused_reason=paused_reason, next_due=None
            )
            log.warning("schedule of cohort %s paused: authentication failed", entry.cohort_id)
        elif paused_reason is not None:
            paused_reason = None  # paused already, or done: nothing to pause or announce
        if run.id is not None:
            self._store.set_schedule_last_run(entry.cohort_id, run.id)
        log.info("%s import of cohort %s ended: %s", trigger, entry.cohort_id, run.result)
        return self._notify(run, entry, paused_reason)

    def _notify(
        self, run: ImportRun, entry: ScheduledImport, paused_reason: str | None
    ) -> ImportRun:
        notifier = self._notifier
        if notifier is None:
            return run
        try:
            if isinstance(notifier, RecipientNotifier):
                notifier.notify_recipients(run, entry.recipients, paused_reason=paused_reason)
            else:
                notifier.notify(run)
        except Exception as exc:  # a notifier must never fail the import
            message = str(exc) or type(exc).__name__
            log.warning(
                "notification for cohort %s failed: %s", entry.cohort_id, type(exc).__name__
            )
            if run.id is not None:
                try:
                    self._store.record_notification_error(run.id, message)
                except BrazeCohortsError:
                    log.exception("could not record the notification error of run %s", run.id)
            return attrs.evolve(run, notification_error=message)
        return run


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# How an APIError for a 401 reads (``str(AuthenticationError)``), also inside the error text of
# an upload whose requests failed ("... first error: HTTP 401 from POST ...").
_HTTP_401 = re.compile(r"\bHTTP 401\b")


def _looks_like_auth(run: ImportRun) -> bool:
    """Whether a failed run's recorded error is Braze's 401 (the import function returned it).

    ``error_kind`` says so for runs recorded by this version; the error text is the fallback
    for import functions that do not fill it in.
    """
    if run.error_kind is not None:
        return run.error_kind == AuthenticationError.__name__
    return _HTTP_401.search(run.error or "") is not None


def _auth_reason(exc: AuthenticationError | None, error: str | None = None) -> str:
    if exc is not None:
        cause, detail = exc.cause, str(exc)
    else:
        found = _HTTP_401.search(error or "")
        detail = (error or "")[found.start() :] if found else (error or "")
        cause = _authentication_cause(detail)
    what = {
        "data_import_key": "the data import key was rejected (revoked or replaced?)",
        "partner_api_key": "the partner API key was rejected",
        "partner_not_enabled": "the partner integration is not enabled for this workspace",
    }.get(cause, "Braze refused the credentials")
    return f"authentication failed: {what}" + (f" ({detail})" if detail else "")
