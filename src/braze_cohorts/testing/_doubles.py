"""In-memory test doubles: a fake client, a memory store and a settable clock.

Each double is small, thread-safe and honest about the contract it stands in for:

* :class:`FakeClient` is a :class:`~braze_cohorts.typing.SyncClient` that keeps each cohort's
  members in memory, records every request, fails on cue and can ignore unknown users the way
  Braze does;
* :class:`MemoryStore` is a :class:`~braze_cohorts.typing.StateStore` *and* a
  :class:`~braze_cohorts.typing.ScheduleStore` with the contract of
  :class:`~braze_cohorts.SQLiteStore` (the project's store tests run against both);
* :class:`SettableClock` is a :data:`~braze_cohorts.typing.Clock` that moves only when told.

They need no socket and no file; the :class:`~braze_cohorts.testing.BrazeEmulator` is the double
to use where the HTTP wire matters.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import attrs

from braze_cohorts import (
    CohortResponse,
    ConnectionProfile,
    Delta,
    ImportRun,
    LockInfo,
    ScheduledImport,
    ScheduleState,
    UserRef,
    _delta,
    as_ref,
)

# MemoryStore computes its deltas with the library's own diff, so that both stores share one
# algorithm and the store contract tests check the storage, not two diffs: _delta is the one
# private module braze_cohorts.testing uses.
from braze_cohorts._delta import BUCKETS_PER_PART, bucket, bucket_rows
from braze_cohorts.exceptions import (
    BatchTooLargeError,
    ConfigurationError,
    ImportInProgressError,
    InputError,
    ScheduleConflictError,
    StoreError,
    TransportError,
)

if TYPE_CHECKING:
    from braze_cohorts.typing import Clock, ProfileStore, ScheduleStore, StateStore, SyncClient

__all__ = ["FakeCall", "FakeClient", "MemoryStore", "SettableClock"]

_UTC = dt.timezone.utc
#: The most ids one request may carry, as for the real client.
_MAX_IDS = 1000
_INTERRUPTED = "interrupted: the process running it stopped"
#: Where a SettableClock starts unless told otherwise.
_START = dt.datetime(2026, 1, 1, tzinfo=_UTC)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


def _aware(moment: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime")
    return moment.astimezone(_UTC)


# --------------------------------------------------------------------------------------------
# SettableClock
# --------------------------------------------------------------------------------------------


class SettableClock:
    """A clock that returns the time it was set to, and moves only when told (or per ``tick``).

    Pass it as ``clock=`` to :class:`~braze_cohorts.CohortSync`,
    :class:`~braze_cohorts.Scheduler` or a store. Thread-safe.

    Args:
        start: The first time it returns (timezone-aware; kept in UTC).
        tick: Advance by this much after every call (``None``: never by itself). Makes each
            reading strictly later than the one before, as a real clock's would be.

    Raises:
        ConfigurationError: If ``start`` is naive or ``tick`` is negative.

    Example:
        >>> import datetime as dt
        >>> clock = SettableClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc))
        >>> clock().isoformat()
        '2026-01-05T09:00:00+00:00'
        >>> clock.advance(days=7).isoformat()
        '2026-01-12T09:00:00+00:00'
        >>> clock.set(dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)).isoformat()
        '2026-02-01T00:00:00+00:00'
    """

    def __init__(
        self,
        start: dt.datetime = _START,
        *,
        tick: dt.timedelta | None = None,
    ) -> None:
        if tick is not None and tick < dt.timedelta(0):
            raise ConfigurationError("tick must not be negative")
        self._now = _aware(start, "start")
        self._tick = tick
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SettableClock({self._now.isoformat()!r}, tick={self._tick!r})"

    def __call__(self) -> dt.datetime:
        with self._lock:
            now = self._now
            if self._tick is not None:
                self._now += self._tick
            return now

    @property
    def now(self) -> dt.datetime:
        """What the next call returns, without advancing."""
        with self._lock:
            return self._now

    def set(self, moment: dt.datetime) -> dt.datetime:
        """Set the time (it may go backwards); return it.

        Raises:
            ConfigurationError: If ``moment`` is naive.
        """
        moment = _aware(moment, "moment")
        with self._lock:
            self._now = moment
        return moment

    def advance(self, delta: dt.timedelta | None = None, /, **kwargs: float) -> dt.datetime:
        """Move the time forward by ``delta`` or by ``timedelta(**kwargs)``; return the new time.

        Example:
            >>> SettableClock().advance(hours=1, minutes=30).isoformat()
            '2026-01-01T01:30:00+00:00'
        """
        step = (delta or dt.timedelta(0)) + dt.timedelta(**kwargs)
        with self._lock:
            self._now += step
            return self._now


# --------------------------------------------------------------------------------------------
# FakeClient
# --------------------------------------------------------------------------------------------

Endpoint = Literal["name", "update"]


@attrs.frozen(slots=True, kw_only=True)
class FakeCall:
    """One request a :class:`FakeClient` received (failed ones included).

    Attributes:
        kind: ``"name"`` (``name_cohort``) or ``"update"`` (``update_members``).
        cohort_id: The cohort.
        workspace: The client's ``workspace`` when the request was made.
        name: The name sent (naming only).
        created_at: The ``created_at`` sent (naming only; ``None`` when not given).
        add: Canonical keys sent as adds, in order, each once.
        remove: Canonical keys sent as removes, in order, each once.
    """

    kind: Endpoint
    cohort_id: str
    workspace: str
    name: str | None = None
    created_at: dt.datetime | None = None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@attrs.frozen(slots=True)
class _LoseAnswer:
    """Apply the request, then raise an outcome-unknown TransportError."""


@attrs.frozen(slots=True)
class _WithErrors:
    """Apply the request, then answer 2XX carrying ``errors``."""

    errors: tuple[object, ...]


_Fault = BaseException | _LoseAnswer | _WithErrors


@attrs.define(slots=True)
class _Cohort:
    name: str | None = None
    created_at: dt.datetime | None = None
    members: set[str] = attrs.field(factory=set)


def _keys(users: Iterable[UserRef | str]) -> list[str]:
    seen: dict[str, None] = {}
    for user in users:
        seen.setdefault(as_ref(user).key)
    return list(seen)


def _check_endpoint(on: str) -> Endpoint:
    if on not in ("name", "update"):
        raise ConfigurationError(f"on must be 'name' or 'update', not {on!r}")
    return on  # type: ignore[return-value]


class FakeClient:
    """An in-memory Braze for ``CohortSync`` and ``BatchUploader``: cohorts, calls, faults.

    It satisfies :class:`~braze_cohorts.typing.SyncClient`. Like the real client it refuses more
    than 1,000 ids in one request (:class:`~braze_cohorts.BatchTooLargeError`) and a user both in
    ``add`` and ``remove`` (:class:`~braze_cohorts.ConfigurationError`), sends nothing (and
    records nothing) for an empty update, and validates every identifier. Cohorts are kept per
    ``workspace``: set the attribute to simulate credentials of another Braze workspace, whose
    cohorts start empty and unnamed. Thread-safe.

    Faults are queued per endpoint (``on="update"`` or ``on="name"``) and used in order, one per
    request: :meth:`fail_next` raises an error without applying anything, :meth:`lose_answer_next`
    applies the request and then raises an outcome-unknown :class:`~braze_cohorts.TransportError`
    (a dropped connection), :meth:`answer_with_errors_next` applies it and answers 2XX with
    Braze's ``errors``.

    Braze silently ignores ids of users it does not know. Pass ``existing_users`` to model that:
    only those users can enter a cohort (the request still succeeds), and :meth:`add_existing`
    creates users later. Without it every user exists.

    Args:
        workspace: The workspace fingerprint the client reports (``CohortSync`` binds state to
            it).
        existing_users: The users that exist in Braze (identifiers or plain external ids), or
            ``None`` when every user exists.
        clock: Gives ``created_at`` when ``name_cohort`` is called without one.

    Example:
        >>> client = FakeClient(existing_users=["u1", "u2"])
        >>> client.name_cohort("c1", "Power users").message
        'success'
        >>> client.update_members("c1", add=["u1", "u3"]).status_code
        200
        >>> sorted(client.members("c1"))  # u3 does not exist in Braze: silently ignored
        ['e:u1']
        >>> client.fail_next(TimeoutError("no answer"))
        >>> client.update_members("c1", remove=["u1"])
        Traceback (most recent call last):
          ...
        TimeoutError: no answer
        >>> [(c.kind, c.add, c.remove) for c in client.calls]
        [('name', (), ()), ('update', ('e:u1', 'e:u3'), ()), ('update', (), ('e:u1',))]
    """

    def __init__(
        self,
        *,
        workspace: str = "fake-workspace",
        existing_users: Iterable[UserRef | str] | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.workspace = workspace
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: list[FakeCall] = []
        self._faults: dict[Endpoint, list[_Fault]] = {"name": [], "update": []}
        self._cohorts: dict[tuple[str, str], _Cohort] = {}
        self._existing: set[str] | None = (
            None if existing_users is None else set(_keys(existing_users))
        )

    def __repr__(self) -> str:
        return f"FakeClient(workspace={self.workspace!r}, calls={len(self._calls)})"

    # -- the SyncClient protocol ---------------------------------------------------------------

    def name_cohort(
        self, cohort_id: str, name: str, created_at: dt.datetime | None = None
    ) -> CohortResponse:
        """Create or rename a cohort in the current workspace, or fail as queued.

        Raises:
            ConfigurationError: If ``cohort_id`` or ``name`` is blank or ``created_at`` naive
                (nothing recorded).
        """
        if not isinstance(cohort_id, str) or not cohort_id.strip():
            raise ConfigurationError("cohort_id must be a non-blank str")
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("name must be a non-blank str")
        sent = None if created_at is None else _aware(created_at, "created_at")
        with self._lock:
            workspace = self.workspace
            self._calls.append(
                FakeCall(
                    kind="name",
                    cohort_id=cohort_id,
                    workspace=workspace,
                    name=name,
                    created_at=sent,
                )
            )
            fault = self._next_fault("name")
            if isinstance(fault, BaseException):
                raise fault
            cohort = self._cohorts.setdefault((workspace, cohort_id), _Cohort())
            cohort.name = name
            cohort.created_at = sent if sent is not None else _aware(self._clock(), "clock()")
        return self._answer(fault, 201)

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        """Add and remove users of a cohort in the current workspace, or fail as queued.

        Returns:
            The answer, or ``None`` when there was nothing to send (nothing recorded).

        Raises:
            BatchTooLargeError: If more than 1,000 distinct ids were given (nothing recorded).
            ConfigurationError: If a user is both in ``add`` and ``remove`` (nothing recorded).
            InvalidIdentifierError: If an item is not a valid identifier (nothing recorded).
        """
        if not isinstance(cohort_id, str) or not cohort_id.strip():
            raise ConfigurationError("cohort_id must be a non-blank str")
        adds = _keys(add)
        removes = _keys(remove)
        if set(adds) & set(removes):
            raise ConfigurationError(
                "the same user is both in add and in remove; send one or the other"
            )
        if len(adds) + len(removes) > _MAX_IDS:
            raise BatchTooLargeError(
                f"more than {_MAX_IDS} ids in one request; Braze accepts at most {_MAX_IDS}",
                limit=_MAX_IDS,
            )
        if not adds and not removes:
            return None
        with self._lock:
            workspace = self.workspace
            self._calls.append(
                FakeCall(
                    kind="update",
                    cohort_id=cohort_id,
                    workspace=workspace,
                    add=tuple(adds),
                    remove=tuple(removes),
                )
            )
            fault = self._next_fault("update")
            if isinstance(fault, BaseException):
                raise fault
            members = self._cohorts.setdefault((workspace, cohort_id), _Cohort()).members
            existing = self._existing
            members.update(adds if existing is None else (k for k in adds if k in existing))
            members.difference_update(removes)
        return self._answer(fault, 200)

    def _next_fault(self, on: Endpoint) -> _Fault | None:
        queue = self._faults[on]
        return queue.pop(0) if queue else None

    @staticmethod
    def _answer(fault: _Fault | None, status: int) -> CohortResponse:
        if isinstance(fault, _LoseAnswer):
            raise TransportError(
                "connection reset after the request was sent (fake)", outcome_unknown=True
            )
        errors = fault.errors if isinstance(fault, _WithErrors) else ()
        return CohortResponse(status_code=status, message="success", errors=errors)

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, *errors: BaseException, on: Endpoint = "update") -> None:
        """Raise each of ``errors``, in order, from the next requests; nothing is applied.

        Args:
            errors: The exceptions to raise (e.g. ``ServerError("down", status_code=503)``).
            on: Which method they fail: ``"update"`` or ``"name"``.
        """
        queue = self._faults[_check_endpoint(on)]
        with self._lock:
            queue.extend(errors)

    def lose_answer_next(self, n: int = 1, *, on: Endpoint = "update") -> None:
        """Apply the next ``n`` requests, then raise an outcome-unknown ``TransportError``."""
        queue = self._faults[_check_endpoint(on)]
        with self._lock:
            queue.extend(_LoseAnswer() for _ in range(n))

    def answer_with_errors_next(
        self, errors: Sequence[object], n: int = 1, *, on: Endpoint = "update"
    ) -> None:
        """Apply the next ``n`` requests and answer 2XX with Braze's ``errors`` list."""
        queue = self._faults[_check_endpoint(on)]
        with self._lock:
            queue.extend(_WithErrors(tuple(errors)) for _ in range(n))

    def pass_next(self, n: int = 1, *, on: Endpoint = "update") -> None:
        """Queue ``n`` ordinary answers before the faults queued after this call."""
        queue = self._faults[_check_endpoint(on)]
        with self._lock:
            queue.extend(_WithErrors(()) for _ in range(n))

    def clear_faults(self) -> None:
        """Forget every fault still queued."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    # -- the world -----------------------------------------------------------------------------

    def add_existing(self, *users: UserRef | str) -> None:
        """Create users in Braze (later imports of them count; earlier ones were ignored).

        Raises:
            ConfigurationError: If the client was made without ``existing_users`` (every user
                exists already).
        """
        keys = _keys(users)
        with self._lock:
            if self._existing is None:
                raise ConfigurationError(
                    "every user exists: pass existing_users=... to FakeClient to model users "
                    "that Braze does not know yet"
                )
            self._existing.update(keys)

    def edit_out_of_band(
        self,
        cohort_id: str,
        *,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
        workspace: str | None = None,
    ) -> None:
        """Change a cohort's members as someone in the Braze dashboard would: not recorded."""
        adds, removes = _keys(add), _keys(remove)
        with self._lock:
            key = (self.workspace if workspace is None else workspace, cohort_id)
            members = self._cohorts.setdefault(key, _Cohort()).members
            members.update(adds)
            members.difference_update(removes)

    # -- inspection ----------------------------------------------------------------------------

    @property
    def calls(self) -> list[FakeCall]:
        """Every request received, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        """Forget the calls recorded so far."""
        with self._lock:
            self._calls.clear()

    def updates(self) -> list[FakeCall]:
        """The ``update_members`` calls, oldest first."""
        return [c for c in self.calls if c.kind == "update"]

    def namings(self) -> list[FakeCall]:
        """The ``name_cohort`` calls, oldest first."""
        return [c for c in self.calls if c.kind == "name"]

    def sent(self) -> tuple[set[str], set[str]]:
        """Every key sent as an add, and every key sent as a remove (over all calls)."""
        adds: set[str] = set()
        removes: set[str] = set()
        for call in self.updates():
            adds.update(call.add)
            removes.update(call.remove)
        return adds, removes

    def _cohort(self, cohort_id: str, workspace: str | None) -> _Cohort | None:
        with self._lock:
            return self._cohorts.get(
                (self.workspace if workspace is None else workspace, cohort_id)
            )

    def members(self, cohort_id: str, *, workspace: str | None = None) -> frozenset[str]:
        """The canonical keys the cohort holds (in the current workspace by default)."""
        cohort = self._cohort(cohort_id, workspace)
        with self._lock:
            return frozenset(() if cohort is None else cohort.members)

    def name(self, cohort_id: str, *, workspace: str | None = None) -> str | None:
        """The cohort's name, or ``None`` if it was never named there."""
        cohort = self._cohort(cohort_id, workspace)
        return None if cohort is None else cohort.name

    def created_at(self, cohort_id: str, *, workspace: str | None = None) -> dt.datetime | None:
        """The ``created_at`` of the cohort's latest naming, or ``None``."""
        cohort = self._cohort(cohort_id, workspace)
        return None if cohort is None else cohort.created_at


# --------------------------------------------------------------------------------------------
# MemoryStore
# --------------------------------------------------------------------------------------------


@attrs.define(slots=True)
class _State:
    name: str | None = None
    named_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    workspace: str | None = None
    full_resync_at: dt.datetime | None = None
    #: Held key -> when it entered (UTC epoch seconds, as SQLiteStore keeps it) or None.
    held: dict[str, int | None] = attrs.field(factory=dict)
    #: Uncertain key -> True when last sent as an add, False as a remove.
    pending: dict[str, bool] = attrs.field(factory=dict)


@attrs.frozen(slots=True)
class _Lock:
    pid: int
    host: str
    acquired_at: dt.datetime
    run_id: int


def _stored(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StoreError("datetimes given to the store must be timezone-aware")
    return moment.astimezone(_UTC)


def _stored_run(run: ImportRun, run_id: int) -> ImportRun:
    started = _stored(run.started_at)
    assert started is not None
    return attrs.evolve(
        run,
        id=run_id,
        started_at=started,
        finished_at=_stored(run.finished_at),
        rejected=dict(run.rejected),
    )


class MemoryStore:
    """A ``StateStore`` and ``ScheduleStore`` in memory, with ``SQLiteStore``'s contract.

    Everything ``SQLiteStore`` keeps — names and ``created_at``, the snapshot with entry times,
    uncertain ids, runs and history, the per-cohort import lock, the workspace binding, the last
    full resync, schedules — lives in dictionaries behind one lock, and is lost with the
    object. Its deltas are computed by the same :func:`braze_cohorts._delta.diff` as the SQLite
    store's. The import lock refuses a second live import of a cohort with
    :class:`~braze_cohorts.ImportInProgressError`, naming this process as the holder.

    It also has ``SQLiteStore``'s inspection methods (``snapshot_keys``, ``pending_keys``,
    ``pending_count``, ``get_run``, ``lock_holder``, ``break_lock``, ``close``).

    Args:
        clock: Returns the current time (aware); time-stamps interrupted runs.

    Example:
        >>> store = MemoryStore()
        >>> store.apply_batch("c1", added=["e:u1", "e:u2"])
        >>> with store.diff("c1", ["e:u2", "e:u3"]) as delta:
        ...     sorted(delta.iter_adds()), sorted(delta.iter_removes())
        (['e:u3'], ['e:u1'])
        >>> store.member_count("c1")
        2
    """

    def __init__(self, *, clock: Clock = _utcnow) -> None:
        self._clock = clock
        self._mutex = threading.RLock()
        self._cohorts: dict[str, _State] = {}
        self._runs: dict[int, ImportRun] = {}
        self._locks: dict[str, _Lock] = {}
        self._schedules: dict[str, ScheduledImport] = {}
        self._profiles: dict[str, ConnectionProfile] = {}
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"MemoryStore(cohorts={len(self._cohorts)}, runs={len(self._runs)})"

    def close(self) -> None:
        """Nothing to release; here so code written for ``SQLiteStore`` works unchanged."""

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _state(self, cohort_id: str) -> _State:
        state = self._cohorts.get(cohort_id)
        if state is None:
            state = self._cohorts[cohort_id] = _State()
        return state

    # -- runs and the lock ---------------------------------------------------------------------

    def start_run(self, run: ImportRun) -> ImportRun:
        """Take the cohort's import lock and record ``run`` as running; return it with its id.

        A run of the cohort still shown as running without the lock is marked ``interrupted``.

        Raises:
            ImportInProgressError: If an import of the same cohort holds the lock.
            StoreError: If a time is naive.
        """
        now = _stored(self._clock())
        with self._mutex:
            started = _stored(run.started_at)
            assert started is not None
            self._state(run.cohort_id)
            held = self._locks.get(run.cohort_id)
            if held is not None:
                raise ImportInProgressError(
                    f"cohort {run.cohort_id!r} is already being imported (run {held.run_id}, "
                    f"process {held.pid} on {held.host}, since {held.acquired_at.isoformat()}); "
                    "try again when it has finished"
                )
            for old in self._runs.values():
                if old.cohort_id == run.cohort_id and old.result == "running":
                    self._runs[old.id or 0] = attrs.evolve(
                        old,
                        result="interrupted",
                        finished_at=now,
                        error=_INTERRUPTED,
                        error_kind=None,
                    )
            run = attrs.evolve(run, result="running", finished_at=None)
            run_id = len(self._runs) + 1
            self._runs[run_id] = _stored_run(run, run_id)
            self._locks[run.cohort_id] = _Lock(os.getpid(), self._host, started, run_id)
        return attrs.evolve(run, id=run_id)

    def _update(self, run: ImportRun, method: str) -> None:
        """Store ``run`` over its earlier record; the caller holds the mutex."""
        if run.id is None:
            raise StoreError(f"{method}() needs a run returned by start_run()")
        if run.id not in self._runs:
            raise StoreError(f"no run {run.id} in the state store")
        self._runs[run.id] = _stored_run(run, run.id)

    def update_run(self, run: ImportRun) -> None:
        """Record a running run's counts so far; its lock stays held.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._mutex:
            self._update(run, "update_run")

    def finish_run(self, run: ImportRun) -> ImportRun:
        """Record ``run``'s final state and release the cohort's lock it holds.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._mutex:
            self._update(run, "finish_run")
            held = self._locks.get(run.cohort_id)
            if held is not None and held.run_id == run.id:
                del self._locks[run.cohort_id]
        return run

    def record_notification_error(self, run_id: int, error: str) -> None:
        """Note on a finished run why its notification could not be sent.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._mutex:
            run = self._runs.get(run_id)
            if run is None:
                raise StoreError(f"no run {run_id} in the state store")
            self._runs[run_id] = attrs.evolve(run, notification_error=error)

    def get_run(self, run_id: int) -> ImportRun | None:
        """The run with id ``run_id``, or ``None``."""
        with self._mutex:
            return self._runs.get(run_id)

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's runs, newest first (at most ``limit``)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        with self._mutex:
            runs = [r for r in reversed(self._runs.values()) if r.cohort_id == cohort_id]
        return runs if limit is None else runs[:limit]

    def lock_holder(self, cohort_id: str) -> LockInfo | None:
        """Who holds the cohort's import lock (always this process), or ``None``."""
        with self._mutex:
            held = self._locks.get(cohort_id)
        if held is None:
            return None
        return LockInfo(
            cohort_id=cohort_id,
            pid=held.pid,
            host=held.host,
            acquired_at=held.acquired_at,
            run_id=held.run_id,
        )

    def break_lock(self, cohort_id: str) -> bool:
        """Release a cohort's lock, marking its running runs ``interrupted``; ``True`` if held."""
        now = _stored(self._clock())
        with self._mutex:
            held = self._locks.pop(cohort_id, None)
            for old in list(self._runs.values()):
                if old.cohort_id == cohort_id and old.result == "running":
                    self._runs[old.id or 0] = attrs.evolve(
                        old, result="interrupted", finished_at=now, error=_INTERRUPTED
                    )
            return held is not None

    # -- names, workspace, resyncs -------------------------------------------------------------

    def known_name(self, cohort_id: str) -> str | None:
        """The name Braze acknowledged for the cohort, or ``None``."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return None if state is None else state.name

    def created_at(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort was first named in its workspace, or ``None``."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return None if state is None else state.created_at

    def record_name(
        self,
        cohort_id: str,
        name: str,
        *,
        named_at: dt.datetime,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Remember that Braze acknowledged ``name``; ``created_at`` is kept when ``None``."""
        named = _stored(named_at)
        sent = _stored(created_at)
        with self._mutex:
            state = self._state(cohort_id)
            state.name = name
            state.named_at = named
            state.created_at = sent or state.created_at or named

    def workspace(self, cohort_id: str) -> str | None:
        """The workspace fingerprint the cohort's snapshot describes, or ``None``."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return None if state is None else state.workspace

    def bind_workspace(self, cohort_id: str, workspace: str | None) -> None:
        """Say that the cohort's snapshot now describes ``workspace``."""
        with self._mutex:
            self._state(cohort_id).workspace = workspace

    def last_full_resync(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort's last full resync succeeded, or ``None``."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return None if state is None else state.full_resync_at

    def record_full_resync(self, cohort_id: str, *, at: dt.datetime) -> None:
        """Remember that a full resync of the cohort succeeded at ``at``."""
        moment = _stored(at)
        with self._mutex:
            self._state(cohort_id).full_resync_at = moment

    # -- membership ----------------------------------------------------------------------------

    def member_count(self, cohort_id: str) -> int:
        """How many members Braze is known to hold (the snapshot's size)."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return 0 if state is None else len(state.held)

    def pending_count(self, cohort_id: str) -> int:
        """How many ids are uncertain."""
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            return 0 if state is None else len(state.pending)

    def _ordered(self, cohort_id: str, pending: bool) -> Iterator[str]:
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            keys = [] if state is None else list(state.pending if pending else state.held)
        return (key for _, key in bucket_rows(keys))

    def snapshot_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the members Braze is known to hold (in SQLiteStore's order)."""
        return self._ordered(cohort_id, pending=False)

    def pending_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the uncertain ids (in SQLiteStore's order)."""
        return self._ordered(cohort_id, pending=True)

    def apply_batch(
        self,
        cohort_id: str,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        *,
        entered_at: dt.datetime | None = None,
    ) -> None:
        """Apply one acknowledged request to the snapshot and clear its keys from pending.

        ``entered_at`` stamps added keys that were not held yet (a held key keeps its stamp).
        """
        adds, removes = list(added), list(removed)
        entered = None if entered_at is None else int(entered_at.timestamp())
        with self._mutex:
            state = self._state(cohort_id)
            for key in adds:
                state.held.setdefault(key, entered)
            for key in removes:
                state.held.pop(key, None)
            for key in adds + removes:
                state.pending.pop(key, None)

    def mark_pending(self, cohort_id: str, delta: Delta) -> None:
        """Record every key of ``delta`` as uncertain, with the change about to be sent."""
        adds, removes = list(delta.iter_adds()), list(delta.iter_removes())
        with self._mutex:
            pending = self._state(cohort_id).pending
            pending.update(dict.fromkeys(adds, True))
            pending.update(dict.fromkeys(removes, False))

    def diff(
        self,
        cohort_id: str,
        desired: Iterable[str],
        *,
        full: bool = False,
        resend_since: dt.datetime | None = None,
    ) -> Delta:
        """What to send so that Braze holds exactly ``desired``: ``SQLiteStore.diff``'s contract.

        Entry times older than ``resend_since`` are forgotten (the only write it makes).
        """
        with self._mutex:
            state = self._cohorts.get(cohort_id)
            if state is None:
                return _delta.diff(desired, stored=0, read=None, full=full)
            recent: set[str] = set()
            if resend_since is not None and not full:
                since = int(resend_since.timestamp())
                for key, entered in state.held.items():
                    if entered is not None and entered < since:
                        state.held[key] = None
                    elif entered is not None:
                        recent.add(key)
            held = list(state.held)
            unsure = set(state.pending)
        parts: dict[int, tuple[list[str], set[str], set[str]]] = {}

        def group(key: str) -> tuple[list[str], set[str], set[str]]:
            return parts.setdefault(bucket(key) // BUCKETS_PER_PART, ([], set(), set()))

        def read(part: int | None) -> tuple[list[str], set[str], set[str]]:
            if part is None:
                return held, unsure, recent
            if not parts:  # group once, the first time the diff goes partition by partition
                for key in held:
                    group(key)[0].append(key)
                for key in unsure:
                    group(key)[1].add(key)
                for key in recent:
                    group(key)[2].add(key)
            return parts.get(part, ([], set(), set()))

        return _delta.diff(desired, stored=len(held) + len(unsure), read=read, full=full)

    def diff_changes(self, cohort_id: str, entered: Iterable[str], left: Iterable[str]) -> Delta:
        """What to send for a caller's delta: ``SQLiteStore.diff_changes``'s contract.

        Raises:
            InputError: If a key is both in ``entered`` and in ``left``.
        """
        given: dict[str, bool] = {}
        both: set[str] = set()
        for op, keys in ((True, entered), (False, left)):
            for key in keys:
                if given.setdefault(key, op) != op:
                    both.add(key)
        if both:
            raise InputError(
                f"{len(both)} id(s) are both in entered and in left; a user either entered or left"
            )
        with self._mutex:
            state = self._state(cohort_id)
            held, pending = dict(state.held), dict(state.pending)
        adds = [k for k, op in given.items() if op and (k in pending or k not in held)]
        adds += [k for k, op in pending.items() if op and k not in given]
        removes = [k for k, op in given.items() if not op and (k in pending or k in held)]
        removes += [k for k, op in pending.items() if not op and k not in given]
        delta = Delta.from_keys(adds, removes)
        delta.held_removes = sum(
            1 for k in held if given.get(k) is False or (k not in given and pending.get(k) is False)
        )
        return delta

    # -- schedules -----------------------------------------------------------------------------

    def put_profile(self, profile: ConnectionProfile, *, replace: bool = False) -> None:
        """Store a connection profile.

        Raises:
            ConfigurationError: If a profile of that name exists and not ``replace``.
        """
        if not isinstance(profile, ConnectionProfile):
            raise ConfigurationError("put_profile needs a ConnectionProfile")
        with self._mutex:
            if profile.name in self._profiles and not replace:
                raise ConfigurationError(
                    f"a profile called {profile.name!r} exists already; replace it with "
                    "replace=True (CLI: --replace)"
                )
            self._profiles[profile.name] = profile

    def get_profile(self, name: str) -> ConnectionProfile | None:
        """The profile called ``name``, or ``None``."""
        with self._mutex:
            return self._profiles.get(name)

    def list_profiles(self) -> list[ConnectionProfile]:
        """Every profile, by name."""
        with self._mutex:
            return [self._profiles[k] for k in sorted(self._profiles)]

    def delete_profile(self, name: str) -> bool:
        """Delete the profile called ``name``; ``False`` if there is none."""
        with self._mutex:
            return self._profiles.pop(name, None) is not None

    def put_schedule(self, entry: ScheduledImport, *, replace: bool = False) -> None:
        """Store a cohort's schedule (one live schedule per cohort; a done one may be replaced).

        Raises:
            ScheduleConflictError: If the cohort has a live schedule and not ``replace``.
        """
        with self._mutex:
            old = self._schedules.get(entry.cohort_id)
            if old is not None and old.state != "done" and not replace:
                raise ScheduleConflictError(
                    f"cohort {entry.cohort_id!r} already has a live schedule; replace it with "
                    "replace=True (CLI: --replace)"
                )
            self._schedules[entry.cohort_id] = entry

    def get_schedule(self, cohort_id: str) -> ScheduledImport | None:
        """The cohort's schedule, or ``None``."""
        with self._mutex:
            return self._schedules.get(cohort_id)

    def list_schedules(self) -> list[ScheduledImport]:
        """Every schedule, by cohort id."""
        with self._mutex:
            return [self._schedules[k] for k in sorted(self._schedules)]

    def delete_schedule(self, cohort_id: str) -> bool:
        """Delete the cohort's schedule; ``False`` if it had none."""
        with self._mutex:
            return self._schedules.pop(cohort_id, None) is not None

    def due_schedules(self, now: dt.datetime) -> list[ScheduledImport]:
        """Active schedules due at or before ``now``, earliest first."""
        with self._mutex:
            due = [
                e
                for e in self._schedules.values()
                if e.state == "active" and e.next_due is not None and e.next_due <= now
            ]
        return sorted(due, key=lambda e: (e.next_due, e.cohort_id))

    def next_due(self) -> dt.datetime | None:
        """The earliest ``next_due`` of the active schedules, or ``None`` when none is active."""
        with self._mutex:
            dues = [
                e.next_due
                for e in self._schedules.values()
                if e.state == "active" and e.next_due is not None
            ]
        return min(dues, default=None)

    def claim_schedule(
        self, cohort_id: str, *, expected_due: dt.datetime, next_due: dt.datetime | None
    ) -> bool:
        """Atomically move an active schedule's due time from ``expected_due`` to ``next_due``."""
        with self._mutex:
            entry = self._schedules.get(cohort_id)
            if entry is None or entry.state != "active" or entry.next_due != expected_due:
                return False
            self._schedules[cohort_id] = attrs.evolve(
                entry, next_due=next_due, state="active" if next_due is not None else "done"
            )
            return True

    def update_schedule(
        self,
        cohort_id: str,
        *,
        state: ScheduleState,
        paused_reason: str | None,
        next_due: dt.datetime | None,
    ) -> None:
        """Set the state, pause reason and due time of the cohort's schedule."""
        with self._mutex:
            entry = self._schedules.get(cohort_id)
            if entry is not None:
                self._schedules[cohort_id] = attrs.evolve(
                    entry, state=state, paused_reason=paused_reason, next_due=next_due
                )

    def set_schedule_last_run(self, cohort_id: str, run_id: int | None) -> None:
        """Remember the id of the schedule's latest import."""
        with self._mutex:
            entry = self._schedules.get(cohort_id)
            if entry is not None:
                self._schedules[cohort_id] = attrs.evolve(entry, last_run_id=run_id)


if TYPE_CHECKING:

    def _memory_store_is_a_state_store(store: MemoryStore) -> StateStore:
        return store

    def _memory_store_is_a_profile_store(store: MemoryStore) -> ProfileStore:
        return store

    def _memory_store_is_a_schedule_store(store: MemoryStore) -> ScheduleStore:
        return store

    def _fake_client_is_a_sync_client(client: FakeClient) -> SyncClient:
        return client

    def _settable_clock_is_a_clock(clock: SettableClock) -> Clock:
        return clock
