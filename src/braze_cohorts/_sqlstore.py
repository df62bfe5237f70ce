"""SQLStore: the sync engine's state in the user's own database, through SQLAlchemy Core.

The same contract as :class:`~braze_cohorts.SQLiteStore` (the ``StateStore`` protocol), kept in
tables of one schema of any database SQLAlchemy reaches (tested on PostgreSQL and DuckDB; see
``docs/warehouse.md`` for other dialects). What it adds: when the members come from a query on
the *same* database (:meth:`SQLStore.query_members`), the delta is computed by the database in
one set-based statement (anti-joins against the snapshot and the pending ids) and only the adds
and removes leave it.

Layout (schema version 2, in table ``meta``)::

    meta     (name PK, value)                        name 'schema_version'
    cohorts  (cohort_id PK, name, named_at, members, created_at, workspace, full_resync_at)
    snapshot (cohort_id, key, entered)  PK (cohort_id, key)   entered: UTC epoch seconds
    pending  (cohort_id, key, op)       PK (cohort_id, key)   op: 1 add, 0 remove
    runs     (id PK from sequence runs_id_seq, every ImportRun field)
    locks    (cohort_id PK, owner, pid, host, acquired_at, run_id)
    schedules (cohort_id PK, every ScheduledImport field as the SQLite store keeps it, updated_at)
              next_due: fixed-width UTC text, so due times compare as strings   (version 2)
    profiles (name PK, endpoint, partner, the key variables' names and files' paths, updated_at)
              (version 2)

Only portable SQL is used: ``NOT EXISTS`` anti-joins, ``UNION ALL``, ``||``, ``CAST``, temporary
tables created through SQLAlchemy, and no upsert (a delete then an insert in one transaction).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs

from braze_cohorts._delta import CHUNK, Delta, chunks
from braze_cohorts._models import ImportRun
from braze_cohorts._profiles import ConnectionProfile
from braze_cohorts._schedule import ScheduledImport, ScheduleState
from braze_cohorts._store import (
    _INTERRUPTED,
    _PROFILE_COLUMNS,
    _RUN_COLUMNS,
    _SCHEDULE_COLUMNS,
    LockInfo,
    _CohortFields,
    _due,
    _from_due,
    _from_iso,
    _iso,
    _pid_alive,
    _profile_exists,
    _run_from_row,
    _run_values,
    _schedule_from_row,
    _schedule_values,
)
from braze_cohorts.exceptions import (
    ConfigurationError,
    ImportInProgressError,
    InputError,
    ScheduleConflictError,
    StoreError,
)

#: SQLAlchemy, imported by the first SQLStore (``import braze_cohorts`` stays light).
sa: Any = None

if TYPE_CHECKING:
    from braze_cohorts.typing import ProfileStore, ScheduleStore, StateStore

__all__ = ["QueryMembers", "SQLStore"]

log = logging.getLogger(__name__)

#: The schema version this module writes; older schemas are migrated on open.
SCHEMA_VERSION = 2

#: Rows per multi-row INSERT / keys per ``IN`` list.
_ROWS = 1_000

#: The canonical key prefix of an external id (see braze_cohorts._identifiers).
_EXTERNAL = "e:"

Clock = Callable[[], dt.datetime]

_RUN_NAMES = _RUN_COLUMNS.split(", ")
_SCHEDULE_NAMES = _SCHEDULE_COLUMNS.replace(" ", "").split(",")
_PROFILE_NAMES = _PROFILE_COLUMNS.replace(" ", "").split(",")

#: How often put_schedule() retries when another writer changed the row between its steps.
_PUT_ATTEMPTS = 5
#: The first pause (seconds) before such a retry; it grows with each attempt.
_RETRY_PAUSE = 0.02

#: Fetch results in chunks (a server-side cursor where the dialect has one).
_STREAM = {"stream_results": True, "yield_per": CHUNK}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _need_sqlalchemy() -> None:
    global sa  # a lazy import, once
    if sa is not None:
        return
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - the [sql] extra is missing
        raise ConfigurationError(
            "SQLStore needs SQLAlchemy: pip install 'braze-cohorts[sql]' (plus the database's "
            "driver or SQLAlchemy dialect)"
        ) from None
    sa = sqlalchemy


def _tables(metadata: Any, schema: str | None) -> dict[str, Any]:
    """The store's tables, in ``metadata``, in ``schema``."""
    key = sa.String(1024)
    text = sa.Text
    t = {
        "meta": sa.Table(
            "meta",
            metadata,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", text, nullable=False),
            schema=schema,
        ),
        "cohorts": sa.Table(
            "cohorts",
            metadata,
            sa.Column("cohort_id", key, primary_key=True),
            sa.Column("name", text),
            sa.Column("named_at", text),
            sa.Column("members", sa.BigInteger, nullable=False),
            sa.Column("created_at", text),
            sa.Column("workspace", text),
            sa.Column("full_resync_at", text),
            schema=schema,
        ),
        "snapshot": sa.Table(
            "snapshot",
            metadata,
            sa.Column("cohort_id", key, primary_key=True),
            sa.Column("key", key, primary_key=True),
            sa.Column("entered", sa.BigInteger),
            schema=schema,
        ),
        "pending": sa.Table(
            "pending",
            metadata,
            sa.Column("cohort_id", key, primary_key=True),
            sa.Column("key", key, primary_key=True),
            sa.Column("op", sa.SmallInteger, nullable=False),
            schema=schema,
        ),
        "runs": sa.Table(
            "runs",
            metadata,
            sa.Column(
                "id",
                sa.BigInteger,
                sa.Sequence("runs_id_seq", metadata=metadata, schema=schema),
                primary_key=True,
            ),
            sa.Column("cohort_id", key, nullable=False, index=True),
            sa.Column("name", text, nullable=False),
            sa.Column("trigger", sa.String(32), nullable=False),
            sa.Column("started_at", text, nullable=False),
            sa.Column("finished_at", text),
            sa.Column("result", sa.String(32), nullable=False),
            sa.Column("users", sa.BigInteger, nullable=False),
            sa.Column("added", sa.BigInteger, nullable=False),
            sa.Column("removed", sa.BigInteger, nullable=False),
            sa.Column("rejected", text, nullable=False),
            sa.Column("requests", sa.BigInteger, nullable=False),
            sa.Column("retries", sa.BigInteger, nullable=False),
            sa.Column("error", text),
            sa.Column("notification_error", text),
            sa.Column("error_kind", text),
            sa.Column("error_cause", text),
            sa.Column("full_resync", sa.SmallInteger, nullable=False),
            sa.Column("full_resync_reason", text),
            sa.Column("warnings", text, nullable=False),
            schema=schema,
        ),
        "locks": sa.Table(
            "locks",
            metadata,
            sa.Column("cohort_id", key, primary_key=True),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("pid", sa.BigInteger, nullable=False),
            sa.Column("host", text, nullable=False),
            sa.Column("acquired_at", text, nullable=False),
            sa.Column("run_id", sa.BigInteger),
            schema=schema,
        ),
        # Version 2: schedules and connection profiles, as the SQLite store keeps them.
        "schedules": sa.Table(
            "schedules",
            metadata,
            sa.Column("cohort_id", key, primary_key=True),
            sa.Column("name", text, nullable=False),
            sa.Column("spec", text, nullable=False),
            sa.Column("source", text),
            sa.Column("recipients", text, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("paused_reason", text),
            sa.Column("next_due", sa.String(32)),
            sa.Column("last_run_id", sa.BigInteger),
            sa.Column("notify_when", text),
            sa.Column("webhook_env", text),
            sa.Column("webhook_format", sa.String(16), nullable=False),
            sa.Column("profile", text),
            sa.Column("resync_every", sa.BigInteger),
            sa.Column("updated_at", text, nullable=False),
            sa.Index("schedules_due", "state", "next_due"),
            schema=schema,
        ),
        "profiles": sa.Table(
            "profiles",
            metadata,
            sa.Column("name", key, primary_key=True),
            sa.Column("endpoint", text, nullable=False),
            sa.Column("partner", text, nullable=False),
            sa.Column("partner_api_key_env", text),
            sa.Column("partner_api_key_file", text),
            sa.Column("data_import_key_env", text),
            sa.Column("data_import_key_file", text),
            sa.Column("updated_at", text, nullable=False),
            schema=schema,
        ),
    }
    return t


def _run_row(run: ImportRun) -> dict[str, Any]:
    return dict(zip(_RUN_NAMES[1:], _run_values(run), strict=True))


@attrs.frozen(eq=False)
class QueryMembers:
    """The members of a cohort as a query on a :class:`SQLStore`'s own database.

    Made by :meth:`SQLStore.query_members`. Given as ``members`` to
    :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>` whose store is that
    :class:`SQLStore`, the delta is computed inside the database and only the adds and removes
    are fetched. Anywhere else (another store, a plain ``list()``) it is an ordinary iterable
    of the query's external ids, streamed in chunks.

    Attributes:
        store: The store whose database runs the query.
        sql: The query (SQLAlchemy ``text()`` syntax: ``:name`` parameters).
        params: Its parameters.
        column: The result column holding the external ids.
    """

    store: SQLStore
    sql: str
    params: Mapping[str, Any]
    column: str

    def __iter__(self) -> Iterator[str]:
        if self.store._claim(self):
            return iter(())  # the store's diff() computes the delta in the database
        return self._stream()

    def _stream(self) -> Iterator[str]:
        q = self.select()
        with self.store._engine.connect() as conn:
            result = conn.execute(q, execution_options=_STREAM)
            for rows in result.partitions(CHUNK):
                yield from (row[0] for row in rows)

    def select(self) -> Any:
        """The distinct, non-blank external ids of the query, as a SQLAlchemy ``Select``."""
        q = (
            sa.text(self.sql)
            .bindparams(**dict(self.params))
            .columns(sa.column(self.column))
            .subquery("q")
        )
        ident = cast(Any, sa.cast(q.c[self.column], sa.String))
        return (
            sa.select(ident.label("id"))
            .where(q.c[self.column].is_not(None), sa.func.trim(ident) != "")
            .distinct()
        )


class SQLStore(_CohortFields):
    """A :class:`StateStore <braze_cohorts.typing.StateStore>` in the user's database.

    Tables are created (and migrated) in ``schema`` on open. One store object may be shared by
    threads; several processes may use the same database. Every database error is raised as
    :class:`~braze_cohorts.StoreError`. It is also a :class:`ScheduleStore
    <braze_cohorts.typing.ScheduleStore>` (so a :class:`~braze_cohorts.Scheduler` runs on it,
    and schedulers on several machines sharing the database run each due slot once) and a
    :class:`ProfileStore <braze_cohorts.typing.ProfileStore>`.

    Args:
        db: A SQLAlchemy URL (``str``) or ``Engine``.
        schema: The schema of the store's tables (created when missing); ``None``: the
            connection's default schema.
        clock: Returns the current time (UTC); used to time-stamp interrupted runs.

    Raises:
        ConfigurationError: If SQLAlchemy (the ``[sql]`` extra) is missing or ``db`` is neither.
        StoreError: If the database cannot be reached or was written by a newer version.

    Example:
        >>> store = SQLStore("duckdb:///:memory:")
        >>> store.member_count("power-users")
        0
        >>> store.close()
    """

    def __init__(
        self,
        db: object,
        *,
        schema: str | None = "braze_cohorts",
        clock: Clock = _utcnow,
    ) -> None:
        _need_sqlalchemy()
        self._owns_engine = isinstance(db, str)
        if isinstance(db, str):
            try:
                self._engine = sa.create_engine(db)
            except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as exc:
                raise ConfigurationError(f"cannot use the store URL: {exc}") from None
        elif isinstance(db, sa.engine.Engine):
            self._engine = db
        else:
            raise ConfigurationError(
                f"SQLStore needs a SQLAlchemy URL or Engine, not {type(db).__name__}"
            )
        self._schema = schema
        self._clock = clock
        self._host = socket.gethostname()
        self._local = threading.local()
        self._metadata = sa.MetaData()
        self._t = _tables(self._metadata, schema)
        self._closed = False
        try:
            self._migrate()
        except sa.exc.SQLAlchemyError as exc:
            self._dispose()
            raise StoreError(f"cannot open the state store: {_brief(exc)}") from None
        except BaseException:
            self._dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Any:
        """The SQLAlchemy ``Engine``."""
        return self._engine

    @property
    def schema(self) -> str | None:
        """The schema of the store's tables."""
        return self._schema

    # -- plumbing -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        meta = self._t["meta"]
        with self._engine.begin() as conn:
            inspector = sa.inspect(conn)
            if self._schema is not None and self._schema not in inspector.get_schema_names():
                conn.execute(sa.schema.CreateSchema(self._schema, if_not_exists=True))
            exists = inspector.has_table("meta", schema=self._schema)
            version = 0
            if exists:
                row = conn.execute(
                    sa.select(meta.c.value).where(meta.c.name == "schema_version")
                ).first()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the state store has schema version {version}; this version of "
                    f"braze_cohorts understands up to {SCHEMA_VERSION}"
                )
            if version == SCHEMA_VERSION:
                return
            # Version 1: the state tables; version 2 adds schedules and profiles. Each version so
            # far only adds tables, so creating the missing ones migrates any older store.
            # Later versions that change a table append their steps here (ALTER TABLE ...).
            self._metadata.create_all(conn, checkfirst=True)
            conn.execute(sa.delete(meta).where(meta.c.name == "schema_version"))
            conn.execute(sa.insert(meta).values(name="schema_version", value=str(SCHEMA_VERSION)))
            log.info("state store schema migrated to version %d", SCHEMA_VERSION)

    def _dispose(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction; database errors become StoreError."""
        if self._closed:
            raise StoreError("the state store is closed")
        try:
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"state store failed: {_brief(exc)}") from None

    def close(self) -> None:
        """Release the connections (and the engine, when the store created it)."""
        self._closed = True
        self._dispose()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_cohort(self, conn: Any, cohort_id: str) -> None:
        c = self._t["cohorts"]
        if conn.execute(sa.select(c.c.cohort_id).where(c.c.cohort_id == cohort_id)).first():
            return
        conn.execute(sa.insert(c).values(cohort_id=cohort_id, members=0))

    def _cohort_value(self, cohort_id: str, column: str) -> Any:
        c = self._t["cohorts"]
        with self._tx() as conn:
            row = conn.execute(sa.select(c.c[column]).where(c.c.cohort_id == cohort_id)).first()
        return None if row is None else row[0]

    def _set_cohort(self, cohort_id: str, **values: Any) -> None:
        c = self._t["cohorts"]
        with self._tx() as conn:
            self._ensure_cohort(conn, cohort_id)
            conn.execute(sa.update(c).where(c.c.cohort_id == cohort_id).values(**values))

    # -- runs and the lock --------------------------------------------------------------------

    def start_run(self, run: ImportRun) -> ImportRun:
        """Take the cohort's import lock and record ``run`` as running.

        A lock held by a process of this host that no longer runs is stale: it is taken over and
        that process's run is marked ``interrupted``; so is any run of the cohort still shown as
        running without a live lock. A lock of another host is never taken over (see
        :meth:`break_lock`).

        Raises:
            ImportInProgressError: If a live import of the same cohort holds the lock.
            StoreError: If the store fails.
        """
        locks, runs = self._t["locks"], self._t["runs"]
        now = _iso(self._clock())
        values = _run_row(attrs.evolve(run, result="running", finished_at=None))
        try:
            with self._engine.begin() as conn:
                self._ensure_cohort(conn, run.cohort_id)
                row = conn.execute(
                    sa.select(locks.c.pid, locks.c.host, locks.c.acquired_at, locks.c.run_id).where(
                        locks.c.cohort_id == run.cohort_id
                    )
                ).first()
                if row is not None:
                    pid, host, acquired_at, held_by = row
                    if host != self._host or _pid_alive(pid):
                        raise ImportInProgressError(
                            f"cohort {run.cohort_id!r} is already being imported (run "
                            f"{held_by}, process {pid} on {host}, since {acquired_at}); try "
                            "again when it has finished"
                        )
                    log.warning(
                        "taking over the stale import lock of a stopped process (run %s)",
                        held_by,
                    )
                    conn.execute(sa.delete(locks).where(locks.c.cohort_id == run.cohort_id))
                conn.execute(
                    sa.update(runs)
                    .where(runs.c.cohort_id == run.cohort_id, runs.c.result == "running")
                    .values(result="interrupted", finished_at=now, error=_INTERRUPTED,
                            error_kind=None)
                )  # fmt: skip
                run_id = conn.execute(sa.insert(runs).values(**values)).inserted_primary_key[0]
                conn.execute(
                    sa.insert(locks).values(
                        cohort_id=run.cohort_id,
                        owner=uuid.uuid4().hex,
                        pid=os.getpid(),
                        host=self._host,
                        acquired_at=_iso(run.started_at),
                        run_id=run_id,
                    )
                )
        except sa.exc.IntegrityError:
            raise ImportInProgressError(
                f"cohort {run.cohort_id!r} is already being imported (its lock was taken "
                "meanwhile); try again when it has finished"
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"state store failed: {_brief(exc)}") from None
        return attrs.evolve(run, id=int(run_id), result="running", finished_at=None)

    def _update_run(self, conn: Any, run: ImportRun) -> None:
        runs = self._t["runs"]
        cur = conn.execute(sa.update(runs).where(runs.c.id == run.id).values(**_run_row(run)))
        if cur.rowcount != 1:
            raise StoreError(f"no run {run.id} in the state store")

    def update_run(self, run: ImportRun) -> None:
        """Record a running run's counts so far; its lock stays held."""
        if run.id is None:
            raise StoreError("update_run() needs a run returned by start_run()")
        with self._tx() as conn:
            self._update_run(conn, run)

    def finish_run(self, run: ImportRun) -> ImportRun:
        """Record ``run``'s final state and release the cohort's lock it holds."""
        if run.id is None:
            raise StoreError("finish_run() needs a run returned by start_run()")
        locks = self._t["locks"]
        with self._tx() as conn:
            self._update_run(conn, run)
            conn.execute(
                sa.delete(locks).where(locks.c.cohort_id == run.cohort_id, locks.c.run_id == run.id)
            )
        return run

    def record_notification_error(self, run_id: int, error: str) -> None:
        """Note on a finished run why its notification could not be sent."""
        runs = self._t["runs"]
        with self._tx() as conn:
            cur = conn.execute(
                sa.update(runs).where(runs.c.id == run_id).values(notification_error=error)
            )
            if cur.rowcount != 1:
                raise StoreError(f"no run {run_id} in the state store")

    def _runs(self, where: Any, limit: int | None = None) -> list[ImportRun]:
        runs = self._t["runs"]
        q = sa.select(*(runs.c[n] for n in _RUN_NAMES)).where(where).order_by(runs.c.id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [_run_from_row(row) for row in rows]

    def get_run(self, run_id: int) -> ImportRun | None:
        """The run with id ``run_id``, or ``None``."""
        found = self._runs(self._t["runs"].c.id == run_id)
        return found[0] if found else None

    def history(self, cohort_id: str, *, limit: int | None = None) -> list[ImportRun]:
        """The cohort's runs, newest first (at most ``limit``)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        return self._runs(self._t["runs"].c.cohort_id == cohort_id, limit)

    def lock_holder(self, cohort_id: str) -> LockInfo | None:
        """Who holds the cohort's import lock, or ``None`` when nobody does."""
        locks = self._t["locks"]
        with self._tx() as conn:
            row = conn.execute(
                sa.select(locks.c.pid, locks.c.host, locks.c.acquired_at, locks.c.run_id).where(
                    locks.c.cohort_id == cohort_id
                )
            ).first()
        if row is None:
            return None
        acquired = _from_iso(row[2])
        assert acquired is not None
        return LockInfo(
            cohort_id=cohort_id, pid=int(row[0]), host=row[1], acquired_at=acquired,
            run_id=None if row[3] is None else int(row[3]),
        )  # fmt: skip

    def break_lock(self, cohort_id: str) -> bool:
        """Release a cohort's lock whoever holds it, marking its run ``interrupted``.

        For a lock left by a process on another host, which the store cannot check. Never break
        the lock of an import that still runs.
        """
        locks, runs = self._t["locks"], self._t["runs"]
        now = _iso(self._clock())
        with self._tx() as conn:
            cur = conn.execute(sa.delete(locks).where(locks.c.cohort_id == cohort_id))
            conn.execute(
                sa.update(runs)
                .where(runs.c.cohort_id == cohort_id, runs.c.result == "running")
                .values(result="interrupted", finished_at=now, error=_INTERRUPTED)
            )
            return bool(cur.rowcount)

    # -- names, workspace, resyncs ------------------------------------------------------------

    def record_name(
        self,
        cohort_id: str,
        name: str,
        *,
        named_at: dt.datetime,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Remember that Braze acknowledged ``name`` (sent with ``created_at``) for the cohort."""
        c = self._t["cohorts"]
        named, created = _iso(named_at), _iso(created_at)
        with self._tx() as conn:
            self._ensure_cohort(conn, cohort_id)
            conn.execute(
                sa.update(c)
                .where(c.c.cohort_id == cohort_id)
                .values(
                    name=name,
                    named_at=named,
                    created_at=sa.func.coalesce(
                        sa.literal(created, sa.Text), c.c.created_at, sa.literal(named, sa.Text)
                    ),
                )
            )

    def bind_workspace(self, cohort_id: str, workspace: str | None) -> None:
        """Say that the cohort's snapshot now describes ``workspace`` (a fingerprint, no key)."""
        self._set_cohort(cohort_id, workspace=workspace)

    def record_full_resync(self, cohort_id: str, *, at: dt.datetime) -> None:
        """Remember that a full resync of the cohort succeeded at ``at``."""
        self._set_cohort(cohort_id, full_resync_at=_iso(at))

    # -- membership ---------------------------------------------------------------------------

    def pending_count(self, cohort_id: str) -> int:
        """How many ids are uncertain (sent, or about to be sent, without acknowledgement)."""
        p = self._t["pending"]
        with self._tx() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(p).where(p.c.cohort_id == cohort_id)
                ).scalar_one()
            )

    def _iter_keys(self, table: str, cohort_id: str) -> Iterator[str]:
        t = self._t[table]
        last = ""
        while True:
            with self._tx() as conn:
                keys = list(
                    conn.execute(
                        sa.select(t.c.key)
                        .where(t.c.cohort_id == cohort_id, t.c.key > last)
                        .order_by(t.c.key)
                        .limit(10_000)
                    ).scalars()
                )
            if not keys:
                return
            yield from keys
            last = keys[-1]

    def snapshot_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the members Braze is known to hold (read in pages)."""
        return self._iter_keys("snapshot", cohort_id)

    def pending_keys(self, cohort_id: str) -> Iterator[str]:
        """Yield the keys of the uncertain ids."""
        return self._iter_keys("pending", cohort_id)

    def apply_batch(
        self,
        cohort_id: str,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        *,
        entered_at: dt.datetime | None = None,
    ) -> None:
        """Apply one acknowledged request to the snapshot and clear its keys from pending.

        Both happen in one transaction. ``entered_at`` stamps added keys that were not held yet
        (for :meth:`diff`'s ``resend_since``); ``None`` leaves them unstamped.
        """
        s, p, c = self._t["snapshot"], self._t["pending"], self._t["cohorts"]
        adds, removes = sorted(set(added)), sorted(set(removed))
        entered = None if entered_at is None else int(entered_at.timestamp())
        with self._tx() as conn:
            self._ensure_cohort(conn, cohort_id)
            grown = shrunk = 0
            for chunk in chunks(adds, _ROWS):
                held = set(
                    conn.execute(
                        sa.select(s.c.key).where(s.c.cohort_id == cohort_id, s.c.key.in_(chunk))
                    ).scalars()
                )
                new = [k for k in chunk if k not in held]
                if new:
                    conn.execute(
                        sa.insert(s).values(
                            [{"cohort_id": cohort_id, "key": k, "entered": entered} for k in new]
                        )
                    )
                    grown += len(new)
            for chunk in chunks(removes, _ROWS):
                shrunk += conn.execute(
                    sa.delete(s).where(s.c.cohort_id == cohort_id, s.c.key.in_(chunk))
                ).rowcount
            for chunk in chunks(itertools.chain(adds, removes), _ROWS):
                conn.execute(sa.delete(p).where(p.c.cohort_id == cohort_id, p.c.key.in_(chunk)))
            if grown or shrunk:
                conn.execute(
                    sa.update(c)
                    .where(c.c.cohort_id == cohort_id)
                    .values(members=c.c.members + (grown - shrunk))
                )

    def mark_pending(self, cohort_id: str, delta: Delta) -> None:
        """Record every key of ``delta`` as uncertain, with the change about to be sent.

        Written in transactions of 100,000 keys: a crash part-way only leaves ids uncertain
        that were not sent, which is safe.
        """
        p = self._t["pending"]
        rows = itertools.chain(
            ((k, 1) for k in delta.iter_adds()), ((k, 0) for k in delta.iter_removes())
        )
        try:
            while batch := list(itertools.islice(rows, 100 * _ROWS)):
                with self._tx() as conn:
                    for chunk in _row_chunks(batch):
                        keys = [k for k, _ in chunk]
                        conn.execute(
                            sa.delete(p).where(p.c.cohort_id == cohort_id, p.c.key.in_(keys))
                        )
                        conn.execute(
                            sa.insert(p).values(
                                [{"cohort_id": cohort_id, "key": k, "op": op} for k, op in chunk]
                            )
                        )
        except OSError as exc:
            raise StoreError(f"cannot read the delta's temporary files: {exc}") from exc

    # -- the delta, computed by the database --------------------------------------------------

    def query_members(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        column: str = "external_id",
    ) -> QueryMembers:
        """The members as a query on this store's database, diffed there.

        Give the result as ``members`` to :meth:`CohortSync.sync
        <braze_cohorts.CohortSync.sync>` of a sync engine using this store: the database
        compares the query's ids with the snapshot and the uncertain ids in one statement, and
        only the adds and removes are fetched. Null and blank ids are skipped; every other
        value of ``column`` is an external id (rejections are not counted per record, since no
        record leaves the database).

        Args:
            sql: The query (``:name`` parameters, SQLAlchemy ``text()`` syntax).
            params: The query's parameters.
            column: The result column holding the external ids.

        Raises:
            ConfigurationError: If ``sql`` or ``column`` is blank.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigurationError("query_members() needs the SQL of the members query")
        if not isinstance(column, str) or not column.strip():
            raise ConfigurationError("column must name the result column of the external ids")
        return QueryMembers(self, sql, dict(params or {}), column)

    def _claim(self, members: QueryMembers) -> bool:
        """Whether this thread's diff() expects to compute ``members`` in the database."""
        expecting = getattr(self._local, "expecting", None)
        if expecting is None or members.store is not self:
            return False
        self._local.claimed = members
        return True

    def diff(
        self,
        cohort_id: str,
        desired: Iterable[str],
        *,
        full: bool = False,
        resend_since: dt.datetime | None = None,
    ) -> Delta:
        """Compute what to send so that Braze holds exactly ``desired``, in the database.

        ``adds`` = desired keys Braze is not known to hold, plus desired keys that are uncertain
        or entered at or after ``resend_since`` (every desired key when ``full``); ``removes`` =
        held keys no longer desired, plus uncertain keys neither desired nor held. When
        ``desired`` reads a :meth:`query_members` query of this store, the query runs inside
        the comparison; otherwise the keys are first written to a temporary table.

        Raises:
            StoreError: If the database or the temporary files fail.
        """
        since = None if resend_since is None or full else int(resend_since.timestamp())
        self._local.expecting = True
        self._local.claimed = None
        try:
            it = iter(desired)
            first = next(it, None)  # runs QueryMembers.__iter__ when that is the source
            claimed: QueryMembers | None = self._local.claimed
        finally:
            self._local.expecting = None
            self._local.claimed = None
        if claimed is not None and first is None:
            return self._diff(cohort_id, None, claimed, full, since)
        rest = it if first is None else itertools.chain((first,), it)
        return self._diff(cohort_id, rest, None, full, since)

    def _diff(
        self,
        cohort_id: str,
        keys: Iterable[str] | None,
        query: QueryMembers | None,
        full: bool,
        since: int | None,
    ) -> Delta:
        s, p = self._t["snapshot"], self._t["pending"]
        delta = Delta()
        try:
            with self._tx() as conn:
                if since is not None:  # forget entry times that are no longer recent
                    conn.execute(
                        sa.update(s)
                        .where(s.c.cohort_id == cohort_id, s.c.entered < since)
                        .values(entered=None)
                    )
                staged = None
                if query is not None:
                    q = query.select().subquery("m")
                    desired = sa.select(
                        (sa.literal_column(f"'{_EXTERNAL}'") + q.c.id).label("key")
                    ).cte("desired")
                else:
                    assert keys is not None
                    staged = self._stage(conn, "desired")
                    self._fill(conn, staged, ((k, 1) for k in keys))
                    desired = sa.select(staged.c.key).distinct().cte("desired")
                d = desired.c.key
                # Outer joins, not OR-ed EXISTS: every engine plans them as hash joins.
                settled_on = sa.and_(s.c.cohort_id == cohort_id, s.c.key == d)
                if since is not None:
                    settled_on = sa.and_(
                        settled_on, sa.or_(s.c.entered.is_(None), s.c.entered < since)
                    )
                adds = sa.select(d.label("key"), sa.literal(1).label("op"))
                if not full:
                    adds = adds.select_from(
                        desired.outerjoin(s, settled_on).outerjoin(
                            p, sa.and_(p.c.cohort_id == cohort_id, p.c.key == d)
                        )
                    ).where(sa.or_(s.c.key.is_(None), p.c.key.is_not(None)))
                gone = sa.select(s.c.key, sa.literal(0)).where(
                    s.c.cohort_id == cohort_id,
                    ~sa.exists().where(desired.c.key == s.c.key),
                )
                loose = sa.select(p.c.key, sa.literal(2)).where(
                    p.c.cohort_id == cohort_id,
                    ~sa.exists().where(desired.c.key == p.c.key),
                    ~sa.exists().where(s.c.cohort_id == cohort_id, s.c.key == p.c.key),
                )
                self._fetch(conn, sa.union_all(adds, gone, loose), delta)
                if staged is not None:
                    staged.drop(conn)
        except OSError as exc:
            delta.close()
            raise StoreError(f"cannot write temporary files for the delta: {exc}") from exc
        except BaseException:
            delta.close()
            raise
        return delta

    @staticmethod
    def _fetch(conn: Any, statement: Any, delta: Delta) -> None:
        """Stream ``(key, op)`` rows into ``delta``: op 1 add, 0 remove of a held key, 2 other."""
        # Per statement: Connection.execution_options() would change the connection itself.
        result = conn.execute(statement, execution_options=_STREAM)
        for rows in result.partitions(CHUNK):
            adds = [r[0] for r in rows if r[1] == 1]
            held = [r[0] for r in rows if r[1] == 0]
            loose = [r[0] for r in rows if r[1] == 2]
            delta._adds.extend(adds)
            delta._removes.extend(held)
            delta._removes.extend(loose)
            delta.held_removes += len(held)

    @staticmethod
    def _stage(conn: Any, name: str) -> Any:
        """An empty temporary table ``(key, op)`` on ``conn``; the caller drops it."""
        table = sa.Table(
            f"bc_{name}_{uuid.uuid4().hex[:12]}",
            sa.MetaData(),
            sa.Column("key", sa.String(1024), nullable=False),
            sa.Column("op", sa.SmallInteger, nullable=False),
            prefixes=["TEMPORARY"],
        )
        table.create(conn)
        return table

    @staticmethod
    def _fill(conn: Any, table: Any, rows: Iterable[tuple[str, int]]) -> None:
        for chunk in _row_chunks(rows):
            conn.execute(sa.insert(table).values([{"key": k, "op": op} for k, op in chunk]))

    def diff_changes(self, cohort_id: str, entered: Iterable[str], left: Iterable[str]) -> Delta:
        """Compute what to send for a delta the caller computed (who entered, who left).

        ``adds`` = entered keys that Braze is not known to hold or that are uncertain;
        ``removes`` = left keys that Braze is known to hold or that are uncertain; every other
        uncertain key is re-sent with the change last sent for it.

        Raises:
            InputError: If a key is both in ``entered`` and in ``left``.
            StoreError: If the store fails.
        """
        s, p = self._t["snapshot"], self._t["pending"]
        delta = Delta()
        try:
            with self._tx() as conn:
                self._ensure_cohort(conn, cohort_id)
                staged = self._stage(conn, "changes")
                self._fill(
                    conn,
                    staged,
                    itertools.chain(((k, 1) for k in entered), ((k, 0) for k in left)),
                )
                both = conn.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.select(staged.c.key)
                        .group_by(staged.c.key)
                        .having(sa.func.count(sa.distinct(staged.c.op)) > 1)
                        .subquery()
                    )
                ).scalar_one()
                if both:
                    raise InputError(
                        f"{both} id(s) are both in entered and in left; a user either entered "
                        "or left"
                    )
                d = sa.select(staged.c.key, staged.c.op).distinct().cte("changes")
                held = sa.exists().where(s.c.cohort_id == cohort_id, s.c.key == d.c.key)
                unsure = sa.exists().where(p.c.cohort_id == cohort_id, p.c.key == d.c.key)
                given = ~sa.exists().where(d.c.key == p.c.key)
                p_held = sa.exists().where(s.c.cohort_id == cohort_id, s.c.key == p.c.key)
                statement = sa.union_all(
                    sa.select(d.c.key, sa.literal(1)).where(d.c.op == 1, sa.or_(unsure, ~held)),
                    sa.select(d.c.key, sa.case((held, 0), else_=2)).where(
                        d.c.op == 0, sa.or_(unsure, held)
                    ),
                    sa.select(p.c.key, sa.case((p.c.op == 1, 1), (p_held, 0), else_=2)).where(
                        p.c.cohort_id == cohort_id, given
                    ),
                )
                self._fetch(conn, statement, delta)
                staged.drop(conn)
        except OSError as exc:
            delta.close()
            raise StoreError(f"cannot write temporary files for the delta: {exc}") from exc
        except BaseException:
            delta.close()
            raise
        return delta

    # -- schedules (one row per cohort; see braze_cohorts._scheduler) ---------------------------

    def put_schedule(self, entry: ScheduledImport, *, replace: bool = False) -> None:
        """Store a cohort's schedule (one live schedule per cohort; a done one may be replaced).

        Without an upsert: an ``UPDATE`` of a replaceable row, else an ``INSERT`` that the primary
        key refuses when another writer got there first (then the row is judged again), so two
        writers never both pass the "no live schedule" check.

        Raises:
            ScheduleConflictError: If the cohort has an active or paused schedule and
                ``replace`` is false.
            StoreError: If the store fails.
        """
        t = self._t["schedules"]
        row = dict(zip(_SCHEDULE_NAMES, _schedule_values(entry), strict=True))
        replaceable = t.c.cohort_id == entry.cohort_id
        if not replace:
            replaceable = sa.and_(replaceable, t.c.state == "done")
        failure: BaseException | None = None
        for attempt in range(_PUT_ATTEMPTS):
            row["updated_at"] = _iso(self._clock())
            try:
                with self._engine.begin() as conn:
                    if conn.execute(sa.update(t).where(replaceable).values(**row)).rowcount:
                        return
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(t).values(**row))
                return
            except sa.exc.SQLAlchemyError as exc:  # most often: another writer's row
                failure = exc
            existing = self.get_schedule(entry.cohort_id)
            if existing is not None and not replace and existing.state != "done":
                raise ScheduleConflictError(
                    f"cohort {entry.cohort_id!r} already has a live schedule; replace it with "
                    "replace=True (CLI: --replace)"
                )
            time.sleep(_RETRY_PAUSE * (attempt + 1))  # let the other writer's transaction end
        assert failure is not None  # every attempt that did not return failed
        raise StoreError(f"state store failed: {_brief(failure)}") from None

    def _schedules(self, *where: Any, order: Any = None) -> list[ScheduledImport]:
        t = self._t["schedules"]
        q = sa.select(*(t.c[n] for n in _SCHEDULE_NAMES)).where(*where)
        if order is not None:
            q = q.order_by(*order)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [_schedule_from_row(row) for row in rows]

    def get_schedule(self, cohort_id: str) -> ScheduledImport | None:
        """The cohort's schedule, or ``None``."""
        found = self._schedules(self._t["schedules"].c.cohort_id == cohort_id)
        return found[0] if found else None

    def list_schedules(self) -> list[ScheduledImport]:
        """Every schedule, by cohort id."""
        return self._schedules(order=[self._t["schedules"].c.cohort_id])

    def due_schedules(self, now: dt.datetime) -> list[ScheduledImport]:
        """Active schedules due at or before ``now``, earliest first."""
        c = self._t["schedules"].c
        return self._schedules(
            c.state == "active",
            c.next_due.is_not(None),
            c.next_due <= _due(now),
            order=[c.next_due, c.cohort_id],
        )

    def next_due(self) -> dt.datetime | None:
        """The earliest ``next_due`` of the active schedules, or ``None`` when none is active."""
        t = self._t["schedules"]
        with self._tx() as conn:
            due = conn.execute(
                sa.select(sa.func.min(t.c.next_due)).where(
                    t.c.state == "active", t.c.next_due.is_not(None)
                )
            ).scalar()
        return _from_due(due)

    def delete_schedule(self, cohort_id: str) -> bool:
        """Delete the cohort's schedule; ``False`` if it had none."""
        t = self._t["schedules"]
        with self._tx() as conn:
            return bool(conn.execute(sa.delete(t).where(t.c.cohort_id == cohort_id)).rowcount)

    def claim_schedule(
        self, cohort_id: str, *, expected_due: dt.datetime, next_due: dt.datetime | None
    ) -> bool:
        """Atomically move an active schedule's due time from ``expected_due`` to ``next_due``.

        One ``UPDATE ... WHERE next_due = expected`` (the database re-checks the condition
        after waiting for a concurrent writer), so schedulers in several processes or on
        several machines agree on who runs. ``next_due=None`` marks it done. Returns
        ``False``, changing nothing, when another runner got there first (or the schedule was
        paused, replaced or cleared meanwhile). A database that refuses the write because of a
        concurrent one not committed yet (DuckDB's write conflict) is tried again after a pause,
        when the other transaction has ended.
        """
        t = self._t["schedules"]
        update = (
            sa.update(t)
            .where(
                t.c.cohort_id == cohort_id,
                t.c.state == "active",
                t.c.next_due == _due(expected_due),
            )
            .values(
                next_due=_due(next_due),
                state="active" if next_due is not None else "done",
                updated_at=_iso(self._clock()),
            )
        )
        failure: BaseException | None = None
        for attempt in range(_PUT_ATTEMPTS):
            try:
                with self._engine.begin() as conn:
                    return bool(conn.execute(update).rowcount == 1)
            except sa.exc.SQLAlchemyError as exc:  # e.g. a concurrent claim not committed yet
                failure = exc
            time.sleep(_RETRY_PAUSE * (attempt + 1))  # then the claim is judged again
        assert failure is not None
        raise StoreError(f"state store failed: {_brief(failure)}") from None

    def update_schedule(
        self,
        cohort_id: str,
        *,
        state: ScheduleState,
        paused_reason: str | None,
        next_due: dt.datetime | None,
    ) -> None:
        """Set the state, pause reason and due time of the cohort's schedule."""
        t = self._t["schedules"]
        with self._tx() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.cohort_id == cohort_id)
                .values(
                    state=state,
                    paused_reason=paused_reason,
                    next_due=_due(next_due),
                    updated_at=_iso(self._clock()),
                )
            )

    def set_schedule_last_run(self, cohort_id: str, run_id: int | None) -> None:
        """Remember the id of the schedule's latest import."""
        t = self._t["schedules"]
        with self._tx() as conn:
            conn.execute(sa.update(t).where(t.c.cohort_id == cohort_id).values(last_run_id=run_id))

    # -- connection profiles (see braze_cohorts._profiles) -----------------------------------

    def put_profile(self, profile: ConnectionProfile, *, replace: bool = False) -> None:
        """Store a connection profile (names and paths only; a profile holds no key).

        Raises:
            ConfigurationError: If a profile of that name exists and ``replace`` is false.
            StoreError: If the store fails.
        """
        t = self._t["profiles"]
        row = {n: getattr(profile, n) for n in _PROFILE_NAMES}
        failure: BaseException | None = None
        for attempt in range(_PUT_ATTEMPTS):
            row["updated_at"] = _iso(self._clock())
            try:
                if replace:
                    with self._engine.begin() as conn:
                        where = t.c.name == profile.name
                        if conn.execute(sa.update(t).where(where).values(**row)).rowcount:
                            return
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(t).values(**row))
                return
            except sa.exc.SQLAlchemyError as exc:  # most often: another writer's row
                failure = exc
            if not replace and self.get_profile(profile.name) is not None:
                raise ConfigurationError(_profile_exists(profile.name))
            time.sleep(_RETRY_PAUSE * (attempt + 1))  # let the other writer's transaction end
        assert failure is not None  # every attempt that did not return failed
        raise StoreError(f"state store failed: {_brief(failure)}") from None

    def _profiles(self, *where: Any) -> list[ConnectionProfile]:
        t = self._t["profiles"]
        q = sa.select(*(t.c[n] for n in _PROFILE_NAMES)).where(*where).order_by(t.c.name)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [ConnectionProfile(**dict(zip(_PROFILE_NAMES, row, strict=True))) for row in rows]

    def get_profile(self, name: str) -> ConnectionProfile | None:
        """The profile called ``name``, or ``None``."""
        found = self._profiles(self._t["profiles"].c.name == name)
        return found[0] if found else None

    def list_profiles(self) -> list[ConnectionProfile]:
        """Every profile, by name."""
        return self._profiles()

    def delete_profile(self, name: str) -> bool:
        """Delete the profile called ``name``; ``False`` if there is none."""
        t = self._t["profiles"]
        with self._tx() as conn:
            return bool(conn.execute(sa.delete(t).where(t.c.name == name)).rowcount)


def _row_chunks(rows: Iterable[tuple[str, int]]) -> Iterator[list[tuple[str, int]]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, _ROWS)):
        yield chunk


def _brief(exc: BaseException) -> str:
    """A database error's first line, without the SQL and parameters SQLAlchemy appends."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


if TYPE_CHECKING:

    def _sql_store_is_a_state_store(store: SQLStore) -> StateStore:
        return store  # mypy checks SQLStore against the protocols here

    def _sql_store_is_a_schedule_store(store: SQLStore) -> ScheduleStore:
        return store

    def _sql_store_is_a_profile_store(store: SQLStore) -> ProfileStore:
        return store
