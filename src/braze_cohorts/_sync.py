"""CohortSync: one import end to end — match, diff, guard, name, upload, commit, record, notify.

The sync engine keeps a Braze cohort equal to a membership that lives elsewhere while sending
only what changed:

1. **match** the records into identifiers (bad records are counted by reason, never fatal);
2. **diff** them against what Braze is known to hold, plus every *uncertain* id, in the
   :class:`~braze_cohorts.typing.StateStore` — streamed, in bounded memory. A *full resync*
   re-sends every desired member; *recent entrants* are re-sent while they are recent;
3. **guard**: refuse, before anything is sent, a plan built from mostly rejected records or one
   that would remove too much of the cohort;
4. **name** the cohort if Braze has not acknowledged this name yet (before any member is sent);
5. mark the whole delta **uncertain**, then **upload** it; each acknowledged request is applied
   to the snapshot in the same transaction that clears its ids from the uncertain ones;
6. **record** the run in the history and **notify**.

An id whose request failed, or whose outcome is unknown (timeout, dropped connection, the
process killed, a success answer that carried errors), stays uncertain and is re-sent next time
with its *then* desired state. That is why, after any failed, partial or killed import, the next
successful one leaves Braze holding exactly the desired members *that exist in Braze*.

Braze silently ignores ids it does not know and never says which. Users whose Braze profile
appears after they were sent are healed by re-sending recent entrants (``resend_window``) and
by a full resync (``full_resync=True``, and at least every ``resync_every``).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import enum
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, get_args

import attrs

from braze_cohorts import _metrics
from braze_cohorts._budget import (
    DEFAULT_WORKSPACE_REQUESTS_PER_HOUR,
    SharedRateLimiter,
    shared_limiter,
)
from braze_cohorts._delta import Delta
from braze_cohorts._frames import as_records
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
)
from braze_cohorts._models import (
    MAX_WARNING_CHARS,
    MAX_WARNINGS,
    Batch,
    CohortResponse,
    FailedBatch,
    FullResyncReason,
    ImportRun,
    RunResult,
    Trigger,
    UploadReport,
)
from braze_cohorts._notify import deliver
from braze_cohorts._plans import (
    PLAN_HEADER,
    REJECTS_HEADER,
    OutFile,
    RowWriter,
    csv_out,
    plan_row,
    reject_row,
)
from braze_cohorts._uploader import BatchUploader, RateLimiter, UploadProgress
from braze_cohorts.exceptions import (
    AuthenticationError,
    BrazeCohortsError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidIdentifierError,
    MassRemovalError,
    TooManyRejectedError,
    WorkspaceChangedError,
    _describe_error,
)
from braze_cohorts.typing import Clock, Notifier, RequestLimiter, StateStore, SyncClient

if TYPE_CHECKING:
    from braze_cohorts._store import SQLiteStore

    def _sqlite_store_is_a_state_store(store: SQLiteStore) -> StateStore:
        return store


__all__ = [
    "DEFAULT_MAX_REJECT_FRACTION",
    "DEFAULT_MAX_REMOVE_FRACTION",
    "DEFAULT_RESEND_WINDOW",
    "DEFAULT_RESYNC_EVERY",
    "ENGINE_DEFAULT",
    "PLAN_HEADER",
    "REJECTS_HEADER",
    "CohortSync",
    "EngineDefault",
    "PhaseHook",
    "PhaseProgress",
]

log = logging.getLogger(__name__)

ProgressHook = Callable[[UploadProgress], object]


class EngineDefault(enum.Enum):
    """The type of :data:`ENGINE_DEFAULT`: "the sync engine's own setting" for an option."""

    ENGINE_DEFAULT = "the engine's setting"


#: A per-call option left to the sync engine's setting (``CohortSync.sync(resync_every=)``).
ENGINE_DEFAULT = EngineDefault.ENGINE_DEFAULT


# -- the read/diff progress hook (``on_phase``) ------------------------------------------------

#: Seconds between two ``read`` events at most (one check per chunk of _MATCH_CHUNK records).
_PHASE_EVERY = 0.1


@attrs.frozen(slots=True, kw_only=True)
class PhaseProgress:
    """Which phase an import is in, passed to the ``on_phase`` hook of :meth:`CohortSync.sync`.

    Events come from the calling thread, in this order: ``read`` while the records are read and
    matched (at most every 1,024 records and every 0.1 s, and once when the input is exhausted),
    ``diff`` once the records are read and the change is being computed, then ``send`` once,
    just before the first request of the upload, with the size of the change (not for a dry run,
    a refused import or an empty change). Progress of the upload itself goes to ``progress``.
    :meth:`CohortSync.sync_delta` reads two inputs: ``read`` and ``diff`` come once for each.

    Attributes:
        phase: ``"read"``, ``"diff"`` or ``"send"``.
        records: Records read so far, matched and rejected.
        adds: Ids to add (``send`` only, else 0).
        removes: Ids to remove (``send`` only, else 0).
    """

    phase: Literal["read", "diff", "send"]
    records: int = 0
    adds: int = 0
    removes: int = 0


PhaseHook = Callable[[PhaseProgress], object]


def _log_extra(run: ImportRun) -> dict[str, Any]:
    """The ``extra`` of every log record of a run: JSON formatters pick these fields up."""
    return {"cohort_id": run.cohort_id, "run_id": run.id}


# ----------------------------------------------------------------------------------------------

#: A full resync at least this often: Braze ignores users it does not know yet, and cohorts may
#: be edited in Braze; only re-sending everything heals what nobody can see.
DEFAULT_RESYNC_EVERY = dt.timedelta(days=7)
#: Members who entered this recently are re-sent at every import: most users Braze ignored are
#: simply not created there yet, and appear within hours.
DEFAULT_RESEND_WINDOW = dt.timedelta(days=3)
#: An import may remove at most this share of the members Braze holds, unless allowed.
DEFAULT_MAX_REMOVE_FRACTION = 0.5
#: An import is refused when more than this share of its records cannot be matched.
DEFAULT_MAX_REJECT_FRACTION = 0.1

#: Records matched at a time; chunks of plain-str members take a bulk path.
_MATCH_CHUNK = 1024
_EXTERNAL_KEY = "e:"
#: Seconds between writes of a running run's counts to the store.
_PROGRESS_EVERY = 1.0
#: Acknowledged batches are applied to the store together, up to this many or this many
#: seconds after the last write: one transaction instead of one per request. Until applied,
#: their ids stay uncertain (a crash re-sends them), which is always safe.
_COMMIT_BATCHES = 16
_COMMIT_EVERY = 0.2

#: The warning a cohort's first import (as far as this state knows) records and logs.
FIRST_IMPORT_WARNING = (
    "first import of this cohort with this state: if Braze already holds members of it (from "
    "another state file, or one lost or emptied), this state cannot remove them; run a full "
    "resync with the old membership first, or use a fresh cohort id"
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _SourceError(Exception):
    """Carries an exception raised by the caller's records through the store untouched."""


class _Matching:
    """Streams records through the matcher into keys, counting and writing the rejections."""

    def __init__(
        self,
        matcher: IdentifierMatcher,
        rejects: RowWriter | None,
        on_phase: PhaseHook | None = None,
    ) -> None:
        self.matcher = matcher
        self.rejects = rejects
        self.rejected: collections.Counter[str] = collections.Counter()
        self.matched = 0
        self._offset = 0
        self.on_phase = on_phase
        self._phase_at = -float("inf")

    def keys(self, records: Iterable[object]) -> Iterator[str]:
        # Chunks of keys chained in C: no generator frame is resumed per key.
        return itertools.chain.from_iterable(self._key_chunks(records))

    def _key_chunks(self, records: Iterable[object]) -> Iterator[list[str]]:
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
            if self.on_phase is not None:
                self._reading(offset + index)
            try:
                # The common case, a chunk of valid plain-str external ids, is checked in bulk
                # and keyed in C; it is exactly what match_one would make of each of them.
                check_external_ids(chunk)
            except InvalidIdentifierError:
                keys: list[str] = []
                for record in chunk:
                    item = match_one(record, index=offset + index)
                    index += 1
                    if isinstance(item, Rejection):
                        self._reject(item)
                    else:
                        self.matched += 1
                        keys.append(item.key)
                yield keys
            else:
                index += len(chunk)
                self.matched += len(chunk)
                yield list(map(_EXTERNAL_KEY.__add__, chunk))  # type: ignore[arg-type]
        self._offset = offset + index
        if self.on_phase is not None:
            self.on_phase(PhaseProgress(phase="read", records=self._offset))
            self.on_phase(PhaseProgress(phase="diff", records=self._offset))

    def _reading(self, records: int) -> None:
        """Tell ``on_phase`` how many records were read, at most every _PHASE_EVERY seconds."""
        now = time.monotonic()
        if now - self._phase_at >= _PHASE_EVERY:
            self._phase_at = now
            assert self.on_phase is not None
            self.on_phase(PhaseProgress(phase="read", records=records))

    def _reject(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason.value] += 1
        if self.rejects is not None:
            self.rejects.writerow(reject_row(rejection))


def _keys(refs: Iterable[UserRef | str]) -> list[str]:
    return list(map(key_of, refs))


def _warning_texts(errors: Iterable[object]) -> Iterator[str]:
    for error in errors:
        text = error if isinstance(error, str) else repr(error)
        yield text[:MAX_WARNING_CHARS]


class _Commit:
    """Upload hooks: apply each acknowledged batch to the store, keep score of the rest."""

    def __init__(
        self,
        store: StateStore,
        run: ImportRun,
        progress: ProgressHook | None,
        *,
        entered_at: dt.datetime | None,
    ) -> None:
        self.store = store
        self.run = run
        self.user_progress = progress
        self.entered_at = entered_at
        self.last = UploadProgress()
        self.warnings: dict[str, None] = {}
        #: Requests spent naming the cohort (retries included), counted with the upload's.
        self.naming_requests = 0
        #: Acknowledged batches not applied to the store (Braze's answer carried errors).
        self.unapplied = 0
        # Acknowledged batches not applied yet: their ids stay uncertain until they are.
        self._adds: list[str] = []
        self._removes: list[str] = []
        self._held = 0
        self._flushed_at = time.monotonic()
        self._saved_at = time.monotonic()

    def done(self, batch: Batch, response: CohortResponse | None) -> None:
        if response is not None and response.errors:
            # Braze said success but reported errors: some ids may have been dropped. They stay
            # uncertain (pending) and are re-sent by the next import.
            self.warn(response.errors)
            self.unapplied += 1
            return
        if self._held >= _COMMIT_BATCHES or time.monotonic() - self._flushed_at >= _COMMIT_EVERY:
            # The batches before this one, all counted in the progress already: if this
            # raises, this batch is neither applied nor counted, as before it was buffered.
            self.flush()
        self._adds += _keys(batch.add)
        self._removes += _keys(batch.remove)
        self._held += 1

    def flush(self) -> None:
        """Apply the acknowledged batches held back, in one transaction."""
        if not self._held:
            return
        self._flushed_at = time.monotonic()
        self.store.apply_batch(
            self.run.cohort_id, self._adds, self._removes, entered_at=self.entered_at
        )
        self._adds, self._removes, self._held = [], [], 0

    def warn(self, errors: Iterable[object]) -> None:
        """Keep Braze's ``errors`` as warnings: at most MAX_WARNINGS distinct ones."""
        for text in _warning_texts(errors):
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.setdefault(text)

    def progress(self, progress: UploadProgress) -> None:
        self.last = progress
        now = time.monotonic()
        if now - self._saved_at >= _PROGRESS_EVERY:
            # A run killed mid-way still shows what it had committed.
            self._saved_at = now
            self.flush()
            users = self.store.member_count(self.run.cohort_id)
            self.store.update_run(attrs.evolve(self.counted(self.run), users=users))
        if self.user_progress is not None:
            self.user_progress(progress)

    def counted(self, run: ImportRun) -> ImportRun:
        """``run`` with what naming and the upload did so far."""
        last = self.last
        naming = self.naming_requests
        return attrs.evolve(
            run,
            added=last.added,
            removed=last.removed,
            requests=naming + last.requests,
            retries=max(naming - 1, 0) + last.retries,
            warnings=(*run.warnings, *(w for w in self.warnings if w not in run.warnings)),
        )

    def name(self, request: Callable[[], CohortResponse]) -> Callable[[], CohortResponse]:
        """``request``, counting each attempt as a request of this run."""

        def counted() -> CohortResponse:
            self.naming_requests += 1
            response = request()
            self.warn(response.errors)
            return response

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


def _period(value: object, what: str) -> dt.timedelta | None:
    if value is None:
        return None
    if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
        raise ConfigurationError(f"{what} must be a positive datetime.timedelta or None")
    return value


def _fraction(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(f"{what} must be a number from 0 to 1, or None")
    return float(value)


def _stop_error(report: UploadReport) -> BrazeCohortsError | None:
    """The error that stopped an upload early (deadline, circuit breaker), if one did."""
    if report.stopped_reason is None:
        return None
    stops = (DeadlineExceededError, CircuitOpenError)
    return next((f.error for f in report.failed_batches if isinstance(f.error, stops)), None)


def _failure_text(failed: Sequence[FailedBatch], report: UploadReport, done: int) -> str:
    ids = sum(len(f.batch) for f in failed)
    stops = (DeadlineExceededError, CircuitOpenError)
    tried = [f for f in failed if not isinstance(f.error, stops)]
    unsent = len(failed) - len(tried)
    unknown = sum(1 for f in tried if f.outcome_unknown)
    text = ""
    stop = _stop_error(report)
    if stop is not None:
        text = f"the upload stopped early ({report.stopped_reason}: {_describe_error(stop)}); "
    if tried:
        text += f"{len(tried)} of {len(tried) + done} request(s) failed after retries; "
    if unsent:
        text += f"{unsent} batch(es) were not sent; "
    text += f"their {ids} id(s) will be re-sent by the next import"
    if unknown:
        text += f" ({unknown} with unknown outcome)"
    if tried:
        text += f"; first error: {_describe_error(tried[0].error)}"
    return text


def _failed(run: ImportRun, exc: BaseException, result: RunResult = "failed") -> ImportRun:
    return attrs.evolve(
        run,
        result=result,
        error=_describe_error(exc),
        error_kind=type(exc).__name__,
        error_cause=exc.cause if isinstance(exc, AuthenticationError) else None,
    )


@attrs.frozen(slots=True, kw_only=True)
class _Plan:
    """How one import is computed: from a membership (``sync``) or a delta (``sync_delta``)."""

    compute: Callable[[_Matching, StateStore], Delta]
    started_at: dt.datetime
    full_resync: FullResyncReason | None
    workspace: str | None
    workspace_changed: bool
    entered_at: dt.datetime | None


class CohortSync:
    """Keeps Braze cohorts equal to memberships that live elsewhere, sending only changes.

    Args:
        client: Sends requests to Braze: :class:`~braze_cohorts.CohortClient`, or anything with
            its ``name_cohort`` and ``update_members`` methods. When it has a ``workspace``
            attribute (``CohortClient`` has), each cohort's state is bound to that workspace.
        store: Remembers names, what Braze holds, uncertain ids, history and locks:
            :class:`~braze_cohorts.SQLiteStore` or any :class:`~braze_cohorts.typing.StateStore`.
        uploader: Sends the changes; by default a :class:`~braze_cohorts.BatchUploader` for
            ``client`` with its defaults.
        notifier: Told after every import that is not a dry run (``None``: nobody). Its errors
            never fail an import; they are recorded as the run's ``notification_error``.
        matcher: Turns records into identifiers (default: :class:`IdentifierMatcher` with its
            defaults); :meth:`sync` can override it per call.
        clock: Returns the current time (timezone-aware); inject one in tests.
        resync_every: Make an ordinary :meth:`sync` a full resync when the cohort's last full
            resync is older than this (``None``: only when asked, or when the workspace
            changed).
        resend_window: Re-send members who entered within this window at every import, while
            they are desired (``None``: off). Heals users whose Braze profile appears after
            they entered the cohort, at the cost of re-sending the recent entrants.
        max_remove_fraction: Refuse, before anything is sent, an import that would remove more
            than this share of the members Braze holds (``None``: no limit). An empty
            membership against a non-empty cohort removes 100 %.
        max_reject_fraction: Refuse, before anything is sent, an import in which more than
            this share of the records could not be matched, or every record (``None``: no
            limit; an all-rejected input is still refused).
        workspace_requests_per_hour: The request budget of each Braze workspace, shared by
            every job that uses the same store (``None``: off). When the store keeps budgets
            (:class:`~braze_cohorts.typing.BudgetStore`, as :class:`~braze_cohorts.SQLiteStore`
            does) and the client has a ``workspace``, every request waits for a start
            reserved in that budget (:class:`~braze_cohorts.SharedRateLimiter`) after the
            uploader's own limiter, which stays a cap for this job alone.

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
        resync_every: dt.timedelta | None = DEFAULT_RESYNC_EVERY,
        resend_window: dt.timedelta | None = DEFAULT_RESEND_WINDOW,
        max_remove_fraction: float | None = DEFAULT_MAX_REMOVE_FRACTION,
        max_reject_fraction: float | None = DEFAULT_MAX_REJECT_FRACTION,
        workspace_requests_per_hour: float | None = DEFAULT_WORKSPACE_REQUESTS_PER_HOUR,
    ) -> None:
        if matcher is not None and not isinstance(matcher, IdentifierMatcher):
            raise ConfigurationError("matcher must be an IdentifierMatcher")
        if workspace_requests_per_hour is not None and (
            isinstance(workspace_requests_per_hour, bool)
            or not isinstance(workspace_requests_per_hour, (int, float))
            or not 0 < workspace_requests_per_hour < math.inf
        ):
            raise ConfigurationError(
                "workspace_requests_per_hour must be a positive number or None, not "
                f"{workspace_requests_per_hour!r}"
            )
        self._client = client
        self._store = store
        uploader = uploader if uploader is not None else BatchUploader(client)
        cap: RequestLimiter | None = uploader.limiter
        if (
            isinstance(cap, RateLimiter)
            and workspace_requests_per_hour is not None
            and uploader.requests_per_hour >= workspace_requests_per_hour
        ):
            # The uploader's own limiter would pace at the budget's rate or faster: two pacers
            # of one rate in a row only lose a few percent to their phase.
            cap = None
        shared = shared_limiter(
            store,
            self._workspace(),
            workspace_requests_per_hour,
            uploader.limiter if isinstance(uploader.limiter, SharedRateLimiter) else cap,
            uploader.retry.max_server_wait,
        )
        self._uploader = uploader if shared is None else uploader.with_limiter(shared)
        self._notifier = notifier
        self._matcher = matcher if matcher is not None else IdentifierMatcher()
        self._clock = clock
        self._resync_every = _period(resync_every, "resync_every")
        self._resend_window = _period(resend_window, "resend_window")
        self._max_remove = _fraction(max_remove_fraction, "max_remove_fraction")
        self._max_reject = _fraction(max_reject_fraction, "max_reject_fraction")

    def __repr__(self) -> str:
        return f"CohortSync(store={self._store!r}, uploader={self._uploader!r})"

    @property
    def uploader(self) -> BatchUploader:
        """The uploader that sends the changes (with the shared budget in front, if any)."""
        return self._uploader

    @property
    def store(self) -> StateStore:
        """The state store."""
        return self._store

    @property
    def notifier(self) -> Notifier | None:
        """Who is told after each import (``None``: nobody)."""
        return self._notifier

    @property
    def clock(self) -> Clock:
        """The clock the sync engine reads."""
        return self._clock

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's imports, newest first.

        Args:
            cohort_id: The cohort.
            limit: At most this many runs (all when ``None``).
        """
        return self._store.history(cohort_id, limit=limit)

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        matcher: IdentifierMatcher | None = None,
        dry_run: bool = False,
        trigger: Trigger = "manual",
        full_resync: bool = False,
        allow_mass_removal: bool = False,
        plan_out: OutFile | None = None,
        rejects_out: OutFile | None = None,
        progress: ProgressHook | None = None,
        notify: bool = True,
        on_phase: PhaseHook | None = None,
        resync_every: dt.timedelta | EngineDefault | None = ENGINE_DEFAULT,
    ) -> ImportRun:
        """Make the Braze cohort hold exactly ``members``, sending only what changed.

        ``members`` is read once, lazily (a generator of any size is fine), and matched into
        identifiers; duplicates are removed on disk. What is sent: members who are not in the
        cohort yet, members who left, every id whose last request failed or had an unknown
        outcome (with its desired state now), and members who entered within
        ``resend_window``. A full resync sends every member.

        **Failure contract.** Invalid arguments raise :class:`~braze_cohorts.ConfigurationError`,
        a concurrent import of the cohort raises :class:`~braze_cohorts.ImportInProgressError`
        and a store that cannot be read raises :class:`~braze_cohorts.StoreError`, all before
        anything is recorded or sent. Once the run is recorded, every outcome is *returned* as
        the recorded run: ``succeeded``, ``failed`` (Braze, the store or the member source
        failed; ``error`` and ``error_kind`` say why), ``refused`` (a guard stopped it before
        anything was sent) or ``dry_run``. Only ``KeyboardInterrupt``/``SystemExit``
        propagate, after the run was recorded as ``interrupted``. Call
        :meth:`ImportRun.raise_for_result <braze_cohorts.ImportRun.raise_for_result>` to turn
        a failure into an exception.

        Args:
            cohort_id: The partner's cohort id.
            name: The cohort's name in Braze; the cohort is (re-)named when Braze has not
                acknowledged this name yet, before any member is sent.
            members: Records or identifiers (a plain ``str`` is an external id) of every member,
                or a pandas/polars DataFrame or pyarrow Table (read by column, see
                :func:`~braze_cohorts.frame_records`).
            matcher: How records become identifiers, for this call.
            dry_run: Compute and report the delta (``added``/``removed`` are then what would
                be sent) without sending anything or changing the state; recorded as
                ``dry_run`` in the history.
            trigger: ``"manual"`` or ``"scheduled"``, for the history.
            full_resync: Re-send every member as an add, whatever the state says (and every
                known member who left as a remove).
            allow_mass_removal: Let an import remove more than ``max_remove_fraction`` of the
                cohort.
            plan_out: Where to write the delta as CSV (:data:`PLAN_HEADER`).
            rejects_out: Where to write the rejected records as CSV (:data:`REJECTS_HEADER`).
            progress: Called with an :class:`~braze_cohorts.UploadProgress` after every
                request, from the calling thread.
            notify: Whether to tell the notifier about this run.
            on_phase: Called with a :class:`~braze_cohorts.PhaseProgress` while the records
                are read and diffed, and when the upload starts (``None``: never; costs
                nothing then).
            resync_every: The full-resync period for this call (``None``: no periodic full
                resync); by default the engine's ``resync_every``.

        Returns:
            The run as recorded.

        Raises:
            ConfigurationError: If an argument is invalid or an output file cannot be written.
            ImportInProgressError: If another import of the cohort is running.
            StoreError: If the store cannot be read before the run is recorded.
        """
        _check_args(cohort_id, name, trigger)
        members = as_records(members)  # a DataFrame or Arrow table is read by column
        _check_records("members", members)
        period = (
            self._resync_every
            if isinstance(resync_every, EngineDefault)
            else _period(resync_every, "resync_every")
        )
        store = self._store
        now = self._now()
        workspace = self._workspace()
        bound = store.workspace(cohort_id)
        changed = workspace is not None and bound is not None and bound != workspace
        reason: FullResyncReason | None = None
        if full_resync:
            reason = "requested"
        elif changed:
            reason = "workspace_changed"
        else:
            last = store.last_full_resync(cohort_id)
            if last is None and store.member_count(cohort_id) == 0:
                reason = "first_import"
            elif period is not None and (last is None or now - last >= period):
                reason = "period_elapsed"
        since = None if self._resend_window is None or reason else now - self._resend_window
        # A first import cannot tell who just entered from who was a member for years: stamping
        # them all would make every import of the next days a full resync. Users Braze ignored
        # then are healed by the next full resync.
        entered_at = None if self._resend_window is None or reason == "first_import" else now
        plan = _Plan(
            compute=lambda matching, store: store.diff(
                cohort_id, matching.keys(members), full=reason is not None, resend_since=since
            ),
            started_at=now,
            full_resync=reason,
            workspace=workspace,
            workspace_changed=changed,
            entered_at=entered_at,
        )
        return self._import(
            cohort_id,
            name,
            trigger,
            plan,
            matcher=matcher,
            dry_run=dry_run,
            allow_mass_removal=allow_mass_removal,
            plan_out=plan_out,
            rejects_out=rejects_out,
            progress=progress,
            notify=notify,
            on_phase=on_phase,
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
        allow_mass_removal: bool = False,
        plan_out: OutFile | None = None,
        rejects_out: OutFile | None = None,
        progress: ProgressHook | None = None,
        notify: bool = True,
        on_phase: PhaseHook | None = None,
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
        together. A delta cannot heal what Braze could not see: schedule a full :meth:`sync`
        now and then. The failure contract and other arguments are :meth:`sync`'s; in addition
        the run is ``refused`` (:class:`~braze_cohorts.WorkspaceChangedError`) when the
        cohort's state describes another workspace than the client's, and ``failed``
        (:class:`~braze_cohorts.InputError`) when the same user is both in ``entered`` and
        ``left``.

        Raises:
            ConfigurationError: If an argument is invalid.
            ImportInProgressError: If another import of the cohort is running.
        """
        _check_args(cohort_id, name, trigger)
        entered, left = as_records(entered), as_records(left)
        _check_records("entered", entered)
        _check_records("left", left)
        workspace = self._workspace()
        bound = self._store.workspace(cohort_id)
        now = self._now()
        plan = _Plan(
            compute=lambda matching, store: store.diff_changes(
                cohort_id, matching.keys(entered), matching.keys(left)
            ),
            started_at=now,
            full_resync=None,
            workspace=workspace,
            workspace_changed=workspace is not None and bound is not None and bound != workspace,
            entered_at=None if self._resend_window is None else now,
        )
        return self._import(
            cohort_id,
            name,
            trigger,
            plan,
            matcher=matcher,
            dry_run=dry_run,
            allow_mass_removal=allow_mass_removal,
            plan_out=plan_out,
            rejects_out=rejects_out,
            progress=progress,
            notify=notify,
            on_phase=on_phase,
        )

    # -- one import ---------------------------------------------------------------------------

    def _workspace(self) -> str | None:
        workspace = getattr(self._client, "workspace", None)
        return workspace if isinstance(workspace, str) else None

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
        plan: _Plan,
        *,
        matcher: IdentifierMatcher | None,
        dry_run: bool,
        allow_mass_removal: bool,
        plan_out: OutFile | None,
        rejects_out: OutFile | None,
        progress: ProgressHook | None,
        notify: bool,
        on_phase: PhaseHook | None,
    ) -> ImportRun:
        if matcher is not None and not isinstance(matcher, IdentifierMatcher):
            raise ConfigurationError("matcher must be an IdentifierMatcher")
        with (
            csv_out(rejects_out, REJECTS_HEADER) as rejects,
            csv_out(plan_out, PLAN_HEADER) as plan_rows,
        ):
            matching = _Matching(
                matcher if matcher is not None else self._matcher, rejects, on_phase
            )
            store = self._store
            run = store.start_run(
                ImportRun(
                    cohort_id=cohort_id,
                    name=name,
                    trigger=trigger,
                    started_at=plan.started_at,
                    full_resync=plan.full_resync is not None,
                    full_resync_reason=plan.full_resync,
                    warnings=(FIRST_IMPORT_WARNING,) if plan.full_resync == "first_import" else (),
                )
            )
            extra = _log_extra(run)
            log.info(
                "import of cohort %s started (run %s, %s)", cohort_id, run.id, trigger, extra=extra
            )
            if plan.full_resync == "first_import":
                log.warning("cohort %s: %s", cohort_id, FIRST_IMPORT_WARNING, extra=extra)
            commit = _Commit(store, run, progress, entered_at=plan.entered_at)
            interrupted: BaseException | None = None
            try:
                run = self._steps(
                    run,
                    plan,
                    matching,
                    commit,
                    dry_run=dry_run,
                    allow_mass_removal=allow_mass_removal,
                    plan_rows=plan_rows,
                )
            except _SourceError as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                run = _failed(commit.counted(run), cause)
                run = attrs.evolve(run, error=f"reading the members failed: {run.error}")
            except Exception as exc:
                run = _failed(commit.counted(run), exc)
                log.warning(
                    "import of cohort %s failed: %s", cohort_id, type(exc).__name__, extra=extra
                )
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: record, then re-raise
                run = attrs.evolve(
                    _failed(commit.counted(run), exc, "interrupted"),
                    error=f"interrupted: {type(exc).__name__}",
                )
                interrupted = exc
            run = self._finish(run, matching, plan, dry_run=dry_run)
            _metrics.record_run(run)
        if interrupted is not None:
            raise interrupted
        if notify and not dry_run:
            run = deliver(self._notifier, run, record_error=store.record_notification_error)
        return run

    def _steps(
        self,
        run: ImportRun,
        plan: _Plan,
        matching: _Matching,
        commit: _Commit,
        *,
        dry_run: bool,
        allow_mass_removal: bool,
        plan_rows: RowWriter | None,
    ) -> ImportRun:
        store = self._store
        cohort_id = run.cohort_id
        extra = _log_extra(run)
        if plan.workspace_changed and plan.full_resync is None:
            # Only sync_delta gets here: a delta cannot be right against an unseen workspace.
            elsewhere = WorkspaceChangedError(
                f"the state of cohort {cohort_id!r} describes another Braze workspace (endpoint, "
                "partner or data import key changed); a delta alone cannot be correct there: "
                "run a full sync of the cohort first"
            )
            log.warning(
                "import of cohort %s refused: WorkspaceChangedError", cohort_id, extra=extra
            )
            return _failed(run, elsewhere, "refused")
        with plan.compute(matching, store) as delta:
            log.info(
                "cohort %s: %d to add, %d to remove, %d rejected%s",
                cohort_id,
                delta.adds,
                delta.removes,
                sum(matching.rejected.values()),
                " (full resync)" if plan.full_resync else "",
                extra=extra,
            )
            if plan_rows is not None:
                for key in delta.iter_adds():
                    plan_rows.writerow(plan_row("add", key))
                for key in delta.iter_removes():
                    plan_rows.writerow(plan_row("remove", key))
            refusal = self._guard(cohort_id, matching, delta, allow_mass_removal)
            if dry_run:
                warnings = run.warnings + (
                    () if refusal is None else (f"a real import would be refused: {refusal}",)
                )
                return attrs.evolve(
                    run,
                    result="dry_run",
                    added=delta.adds,
                    removed=delta.removes,
                    warnings=warnings,
                )
            if refusal is not None:
                log.warning(
                    "import of cohort %s refused: %s",
                    cohort_id,
                    type(refusal).__name__,
                    extra=extra,
                )
                return _failed(run, refusal, "refused")
            self._name(run, plan, commit)
            if delta:
                if matching.on_phase is not None:
                    matching.on_phase(
                        PhaseProgress(
                            phase="send",
                            records=matching.matched + sum(matching.rejected.values()),
                            adds=delta.adds,
                            removes=delta.removes,
                        )
                    )
                store.mark_pending(cohort_id, delta)
                settle = getattr(store, "settle_pending", None)
                try:
                    report = self._uploader.upload(
                        cohort_id,
                        add=map(item_from_key, delta.iter_adds()),
                        remove=map(item_from_key, delta.iter_removes()),
                        progress=commit.progress,
                        on_batch_done=commit.done,
                    )
                except BaseException:
                    with contextlib.suppress(BrazeCohortsError):
                        commit.flush()
                        if settle is not None:
                            settle(cohort_id, complete=False)
                    raise
                commit.flush()
                if settle is not None:
                    settle(
                        cohort_id,
                        complete=not report.failed_batches and not commit.unapplied,
                    )
                run = commit.counted(run)
                run = attrs.evolve(run, added=report.added, removed=report.removed)
                if report.failed_batches:
                    # Their ids stay uncertain in the store: the next import re-sends them.
                    failed = report.failed_batches
                    stop = _stop_error(report)
                    return attrs.evolve(
                        _failed(run, stop or failed[0].error),
                        error=_failure_text(failed, report, commit.last.batches_done),
                    )
            else:
                run = commit.counted(run)
        if plan.workspace is not None and plan.full_resync is not None:
            store.bind_workspace(cohort_id, plan.workspace)
        elif plan.workspace is not None and store.workspace(cohort_id) is None:
            store.bind_workspace(cohort_id, plan.workspace)  # state written before binding
        if plan.full_resync is not None:
            store.record_full_resync(cohort_id, at=run.started_at)
        return attrs.evolve(run, result="succeeded")

    def _guard(
        self, cohort_id: str, matching: _Matching, delta: Delta, allow_mass_removal: bool
    ) -> BrazeCohortsError | None:
        """Why the plan must not be sent, or ``None``."""
        rejected = sum(matching.rejected.values())
        total = rejected + matching.matched
        if rejected and (
            matching.matched == 0
            or (self._max_reject is not None and rejected > self._max_reject * total)
        ):
            reasons = ", ".join(f"{n} {r}" for r, n in matching.rejected.most_common(5))
            return TooManyRejectedError(
                f"{rejected} of {total} record(s) could not be matched ({reasons}); nothing was "
                "sent. Check the input's encoding and identifier columns (rejects_out / "
                "--rejects-out lists every rejected record)",
                rejected=matching.rejected,
                matched=matching.matched,
            )
        removing = delta.held_removes
        if allow_mass_removal or self._max_remove is None or not removing:
            return None
        held = self._store.member_count(cohort_id)
        if held and removing > self._max_remove * held:
            return MassRemovalError(
                f"the import would remove {removing} of the {held} member(s) Braze holds "
                f"({removing / held:.0%}, more than the allowed {self._max_remove:.0%}); "
                "nothing was sent. If that is intended, pass allow_mass_removal=True "
                "(CLI: --allow-mass-removal)",
                removing=removing,
                held=held,
            )
        return None

    def _name(self, run: ImportRun, plan: _Plan, commit: _Commit) -> None:
        """Name the cohort in Braze unless this name was acknowledged there already."""
        store = self._store
        cohort_id = run.cohort_id
        if not plan.workspace_changed and store.known_name(cohort_id) == run.name:
            return
        created_at = None if plan.workspace_changed else store.created_at(cohort_id)
        created_at = created_at or run.started_at
        # Naming is retried and rate-limited like the batches: it is idempotent.
        self._uploader.call(
            commit.name(
                lambda: self._client.name_cohort(cohort_id, run.name, created_at=created_at)
            )
        )
        store.record_name(cohort_id, run.name, named_at=self._now(), created_at=created_at)
        log.info("cohort %s named", cohort_id, extra=_log_extra(run))

    def _finish(
        self, run: ImportRun, matching: _Matching, plan: _Plan, *, dry_run: bool
    ) -> ImportRun:
        store = self._store
        run = attrs.evolve(run, rejected=dict(matching.rejected), finished_at=self._now())
        try:
            run = attrs.evolve(run, users=store.member_count(run.cohort_id))
        except BrazeCohortsError as exc:
            log.error(
                "could not count the members of cohort %s: %s",
                run.cohort_id,
                exc,
                extra=_log_extra(run),
            )
        run = store.finish_run(run)
        log.info(
            "import of cohort %s %s: %d members acknowledged, %d added, %d removed, "
            "%d rejected, %d requests (%d retries)%s%s",
            run.cohort_id,
            run.result,
            run.users,
            run.added,
            run.removed,
            run.rejected_total,
            run.requests,
            run.retries,
            f", full resync ({plan.full_resync})" if plan.full_resync else "",
            " (dry run)" if dry_run else "",
            extra=_log_extra(run),
        )
        return run
