"""SQLiteStore: what the sync engine remembers between imports, in one SQLite file.

Per cohort the store keeps the name Braze knows, the *snapshot* (the members Braze is known to
hold), the *pending* ids (sent in a request whose outcome is unknown, or about to be sent), the
import history and a lock that lets one import of a cohort run at a time across threads and
processes.

Layout (schema version 7, ``PRAGMA user_version``; ``docs/store.md`` has every column)::

    cohorts  (id INTEGER PK, cohort_id TEXT UNIQUE, name, named_at, members, created_at,
              workspace, full_resync_at)
    snapshot (cid, bucket, key, entered)  PK (cid, bucket, key)  WITHOUT ROWID
    pending  (cid, bucket, key, op)       PK (cid, bucket, key)  WITHOUT ROWID  op: 1 add, 0 remove
    marks    (cid, seq, acked, keys)      PK (cid, seq)  a running import's adds and acks, in bulk
    budgets  (workspace PK, next_start, hold_until, starts)  (see braze_cohorts._budget)
    runs     (id INTEGER PK, every ImportRun field; rejected and warnings as JSON)
    locks    (cohort_id PK, owner, pid, host, acquired_at, run_id)
    schedules (cohort_id PK, name, spec JSON, source, recipients JSON, state, paused_reason,
               next_due, last_run_id, updated_at,         (see braze_cohorts._scheduler)
               notify_when JSON, webhook_env, webhook_format,          (version 5)
               profile, resync_every)                                  (version 6)
    profiles (name PK, endpoint, partner, partner_api_key_env, partner_api_key_file,
              data_import_key_env, data_import_key_file, updated_at)   (version 6)

``entered`` stamps a member that entered recently (UTC epoch seconds), while it is recent; the
sync engine re-sends such members (``diff(resend_since=)``).

``key`` is an identifier's canonical key and ``bucket`` the top 10 bits of its CRC-32: keys of
one cohort are clustered by bucket, so the delta of a very large cohort is computed partition
by partition (256 partitions of 4 buckets each, :mod:`braze_cohorts._delta`), each partition
diffed with small in-memory sets while the desired keys are spilled to temporary files. Memory
stays bounded by the size of one partition, whatever the size of the cohort.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import logging
import os
import socket
import sqlite3
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import attrs

from braze_cohorts import _delta
from braze_cohorts._delta import Delta, bucket, bucket_rows, chunks, part_buckets
from braze_cohorts._models import FullResyncReason, ImportRun, RunResult, Trigger
from braze_cohorts._profiles import ConnectionProfile
from braze_cohorts._schedule import (
    NOTIFY_ALWAYS,
    RESYNC_OFF,
    NotifyRule,
    Schedule,
    ScheduledImport,
    ScheduleState,
    source_from_text,
    source_to_text,
)
from braze_cohorts.exceptions import (
    ConfigurationError,
    ImportInProgressError,
    InputError,
    ScheduleConflictError,
    StoreError,
)

__all__ = ["Delta", "LockInfo", "SQLiteStore"]

log = logging.getLogger(__name__)

#: The schema version this module writes; older files are migrated on open.
SCHEMA_VERSION = 7

#: Rows written per transaction when marking a large delta pending.
_PENDING_TX_ROWS = 200_000
#: Adds per row of ``marks``, and rows of ``marks`` per transaction.
_MARK_KEYS = 65_536
_MARK_TX_CHUNKS = 4
#: A budget's next free start further ahead than this many seconds is forgotten.
_BUDGET_HORIZON = 300.0

_INTERRUPTED = "interrupted: the process running it stopped"

Clock = Callable[[], dt.datetime]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE cohorts (
            id INTEGER PRIMARY KEY,
            cohort_id TEXT NOT NULL UNIQUE,
            name TEXT,
            named_at TEXT,
            members INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE snapshot (
            cid INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (cid, bucket, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE pending (
            cid INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            key TEXT NOT NULL,
            op INTEGER NOT NULL,
            PRIMARY KEY (cid, bucket, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            cohort_id TEXT NOT NULL,
            name TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            result TEXT NOT NULL,
            users INTEGER NOT NULL DEFAULT 0,
            added INTEGER NOT NULL DEFAULT 0,
            removed INTEGER NOT NULL DEFAULT 0,
            rejected TEXT NOT NULL DEFAULT '{}',
            requests INTEGER NOT NULL DEFAULT 0,
            retries INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            notification_error TEXT
        )""",
        "CREATE INDEX runs_by_cohort ON runs (cohort_id, id)",
        """CREATE TABLE locks (
            cohort_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            acquired_at TEXT NOT NULL,
            run_id INTEGER
        )""",
    ),
    (
        """CREATE TABLE schedules (
            cohort_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            source TEXT,
            recipients TEXT NOT NULL DEFAULT '[]',
            state TEXT NOT NULL CHECK (state IN ('active', 'paused', 'done')),
            paused_reason TEXT,
            next_due TEXT,
            last_run_id INTEGER,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX schedules_due ON schedules (state, next_due)",
    ),
    ("ALTER TABLE runs ADD COLUMN error_kind TEXT",),
    (
        # When a member entered (UTC epoch seconds), while that is recent; NULL otherwise.
        "ALTER TABLE snapshot ADD COLUMN entered INTEGER",
        "CREATE INDEX snapshot_recent ON snapshot (cid, entered) WHERE entered IS NOT NULL",
        "ALTER TABLE cohorts ADD COLUMN created_at TEXT",
        "ALTER TABLE cohorts ADD COLUMN workspace TEXT",
        "ALTER TABLE cohorts ADD COLUMN full_resync_at TEXT",
        "ALTER TABLE runs ADD COLUMN error_cause TEXT",
        "ALTER TABLE runs ADD COLUMN full_resync INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN full_resync_reason TEXT",
        "ALTER TABLE runs ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        # When a schedule's imports are announced (NotifyRule.to_dict() as JSON; NULL: always),
        # and the *name* of the environment variable holding its webhook's URL (never the URL).
        "ALTER TABLE schedules ADD COLUMN notify_when TEXT",
        "ALTER TABLE schedules ADD COLUMN webhook_env TEXT",
        "ALTER TABLE schedules ADD COLUMN webhook_format TEXT NOT NULL DEFAULT 'json'",
    ),
    (
        # Named connection profiles: where each workspace's keys are found (a variable's name
        # or a file's path), never a key. Schedules refer to one by name (NULL: the scheduler's
        # own connection) and may set their cohort's full-resync period (minutes; 0: off;
        # NULL: the sync engine's setting).
        """CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            partner TEXT NOT NULL,
            partner_api_key_env TEXT,
            partner_api_key_file TEXT,
            data_import_key_env TEXT,
            data_import_key_file TEXT,
            updated_at TEXT NOT NULL
        )""",
        "ALTER TABLE schedules ADD COLUMN profile TEXT",
        "ALTER TABLE schedules ADD COLUMN resync_every INTEGER",
    ),
    (
        # The adds of a running import, marked uncertain in bulk (acked 0), and those of them
        # acknowledged so far (acked 1): newline-joined keys.
        """CREATE TABLE marks (
            cid INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            acked INTEGER NOT NULL,
            keys TEXT NOT NULL,
            PRIMARY KEY (cid, seq)
        )""",
        # One request budget per Braze workspace, shared by every job using this file.
        """CREATE TABLE budgets (
            workspace TEXT PRIMARY KEY,
            next_start REAL NOT NULL,
            hold_until REAL NOT NULL,
            starts TEXT NOT NULL DEFAULT ''
        )""",
    ),
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise StoreError("datetimes given to the store must be timezone-aware")
    return moment.astimezone(dt.timezone.utc).isoformat()


def _from_iso(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (assumed alive where that cannot be told)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it belongs to someone else
        return True
    except OSError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


@attrs.define(slots=True)
class _Bulk:
    """A cohort whose delta was marked in bulk, while its upload runs (internal)."""

    #: Whether the cohort had rows in ``pending`` before: else its marked adds have none.
    rows_before: bool
    #: The next ``seq`` of the cohort's rows in ``marks``.
    seq: int


@attrs.frozen(slots=True)
class LockInfo:
    """Who holds a cohort's import lock.

    Attributes:
        cohort_id: The cohort.
        pid: The holder's process id.
        host: The holder's host name.
        acquired_at: When the lock was taken (UTC).
        run_id: The run it protects.
    """

    cohort_id: str
    pid: int
    host: str
    acquired_at: dt.datetime
    run_id: int | None


_RUN_COLUMNS = (
    "id, cohort_id, name, trigger, started_at, finished_at, result, users, added, removed, "
    "rejected, requests, retries, error, notification_error, error_kind, error_cause, "
    "full_resync, full_resync_reason, warnings"
)
#: Columns a run writes (all but ``id``).
_RUN_FIELDS = _RUN_COLUMNS.count(",")


def _run_from_row(row: Sequence[Any]) -> ImportRun:
    started = _from_iso(row[4])
    assert started is not None
    return ImportRun(
        id=row[0],
        cohort_id=row[1],
        name=row[2],
        trigger=cast(Trigger, row[3]),
        started_at=started,
        finished_at=_from_iso(row[5]),
        result=cast(RunResult, row[6]),
        users=row[7],
        added=row[8],
        removed=row[9],
        rejected=json.loads(row[10]),
        requests=row[11],
        retries=row[12],
        error=row[13],
        notification_error=row[14],
        error_kind=row[15],
        error_cause=row[16],
        full_resync=bool(row[17]),
        full_resync_reason=cast("FullResyncReason | None", row[18]),
        warnings=tuple(json.loads(row[19])),
    )


def _run_values(run: ImportRun) -> tuple[Any, ...]:
    return (
        run.cohort_id,
        run.name,
        run.trigger,
        _iso(run.started_at),
        _iso(run.finished_at),
        run.result,
        run.users,
        run.added,
        run.removed,
        json.dumps(dict(run.rejected), sort_keys=True),
        run.requests,
        run.retries,
        run.error,
        run.notification_error,
        run.error_kind,
        run.error_cause,
        int(run.full_resync),
        run.full_resync_reason,
        json.dumps(list(run.warnings)),
    )


_SCHEDULE_COLUMNS = (
    "cohort_id, name, spec, source, recipients, state, paused_reason, next_due, last_run_id,"
    " notify_when, webhook_env, webhook_format, profile, resync_every"
)

_PROFILE_COLUMNS = (
    "name, endpoint, partner, partner_api_key_env, partner_api_key_file, data_import_key_env,"
    " data_import_key_file"
)


def _period_minutes(value: dt.timedelta | str | None) -> int | None:
    """A schedule's ``resync_every`` as stored: minutes, 0 for off, NULL for the engine's."""
    if value is None:
        return None
    if isinstance(value, str):  # RESYNC_OFF
        return 0
    return int(value.total_seconds() // 60)


def _period_value(minutes: int | None) -> dt.timedelta | Literal["off"] | None:
    if minutes is None:
        return None
    return RESYNC_OFF if minutes == 0 else dt.timedelta(minutes=minutes)


def _due(moment: dt.datetime | None) -> str | None:
    """A due time as fixed-width UTC text, so SQL compares due times as strings exactly."""
    if moment is None:
        return None
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _schedule_values(entry: ScheduledImport) -> tuple[Any, ...]:
    """A schedule as stored, in the order of ``_SCHEDULE_COLUMNS`` (see _schedule_from_row).

    Shared by the SQLite and the database store, so both keep a schedule the same way.
    """
    return (
        entry.cohort_id,
        entry.name,
        json.dumps(entry.schedule.to_dict(), sort_keys=True),
        source_to_text(entry.source),
        json.dumps(list(entry.recipients)),
        entry.state,
        entry.paused_reason,
        _due(entry.next_due),
        entry.last_run_id,
        json.dumps(entry.notify_when.to_dict(), sort_keys=True),
        entry.webhook_env,
        entry.webhook_format,
        entry.profile,
        _period_minutes(entry.resync_every),
    )


def _from_due(text: str | None) -> dt.datetime | None:
    """The inverse of :func:`_due`."""
    if text is None:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _schedule_from_row(row: Sequence[Any]) -> ScheduledImport:
    due = row[7]
    return ScheduledImport(
        cohort_id=row[0],
        name=row[1],
        schedule=Schedule.from_dict(json.loads(row[2])),
        source=source_from_text(row[3]),
        recipients=tuple(json.loads(row[4])),
        state=row[5],
        paused_reason=row[6],
        next_due=_from_due(due),
        last_run_id=row[8],
        notify_when=NOTIFY_ALWAYS if row[9] is None else NotifyRule.from_dict(json.loads(row[9])),
        webhook_env=row[10],
        webhook_format=row[11],
        profile=row[12],
        resync_every=_period_value(row[13]),
    )


def _profile_exists(name: str) -> str:
    return (
        f"a profile called {name!r} exists already; replace it with replace=True (CLI: --replace)"
    )


def _check_existing(path: str, *, must_exist: bool) -> None:
    """Refuse what SQLite would silently treat as a fresh database, or could not open at all.

    Raises:
        StoreError: If the path is a directory, an empty (0-byte) file, or missing when it
            ``must_exist``.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if must_exist:
            raise StoreError(f"there is no state store at {path!r}") from None
        return
    if stat.S_ISDIR(info.st_mode):
        raise StoreError(f"the state store {path!r} is a directory, not a database file")
    if info.st_size == 0 and stat.S_ISREG(info.st_mode):
        raise StoreError(
            f"the state store {path!r} is an empty (0-byte) file: it was truncated or is not "
            "a state database. Opening it would start from no state, and members Braze holds "
            "would never be removed. Restore it from a backup, or delete it to start afresh "
            "(then run a full resync with the old membership, or use a new cohort id)"
        )


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600), atomically, if missing.

    Missing directories are created 0700. The file is built under a temporary name and linked
    into place, so no process ever sees an empty file at ``path`` (which would be refused):
    two processes creating the same store at once both end up with the same one. SQLite gives
    the ``-wal`` and ``-shm`` files the database file's permissions.
    """
    if path.exists():
        return
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        conn = sqlite3.connect(temp)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # writes the header: the file is not empty
        finally:
            conn.close()
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process created it meanwhile: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


class _CohortFields:
    """What both SQL stores read of a cohort the same way: one column of its ``cohorts`` row."""

    def _cohort_value(self, cohort_id: str, column: str) -> Any:
        raise NotImplementedError

    def known_name(self, cohort_id: str) -> str | None:
        """The name Braze acknowledged for the cohort, or ``None`` if it was never named."""
        return cast("str | None", self._cohort_value(cohort_id, "name"))

    def created_at(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort was first named in its workspace (sent again with every rename)."""
        return _from_iso(self._cohort_value(cohort_id, "created_at"))

    def workspace(self, cohort_id: str) -> str | None:
        """The workspace fingerprint the cohort's snapshot describes, or ``None``."""
        return cast("str | None", self._cohort_value(cohort_id, "workspace"))

    def last_full_resync(self, cohort_id: str) -> dt.datetime | None:
        """When the cohort's last full resync succeeded, or ``None``."""
        return _from_iso(self._cohort_value(cohort_id, "full_resync_at"))

    def member_count(self, cohort_id: str) -> int:
        """How many members Braze acknowledged and still holds, as far as anyone can know."""
        return int(self._cohort_value(cohort_id, "members") or 0)


class SQLiteStore(_CohortFields):
    """The default :class:`StateStore <braze_cohorts.typing.StateStore>`: one SQLite file.

    The file is opened in WAL mode with ``synchronous=NORMAL``. One store object may be shared by
    threads (calls are serialized); several processes may open the same file. Every ``sqlite3``
    error is raised as :class:`~braze_cohorts.StoreError`.

    Args:
        path: The database file, or ``":memory:"``. A missing file is created readable by its
            owner only (0600; missing directories 0700). An existing empty (0-byte) file is
            refused: SQLite would take it for a fresh database and the members Braze holds
            could never be removed.
        clock: Returns the current time (UTC); used to time-stamp interrupted runs.
        timeout: Seconds to wait for another process's write transaction before failing.
        read_only: Open the file read-only (SQLite ``mode=ro``): nothing is ever written, so
            a user without write access to the file or its directory can read history and
            schedules. The file must exist and be at the current schema version.

    Raises:
        StoreError: If the file cannot be opened, is empty, is missing (read-only), was
            written by a newer version, or (read-only) needs a migration.

    Example:
        >>> store = SQLiteStore(":memory:")
        >>> store.member_count("power-users")
        0
        >>> store.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = _utcnow,
        timeout: float = 30.0,
        read_only: bool = False,
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._mutex = threading.RLock()
        self._cids: dict[str, int] = {}
        #: Cohorts whose delta this object marked in bulk and whose upload is not settled yet.
        self._bulk: dict[int, _Bulk] = {}
        self._host = socket.gethostname()
        self._read_only = read_only
        self._timeout = timeout
        self._budget: sqlite3.Connection | None = None
        self._budget_mutex = threading.RLock()
        plain = self._path != ":memory:" and not self._path.startswith("file:")
        try:
            if plain:
                _check_existing(self._path, must_exist=read_only)
                if not read_only:
                    _create_private(Path(self._path))
            target, uri = (self._path, False)
            if read_only and plain:
                target, uri = (f"{Path(self._path).absolute().as_uri()}?mode=ro", True)
            self._conn = sqlite3.connect(
                target,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the state store {self._path!r}: {exc}") from exc
        try:
            if read_only:
                self._check_version()
            else:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA temp_store=FILE")
            self._conn.execute("PRAGMA cache_size=-32768")
            if not read_only:
                self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open the state store {self._path!r}: {exc}") from exc
        except StoreError:
            self._conn.close()
            raise

    def _check_version(self) -> None:
        """Refuse, when opened read-only, a file that would need a migration (a write)."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version != len(_MIGRATIONS):
            newer = version > len(_MIGRATIONS)
            raise StoreError(
                f"the state store {self._path!r} has schema version {version}; this version of "
                f"braze_cohorts "
                + (
                    f"understands up to {len(_MIGRATIONS)}"
                    if newer
                    else f"reads version {len(_MIGRATIONS)} only, and a read-only open cannot "
                    "migrate it: open it once with write access (any import or schedule change "
                    "does)"
                )
            )

    @property
    def read_only(self) -> bool:
        """Whether the store was opened read-only (every write raises :class:`StoreError`)."""
        return self._read_only

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), sqlite3 errors translated."""
        with self._mutex:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"state store is unavailable: {exc}") from exc
            try:
                yield self._conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"state store write failed: {exc}") from exc
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"state store commit failed: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"state store read failed: {exc}") from exc

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise StoreError(
                    f"the state store {self._path!r} has schema version {version}; this "
                    f"version of braze_cohorts understands up to {len(_MIGRATIONS)}"
                )
            for number in range(version, len(_MIGRATIONS)):
                for statement in _MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                log.info("state store schema migrated to version %d", number + 1)

    def _cid(self, conn: sqlite3.Connection, cohort_id: str, *, create: bool) -> int | None:
        cid = self._cids.get(cohort_id)
        if cid is not None:
            return cid
        row = conn.execute("SELECT id FROM cohorts WHERE cohort_id = ?", (cohort_id,)).fetchone()
        if row is None:
            if not create:
                return None
            cur = conn.execute("INSERT INTO cohorts (cohort_id) VALUES (?)", (cohort_id,))
            assert cur.lastrowid is not None
            cid = cur.lastrowid
        else:
            cid = row[0]
        assert cid is not None
        self._cids[cohort_id] = cid
        return cid

    def _cid_for_write(self, cohort_id: str) -> int:
        cid = self._cids.get(cohort_id)
        if cid is None:
            with self._tx() as conn:
                cid = self._cid(conn, cohort_id, create=True)
        assert cid is not None
        return cid

    def close(self) -> None:
        """Close the database connection."""
        with self._mutex, contextlib.suppress(sqlite3.Error):
            self._conn.close()
        with self._budget_mutex, contextlib.suppress(sqlite3.Error):
            if self._budget is not None:
                self._budget.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs and the lock --------------------------------------------------------------------

    def start_run(self, run: ImportRun) -> ImportRun:
        """Take the cohort's import lock and record ``run`` as running.

        A lock held by a process of this host that no longer runs is stale: it is taken over and
        that process's run is marked ``interrupted``; so is any run of the cohort still shown as
        running without a live lock.

        Args:
            run: The run to record (its ``id`` is ignored; ``started_at`` must be aware).

        Returns:
            The run with its ``id`` set.

        Raises:
            ImportInProgressError: If a live import of the same cohort holds the lock.
            StoreError: If the store fails.
        """
        now = _iso(self._clock())
        with self._tx() as conn:
            self._cid(conn, run.cohort_id, create=True)
            row = conn.execute(
                "SELECT pid, host, acquired_at, run_id FROM locks WHERE cohort_id = ?",
                (run.cohort_id,),
            ).fetchone()
            if row is not None:
                pid, host, acquired_at, run_id = row
                if host != self._host or _pid_alive(pid):
                    raise ImportInProgressError(
                        f"cohort {run.cohort_id!r} is already being imported (run {run_id}, "
                        f"process {pid} on {host}, since {acquired_at}); try again when it "
                        f"has finished"
                    )
                log.warning(
                    "taking over the stale import lock of a stopped process (run %s)", run_id
                )
                conn.execute("DELETE FROM locks WHERE cohort_id = ?", (run.cohort_id,))
            conn.execute(
                "UPDATE runs SET result = 'interrupted', finished_at = ?, error = ?, "
                "error_kind = NULL WHERE cohort_id = ? AND result = 'running'",
                (now, _INTERRUPTED, run.cohort_id),
            )
            run = attrs.evolve(run, result="running", finished_at=None)
            cur = conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS.partition(', ')[2]}) "  # noqa: S608
                f"VALUES ({', '.join('?' * _RUN_FIELDS)})",
                _run_values(run),
            )
            run_id = cur.lastrowid
            conn.execute(
                "INSERT INTO locks (cohort_id, owner, pid, host, acquired_at, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run.cohort_id,
                    uuid.uuid4().hex,
                    os.getpid(),
                    self._host,
                    _iso(run.started_at),
                    run_id,
                ),
            )
        return attrs.evolve(run, id=run_id)

    def finish_run(self, run: ImportRun) -> ImportRun:
        """Record ``run``'s final state and release the cohort's lock it holds.

        Args:
            run: A run returned by :meth:`start_run`, with its final fields.

        Returns:
            ``run`` as stored.

        Raises:
            StoreError: If the run is unknown or the store fails.
        """
        if run.id is None:
            raise StoreError("finish_run() needs a run returned by start_run()")
        with self._tx() as conn:
            self._update_run(conn, run)
            conn.execute(
                "DELETE FROM locks WHERE cohort_id = ? AND run_id = ?", (run.cohort_id, run.id)
            )
        return run

    def update_run(self, run: ImportRun) -> None:
        """Record a running run's counts so far; its lock stays held.

        The sync engine calls it as batches are acknowledged, so a run killed mid-way still
        shows what it had committed.

        Raises:
            StoreError: If the run is unknown or the store fails.
        """
        if run.id is None:
            raise StoreError("update_run() needs a run returned by start_run()")
        with self._tx() as conn:
            self._update_run(conn, run)

    def _update_run(self, conn: sqlite3.Connection, run: ImportRun) -> None:
        assignments = ", ".join(f"{c} = ?" for c in _RUN_COLUMNS.split(", ")[1:])
        cur = conn.execute(
            f"UPDATE runs SET {assignments} WHERE id = ?",  # noqa: S608 - fixed column names
            (*_run_values(run), run.id),
        )
        if cur.rowcount != 1:
            raise StoreError(f"no run {run.id} in the state store")

    def record_notification_error(self, run_id: int, error: str) -> None:
        """Note on a finished run why its notification could not be sent.

        Raises:
            StoreError: If the run is unknown or the store fails.
        """
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE runs SET notification_error = ? WHERE id = ?", (error, run_id)
            )
            if cur.rowcount != 1:
                raise StoreError(f"no run {run_id} in the state store")

    def get_run(self, run_id: int) -> ImportRun | None:
        """The run with id ``run_id``, or ``None``."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?",  # noqa: S608
                (run_id,),
            ).fetchone()
        return None if row is None else _run_from_row(row)

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's runs, newest first.

        Args:
            cohort_id: The cohort.
            limit: At most this many runs (all when ``None``).
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE cohort_id = ? "  # noqa: S608
                "ORDER BY id DESC LIMIT ?",
                (cohort_id, -1 if limit is None else limit),
            ).fetchall()
        return [_run_from_row(row) for row in rows]

    def lock_holder(self, cohort_id: str) -> LockInfo | None:
        """Who holds the cohort's import lock, or ``None`` when nobody does."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT pid, host, acquired_at, run_id FROM locks WHERE cohort_id = ?",
                (cohort_id,),
            ).fetchone()
        if row is None:
            return None
        acquired = _from_iso(row[2])
        assert acquired is not None
        return LockInfo(
            cohort_id=cohort_id, pid=row[0], host=row[1], acquired_at=acquired, run_id=row[3]
        )

    def break_lock(self, cohort_id: str) -> bool:
        """Release a cohort's lock whoever holds it, marking its run ``interrupted``.

        For a lock left by a process on another host, which the store cannot check. Never break
        the lock of an import that still runs.

        Returns:
            ``True`` if there was a lock.
        """
        now = _iso(self._clock())
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM locks WHERE cohort_id = ?", (cohort_id,))
            conn.execute(
                "UPDATE runs SET result = 'interrupted', finished_at = ?, error = ? "
                "WHERE cohort_id = ? AND result = 'running'",
                (now, _INTERRUPTED, cohort_id),
            )
            return cur.rowcount > 0

    # -- schedules (one row per cohort; see braze_cohorts._scheduler) ---------------------------

    def put_schedule(self, entry: ScheduledImport, *, replace: bool = False) -> None:
        """Store a cohort's schedule (one live schedule per cohort; a done one may be replaced).

        Raises:
            ScheduleConflictError: If the cohort has an active or paused schedule and
                ``replace`` is false.
            StoreError: If the store fails.
        """
        with self._tx() as conn:
            # One statement, so two writers cannot both pass the "no live schedule" check.
            cur = conn.execute(
                f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}, updated_at)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cohort_id) DO UPDATE SET name = excluded.name,"
                " spec = excluded.spec, source = excluded.source,"
                " recipients = excluded.recipients, state = excluded.state,"
                " paused_reason = excluded.paused_reason, next_due = excluded.next_due,"
                " last_run_id = excluded.last_run_id, updated_at = excluded.updated_at,"
                " notify_when = excluded.notify_when, webhook_env = excluded.webhook_env,"
                " webhook_format = excluded.webhook_format, profile = excluded.profile,"
                " resync_every = excluded.resync_every"
                " WHERE ? OR schedules.state = 'done'",
                (*_schedule_values(entry), _iso(self._clock()), int(replace)),
            )
            if cur.rowcount == 0:
                raise ScheduleConflictError(
                    f"cohort {entry.cohort_id!r} already has a live schedule; replace it with "
                    "replace=True (CLI: --replace)"
                )

    def _schedules(self, where: str, params: Sequence[object]) -> list[ScheduledImport]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedules {where}",  # noqa: S608
                params,
            ).fetchall()
        return [_schedule_from_row(row) for row in rows]

    def get_schedule(self, cohort_id: str) -> ScheduledImport | None:
        """The cohort's schedule, or ``None``."""
        found = self._schedules("WHERE cohort_id = ?", (cohort_id,))
        return found[0] if found else None

    def list_schedules(self) -> list[ScheduledImport]:
        """Every schedule, by cohort id."""
        return self._schedules("ORDER BY cohort_id", ())

    def due_schedules(self, now: dt.datetime) -> list[ScheduledImport]:
        """Active schedules due at or before ``now``, earliest first."""
        return self._schedules(
            "WHERE state = 'active' AND next_due IS NOT NULL AND next_due <= ?"
            " ORDER BY next_due, cohort_id",
            (_due(now),),
        )

    def next_due(self) -> dt.datetime | None:
        """The earliest ``next_due`` of the active schedules, or ``None`` when none is active."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT min(next_due) FROM schedules"
                " WHERE state = 'active' AND next_due IS NOT NULL"
            ).fetchone()
        return _from_due(row[0] if row else None)

    def delete_schedule(self, cohort_id: str) -> bool:
        """Delete the cohort's schedule; ``False`` if it had none."""
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM schedules WHERE cohort_id = ?", (cohort_id,))
            return cur.rowcount > 0

    def claim_schedule(
        self, cohort_id: str, *, expected_due: dt.datetime, next_due: dt.datetime | None
    ) -> bool:
        """Atomically move an active schedule's due time from ``expected_due`` to ``next_due``.

        ``next_due=None`` marks it done. Returns ``False``, changing nothing, when another
        runner got there first (or the schedule was paused, replaced or cleared meanwhile).
        """
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE schedules SET next_due = ?,"
                " state = CASE WHEN ? IS NULL THEN 'done' ELSE 'active' END, updated_at = ?"
                " WHERE cohort_id = ? AND state = 'active' AND next_due = ?",
                (
                    _due(next_due),
                    _due(next_due),
                    _iso(self._clock()),
                    cohort_id,
                    _due(expected_due),
                ),
            )
            return cur.rowcount == 1

    def update_schedule(
        self,
        cohort_id: str,
        *,
        state: ScheduleState,
        paused_reason: str | None,
        next_due: dt.datetime | None,
    ) -> None:
        """Set the state, pause reason and due time of the cohort's schedule."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE schedules SET state = ?, paused_reason = ?, next_due = ?, updated_at = ?"
                " WHERE cohort_id = ?",
                (state, paused_reason, _due(next_due), _iso(self._clock()), cohort_id),
            )

    def set_schedule_last_run(self, cohort_id: str, run_id: int | None) -> None:
        """Remember the id of the schedule's latest import."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE schedules SET last_run_id = ? WHERE cohort_id = ?", (run_id, cohort_id)
            )

    # -- connection profiles (see braze_cohorts._profiles) -----------------------------------

    def put_profile(self, profile: ConnectionProfile, *, replace: bool = False) -> None:
        """Store a connection profile (names and paths only; a profile holds no key).

        Raises:
            ConfigurationError: If a profile of that name exists and ``replace`` is false.
            StoreError: If the store fails.
        """
        with self._tx() as conn:
            cur = conn.execute(
                f"INSERT INTO profiles ({_PROFILE_COLUMNS}, updated_at)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint,"
                " partner = excluded.partner,"
                " partner_api_key_env = excluded.partner_api_key_env,"
                " partner_api_key_file = excluded.partner_api_key_file,"
                " data_import_key_env = excluded.data_import_key_env,"
                " data_import_key_file = excluded.data_import_key_file,"
                " updated_at = excluded.updated_at WHERE ?",
                (
                    profile.name,
                    profile.endpoint,
                    profile.partner,
                    profile.partner_api_key_env,
                    profile.partner_api_key_file,
                    profile.data_import_key_env,
                    profile.data_import_key_file,
                    _iso(self._clock()),
                    int(replace),
                ),
            )
            if cur.rowcount == 0:
                raise ConfigurationError(_profile_exists(profile.name))

    def _profiles(self, where: str, params: Sequence[object]) -> list[ConnectionProfile]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_PROFILE_COLUMNS} FROM profiles {where}",  # noqa: S608
                params,
            ).fetchall()
        names = _PROFILE_COLUMNS.replace(" ", "").split(",")
        return [ConnectionProfile(**dict(zip(names, row, strict=True))) for row in rows]

    def get_profile(self, name: str) -> ConnectionProfile | None:
        """The profile called ``name``, or ``None``."""
        found = self._profiles("WHERE name = ?", (name,))
        return found[0] if found else None

    def list_profiles(self) -> list[ConnectionProfile]:
        """Every profile, by name."""
        return self._profiles("ORDER BY name", ())

    def delete_profile(self, name: str) -> bool:
        """Delete the profile called ``name``; ``False`` if there is none."""
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM profiles WHERE name = ?", (name,))
            return cur.rowcount > 0

    # -- names, workspace, resyncs ----------------------------------------------------------

    def _cohort_value(self, cohort_id: str, column: str) -> Any:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {column} FROM cohorts WHERE cohort_id = ?",  # noqa: S608 - fixed names
                (cohort_id,),
            ).fetchone()
        return None if row is None else row[0]

    def record_name(
        self,
        cohort_id: str,
        name: str,
        *,
        named_at: dt.datetime,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Remember that Braze acknowledged ``name`` for the cohort at ``named_at``.

        Args:
            cohort_id: The cohort.
            name: The name Braze acknowledged.
            named_at: When.
            created_at: The ``created_at`` sent with it; kept from the first naming when
                ``None``.
        """
        with self._tx() as conn:
            cid = self._cid(conn, cohort_id, create=True)
            conn.execute(
                "UPDATE cohorts SET name = ?, named_at = ?, "
                "created_at = coalesce(?, created_at, ?) WHERE id = ?",
                (name, _iso(named_at), _iso(created_at), _iso(named_at), cid),
            )

    def bind_workspace(self, cohort_id: str, workspace: str | None) -> None:
        """Say that the cohort's snapshot now describes ``workspace`` (a fingerprint, no key)."""
        with self._tx() as conn:
            cid = self._cid(conn, cohort_id, create=True)
            conn.execute("UPDATE cohorts SET workspace = ? WHERE id = ?", (workspace, cid))

    def record_full_resync(self, cohort_id: str, *, at: dt.datetime) -> None:
        """Remember that a full resync of the cohort succeeded at ``at``."""
        with self._tx() as conn:
            cid = self._cid(conn, cohort_id, create=True)
            conn.execute("UPDATE cohorts SET full_resync_at = ? WHERE id = ?", (_iso(at), cid))

    # -- shared request budgets ---------------------------------------------------------------

    @contextlib.contextmanager
    def _budget_tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction on the budgets' own connection (a plain read when not ``write``).

        Reserving a request start then never waits behind this object's other work (an
        import's commits hold its mutex), only behind other connections' short writes.
        """
        plain = self._path != ":memory:" and not self._path.startswith("file:")
        if not plain or self._read_only:
            with self._tx() if write else self._read() as conn:
                yield conn
            return
        with self._budget_mutex:
            if self._budget is None:
                try:
                    conn = sqlite3.connect(
                        self._path,
                        timeout=self._timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    conn.execute("PRAGMA synchronous=NORMAL")
                except sqlite3.Error as exc:
                    raise StoreError(f"state store is unavailable: {exc}") from exc
                self._budget = conn
            conn = self._budget
            if not write:
                try:
                    yield conn
                except sqlite3.Error as exc:
                    raise StoreError(f"state store read failed: {exc}") from exc
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"state store is unavailable: {exc}") from exc
            try:
                yield conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"state store write failed: {exc}") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StoreError(f"state store commit failed: {exc}") from exc

    def reserve_start(self, workspace: str, interval: float, now: float) -> float:
        """Reserve the next request start of ``workspace``'s shared budget; return its time.

        The start is the latest of the budget's next free start, ``now`` and its hold (UTC
        epoch seconds); the next free start becomes that start plus ``interval``. Unused
        starts are not saved up: a budget idle for a while starts again at ``now``. A next
        free start more than :data:`_BUDGET_HORIZON` seconds ahead (a clock set back, a test
        that did not really sleep) is forgotten.

        Raises:
            StoreError: If the store fails.
        """
        with self._budget_tx() as conn:
            row = conn.execute(
                "SELECT next_start, hold_until FROM budgets WHERE workspace = ?", (workspace,)
            ).fetchone()
            next_start, hold_until = (now, now) if row is None else row
            if next_start > now + _BUDGET_HORIZON:
                next_start = now
            slot = max(next_start, now, min(hold_until, now + _BUDGET_HORIZON))
            conn.execute(
                "INSERT INTO budgets (workspace, next_start, hold_until) VALUES (?, ?, ?) "
                "ON CONFLICT (workspace) DO UPDATE SET next_start = excluded.next_start",
                (workspace, slot + interval, now),
            )
        return float(slot)

    def hold_budget(self, workspace: str, until: float) -> None:
        """Let no request of ``workspace`` start before ``until`` (a later hold stays).

        Raises:
            StoreError: If the store fails.
        """
        with self._budget_tx() as conn:
            conn.execute(
                "INSERT INTO budgets (workspace, next_start, hold_until) VALUES (?, ?, ?) "
                "ON CONFLICT (workspace) DO UPDATE SET hold_until = "
                "max(hold_until, excluded.hold_until)",
                (workspace, until, until),
            )

    def claim_start(self, workspace: str, now: float, window: float, limit: int) -> float:
        """Start a request of ``workspace`` now if the budget allows it; else say how long to wait.

        Refused while the budget is held, or when ``limit`` requests of the budget started
        within the last ``window`` seconds (late wake-ups of several processes bunch starts:
        this keeps every window of that length under the limit whatever the processes).

        Returns:
            ``0.0`` when the start is granted (and counted); else the seconds until it could be.

        Raises:
            StoreError: If the store fails.
        """
        with self._budget_tx() as conn:
            row = conn.execute(
                "SELECT hold_until, starts FROM budgets WHERE workspace = ?", (workspace,)
            ).fetchone()
            hold_until, text = (0.0, "") if row is None else row
            if hold_until > now:
                return float(min(hold_until, now + _BUDGET_HORIZON) - now)
            # Starts "after" now count too: another process may have read its clock later but
            # taken the write lock first.
            starts = sorted(t for t in map(float, text.split()) if t > now - window)
            if len(starts) >= limit:
                return max(starts[-limit] + window - now, 0.001)
            starts.append(now)
            starts.sort()
            conn.execute(
                "INSERT INTO budgets (workspace, next_start, hold_until, starts) "
                "VALUES (?, ?, 0, ?) ON CONFLICT (workspace) DO UPDATE SET starts = "
                "excluded.starts",
                (workspace, now, " ".join(map(repr, starts[-limit:]))),
            )
        return 0.0

    # -- membership ---------------------------------------------------------------------------

    def pending_count(self, cohort_id: str) -> int:
        """How many ids are uncertain (sent, or about to be sent, without acknowledgement)."""
        with self._read() as conn:
            cid = self._cid(conn, cohort_id, create=False)
            if cid is None:
                return 0
            rows = conn.execute("SELECT count(*) FROM pending WHERE cid = ?", (cid,)).fetchone()[0]
            return int(rows) + sum(len(keys) for keys in self._unsettled(conn, cid, fresh=True))

    def _unsettled(self, conn: sqlite3.Connection, cid: int, *, fresh: bool) -> Iterator[list[str]]:
        """The cohort's bulk-marked adds that were not acknowledged, chunk by chunk.

        With ``fresh``, keys that also have a row in ``pending`` are left out.
        """
        if conn.execute("SELECT 1 FROM marks WHERE cid = ? LIMIT 1", (cid,)).fetchone() is None:
            return
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS marked (bucket INTEGER NOT NULL, "
            "key TEXT NOT NULL, PRIMARY KEY (bucket, key)) WITHOUT ROWID"
        )
        conn.execute("DELETE FROM temp.marked")
        try:
            for acked, sql in (
                (0, "INSERT OR IGNORE INTO temp.marked (bucket, key) VALUES (?, ?)"),
                (1, "DELETE FROM temp.marked WHERE bucket = ? AND key = ?"),
            ):
                seq = -1
                while True:
                    row = conn.execute(
                        "SELECT seq, keys FROM marks WHERE cid = ? AND acked = ? AND seq > ? "
                        "ORDER BY seq LIMIT 1",
                        (cid, acked, seq),
                    ).fetchone()
                    if row is None:
                        break
                    seq = row[0]
                    conn.executemany(sql, bucket_rows(row[1].split("\n")))
            left_out = (
                "WHERE NOT EXISTS (SELECT 1 FROM pending p WHERE p.cid = ? "
                "AND p.bucket = m.bucket AND p.key = m.key)"
                if fresh
                else "WHERE ? IS NOT NULL"
            )
            cur = conn.execute(
                f"SELECT m.key FROM temp.marked m {left_out} ORDER BY m.bucket, m.key",  # noqa: S608
                (cid,),
            )
            while rows := cur.fetchmany(_MARK_KEYS):
                yield [r[0] for r in rows]
        finally:
            conn.execute("DELETE FROM temp.marked")

    def _settle(self, cid: int) -> None:
        """Turn the cohort's bulk marks into rows of ``pending``: each unacknowledged add.

        Marks are left by an import that was killed, or whose upload did not acknowledge every
        batch. One transaction: a crash part-way leaves the marks as they were.
        """
        self._bulk.pop(cid, None)
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM marks WHERE cid = ? LIMIT 1", (cid,)).fetchone() is None:
                return
        with self._tx() as conn:
            count = 0
            for keys in list(self._unsettled(conn, cid, fresh=False)):
                count += len(keys)
                conn.executemany(
                    "INSERT INTO pending (cid, bucket, key, op) VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (cid, bucket, key) DO UPDATE SET op = 1",
                    [(cid, b, k) for b, k in bucket_rows(keys)],
                )
            conn.execute("DELETE FROM marks WHERE cid = ?", (cid,))
        log.info("%d unacknowledged add(s) of an earlier import kept as uncertain", count)

    def settle_pending(self, cohort_id: str, *, complete: bool) -> None:
        """End an upload of the delta given to :meth:`mark_pending`.

        Args:
            cohort_id: The cohort.
            complete: Whether every batch of the delta was acknowledged and applied with
                :meth:`apply_batch`. Then the bulk marks are simply dropped; otherwise each
                marked add that is not in the snapshot stays uncertain (a row of ``pending``).

        Raises:
            StoreError: If the store fails (the marks then stay, and are settled later).
        """
        with self._read() as conn:
            cid = self._cid(conn, cohort_id, create=False)
        if cid is None:
            return
        if not complete:
            self._settle(cid)
            return
        self._bulk.pop(cid, None)
        with self._tx() as conn:
            conn.execute("DELETE FROM marks WHERE cid = ?", (cid,))

    def _iter_keys(self, table: str, cohort_id: str) -> Iterator[str]:
        with self._read() as conn:
            cid = self._cid(conn, cohort_id, create=False)
        if cid is None:
            return
        last = (-1, "")
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    f"SELECT bucket, key FROM {table} WHERE cid = ? "  # noqa: S608
                    "AND (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT 10000",
                    (cid, *last),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[1]
            last = rows[-1]

    def snapshot_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the members Braze is known to hold (read in pages)."""
        return self._iter_keys("snapshot", cohort_id)

    def pending_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the uncertain ids."""
        yield from self._iter_keys("pending", cohort_id)
        with self._read() as conn:
            cid = self._cid(conn, cohort_id, create=False)
            chunks_ = [] if cid is None else list(self._unsettled(conn, cid, fresh=True))
        for keys in chunks_:
            yield from keys

    def apply_batch(
        self,
        cohort_id: str,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        *,
        entered_at: dt.datetime | None = None,
    ) -> None:
        """Apply one acknowledged request to the snapshot and clear its keys from the pending ids.

        Both happen in one transaction.

        Args:
            cohort_id: The cohort.
            added: Keys Braze acknowledged as added.
            removed: Keys Braze acknowledged as removed.
            entered_at: Stamp added keys that were not held yet as entering at this time (for
                :meth:`diff`'s ``resend_since``); ``None`` leaves them unstamped.

        Raises:
            StoreError: If the store fails (nothing of the batch is applied then).
        """
        cid = self._cid_for_write(cohort_id)
        add_rows = bucket_rows(added)
        remove_rows = bucket_rows(removed)
        entered = None if entered_at is None else int(entered_at.timestamp())
        with self._tx() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO snapshot (cid, bucket, key, entered) VALUES (?, ?, ?, ?)",
                [(cid, b, k, entered) for b, k in add_rows],
            )
            grown = conn.total_changes - before
            before = conn.total_changes
            conn.executemany(
                "DELETE FROM snapshot WHERE cid = ? AND bucket = ? AND key = ?",
                [(cid, b, k) for b, k in remove_rows],
            )
            shrunk = conn.total_changes - before
            bulk = self._bulk.get(cid)
            if bulk is not None and add_rows:
                # Bulk-marked adds: one row says they were acknowledged, in this transaction.
                conn.execute(
                    "INSERT INTO marks (cid, seq, acked, keys) VALUES (?, ?, 1, ?)",
                    (cid, bulk.seq, "\n".join(k for _, k in add_rows)),
                )
                bulk.seq += 1
            # Adds marked in bulk have no row in pending unless the cohort had some before.
            unmarked = bulk is not None and not bulk.rows_before
            clear = remove_rows if unmarked else add_rows + remove_rows
            conn.executemany(
                "DELETE FROM pending WHERE cid = ? AND bucket = ? AND key = ?",
                [(cid, b, k) for b, k in clear],
            )
            if grown or shrunk:
                conn.execute(
                    "UPDATE cohorts SET members = members + ? WHERE id = ?",
                    (grown - shrunk, cid),
                )

    def _mark_pending(self, cid: int, rows: Iterable[tuple[int, int, str, int]]) -> None:
        sql = (
            "INSERT INTO pending (cid, bucket, key, op) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (cid, bucket, key) DO UPDATE SET op = excluded.op"
        )
        it = iter(rows)
        while chunk := list(itertools.islice(it, _PENDING_TX_ROWS)):
            chunk.sort()
            with self._tx() as conn:
                conn.executemany(sql, chunk)

    def mark_pending(self, cohort_id: str, delta: Delta) -> None:
        """Record every key of ``delta`` as uncertain, with the change about to be sent.

        Called before anything of the delta is sent, so that a crash leaves every in-flight id
        uncertain. The adds are written in bulk, as newline-joined chunks in ``marks`` (a first
        import of 10,000,000 members writes a few hundred rows, not 10,000,000); each one
        that is not acknowledged by the end of the upload (:meth:`settle_pending`) or by the
        next import's :meth:`diff` (after a crash) becomes a row of ``pending``. The removes
        get a row of ``pending`` each. Written in several transactions when large: a crash
        part-way only leaves ids uncertain that were not sent, which is safe.
        """
        cid = self._cid_for_write(cohort_id)
        self._settle(cid)  # marks of an earlier, killed import first
        with self._read() as conn:
            rows_before = (
                conn.execute("SELECT 1 FROM pending WHERE cid = ? LIMIT 1", (cid,)).fetchone()
                is not None
            )

        def rows() -> Iterator[tuple[int, int, str, int]]:
            for key in delta.iter_removes():
                yield (cid, bucket(key), key, 0)

        try:
            adds = chunks(itertools.chain.from_iterable(delta.add_blocks()), _MARK_KEYS)
            seq = 0
            while group := list(itertools.islice(adds, _MARK_TX_CHUNKS)):
                with self._tx() as conn:
                    conn.executemany(
                        "INSERT INTO marks (cid, seq, acked, keys) VALUES (?, ?, 0, ?)",
                        [(cid, seq + i, "\n".join(keys)) for i, keys in enumerate(group)],
                    )
                seq += len(group)
            self._mark_pending(cid, rows())
        except OSError as exc:
            raise StoreError(f"cannot read the delta's temporary files: {exc}") from exc
        self._bulk[cid] = _Bulk(rows_before=rows_before, seq=seq)

    def _concat(
        self, conn: sqlite3.Connection, table: str, cid: int, part: int | None
    ) -> list[str]:
        lo, hi = part_buckets(part)
        text = conn.execute(
            f"SELECT group_concat(key, char(10)) FROM {table} "  # noqa: S608 - fixed names
            "WHERE cid = ? AND bucket BETWEEN ? AND ?",
            (cid, lo, hi),
        ).fetchone()[0]
        return text.split("\n") if text else []

    def _read_part(
        self, cid: int, since: int | None, part: int | None
    ) -> tuple[list[str], set[str], set[str]]:
        lo, hi = part_buckets(part)
        with self._read() as conn:
            # One scan of the partition gives the held keys and, among them, the recent ones.
            held, recent = conn.execute(
                "SELECT group_concat(key, char(10)), "
                "group_concat(CASE WHEN entered >= ? THEN key END, char(10)) "
                "FROM snapshot WHERE cid = ? AND bucket BETWEEN ? AND ?",
                (-1 if since is None else since, cid, lo, hi),
            ).fetchone()
            unsure = set(self._concat(conn, "pending", cid, part))
        return (
            held.split("\n") if held else [],
            unsure,
            set(recent.split("\n")) if recent and since is not None else set(),
        )

    def diff(
        self,
        cohort_id: str,
        desired: Iterable[str],
        *,
        full: bool = False,
        resend_since: dt.datetime | None = None,
    ) -> Delta:
        """Compute what to send so that Braze holds exactly ``desired``.

        ``adds`` = desired keys Braze is not known to hold, plus uncertain keys that are desired;
        ``removes`` = held keys no longer desired, plus uncertain keys that are not desired. No
        key is in both. ``desired`` is streamed (duplicates are fine) and spilled to temporary
        files when large. The diff itself is :func:`braze_cohorts._delta.diff`.

        Args:
            cohort_id: The cohort.
            desired: Canonical keys of every desired member.
            full: A full resync: every desired key is an add, held or not.
            resend_since: Desired keys that entered at or after this time are adds too (recent
                entrants whom Braze may have ignored). Entry times older than this are
                forgotten (the only write this method makes).

        Raises:
            StoreError: If the store or the temporary files fail.
        """
        with self._read() as conn:
            cid = self._cid(conn, cohort_id, create=False)
        if cid is not None:
            self._settle(cid)  # the adds a killed import left marked
        with self._read() as conn:
            stored = 0
            if cid is not None:
                stored = conn.execute(
                    "SELECT members + (SELECT count(*) FROM pending WHERE cid = ?) "
                    "FROM cohorts WHERE id = ?",
                    (cid, cid),
                ).fetchone()[0]
        since = None
        if cid is not None and resend_since is not None and not full:
            since = int(resend_since.timestamp())
            with self._tx() as conn:  # forget entry times that are no longer recent
                conn.execute(
                    "UPDATE snapshot SET entered = NULL WHERE cid = ? AND entered < ?",
                    (cid, since),
                )
        read = None if cid is None else functools.partial(self._read_part, cid, since)
        try:
            return _delta.diff(desired, stored=stored, read=read, full=full)
        except OSError as exc:
            raise StoreError(f"cannot write temporary files for the delta: {exc}") from exc

    def diff_changes(self, cohort_id: str, entered: Iterable[str], left: Iterable[str]) -> Delta:
        """Compute what to send for a delta the caller computed (who entered, who left).

        ``adds`` = entered keys that Braze is not known to hold or that are uncertain;
        ``removes`` = left keys that Braze is known to hold or that are uncertain; every other
        uncertain key is re-sent with the change last sent for it (its desired state has not
        changed since). Entered keys already held and left keys not held are skipped.

        Args:
            cohort_id: The cohort.
            entered: Keys of users who entered the cohort.
            left: Keys of users who left it.

        Raises:
            InputError: If a key is both in ``entered`` and in ``left``.
            StoreError: If the store fails.
        """
        cid = self._cid_for_write(cohort_id)
        self._settle(cid)  # the adds a killed import left marked
        delta = Delta()
        try:
            with self._mutex:
                conn = self._conn
                try:
                    conn.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS delta_in (bucket INTEGER NOT NULL, "
                        "key TEXT NOT NULL, op INTEGER NOT NULL, PRIMARY KEY (bucket, key)) "
                        "WITHOUT ROWID"
                    )
                    conn.execute("DELETE FROM temp.delta_in")
                    upsert = (
                        "INSERT INTO temp.delta_in (bucket, key, op) VALUES (?, ?, ?) "
                        "ON CONFLICT (bucket, key) DO UPDATE SET op = "
                        "CASE WHEN op = excluded.op THEN op ELSE 2 END"
                    )
                    for op, keys in ((1, entered), (0, left)):
                        for chunk in chunks(keys):
                            conn.executemany(upsert, [(bucket(k), k, op) for k in chunk])
                    both = conn.execute(
                        "SELECT count(*) FROM temp.delta_in WHERE op = 2"
                    ).fetchone()[0]
                    if both:
                        raise InputError(
                            f"{both} id(s) are both in entered and in left; a user either "
                            "entered or left"
                        )
                    for op, target in ((1, delta._adds), (0, delta._removes)):
                        held = "NOT EXISTS" if op else "EXISTS"
                        cur = conn.execute(
                            "SELECT d.key FROM temp.delta_in d WHERE d.op = ?1 AND ("  # noqa: S608
                            "EXISTS (SELECT 1 FROM pending p WHERE p.cid = ?2 "
                            "AND p.bucket = d.bucket AND p.key = d.key) OR "
                            f"{held} (SELECT 1 FROM snapshot s WHERE s.cid = ?2 "
                            "AND s.bucket = d.bucket AND s.key = d.key)) "
                            "UNION ALL "
                            "SELECT p.key FROM pending p WHERE p.cid = ?2 AND p.op = ?1 AND "
                            "NOT EXISTS (SELECT 1 FROM temp.delta_in d "
                            "WHERE d.bucket = p.bucket AND d.key = p.key)",
                            (op, cid),
                        )
                        while rows := cur.fetchmany(_delta.CHUNK):
                            target.extend(row[0] for row in rows)
                    delta.held_removes = conn.execute(
                        "SELECT count(*) FROM snapshot s WHERE s.cid = ?1 AND ("
                        "EXISTS (SELECT 1 FROM temp.delta_in d WHERE d.op = 0 "
                        "AND d.bucket = s.bucket AND d.key = s.key) OR "
                        "EXISTS (SELECT 1 FROM pending p WHERE p.cid = ?1 AND p.op = 0 "
                        "AND p.bucket = s.bucket AND p.key = s.key AND NOT EXISTS ("
                        "SELECT 1 FROM temp.delta_in d WHERE d.bucket = p.bucket "
                        "AND d.key = p.key)))",
                        (cid,),
                    ).fetchone()[0]
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("DELETE FROM temp.delta_in")
        except sqlite3.Error as exc:
            delta.close()
            raise StoreError(f"state store read failed: {exc}") from exc
        except OSError as exc:
            delta.close()
            raise StoreError(f"cannot write temporary files for the delta: {exc}") from exc
        except BaseException:
            delta.close()
            raise
        return delta
