"""The scheduler: one live schedule per cohort, due runs, manual triggers, pausing, email.

The scheduler sits **above** the import flow, never inside it: it keeps
:class:`~braze_cohorts.ScheduledImport` records in a
:class:`~braze_cohorts.typing.ScheduleStore` (the SQLite store by default), asks each record's
:class:`~braze_cohorts.Schedule` when it is due, and runs the same import anyone could run by
hand through :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>`, with trigger
``"scheduled"`` (or ``"manual"`` for :meth:`Scheduler.trigger`). The sync engine knows nothing
of schedules.

Guarantees:

* **At most once per due time.** A due schedule is *claimed* by an atomic compare-and-set on its
  ``next_due`` before it runs, so two schedulers (threads or processes, e.g. two overlapping
  cron jobs) never both run it; the per-cohort import lock is a second guard.
* **A missed run happens once.** After downtime, a schedule whose ``next_due`` is long past runs
  once, and its next due time is computed from *now*, not from the missed slot.
* **Refused credentials pause.** An import whose run failed with ``error_kind``
  ``"AuthenticationError"`` pauses its schedule with the reason; the recipients are told in the
  same email; :meth:`Scheduler.resume` re-activates it.
* **Mail never fails an import.** A notifier error is recorded on the run
  (``notification_error``) and logged, never raised.
* **Each schedule says when it is announced** (:class:`~braze_cohorts.NotifyRule`: always, on
  failure, past a rejection threshold) and may name a webhook (the *name* of the environment
  variable holding its URL) told beside the email.
* **One log line per run**, carrying ``cohort_id`` and ``run_id`` as ``extra`` fields.
* **A long-running loop** (:meth:`Scheduler.run_forever`) sleeps until the next due time (or
  ``recheck`` seconds, whichever is sooner), never busy-polls, and stops between imports when
  asked.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import attrs

from braze_cohorts._client import CohortClient
from braze_cohorts._files import FileSource
from braze_cohorts._models import ImportRun, Trigger
from braze_cohorts._notify import WebhookFormat, WebhookNotifier, combine, deliver
from braze_cohorts._profiles import ConnectionProfile
from braze_cohorts._query import QuerySource
from braze_cohorts._schedule import (
    NOTIFY_ALWAYS,
    PAUSED_BY_USER,
    RESYNC_OFF,
    NotifyRule,
    Schedule,
    ScheduledImport,
    _aware,
    _check_id,
)
from braze_cohorts._sync import CohortSync
from braze_cohorts._uploader import BatchUploader, RateLimiter
from braze_cohorts.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ImportInProgressError,
    ScheduleError,
    ScheduleNotFoundError,
    StoreError,
    _describe_error,
)
from braze_cohorts.typing import (
    Importer,
    MemberSource,
    Notifier,
    RecipientNotifier,
    RequestLimiter,
    ScheduleStore,
    StateStore,
)

__all__ = [
    "DEFAULT_RECHECK",
    "MAX_STORE_FAILURES",
    "ProfileSyncs",
    "Scheduler",
    "SyncForProfile",
    "WebhookFactory",
]

log = logging.getLogger(__name__)

_UTC = dt.timezone.utc

#: How often :meth:`Scheduler.run_forever` looks at the store at least, in seconds.
DEFAULT_RECHECK = 60.0
#: The store failures in a row after which :meth:`Scheduler.run_forever` gives up.
MAX_STORE_FAILURES = 5
#: The shortest wait when something is due but could not be run (never a busy loop).
_MIN_WAIT = 1.0

#: Builds the webhook notifier a schedule names: ``(variable name, format) -> notifier``.
WebhookFactory = Callable[[str, WebhookFormat], "Notifier | RecipientNotifier"]

#: Makes the sync engine of a connection profile (:class:`ProfileSyncs` is one).
SyncForProfile = Callable[[ConnectionProfile], Importer]

#: Braze's documented limit: requests an hour to the cohort endpoints, per workspace.
_BRAZE_REQUESTS_PER_HOUR = 250_000


def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


def _webhook(url_env: str, format: WebhookFormat) -> WebhookNotifier:
    return WebhookNotifier(url_env, format=format)


class Scheduler:
    """Keeps one live schedule per cohort and runs the due imports through a sync engine.

    Composed **over** a :class:`~braze_cohorts.CohortSync` (or anything with its ``sync``
    method, :class:`~braze_cohorts.typing.Importer`), a store and a notifier.

    Args:
        store: Where schedules live (:class:`~braze_cohorts.SQLiteStore`: usually the sync's own
            store).
        sync: Runs the imports. Without it the scheduler manages schedules (set, list, pause,
            resume, clear need no Braze credentials) and :meth:`run_due` / :meth:`trigger`
            raise :class:`~braze_cohorts.ConfigurationError`.
        notifier: Who is told after each scheduled or triggered import (``None``: nobody), or a
            list of them (each is told; one failing does not stop the others). A notifier with
            ``notify_recipients`` (:class:`~braze_cohorts.SmtpNotifier`) mails the schedule's
            own recipients. A schedule's own webhook is told beside them.
        clock: Returns the current time (aware); injected by tests.
        read_file: Turns a file source into records (default: ``braze_cohorts.read_records``).
        webhook: Builds the notifier for a schedule's webhook from the variable's name and the
            format (default: :class:`~braze_cohorts.WebhookNotifier` with its defaults).
        sync_for_profile: Makes the sync engine of a schedule that names a
            :class:`~braze_cohorts.ConnectionProfile` (:class:`ProfileSyncs`, or any function
            of the profile). The profile is read from the store (a
            :class:`~braze_cohorts.typing.ProfileStore`) at each run. A profile that is
            missing, or whose keys cannot be read, fails that schedule's run only (recorded,
            with the error); the others still run. Without it, such schedules fail the same way.

    Example:
        >>> import braze_cohorts as bc
        >>> sync = bc.CohortSync(client, store)  # doctest: +SKIP
        >>> scheduler = bc.Scheduler(store, sync, notifier=bc.SmtpNotifier(...))  # doctest: +SKIP
        >>> scheduler.set_schedule("power-users", "Power users", "daily 09:00 UTC",
        ...                        source="members.csv")  # doctest: +SKIP
        >>> scheduler.run_due()  # from cron, every minute  # doctest: +SKIP
    """

    def __init__(
        self,
        store: ScheduleStore,
        sync: Importer | None = None,
        *,
        notifier: Notifier
        | RecipientNotifier
        | Sequence[Notifier | RecipientNotifier]
        | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        read_file: Callable[[str], Iterable[object]] | None = None,
        webhook: WebhookFactory = _webhook,
        sync_for_profile: SyncForProfile | None = None,
    ) -> None:
        if sync is not None and not callable(getattr(sync, "sync", None)):
            raise ConfigurationError("sync must be a CohortSync (or have its sync method)")
        if sync_for_profile is not None and not callable(sync_for_profile):
            raise ConfigurationError("sync_for_profile must be callable (e.g. ProfileSyncs)")
        self._sync_for_profile = sync_for_profile
        self._store = store
        self._sync = sync
        self._notifier: Notifier | RecipientNotifier | None = (
            combine(*notifier)
            if isinstance(notifier, (list, tuple))
            else cast("Notifier | RecipientNotifier | None", notifier)
        )
        self._clock = clock
        self._read_file = read_file
        self._webhook = webhook
        self._sources: dict[str, MemberSource] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Scheduler(store={self._store!r}, sync={self._sync!r})"

    @property
    def store(self) -> ScheduleStore:
        """Where the schedules live."""
        return self._store

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
        source: str | os.PathLike[str] | FileSource | QuerySource | MemberSource | None = None,
        recipients: Iterable[str] | str = (),
        replace: bool = False,
        now: dt.datetime | None = None,
        notify_when: NotifyRule | str = NOTIFY_ALWAYS,
        webhook_env: str | None = None,
        webhook_format: WebhookFormat = "json",
        profile: str | None = None,
        resync_every: dt.timedelta | str | None = None,
    ) -> ScheduledImport:
        """Give a cohort its one live schedule.

        Args:
            cohort_id: The cohort.
            name: Its name in Braze.
            schedule: A :class:`~braze_cohorts.Schedule` or its text form (``"daily 09:00 UTC"``).
            source: A member file path; a :class:`~braze_cohorts.FileSource` (a file with
                read options); a :class:`~braze_cohorts.QuerySource` (the query is re-run at
                each due time); a function returning the members (registered for the cohort,
                as with :meth:`register_source`); or ``None`` to use the function registered
                for the cohort. A ``FileSource`` or ``QuerySource`` is checked now
                (``check()``: the file is readable / the URL's variable is set and SQLAlchemy
                installed).
            recipients: Who gets the email after each import.
            replace: Replace an existing schedule instead of failing.
            now: The time the first run is counted from (default: the clock). Aware.
            notify_when: When its imports are announced, by email and webhook alike: a
                :class:`~braze_cohorts.NotifyRule` or its text (``"always"``,
                ``"on_failure"``, ``"on_failure,rejected>5%"``, ``"rejected>1000"``). An
                import that pauses the schedule is always announced.
            webhook_env: The *name* of the environment variable that holds the URL of a
                webhook to tell (the URL itself is refused: it is a secret). The variable is
                read in the scheduler's process at each announcement.
            webhook_format: ``"json"`` (the run's fields) or ``"slack"`` (``{"text": ...}``).
            profile: The name of the :class:`~braze_cohorts.ConnectionProfile` whose workspace
                the imports go to (it must be in the store), or ``None`` for this scheduler's
                own sync engine.
            resync_every: The cohort's full-resync period: a ``timedelta``, its text
                (``"12h"``, ``"7d"``), ``"off"``, or ``None`` for the sync engine's setting.

        Returns:
            The stored schedule.

        Raises:
            ScheduleConflictError: If the cohort already has a schedule and ``replace`` is false.
            ScheduleError: If the schedule text is invalid, or a one-time schedule is past.
            ConfigurationError: If an address, the id, the name, the rule, the webhook
                variable's name or the period is invalid, the profile is not in the store, or
                a query source's variable is not set.
            InputError: If a ``FileSource`` cannot be read.
        """
        if isinstance(source, (FileSource, QuerySource)):
            source.check()
        spec = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
        if profile is not None:
            self._profile(profile)
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
            notify_when=notify_when,
            webhook_env=webhook_env,
            webhook_format=webhook_format,
            profile=profile,
            resync_every=resync_every,
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
        return self._run_due(now, None)

    def _run_due(self, now: dt.datetime, stop: threading.Event | None) -> list[ImportRun]:
        runs: list[ImportRun] = []
        for entry in self._store.due_schedules(now):
            if stop is not None and stop.is_set():
                break  # not claimed: the next scheduler to start runs it
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

    def run_forever(
        self,
        *,
        stop: threading.Event | None = None,
        recheck: float = DEFAULT_RECHECK,
        wait: Callable[[float], bool] | None = None,
    ) -> int:
        """Run due imports as their times come, until ``stop`` is set.

        Each round runs what is due (as :meth:`run_due`), then waits until the earliest due
        time of the active schedules (:meth:`ScheduleStore.next_due
        <braze_cohorts.typing.ScheduleStore.next_due>`), but never longer than ``recheck``
        seconds, so schedules added, changed or resumed by another process are seen; it never
        busy-polls. Several schedulers may share one store: each due time is claimed by one.

        Stopping: setting ``stop`` wakes the wait at once; an import that is running is not cut
        short (it finishes and is recorded and announced), and no further import starts. To
        cut a running import short, raise ``KeyboardInterrupt`` in the thread running this
        loop (what Ctrl-C does): the import stops sending, lets its in-flight requests finish,
        is recorded as ``interrupted`` (and announced, if its rule says so), and the exception
        propagates. ``braze-cohorts scheduler`` does both on SIGTERM/SIGINT.

        Args:
            stop: Set it (from another thread or a signal handler) to stop. Default: an event
                nobody sets (run until interrupted).
            recheck: The longest wait between two looks at the store, in seconds.
            wait: Waits up to ``seconds`` and returns whether ``stop`` was set meanwhile
                (default: ``stop.wait``); injected by tests with a settable clock.

        Returns:
            How many imports ran.

        Raises:
            ConfigurationError: If the scheduler has no sync engine, or ``recheck`` is not a
                positive number.
            StoreError: If the store failed :data:`MAX_STORE_FAILURES` rounds in a row (a
                single failure is logged and retried after ``recheck`` seconds).
        """
        if self._sync is None and self._sync_for_profile is None:
            raise ConfigurationError("this Scheduler was made without a sync engine to run imports")
        if (
            isinstance(recheck, bool)
            or not isinstance(recheck, (int, float))
            or not 0 < recheck < math.inf
        ):
            raise ConfigurationError(
                f"recheck must be a positive number of seconds, not {recheck!r}"
            )
        stop = threading.Event() if stop is None else stop
        wait = stop.wait if wait is None else wait
        log.info("scheduler started; looking at the store at least every %g s", recheck)
        ran = 0
        failures = 0
        while not stop.is_set():
            try:
                done = self._run_due(self.now(), stop)
                ran += len(done)
                if stop.is_set():
                    break
                delay = self._delay(recheck)
                failures = 0
            except StoreError as exc:
                failures += 1
                if failures >= MAX_STORE_FAILURES:
                    log.error("the store failed %d times in a row; stopping", failures)
                    raise
                log.error("the store failed (%s); trying again in %g s", exc, recheck)
                delay = recheck
                done = []
            if delay <= 0 and not done:
                delay = min(recheck, _MIN_WAIT)  # due but not runnable: never spin
            if delay > 0 and wait(delay):
                break
        log.info("scheduler stopped after %d import(s)", ran)
        return ran

    def _delay(self, recheck: float) -> float:
        """Seconds until the earliest due time (at most ``recheck``; 0 when already due)."""
        due = self._store.next_due()
        if due is None:
            return recheck
        return min(recheck, max((due - self.now()).total_seconds(), 0.0))

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

    def _profile(self, name: str) -> ConnectionProfile:
        """The stored profile called ``name``.

        Raises:
            ConfigurationError: If the store keeps no profiles or has none of that name.
        """
        get_profile = getattr(self._store, "get_profile", None)
        if not callable(get_profile):
            raise ConfigurationError("this store keeps no connection profiles")
        profile = get_profile(name)
        if not isinstance(profile, ConnectionProfile):
            raise ConfigurationError(
                f"no connection profile called {name!r}: add it with `braze-cohorts profile "
                "add` (or store.put_profile)"
            )
        return profile

    def _importer(self, entry: ScheduledImport) -> Importer:
        """The sync engine that runs ``entry``'s import.

        Raises:
            _UnconnectedError: If there is none (no default engine, no profile, a key unreadable).
        """
        try:
            if entry.profile is None:
                if self._sync is None:
                    raise ConfigurationError(
                        "this schedule names no connection profile and the scheduler has no "
                        "default Braze connection: give it one with `schedule set --profile`"
                    )
                return self._sync
            profile = self._profile(entry.profile)
            if self._sync_for_profile is None:
                raise ConfigurationError(
                    f"this scheduler cannot run schedules of profile {entry.profile!r}: it was "
                    "made without sync_for_profile"
                )
            return self._sync_for_profile(profile)
        except ConfigurationError as exc:
            raise _UnconnectedError(exc) from exc

    def _record_unstarted(
        self, entry: ScheduledImport, trigger: Trigger, started: dt.datetime, exc: Exception
    ) -> ImportRun:
        """Record, in the history when the store keeps one, a run that could not start."""
        run = ImportRun(
            cohort_id=entry.cohort_id,
            name=entry.name,
            trigger=trigger,
            started_at=started,
            finished_at=self.now(),
            result="failed",
            error=_describe_error(exc),
            error_kind=type(exc).__name__,
        )
        start_run = getattr(self._store, "start_run", None)
        finish_run = getattr(self._store, "finish_run", None)
        if not (callable(start_run) and callable(finish_run)):
            return run
        try:
            opened = start_run(attrs.evolve(run, result="running", finished_at=None))
            recorded = finish_run(attrs.evolve(run, id=opened.id))
        except ImportInProgressError:
            return run  # another import of the cohort is running: it holds the history
        return recorded if isinstance(recorded, ImportRun) else run

    def _members(self, entry: ScheduledImport) -> Iterator[object]:
        """The members of a run, read lazily so a failing source fails inside the import.

        A query source is re-run here, at each run: a missing variable or a failing query
        fails the run (recorded and announced), and never empties the cohort.
        """
        if isinstance(entry.source, (FileSource, QuerySource)):
            yield from entry.source.records()
            return
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
        if self._sync is None and self._sync_for_profile is None:
            raise ConfigurationError("this Scheduler was made without a sync engine to run imports")
        started = self.now()
        log.debug("%s import of cohort %s starting", trigger, entry.cohort_id)
        try:
            importer = self._importer(entry)
            options: dict[str, Any] = {}
            if entry.resync_every is not None:
                options["resync_every"] = (
                    None if entry.resync_every == RESYNC_OFF else entry.resync_every
                )
            run = importer.sync(
                entry.cohort_id,
                entry.name,
                self._members(entry),
                trigger=trigger,
                notify=False,
                **options,
            )
        except _UnconnectedError as exc:  # no engine for this schedule: nothing was sent
            log.error("%s import of cohort %s not started: %s", trigger, entry.cohort_id, exc.error)
            run = self._record_unstarted(entry, trigger, started, exc.error)
        except ImportInProgressError:
            if raise_busy:
                raise
            log.warning("cohort %s is being imported elsewhere; skipped", entry.cohort_id)
            return None
        except Exception as exc:  # nothing was recorded (the store failed, say): still report it
            log.error(
                "%s import of cohort %s raised %s", trigger, entry.cohort_id, type(exc).__name__
            )
            run = ImportRun(
                cohort_id=entry.cohort_id,
                name=entry.name,
                trigger=trigger,
                started_at=started,
                finished_at=self.now(),
                result="failed",
                error=_describe_error(exc),
                error_kind=type(exc).__name__,
                error_cause=exc.cause if isinstance(exc, AuthenticationError) else None,
            )
        except BaseException:  # KeyboardInterrupt, SystemExit: the sync engine recorded it
            self._interrupted(entry, trigger)
            raise
        paused_reason: str | None = None
        if run.error_kind == AuthenticationError.__name__ and entry.state == "active":
            paused_reason = _pause_reason(run)
            self._store.update_schedule(
                entry.cohort_id, state="paused", paused_reason=paused_reason, next_due=None
            )
            log.warning("schedule of cohort %s paused: authentication failed", entry.cohort_id)
        return self._finish(entry, trigger, run, paused_reason)

    def _finish(
        self,
        entry: ScheduledImport,
        trigger: Trigger,
        run: ImportRun,
        paused_reason: str | None,
    ) -> ImportRun:
        """Note the run on its schedule, log its one line, announce it as the rule says."""
        if run.id is not None:
            self._store.set_schedule_last_run(entry.cohort_id, run.id)
        _log_run(trigger, run)
        notifier = combine(
            self._notifier,
            None
            if entry.webhook_env is None
            else self._webhook(entry.webhook_env, entry.webhook_format),
        )
        if notifier is None:
            return run
        if paused_reason is None and not entry.notify_when.wants(
            run.result, rejected=run.rejected_total, users=run.users
        ):
            log.debug(
                "run %s of cohort %s not announced (rule %s)",
                run.id,
                run.cohort_id,
                entry.notify_when,
            )
            return run
        return deliver(
            notifier,
            run,
            record_error=self._store.record_notification_error,
            recipients=entry.recipients,
            paused_reason=paused_reason,
        )

    def _interrupted(self, entry: ScheduledImport, trigger: Trigger) -> None:
        """After an import was cut short: log and announce the run the sync engine recorded.

        Best effort (the process is stopping): the run is found in the store's history when
        the store keeps one; nothing here may hide the interruption.
        """
        history = getattr(self._store, "history", None)
        try:
            runs = history(entry.cohort_id, limit=1) if callable(history) else []
            run = runs[0] if runs else None
            if (
                isinstance(run, ImportRun)
                and run.result == "interrupted"
                and run.id is not None
                and (entry.last_run_id is None or run.id > entry.last_run_id)
            ):
                self._finish(entry, trigger, run, None)
            else:
                log.warning("%s import of cohort %s interrupted", trigger, entry.cohort_id)
        except Exception:
            log.exception("could not report the interrupted import of cohort %s", entry.cohort_id)


class _UnconnectedError(Exception):
    """A schedule's import has no sync engine (carries the ConfigurationError saying why)."""

    def __init__(self, error: ConfigurationError) -> None:
        super().__init__(str(error))
        self.error = error


def _log_run(trigger: Trigger, run: ImportRun) -> None:
    """The one line logged per run (WARNING unless it succeeded), with ids as ``extra``."""
    took = (
        ""
        if run.finished_at is None
        else f" in {max((run.finished_at - run.started_at).total_seconds(), 0.0):.1f} s"
    )
    error = f" ({run.error_kind})" if run.error_kind else ""
    log.log(
        logging.INFO if run.ok else logging.WARNING,
        "%s import of cohort %s %s%s: %d users, +%d, -%d, %d rejected, %d requests%s (run %s)",
        trigger,
        run.cohort_id,
        run.result,
        error,
        run.users,
        run.added,
        run.removed,
        run.rejected_total,
        run.requests,
        took,
        run.id,
        extra={"cohort_id": run.cohort_id, "run_id": run.id},
    )


#: What a paused schedule's email says, by :attr:`AuthenticationError.cause`.
_CAUSES = {
    "data_import_key": "the data import key was rejected (revoked or replaced?): enter the "
    "workspace's current data import key",
    "partner_api_key": "the partner API key was rejected: check the partner's API key for this "
    "cluster (US and EU clusters have different keys)",
    "partner_not_enabled": "the partner integration is not enabled for this workspace: enable it "
    "in Braze (Partner integrations > Technology partners), or check the data import key",
}


def _pause_reason(run: ImportRun) -> str:
    what = _CAUSES.get(run.error_cause or "", "Braze refused the credentials")
    return f"authentication failed: {what}"


class ProfileSyncs:
    """Makes the :class:`~braze_cohorts.CohortSync` of a profile: ``Scheduler(sync_for_profile=)``.

    Each call reads the profile's keys afresh (:meth:`ConnectionProfile.client`), so a rotated
    key or a variable set later is picked up. The sync engine is kept while the profile and its
    workspace fingerprint (:attr:`CohortClient.workspace
    <braze_cohorts.CohortClient.workspace>`) stay the same, and every workspace gets its own
    rate budget, shared by every profile that reaches it: imports of one customer never spend
    another's requests, and two profiles of one workspace never exceed Braze's limit together.
    The state binding follows the workspace too, since the sync engine binds each cohort to its
    client's fingerprint.

    Args:
        store: The state store every sync engine uses (usually the scheduler's).
        requests_per_hour: The rate budget of each workspace (default: Braze's 250,000).
        concurrency: Requests in flight at most, per import.
        limiter: Wraps each workspace's :class:`~braze_cohorts.RateLimiter` (e.g.
            :class:`~braze_cohorts.MeteredLimiter`); default: none.
        notifier: Passed to each :class:`~braze_cohorts.CohortSync`.
        client_options: Passed to :meth:`ConnectionProfile.client`.
        **sync_options: Passed to each :class:`~braze_cohorts.CohortSync` (``resync_every``,
            ``max_remove_fraction``, ``clock``, …).

    Example:
        >>> import braze_cohorts as bc
        >>> store = bc.SQLiteStore("state.db")  # doctest: +SKIP
        >>> syncs = bc.ProfileSyncs(store)  # doctest: +SKIP
        >>> scheduler = bc.Scheduler(store, sync_for_profile=syncs)  # doctest: +SKIP
    """

    def __init__(
        self,
        store: StateStore,
        *,
        requests_per_hour: float = _BRAZE_REQUESTS_PER_HOUR,
        concurrency: int = 16,
        limiter: Callable[[RequestLimiter], RequestLimiter] | None = None,
        notifier: Notifier | None = None,
        client_options: Mapping[str, Any] | None = None,
        **sync_options: Any,
    ) -> None:
        self._store = store
        self._requests_per_hour = requests_per_hour
        self._concurrency = concurrency
        self._wrap = limiter
        self._notifier = notifier
        self._client_options = dict(client_options or {})
        self._sync_options = sync_options
        self._limiters: dict[str, RequestLimiter] = {}
        self._syncs: dict[str, tuple[ConnectionProfile, str, CohortSync, CohortClient]] = {}
        self._lock = threading.Lock()
        RateLimiter(requests_per_hour)  # fail now on a bad budget, not at the first import

    def __repr__(self) -> str:
        return f"ProfileSyncs(store={self._store!r}, profiles={sorted(self._syncs)!r})"

    def __call__(self, profile: ConnectionProfile) -> CohortSync:
        """The sync engine for ``profile``, its keys read now.

        Raises:
            ConfigurationError: If a key cannot be read (see :meth:`ConnectionProfile.client`).
        """
        client = profile.client(**self._client_options)
        workspace = client.workspace
        with self._lock:
            kept = self._syncs.get(profile.name)
            if kept is not None and kept[0] == profile and kept[1] == workspace:
                client.close()
                return kept[2]
            limiter = self._limiters.get(workspace)
            if limiter is None:
                base: RequestLimiter = RateLimiter(self._requests_per_hour)
                limiter = base if self._wrap is None else self._wrap(base)
                self._limiters[workspace] = limiter
            uploader = BatchUploader(client, concurrency=self._concurrency, limiter=limiter)
            sync = CohortSync(
                client,
                self._store,
                uploader=uploader,
                notifier=self._notifier,
                **self._sync_options,
            )
            if kept is not None:
                kept[3].close()
            self._syncs[profile.name] = (profile, workspace, sync, client)
            return sync

    def close(self) -> None:
        """Close every client made so far."""
        with self._lock:
            kept = list(self._syncs.values())
            self._syncs.clear()
        for entry in kept:
            entry[3].close()

    def __enter__(self) -> ProfileSyncs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
