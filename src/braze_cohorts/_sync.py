"""CohortSync: one import end to end — match, diff, name, upload, commit, record, notify.

The sync engine keeps a Braze cohort exactly equal to a membership that lives elsewhere while
sending only what changed:

1. **match** the records into identifiers (bad records are counted by reason, never fatal);
2. **diff** them against what Braze is known to hold, plus every *uncertain* id, in the
   :class:`~braze_cohorts.typing.StateStore` — streamed, in bounded memory;
3. **name** the cohort if Braze has not acknowledged this name yet (before any member is sent);
4. mark the whole delta **uncertain**, then **upload** it; each acknowledged request is applied
   to the snapshot in the same transaction that clears its ids from the uncertain ones;
5. **record** the run in the history and **notify**.

An id whose request failed, or whose outcome is unknown (timeout, dropped connection, the
process killed), stays uncertain and is re-sent next time with its *then* desired state. That is
why, after any failed, partial or killed import, the next successful one leaves Braze holding
exactly the desired members.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import IO, TYPE_CHECKING, Protocol, Union, get_args

import attrs

from braze_cohorts._identifiers import (
    DeviceId,
    ExternalId,
    IdentifierMatcher,
    Rejection,
    UserAlias,
    UserRef,
    check_external_ids,
    item_from_key,
    key_of,
    ref_from_key,
)
from braze_cohorts._models import (
    Batch,
    CohortResponse,
    FailedBatch,
    ImportRun,
    RunResult,
    Trigger,
)
from braze_cohorts._runner import (
    MemberSource,
    ScheduledImport,
    ScheduleRunner,
    keeps_schedules,
    runner_for,
)
from braze_cohorts._schedule import Schedule
from braze_cohorts._store import Delta
from braze_cohorts._uploader import BatchUploader, UploadProgress
from braze_cohorts.exceptions import (
    BrazeCohortsError,
    ConfigurationError,
    InputError,
    InvalidIdentifierError,
)
from braze_cohorts.typing import Notifier, StateStore, SyncClient

if TYPE_CHECKING:
    from braze_cohorts._store import SQLiteStore

    def _sqlite_store_is_a_state_store(store: SQLiteStore) -> StateStore:
        return store


__all__ = ["PLAN_HEADER", "REJECTS_HEADER", "CohortSync"]

log = logging.getLogger(__name__)

#: Columns of a plan file: one row per id to send; ``action`` is ``add`` or ``remove``, ``kind``
#: is ``external_id``, ``alias`` or ``device_id``, and the identifier's fields follow under the
#: column names an input file uses.
PLAN_HEADER = ("action", "kind", "external_id", "alias_name", "alias_label", "device_id")

#: Columns of a rejects file: the record's position in the input, its line in the input file (if
#: it came from one), the reason code, what is wrong, and the record itself as JSON.
REJECTS_HEADER = ("index", "line", "reason", "detail", "record")

#: Where a plan or rejects file goes: a path, or a text file opened by the caller.
OutFile = Union[str, "os.PathLike[str]", IO[str]]

ProgressHook = Callable[[UploadProgress], object]
Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _SourceError(Exception):
    """Carries an exception raised by the caller's records through the store untouched."""


class _RowWriter(Protocol):
    def writerow(self, row: Iterable[object], /) -> object: ...


@contextlib.contextmanager
def _csv_out(target: OutFile | None, header: Iterable[str]) -> Iterator[_RowWriter | None]:
    if target is None:
        yield None
        return
    if isinstance(target, (str, os.PathLike)):
        try:
            f = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ConfigurationError(f"cannot write {os.fspath(target)!r}: {exc}") from exc
        with f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            yield writer
    else:
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(header)
        yield writer


def _plan_row(action: str, key: str) -> tuple[str, ...]:
    ref = ref_from_key(key)
    if isinstance(ref, ExternalId):
        return (action, "external_id", ref.value, "", "", "")
    if isinstance(ref, UserAlias):
        return (action, "alias", "", ref.alias_name, ref.alias_label, "")
    return (action, "device_id", "", "", "", ref.value)


def _keys(refs: Iterable[UserRef | str]) -> list[str]:
    return list(map(key_of, refs))


#: Records matched at a time; chunks of plain-str external ids take a bulk path.
_MATCH_CHUNK = 1024
_EXTERNAL_KEY = "e:"


class _Matching:
    """Streams records through the matcher into keys, counting and writing the rejections."""

    def __init__(self, matcher: IdentifierMatcher, rejects: _RowWriter | None) -> None:
        self.matcher = matcher
        self.rejects = rejects
        self.rejected: collections.Counter[str] = collections.Counter()
        self._offset = 0

    def keys(self, records: Iterable[object]) -> Iterator[str]:
        offset = self._offset
        source = iter(records)
        match_one = self.matcher.match_one
        index = 0
        while True:
            try:
                chunk = list(islice(source, _MATCH_CHUNK))
            except Exception as exc:
                raise _SourceError(str(exc)) from exc
            if not chunk:
                break
            try:
                # The common case, a chunk of valid plain-str external ids, is checked in bulk
                # and keyed in C; it is exactly what match_one would make of each of them.
                check_external_ids(chunk)
            except InvalidIdentifierError:
                for record in chunk:
                    item = match_one(record, index=offset + index)
                    index += 1
                    if isinstance(item, Rejection):
                        self._reject(item)
                    else:
                        yield item.key
            else:
                index += len(chunk)
                yield from map(_EXTERNAL_KEY.__add__, chunk)  # type: ignore[arg-type]
        self._offset = offset + index

    def _reject(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason.value] += 1
        if self.rejects is not None:
            data = rejection.to_dict()
            self.rejects.writerow(
                (
                    data["index"],
                    "" if data["line"] is None else data["line"],
                    data["reason"],
                    data["detail"],
                    json.dumps(data["record"], ensure_ascii=False, sort_keys=True),
                )
            )


class _Commit:
    """Upload hooks: apply each acknowledged batch to the store, keep score of the rest."""

    def __init__(self, store: StateStore, cohort_id: str, progress: ProgressHook | None) -> None:
        self.store = store
        self.cohort_id = cohort_id
        self.user_progress = progress
        self.last = UploadProgress()
        self.failed: list[FailedBatch] = []
        #: Requests spent naming the cohort (retries included), counted with the upload's.
        self.naming_requests = 0

    def done(self, batch: Batch, _response: CohortResponse | None) -> None:
        self.store.apply_batch(self.cohort_id, _keys(batch.add), _keys(batch.remove))

    def failed_batch(self, failed: FailedBatch) -> None:
        # Its ids stay uncertain in the store: the next import re-sends them.
        self.failed.append(failed)

    def progress(self, progress: UploadProgress) -> None:
        self.last = progress
        if self.user_progress is not None:
            self.user_progress(progress)

    def count(self, run: ImportRun, *, result: RunResult) -> ImportRun:
        """``run`` with ``result`` and what the upload did before it stopped."""
        last = self.last
        naming = self.naming_requests
        return attrs.evolve(
            run,
            result=result,
            added=last.added,
            removed=last.removed,
            requests=naming + last.requests,
            retries=max(naming - 1, 0) + last.retries,
        )

    def name(self, request: Callable[[], CohortResponse]) -> Callable[[], CohortResponse]:
        """``request``, counting each attempt as a request of this run."""

        def counted() -> CohortResponse:
            self.naming_requests += 1
            return request()

        return counted


def _check_records(what: str, records: object) -> None:
    if isinstance(records, (str, bytes, ExternalId, UserAlias, DeviceId)) or not isinstance(
        records, Iterable
    ):
        raise ConfigurationError(
            f"{what} must be an iterable of records or identifiers, not a single "
            f"{type(records).__name__}"
        )


def _check_args(cohort_id: object, name: object, trigger: object) -> None:
    if not isinstance(cohort_id, str) or not cohort_id.strip():
        raise ConfigurationError("cohort_id must be a non-blank str")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("name must be a non-blank str")
    if trigger not in get_args(Trigger):
        raise ConfigurationError(f"trigger must be one of {get_args(Trigger)}, not {trigger!r}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BrazeCohortsError):
        return str(exc) or type(exc).__name__
    return f"unexpected error: {type(exc).__name__}"


def _failure_text(failed: list[FailedBatch], batches: int) -> str:
    ids = sum(len(f.batch) for f in failed)
    unknown = sum(1 for f in failed if f.outcome_unknown)
    text = (
        f"{len(failed)} of {batches} request(s) failed after retries; their {ids} id(s) "
        f"will be re-sent by the next import"
    )
    if unknown:
        text += f" ({unknown} with unknown outcome)"
    return f"{text}; first error: {_describe(failed[0].error)}"


class CohortSync:
    """Keeps Braze cohorts equal to memberships that live elsewhere, sending only changes.

    Args:
        client: Sends requests to Braze: :class:`~braze_cohorts.CohortClient`, or anything with
            its ``name_cohort`` and ``update_members`` methods.
        store: Remembers names, what Braze holds, uncertain ids, history and locks:
            :class:`~braze_cohorts.SQLiteStore` or any :class:`~braze_cohorts.typing.StateStore`.
        uploader: Sends the changes; by default a :class:`~braze_cohorts.BatchUploader` for
            ``client`` with its defaults.
        notifier: Told after every import that is not a dry run (``None``: nobody). Its errors
            never fail an import; they are recorded as the run's ``notification_error``.
        matcher: Turns records into identifiers (default: :class:`IdentifierMatcher` with its
            defaults); :meth:`sync` can override it per call.
        clock: Returns the current time (timezone-aware); inject one in tests.

    Example:
        >>> import braze_cohorts as bc
        >>> sync = bc.CohortSync(client, bc.SQLiteStore("state.db"))  # doctest: +SKIP
        >>> run = sync.sync("power-users", "Power users", ["u1", "u2"])  # doctest: +SKIP
        >>> run.result, run.added  # doctest: +SKIP
        ('succeeded', 2)
    """

    def __init__(
        self,
        client: SyncClient,
        store: StateStore,
        *,
        uploader: BatchUploader | None = None,
        notifier: Notifier | None = None,
        matcher: IdentifierMatcher | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        if matcher is not None and not isinstance(matcher, IdentifierMatcher):
            raise ConfigurationError("matcher must be an IdentifierMatcher")
        self._client = client
        self._store = store
        self._uploader = uploader if uploader is not None else BatchUploader(client)
        self._notifier = notifier
        self._matcher = matcher if matcher is not None else IdentifierMatcher()
        self._clock = clock
        self._scheduler = runner_for(self, store, notifier=notifier, clock=clock)

    def __repr__(self) -> str:
        return f"CohortSync(store={self._store!r}, uploader={self._uploader!r})"

    @property
    def store(self) -> StateStore:
        """The state store."""
        return self._store

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's imports, newest first.

        Args:
            cohort_id: The cohort.
            limit: At most this many runs (all when ``None``).
        """
        return self._store.history(cohort_id, limit=limit)

    # -- schedules (the logic lives in braze_cohorts._runner) ---------------------------------

    @property
    def scheduler(self) -> ScheduleRunner:
        """The schedules kept in this sync's store: get, list, pause, resume and clear them.

        Raises:
            ConfigurationError: If the store keeps no schedules.
        """
        if not keeps_schedules(self._store):
            raise ConfigurationError(f"{type(self._store).__name__} keeps no schedules")
        return self._scheduler

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
        """Give a cohort its one live schedule (see :meth:`ScheduleRunner.set_schedule`).

        Args:
            cohort_id: The cohort.
            name: Its name in Braze.
            schedule: A :class:`~braze_cohorts.Schedule` or its text form.
            source: A function returning the members (registered for this process), a member
                file's path (read at each run), or ``None`` for the function registered with
                :meth:`register_source`.
            recipients: Who gets the email after each import.
            replace: Replace the cohort's live schedule instead of failing.
            now: Count the first run from this time (default: the clock).

        Returns:
            The stored schedule.

        Raises:
            ScheduleConflictError: If the cohort has a live schedule and ``replace`` is false.
            ScheduleError: If the schedule is invalid or a one-time schedule is past.
            ConfigurationError: If an address, the id or the name is invalid.
        """
        return self.scheduler.set_schedule(
            cohort_id,
            name,
            schedule,
            source=source,
            recipients=recipients,
            replace=replace,
            now=now,
        )

    def register_source(self, cohort_id: str, source: MemberSource) -> None:
        """Register the function that returns a cohort's members for its scheduled imports."""
        self.scheduler.register_source(cohort_id, source)

    def run_due(self, now: dt.datetime | None = None) -> list[ImportRun]:
        """Run every scheduled import whose time has come, each at most once per due time.

        Safe to call from cron every minute and from several processes sharing the store.
        Imports run with trigger ``"scheduled"``; after each, the schedule's recipients are told.

        Args:
            now: The time to run at (default: the clock).

        Returns:
            The imports that ran (failed ones included).
        """
        return self.scheduler.run_due(now)

    def trigger(self, cohort_id: str) -> ImportRun:
        """Run a cohort's scheduled import now, with trigger ``"manual"``.

        Raises:
            ScheduleNotFoundError: If the cohort has no schedule.
            ImportInProgressError: If an import of the cohort is running.
        """
        return self.scheduler.trigger(cohort_id)

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        matcher: IdentifierMatcher | None = None,
        dry_run: bool = False,
        trigger: Trigger = "manual",
        plan_out: OutFile | None = None,
        rejects_out: OutFile | None = None,
        progress: ProgressHook | None = None,
        notify: bool = True,
    ) -> ImportRun:
        """Make the Braze cohort hold exactly ``members``, sending only what changed.

        ``members`` is read once, lazily (a generator of any size is fine), and matched into
        identifiers; duplicates are removed on disk. What is sent: members who are not in the
        cohort yet, members who left, and every id whose last request failed or had an unknown
        outcome, with its desired state now.

        Args:
            cohort_id: The partner's cohort id.
            name: The cohort's name in Braze; the cohort is (re-)named when Braze has not
                acknowledged this name yet, before any member is sent.
            members: Records or identifiers (a plain ``str`` is an external id) of every member.
            matcher: How records become identifiers, for this call.
            dry_run: Compute and report the delta (``added``/``removed`` are then what would
                be sent) without sending anything or changing the state; recorded as
                ``dry_run`` in the history.
            trigger: ``"manual"`` or ``"scheduled"``, for the history.
            plan_out: Where to write the delta as CSV (:data:`PLAN_HEADER`).
            rejects_out: Where to write the rejected records as CSV (:data:`REJECTS_HEADER`).
            progress: Called with an :class:`~braze_cohorts.UploadProgress` after every
                request, from the calling thread.
            notify: Whether to tell the notifier about this run.

        Returns:
            The run as recorded: ``succeeded`` when every request was acknowledged, ``failed``
            (with ``error``) when naming or any request failed or the store broke, or
            ``dry_run``.

        Raises:
            ConfigurationError: If an argument is invalid or an output file cannot be written
                (nothing is recorded or sent).
            ImportInProgressError: If another import of the cohort is running.
            Exception: Whatever iterating ``members`` raised (for example
                :class:`~braze_cohorts.InputError` from an unreadable file), after the run was
                recorded as failed; nothing was sent.
        """
        _check_args(cohort_id, name, trigger)
        _check_records("members", members)
        return self._import_matched(
            cohort_id,
            name,
            trigger,
            lambda matching: self._store.diff(cohort_id, matching.keys(members)),
            matcher=matcher,
            plan_out=plan_out,
            rejects_out=rejects_out,
            dry_run=dry_run,
            progress=progress,
            notify=notify,
        )

    def sync_delta(
        self,
        cohort_id: str,
        name: str,
        entered: Iterable[object] = (),
        left: Iterable[object] = (),
        *,
        matcher: IdentifierMatcher | None = None,
        dry_run: bool = False,
        trigger: Trigger = "manual",
        plan_out: OutFile | None = None,
        rejects_out: OutFile | None = None,
        progress: ProgressHook | None = None,
        notify: bool = True,
    ) -> ImportRun:
        """Apply a delta computed where the data lives (a warehouse, Spark): who entered, who left.

        Exactly what is sent:

        * ``entered`` users, except those Braze is known to hold already;
        * ``left`` users, except those Braze is known not to hold;
        * every uncertain id (its last request failed or had an unknown outcome): with the
          change given now if it is in ``entered`` or ``left``, else with the change last sent
          for it (its desired state has not changed since).

        Both iterables are read lazily and may be huge; they are matched like :meth:`sync`'s
        ``members`` (identifiers, plain ``str`` external ids, or records), rejections counted
        together. Other arguments and the result are as for :meth:`sync`.

        Raises:
            ConfigurationError: If an argument is invalid.
            ImportInProgressError: If another import of the cohort is running.
            InputError: If the same user is both in ``entered`` and ``left`` (after the run was
                recorded as failed; nothing was sent).
            Exception: Whatever iterating ``entered`` or ``left`` raised, as for :meth:`sync`.
        """
        _check_args(cohort_id, name, trigger)
        _check_records("entered", entered)
        _check_records("left", left)
        return self._import_matched(
            cohort_id,
            name,
            trigger,
            lambda matching: self._store.diff_changes(
                cohort_id, matching.keys(entered), matching.keys(left)
            ),
            matcher=matcher,
            plan_out=plan_out,
            rejects_out=rejects_out,
            dry_run=dry_run,
            progress=progress,
            notify=notify,
        )

    # -- one import ---------------------------------------------------------------------------

    def _import_matched(
        self,
        cohort_id: str,
        name: str,
        trigger: Trigger,
        compute: Callable[[_Matching], Delta],
        *,
        matcher: IdentifierMatcher | None,
        plan_out: OutFile | None,
        rejects_out: OutFile | None,
        dry_run: bool,
        progress: ProgressHook | None,
        notify: bool,
    ) -> ImportRun:
        """Open the plan and rejects files, then run :meth:`_import` on the matched records."""
        if matcher is not None and not isinstance(matcher, IdentifierMatcher):
            raise ConfigurationError("matcher must be an IdentifierMatcher")
        with (
            _csv_out(rejects_out, REJECTS_HEADER) as rejects,
            _csv_out(plan_out, PLAN_HEADER) as plan,
        ):
            matching = _Matching(matcher if matcher is not None else self._matcher, rejects)
            return self._import(
                cohort_id,
                name,
                trigger,
                lambda: compute(matching),
                matching,
                dry_run=dry_run,
                plan=plan,
                progress=progress,
                notify=notify,
            )

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ConfigurationError("clock() must return timezone-aware datetimes")
        return now.astimezone(dt.timezone.utc)

    def _import(
        self,
        cohort_id: str,
        name: str,
        trigger: Trigger,
        compute: Callable[[], Delta],
        matching: _Matching,
        *,
        dry_run: bool,
        plan: _RowWriter | None,
        progress: ProgressHook | None,
        notify: bool,
    ) -> ImportRun:
        store = self._store
        run = store.start_run(
            ImportRun(cohort_id=cohort_id, name=name, trigger=trigger, started_at=self._now())
        )
        log.info("import of cohort %s started (run %s, %s)", cohort_id, run.id, trigger)
        commit = _Commit(store, cohort_id, progress)
        to_raise: BaseException | None = None
        try:
            run = self._steps(run, compute, matching, commit, dry_run=dry_run, plan=plan)
        except _SourceError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            run = commit.count(run, result="failed")
            run = attrs.evolve(
                run,
                error=f"reading the members failed: {_describe(cause)}",
                error_kind=type(cause).__name__,
            )
            to_raise = cause
        except InputError as exc:
            run = commit.count(run, result="failed")
            run = attrs.evolve(run, error=_describe(exc), error_kind=type(exc).__name__)
            to_raise = exc
        except BrazeCohortsError as exc:
            run = attrs.evolve(
                commit.count(run, result="failed"),
                error=_describe(exc),
                error_kind=type(exc).__name__,
            )
            log.warning("import of cohort %s failed: %s", cohort_id, type(exc).__name__)
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            run = attrs.evolve(
                commit.count(run, result="interrupted" if interrupted else "failed"),
                error=f"interrupted: {type(exc).__name__}" if interrupted else _describe(exc),
                error_kind=type(exc).__name__,
            )
            to_raise = exc
        run = self._finish(run, matching, commit, dry_run=dry_run)
        if to_raise is not None:
            raise to_raise
        if notify and not dry_run:
            run = self._notify(run)
        return run

    def _steps(
        self,
        run: ImportRun,
        compute: Callable[[], Delta],
        matching: _Matching,
        commit: _Commit,
        *,
        dry_run: bool,
        plan: _RowWriter | None,
    ) -> ImportRun:
        store = self._store
        cohort_id = run.cohort_id
        with compute() as delta:
            log.info(
                "cohort %s: %d to add, %d to remove, %d rejected",
                cohort_id,
                delta.adds,
                delta.removes,
                sum(matching.rejected.values()),
            )
            if plan is not None:
                for key in delta.iter_adds():
                    plan.writerow(_plan_row("add", key))
                for key in delta.iter_removes():
                    plan.writerow(_plan_row("remove", key))
            if dry_run:
                return attrs.evolve(run, result="dry_run", added=delta.adds, removed=delta.removes)
            if store.known_name(cohort_id) != run.name:
                # Naming is retried and rate-limited like the batches: it is idempotent.
                self._uploader.call(
                    commit.name(
                        lambda: self._client.name_cohort(
                            cohort_id, run.name, created_at=run.started_at
                        )
                    )
                )
                store.record_name(cohort_id, run.name, named_at=self._now())
                log.info("cohort %s named", cohort_id)
            if not delta:
                return commit.count(run, result="succeeded")
            store.mark_pending(cohort_id, delta)
            report = self._uploader.upload(
                cohort_id,
                add=map(item_from_key, delta.iter_adds()),
                remove=map(item_from_key, delta.iter_removes()),
                progress=commit.progress,
                on_batch_done=commit.done,
                on_batch_failed=commit.failed_batch,
            )
            naming = commit.naming_requests
            run = attrs.evolve(
                run,
                added=report.added,
                removed=report.removed,
                requests=naming + report.requests,
                retries=max(naming - 1, 0) + report.retries,
            )
            if report.failed_batches:
                batches = len(report.failed_batches) + commit.last.batches_done
                return attrs.evolve(
                    run,
                    result="failed",
                    error=_failure_text(list(report.failed_batches), batches),
                    error_kind=type(report.failed_batches[0].error).__name__,
                )
            return attrs.evolve(run, result="succeeded")

    def _finish(
        self, run: ImportRun, matching: _Matching, commit: _Commit, *, dry_run: bool
    ) -> ImportRun:
        store = self._store
        run = attrs.evolve(run, rejected=dict(matching.rejected), finished_at=self._now())
        try:
            run = attrs.evolve(run, users=store.member_count(run.cohort_id))
        except BrazeCohortsError as exc:
            log.error("could not count the members of cohort %s: %s", run.cohort_id, exc)
        run = store.finish_run(run)
        log.info(
            "import of cohort %s %s: %d users, %d added, %d removed, %d rejected, "
            "%d requests (%d retries)%s",
            run.cohort_id,
            run.result,
            run.users,
            run.added,
            run.removed,
            run.rejected_total,
            run.requests,
            run.retries,
            " (dry run)" if dry_run else "",
        )
        return run

    def _notify(self, run: ImportRun) -> ImportRun:
        if self._notifier is None:
            return run
        try:
            self._notifier.notify(run)
        except Exception as exc:  # a notification never fails the import
            message = (
                _describe(exc)
                if isinstance(exc, BrazeCohortsError)
                else (f"{type(exc).__name__}: {exc}")
            )
            log.warning("notification for cohort %s failed: %s", run.cohort_id, type(exc).__name__)
            if run.id is not None:
                try:
                    self._store.record_notification_error(run.id, message)
                except BrazeCohortsError:
                    log.exception("could not record the notification error of run %s", run.id)
            run = attrs.evolve(run, notification_error=message)
        return run
