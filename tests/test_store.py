"""The StateStore contract, run against SQLiteStore, MemoryStore and SQLStore (on PostgreSQL and
DuckDB); SQLiteStore's own schema, files and cross-process lock."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts import ImportInProgressError, ImportRun, InputError, StoreError, _delta, _store
from braze_cohorts._delta import Delta
from braze_cohorts._sqlstore import SQLStore
from braze_cohorts._store import SQLiteStore
from braze_cohorts.testing import MemoryStore, SettableClock
from doc_examples import run_doc_examples

T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.timezone.utc)


def _run(cohort_id: str = "c1", **changes: object) -> ImportRun:
    fields: dict[str, object] = {
        "cohort_id": cohort_id,
        "name": "Power users",
        "trigger": "manual",
        "started_at": T0,
    }
    fields.update(changes)
    return ImportRun(**fields)  # type: ignore[arg-type]


#: Every store that implements the StateStore contract; the contract tests run against each.
STORES = ["sqlite", "memory", "postgres", "duckdb"]
Store = SQLiteStore | MemoryStore | SQLStore


def _open(kind: str, directory: Path, request: pytest.FixtureRequest) -> Store:
    clock = SettableClock(T0 + dt.timedelta(hours=1))
    if kind == "sqlite":
        return SQLiteStore(directory / "state.db", clock=clock)
    if kind == "postgres":  # a schema of its own in the session's throwaway server
        url = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg://")
        return SQLStore(url, schema=f"s_{uuid.uuid4().hex[:12]}", clock=clock)
    if kind == "duckdb":
        return SQLStore(f"duckdb:///{directory / 'state.duckdb'}", clock=clock)
    return MemoryStore(clock=clock)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each StateStore implementation in turn (the contract tests)."""
    s = _open(request.param, tmp_path, request)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """The SQLite store alone (its files, schema and processes)."""
    s = SQLiteStore(tmp_path / "state.db", clock=SettableClock(T0 + dt.timedelta(hours=1)))
    yield s
    s.close()


def _dead_pid() -> int:
    """A pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hold_lock(path: str, ready: Connection) -> None:
    """Take the lock, say so, then wait to be killed (never on a shared lock: it would break)."""
    store = SQLiteStore(path)
    store.start_run(_run())
    ready.send("locked")
    time.sleep(60)


def _mark(
    store: Store, cohort_id: str, adds: Iterable[str] = (), removes: Iterable[str] = ()
) -> None:
    with Delta.from_keys(adds=adds, removes=removes) as delta:
        store.mark_pending(cohort_id, delta)


class TestSchema:
    def test_new_file_has_current_version_and_tables(self, tmp_path: Path) -> None:
        """A new state file is created (with its directory) at the current schema version."""
        path = tmp_path / "deep" / "dir" / "state.db"
        SQLiteStore(path).close()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == _store.SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
        assert {"cohorts", "snapshot", "pending", "runs", "locks"} <= tables

    def test_data_survives_reopening(self, tmp_path: Path) -> None:
        """Names, members and history written by one store object are read by the next."""
        path = tmp_path / "state.db"
        with SQLiteStore(path) as first:
            first.record_name("c1", "Power users", named_at=T0)
            first.apply_batch("c1", added=["e:u1", "e:u2"])
            first.finish_run(_finished(first.start_run(_run())))
        with SQLiteStore(path) as second:
            assert second.known_name("c1") == "Power users"
            assert sorted(second.snapshot_keys("c1")) == ["e:u1", "e:u2"]
            assert second.member_count("c1") == 2
            assert [r.result for r in second.history("c1")] == ["succeeded"]

    @pytest.mark.parametrize("version", range(1, len(_store._MIGRATIONS)))
    def test_older_file_is_migrated_and_keeps_its_runs_and_members(
        self, tmp_path: Path, version: int
    ) -> None:
        """A file of an older schema is migrated on open; old rows read back with defaults."""
        path = tmp_path / "state.db"
        conn = sqlite3.connect(path)
        for statements in _store._MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("INSERT INTO cohorts (cohort_id, name, members) VALUES ('c1', 'Old', 1)")
        conn.execute("INSERT INTO snapshot (cid, bucket, key) VALUES (1, 0, 'e:old')")
        conn.execute(
            "INSERT INTO runs (cohort_id, name, trigger, started_at, finished_at, result) "
            "VALUES ('c1', 'Old', 'manual', ?, ?, 'succeeded')",
            (T0.isoformat(), T0.isoformat()),
        )
        conn.commit()
        conn.close()
        with SQLiteStore(path) as store:
            [old] = store.history("c1")
            assert (old.result, old.error_kind, old.full_resync, old.warnings) == (
                "succeeded",
                None,
                False,
                (),
            )
            assert list(store.snapshot_keys("c1")) == ["e:old"]
            assert store.member_count("c1") == 1
            assert (store.workspace("c1"), store.last_full_resync("c1")) == (None, None)
            failed = attrs.evolve(
                _run(),
                result="failed",
                error="HTTP 401: x",
                error_kind="AuthenticationError",
                error_cause="data_import_key",
                full_resync=True,
                full_resync_reason="requested",
                warnings=("w1",),
            )
            stored = store.finish_run(
                attrs.evolve(failed, id=store.start_run(_run()).id, finished_at=T0)
            )
            assert store.get_run(stored.id or 0) == stored
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == _store.SCHEMA_VERSION
        finally:
            conn.close()

    @pytest.mark.parametrize("version", [2, 5])
    def test_older_schedules_are_migrated_with_no_profile_and_the_engines_period(
        self, tmp_path: Path, version: int
    ) -> None:
        """A schedule stored before profiles reads back with profile and resync_every None."""
        path = tmp_path / "state.db"
        _old_schema_file(path, version)
        conn = sqlite3.connect(path)
        conn.execute(
            "INSERT INTO schedules (cohort_id, name, spec, state, next_due, updated_at)"
            " VALUES ('c1', 'Old', ?, 'active', '2026-01-05T10:00:00.000000Z', ?)",
            (json.dumps(bc.Schedule.hourly(0).to_dict()), T0.isoformat()),
        )
        conn.commit()
        conn.close()
        with SQLiteStore(path) as store:
            entry = store.get_schedule("c1")
            assert entry is not None
            assert (entry.profile, entry.resync_every) == (None, None)
            assert store.list_profiles() == []

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file written by a newer version is refused instead of being misread."""
        path = tmp_path / "state.db"
        SQLiteStore(path).close()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {_store.SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(StoreError, match="schema version"):
            SQLiteStore(path)

    def test_not_a_database_raises_store_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite raises StoreError, not sqlite3.DatabaseError."""
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a database, just some text " * 200)
        with pytest.raises(StoreError) as info:
            SQLiteStore(path)
        assert isinstance(info.value.__cause__, sqlite3.Error)

    def test_use_after_close_raises_store_error(self, tmp_path: Path) -> None:
        """Errors of a closed connection are translated too."""
        store = SQLiteStore(tmp_path / "state.db")
        store.close()
        with pytest.raises(StoreError):
            store.member_count("c1")
        with pytest.raises(StoreError):
            store.apply_batch("c1", added=["e:x"])

    def test_in_memory_store_works(self) -> None:
        """``":memory:"`` gives a throwaway store."""
        with SQLiteStore(":memory:") as store:
            store.apply_batch("c1", added=["e:a"])
            assert store.member_count("c1") == 1


class TestRuns:
    def test_start_run_records_a_running_run_with_an_id(self, store: Store) -> None:
        """start_run stores the run as running and returns it with its id."""
        run = store.start_run(_run(result="succeeded"))
        assert run.id is not None
        assert run.result == "running"
        assert store.get_run(run.id) == run

    def test_finish_run_round_trips_every_field(self, store: Store) -> None:
        """Every ImportRun field comes back from the history as it was stored."""
        run = store.start_run(_run(trigger="scheduled"))
        final = ImportRun(
            id=run.id,
            cohort_id="c1",
            name="Power users",
            trigger="scheduled",
            started_at=T0,
            finished_at=T0 + dt.timedelta(seconds=42),
            result="failed",
            users=7,
            added=5,
            removed=2,
            rejected={"invalid_external_id": 3, "missing_identifier": 1},
            requests=9,
            retries=4,
            error="HTTP 503: try later",
            notification_error=None,
        )
        store.finish_run(final)
        (stored,) = store.history("c1")
        assert stored == final
        assert stored.finished_at is not None
        assert stored.finished_at.utcoffset() == dt.timedelta(0)

    def test_history_is_newest_first_and_limited(self, store: Store) -> None:
        """history lists one cohort's runs newest first and honours limit."""
        ids = []
        for n in range(3):
            run = store.start_run(_run(started_at=T0 + dt.timedelta(minutes=n)))
            ids.append(store.finish_run(_finished(run)).id)
        store.finish_run(_finished(store.start_run(_run("other"))))
        assert [r.id for r in store.history("c1")] == ids[::-1]
        assert [r.id for r in store.history("c1", limit=2)] == ids[:0:-1]
        assert store.history("nobody") == []

    def test_notification_error_is_recorded_after_finishing(self, store: Store) -> None:
        """A notification failure is attached to the finished run."""
        run = store.finish_run(_finished(store.start_run(_run())))
        assert run.id is not None
        store.record_notification_error(run.id, "SMTP 550")
        assert store.history("c1")[0].notification_error == "SMTP 550"
        with pytest.raises(StoreError):
            store.record_notification_error(run.id + 100, "x")

    def test_update_run_records_counts_and_keeps_the_lock(self, store: Store) -> None:
        """A running run's counts so far are in the history while its lock stays held."""
        run = store.start_run(_run())
        store.update_run(attrs.evolve(run, added=7, requests=3, warnings=("w",)))
        (stored,) = store.history("c1")
        assert (stored.result, stored.added, stored.requests, stored.warnings) == (
            "running",
            7,
            3,
            ("w",),
        )
        with pytest.raises(ImportInProgressError):
            store.start_run(_run())
        with pytest.raises(StoreError):
            store.update_run(_run())

    def test_finish_run_needs_a_started_run(self, store: Store) -> None:
        """finish_run refuses a run that start_run did not return."""
        with pytest.raises(StoreError):
            store.finish_run(_run())

    def test_naive_datetimes_are_refused(self, store: Store) -> None:
        """Times must be aware so that history is unambiguous UTC."""
        with pytest.raises(StoreError, match="timezone-aware"):
            store.start_run(_run(started_at=dt.datetime(2026, 1, 1)))


def _finished(run: ImportRun) -> ImportRun:
    return ImportRun(
        id=run.id,
        cohort_id=run.cohort_id,
        name=run.name,
        trigger=run.trigger,
        started_at=run.started_at,
        finished_at=run.started_at + dt.timedelta(seconds=1),
        result="succeeded",
    )


class TestLock:
    def test_second_import_of_a_cohort_is_refused(self, store: Store) -> None:
        """While a run holds the lock, another start_run fails with who holds it."""
        first = store.start_run(_run())
        with pytest.raises(ImportInProgressError, match=f"process {os.getpid()}") as info:
            store.start_run(_run())
        assert f"run {first.id}" in str(info.value)
        holder = store.lock_holder("c1")
        assert holder is not None
        assert (holder.pid, holder.run_id) == (os.getpid(), first.id)

    def test_other_store_objects_are_refused_too(self, sqlite_store: SQLiteStore) -> None:
        """A second sqlite_store object on the same file (another thread's) sees the lock."""
        sqlite_store.start_run(_run())
        with SQLiteStore(sqlite_store.path) as other, pytest.raises(ImportInProgressError):
            other.start_run(_run())

    def test_locks_of_different_cohorts_are_independent(self, store: Store) -> None:
        """Importing one cohort does not block another."""
        store.start_run(_run("c1"))
        assert store.start_run(_run("c2")).id is not None

    def test_finishing_releases_the_lock(self, store: Store) -> None:
        """After finish_run the cohort can be imported again."""
        store.finish_run(_finished(store.start_run(_run())))
        assert store.lock_holder("c1") is None
        assert store.start_run(_run()).id is not None

    def test_stale_lock_of_a_dead_process_is_taken_over(self, sqlite_store: SQLiteStore) -> None:
        """A lock whose process is gone is taken over and its run marked interrupted."""
        old = sqlite_store.start_run(_run())
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("UPDATE locks SET pid = ?", (_dead_pid(),))
        conn.commit()
        conn.close()
        new = sqlite_store.start_run(_run())
        assert new.id != old.id
        assert old.id is not None
        stale = sqlite_store.get_run(old.id)
        assert stale is not None
        assert stale.result == "interrupted"
        assert stale.error == "interrupted: the process running it stopped"
        assert stale.finished_at == T0 + dt.timedelta(hours=1)

    def test_lock_of_another_host_is_not_taken_over(self, sqlite_store: SQLiteStore) -> None:
        """A lock from another host cannot be checked, so it is respected until broken."""
        sqlite_store.start_run(_run())
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("UPDATE locks SET pid = ?, host = 'elsewhere'", (_dead_pid(),))
        conn.commit()
        conn.close()
        with pytest.raises(ImportInProgressError, match="elsewhere"):
            sqlite_store.start_run(_run())
        assert sqlite_store.break_lock("c1") is True
        assert sqlite_store.history("c1")[0].result == "interrupted"
        assert sqlite_store.start_run(_run()).result == "running"

    def test_running_run_without_lock_is_interrupted_on_next_start(
        self, sqlite_store: SQLiteStore
    ) -> None:
        """A run left running with no lock is marked interrupted by the next start."""
        old = sqlite_store.start_run(_run())
        conn = sqlite3.connect(sqlite_store.path)
        conn.execute("DELETE FROM locks")
        conn.commit()
        conn.close()
        sqlite_store.start_run(_run())
        assert old.id is not None
        stale = sqlite_store.get_run(old.id)
        assert stale is not None
        assert stale.result == "interrupted"

    def test_lock_is_held_across_processes(self, tmp_path: Path) -> None:
        """A lock taken in another process refuses this one; once that process dies it is stale."""
        path = str(tmp_path / "state.db")
        SQLiteStore(path).close()
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_hold_lock, args=(path, child_end))
        proc.start()
        try:
            assert parent_end.poll(30)
            assert parent_end.recv() == "locked"
            with SQLiteStore(path) as store:
                with pytest.raises(ImportInProgressError, match=f"process {proc.pid}"):
                    store.start_run(_run())
                proc.kill()
                proc.join(30)
                run = store.start_run(_run())
                assert run.result == "running"
                assert [r.result for r in store.history("c1")] == ["running", "interrupted"]
        finally:
            proc.kill()
            proc.join(30)


class TestNames:
    def test_name_is_unknown_until_recorded(self, store: Store) -> None:
        """known_name is None for a cohort never named, then the recorded name."""
        assert store.known_name("c1") is None
        store.record_name("c1", "Power users", named_at=T0)
        store.record_name("c1", "Power users 2", named_at=T0)
        assert store.known_name("c1") == "Power users 2"

    def test_created_at_is_kept_from_the_first_naming(self, store: Store) -> None:
        """created_at defaults to the first naming's time and is kept unless a new one is given."""
        later = T0 + dt.timedelta(days=1)
        assert store.created_at("c1") is None
        store.record_name("c1", "A", named_at=T0)
        store.record_name("c1", "B", named_at=later)
        assert store.created_at("c1") == T0
        store.record_name("c1", "C", named_at=later, created_at=later)
        assert store.created_at("c1") == later

    def test_workspace_binding_and_full_resync_time(self, store: Store) -> None:
        """The workspace fingerprint and the last full resync are remembered per cohort."""
        assert (store.workspace("c1"), store.last_full_resync("c1")) == (None, None)
        store.bind_workspace("c1", "ws-a")
        store.record_full_resync("c1", at=T0)
        store.bind_workspace("c1", "ws-b")
        assert (store.workspace("c1"), store.last_full_resync("c1")) == ("ws-b", T0)
        assert store.workspace("c2") is None


class TestApplyBatch:
    def test_apply_updates_snapshot_count_and_clears_pending(self, store: Store) -> None:
        """An acknowledged batch moves keys into/out of the snapshot and out of pending."""
        store.apply_batch("c1", added=["e:a", "e:b", "e:c"])
        _mark(store, "c1", adds=["e:d"], removes=["e:a", "e:b"])
        assert sorted(store.pending_keys("c1")) == ["e:a", "e:b", "e:d"]
        store.apply_batch("c1", added=["e:d"], removed=["e:a"])
        assert sorted(store.snapshot_keys("c1")) == ["e:b", "e:c", "e:d"]
        assert list(store.pending_keys("c1")) == ["e:b"]
        assert store.member_count("c1") == 3
        assert store.pending_count("c1") == 1

    def test_repeated_adds_and_absent_removes_do_not_skew_the_count(self, store: Store) -> None:
        """The member count follows real snapshot changes only."""
        store.apply_batch("c1", added=["e:a", "e:b"])
        store.apply_batch("c1", added=["e:a"], removed=["e:zz"])
        assert store.member_count("c1") == 2

    def test_many_keys_are_paged(self, store: Store) -> None:
        """snapshot_keys pages through more keys than one page holds."""
        keys = [f"e:user{n}" for n in range(25_000)]
        store.apply_batch("c1", added=keys)
        assert sorted(store.snapshot_keys("c1")) == sorted(keys)


_KEY = st.sampled_from([f"e:u{n}" for n in range(40)] + ["a:email\x1fx@y.io", "d:dev-1"])
_KEYS = st.frozensets(_KEY)


class TestBulkMarks:
    """A delta's adds are marked uncertain in bulk; only acknowledged ones stop being."""

    @settings(max_examples=40, deadline=None)
    @given(
        held=_KEYS,
        before=_KEYS,
        adds=_KEYS,
        acked=st.sets(st.integers(min_value=0, max_value=30)),
        settle=st.sampled_from(["killed", "incomplete", "complete"]),
    )
    def test_unacknowledged_adds_stay_uncertain_after_a_kill_or_a_failed_upload(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        held: frozenset[str],
        before: frozenset[str],
        adds: frozenset[str],
        acked: set[int],
        settle: str,
    ) -> None:
        """Marked adds not acknowledged (and committed) are uncertain to a store opened anew."""
        path = tmp_path_factory.mktemp("m") / "state.db"
        order = sorted(adds)
        done = {key for i, key in enumerate(order) if i in acked}
        with SQLiteStore(path) as store:
            store.apply_batch("c1", added=held)
            _mark(store, "c1", removes=before - adds)
            _mark(store, "c1", adds=adds)
            for key in order:  # one acknowledged batch per key
                if key in done:
                    store.apply_batch("c1", added=[key])
            if settle == "incomplete":
                store.settle_pending("c1", complete=False)
            elif settle == "complete" and done == set(adds):
                store.settle_pending("c1", complete=True)
            # "killed": the marks stay as they are, and the process is gone.
        with SQLiteStore(path) as again:
            expected = ((before - adds) | adds) - done
            assert sorted(again.pending_keys("c1")) == sorted(expected)
            assert again.pending_count("c1") == len(expected)
            with again.diff("c1", iter(adds)) as delta:  # settles the marks into rows
                assert set(delta.iter_adds()) == adds - done  # held now, or uncertain
            assert again.pending_count("c1") == len(expected)
            assert not again._conn.execute("SELECT count(*) FROM marks").fetchone()[0]

    def test_an_add_over_an_older_uncertain_remove_is_settled_as_an_add(
        self, tmp_path: Path
    ) -> None:
        """A key whose remove was uncertain, then re-added and killed, is re-sent as an add."""
        path = tmp_path / "state.db"
        with SQLiteStore(path) as store:
            store.apply_batch("c1", added=["e:a"])
            _mark(store, "c1", removes=["e:a"])
            _mark(store, "c1", adds=["e:a", "e:b"])
        with SQLiteStore(path) as again, again.diff_changes("c1", [], []) as delta:
            assert (sorted(delta.iter_adds()), list(delta.iter_removes())) == (
                ["e:a", "e:b"],
                [],
            )

    def test_a_large_delta_is_marked_in_a_few_rows(self, tmp_path: Path) -> None:
        """100,000 adds take two rows of marks, not 100,000 rows of pending."""
        with SQLiteStore(tmp_path / "state.db") as store:
            _mark(store, "c1", adds=(f"e:u{i}" for i in range(100_000)))
            conn = store._conn
            assert conn.execute("SELECT count(*) FROM marks").fetchone()[0] == 2
            assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
            assert store.pending_count("c1") == 100_000


class TestDiff:
    @pytest.mark.parametrize("kind", STORES)
    @pytest.mark.parametrize("memory_keys", [200_000, 7])
    @settings(max_examples=60, deadline=None)
    @given(held=_KEYS, recent=_KEYS, unsure=_KEYS, want=st.lists(_KEY), full=st.booleans())
    def test_delta_is_exact(
        self,
        request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory,
        kind: str,
        memory_keys: int,
        held: frozenset[str],
        recent: frozenset[str],
        unsure: frozenset[str],
        want: list[str],
        full: bool,
    ) -> None:
        """Adds: wanted and (not held, unsure or a recent entrant; all wanted in a full resync);
        removes: not wanted and (held or unsure)."""
        mp = pytest.MonkeyPatch()
        mp.setattr(_delta, "MEMORY_KEYS", memory_keys)
        try:
            with _open(kind, tmp_path_factory.mktemp("d"), request) as store:
                store.apply_batch("c1", added=held - recent)
                store.apply_batch("c1", added=held & recent, entered_at=T0)
                _mark(store, "c1", adds=unsure)
                since = T0 - dt.timedelta(hours=1)
                with store.diff("c1", iter(want), full=full, resend_since=since) as delta:
                    adds = list(delta.iter_adds())
                    removes = list(delta.iter_removes())
                    assert (delta.adds, delta.removes) == (len(adds), len(removes))
        finally:
            mp.undo()
        w = set(want)
        if full:
            assert sorted(adds) == sorted(w)
        else:
            assert sorted(adds) == sorted((w - held) | (unsure & w) | (w & held & recent))
        assert sorted(removes) == sorted((held - w) | (unsure - w))

    def test_diff_writes_nothing(self, store: Store) -> None:
        """Computing a delta leaves snapshot and pending untouched."""
        store.apply_batch("c1", added=["e:a"])
        with store.diff("c1", ["e:b"]) as delta:
            assert (delta.adds, delta.removes) == (1, 1)
        assert list(store.snapshot_keys("c1")) == ["e:a"]
        assert store.pending_count("c1") == 0

    def test_unknown_cohort_adds_every_distinct_key(self, store: Store) -> None:
        """A cohort never seen gets every desired key once."""
        with store.diff("new", ["e:a", "e:a", "e:b"]) as delta:
            assert sorted(delta.iter_adds()) == ["e:a", "e:b"]
            assert list(delta.iter_removes()) == []

    def test_large_delta_spills_and_removes_its_files(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A delta bigger than the memory budget lives in temporary files that close() deletes."""
        monkeypatch.setattr(_delta, "MEMORY_KEYS", 100)
        store.apply_batch("c1", added=[f"e:old{n}" for n in range(300)])
        desired = (f"e:new{n}" for n in range(1_000))
        delta = store.diff("c1", desired)
        tmp = delta._tmp
        assert tmp is not None
        assert os.listdir(tmp.name)
        assert sum(1 for _ in delta.iter_adds()) == 1_000
        assert sum(1 for _ in delta.iter_removes()) == 300
        delta.close()
        assert not os.path.exists(tmp.name)

    def test_desired_is_consumed_lazily_in_chunks(self, store: Store) -> None:
        """The desired iterable is streamed, not materialised by the caller's side."""
        pulled = 0

        def desired() -> Iterator[str]:
            nonlocal pulled
            for n in range(50_000):
                pulled += 1
                yield f"e:{n}"

        gen = desired()
        delta = store.diff("c1", gen)
        assert pulled == 50_000
        assert delta.adds == 50_000
        delta.close()


class TestDiffChanges:
    def _prepare(self, store: Store) -> None:
        # held: a, b, c; uncertain: c (last sent: remove), x (last sent: add), y (remove)
        store.apply_batch("c1", added=["e:a", "e:b", "e:c"])
        _mark(store, "c1", adds=["e:x"], removes=["e:c", "e:y"])

    def test_given_delta_is_reduced_to_what_must_travel(self, store: Store) -> None:
        """Entered-but-held and left-but-absent are skipped; uncertain ids go as last sent."""
        self._prepare(store)
        with store.diff_changes("c1", entered=["e:a", "e:n"], left=["e:b", "e:gone"]) as d:
            assert sorted(d.iter_adds()) == ["e:n", "e:x"]
            assert sorted(d.iter_removes()) == ["e:b", "e:c", "e:y"]

    def test_given_delta_overrides_the_last_sent_change(self, store: Store) -> None:
        """An uncertain id named in the new delta is sent with its new state."""
        self._prepare(store)
        with store.diff_changes("c1", entered=["e:c", "e:y"], left=["e:x"]) as d:
            assert sorted(d.iter_adds()) == ["e:c", "e:y"]
            assert sorted(d.iter_removes()) == ["e:x"]

    def test_held_removes_counts_only_members_braze_holds(self, store: Store) -> None:
        """held_removes: held keys leaving now, or uncertain removes re-sent (never absent ones)."""
        self._prepare(store)
        with store.diff_changes("c1", entered=[], left=["e:b", "e:gone"]) as d:
            # e:b leaves (held); e:c is re-sent as a remove (held); e:y was never held.
            assert d.held_removes == 2

    def test_same_id_entering_and_leaving_is_refused(self, store: Store) -> None:
        """An id both in entered and left is an input error, found before anything is sent."""
        with pytest.raises(InputError, match="1 id"):
            store.diff_changes("c1", entered=["e:a", "e:b"], left=["e:b"])
        with store.diff_changes("c1", entered=["e:a", "e:a"], left=[]) as d:
            assert list(d.iter_adds()) == ["e:a"]


def _connection(name: str = "acme", **changes: object) -> bc.ConnectionProfile:
    fields: dict[str, object] = {
        "name": name,
        "endpoint": "EU-01",
        "partner": "kubit",
        "partner_api_key_env": "KUBIT_KEY",
        "data_import_key_file": f"/run/secrets/{name}",
    }
    fields.update(changes)
    return bc.ConnectionProfile(**fields)  # type: ignore[arg-type]


class TestProfiles:
    """The ProfileStore contract: named connections, by name, never a key."""

    def test_put_get_list_delete(self, store: Store) -> None:
        """Profiles are stored, listed by name, replaced only when asked, and deleted."""
        assert store.list_profiles() == []
        assert store.get_profile("acme") is None
        store.put_profile(_connection("globex"))
        store.put_profile(_connection("acme"))
        assert [p.name for p in store.list_profiles()] == ["acme", "globex"]
        assert store.get_profile("acme") == _connection("acme")
        with pytest.raises(bc.ConfigurationError, match="exists already"):
            store.put_profile(_connection("acme", endpoint="US-01"))
        assert store.get_profile("acme") == _connection("acme")
        changed = _connection(
            "acme", endpoint="US-01", data_import_key_file=None, data_import_key_env="ACME_KEY"
        )
        store.put_profile(changed, replace=True)
        assert store.get_profile("acme") == changed
        assert store.delete_profile("acme")
        assert not store.delete_profile("acme")
        assert [p.name for p in store.list_profiles()] == ["globex"]

    def test_schedules_keep_their_profile_and_period(self, store: Store) -> None:
        """A schedule's profile and full-resync period (a period, off, or none) round-trip."""
        periods: tuple[tuple[str, dt.timedelta | str | None], ...] = (
            ("a", dt.timedelta(hours=12)),
            ("b", "off"),
            ("c", None),
        )
        for cohort_id, period in periods:
            entry = bc.ScheduledImport(
                cohort_id=cohort_id,
                name="N",
                schedule=bc.Schedule.hourly(5),
                next_due=T0,
                profile="acme",
                resync_every=period,
            )
            store.put_schedule(entry)
            assert store.get_schedule(cohort_id) == entry
        store.put_schedule(attrs.evolve(entry, profile=None, resync_every="7d"), replace=True)
        assert store.get_schedule("c") == attrs.evolve(
            entry, profile=None, resync_every=dt.timedelta(days=7)
        )


def _entry(cohort_id: str = "c1", **changes: object) -> bc.ScheduledImport:
    fields: dict[str, object] = {
        "cohort_id": cohort_id,
        "name": f"Cohort {cohort_id}",
        "schedule": bc.Schedule.hourly(30),
        "next_due": T0,
    }
    fields.update(changes)
    return bc.ScheduledImport(**fields)  # type: ignore[arg-type]


class TestSchedules:
    """The ScheduleStore contract: one live schedule per cohort, due times, compare-and-set."""

    def test_every_field_round_trips(self, store: Store) -> None:
        """A schedule with every field set (each kind of source) reads back equal."""
        sources: tuple[object, ...] = (
            "/data/members.csv",
            bc.FileSource(
                path="/data/m.tsv", format="csv", delimiter=";", external_id_column="uid"
            ),
            bc.QuerySource(
                sql="SELECT id FROM users WHERE plan = :plan",
                url_env="WAREHOUSE_URL",
                params={"plan": "pro"},
                external_id_column="id",
            ),
            None,
        )
        for i, source in enumerate(sources):
            entry = _entry(
                f"c{i}",
                schedule=bc.Schedule.parse("monthly last 06:00 America/New_York"),
                source=source,
                recipients=("Ops <ops@example.com>", "b@example.com"),
                next_due=T0 + dt.timedelta(microseconds=123_456),
                last_run_id=41,
                notify_when="on_failure,rejected>2%",
                webhook_env="TEAM_ALERTS_URL",
                webhook_format="slack",
                profile="acme",
                resync_every="12h",
            )
            store.put_schedule(entry)
            assert store.get_schedule(f"c{i}") == entry
        paused = _entry("p", state="paused", paused_reason="401 from Braze", next_due=None)
        store.put_schedule(paused)
        assert store.get_schedule("p") == paused
        assert [e.cohort_id for e in store.list_schedules()] == ["c0", "c1", "c2", "c3", "p"]
        assert store.get_schedule("nope") is None

    def test_one_live_schedule_per_cohort_replace_and_done(self, store: Store) -> None:
        """A live schedule is replaced only when asked; a done one may always be replaced."""
        store.put_schedule(_entry())
        with pytest.raises(bc.ScheduleConflictError, match="already has a live schedule"):
            store.put_schedule(_entry(name="Other"))
        assert store.get_schedule("c1") == _entry()
        store.put_schedule(_entry(name="Other"), replace=True)
        assert store.get_schedule("c1") == _entry(name="Other")
        store.update_schedule("c1", state="done", paused_reason=None, next_due=None)
        store.put_schedule(_entry(name="Again"))
        assert store.get_schedule("c1") == _entry(name="Again")

    def test_two_writers_never_both_create_a_live_schedule(self, store: Store) -> None:
        """Writers racing to schedule one cohort: exactly one wins, the others conflict."""
        wins: list[str] = []
        conflicts: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def write(name: str) -> None:
            barrier.wait(10)
            try:
                store.put_schedule(_entry(name=name))
                wins.append(name)
            except bc.ScheduleConflictError:
                conflicts.append(name)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(f"W{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(wins) == 1
        assert len(conflicts) == 3
        got = store.get_schedule("c1")
        assert got is not None
        assert got.name == wins[0]

    def test_due_schedules_next_due_and_claims(self, store: Store) -> None:
        """Due means active and due at or before now, earliest first; a claim is compare-and-set."""
        store.put_schedule(_entry("late", next_due=T0 + dt.timedelta(minutes=20)))
        store.put_schedule(_entry("early", next_due=T0 + dt.timedelta(minutes=10)))
        store.put_schedule(_entry("future", next_due=T0 + dt.timedelta(hours=5)))
        store.put_schedule(_entry("held", state="paused", paused_reason="why", next_due=None))
        now = T0 + dt.timedelta(minutes=20)
        assert [e.cohort_id for e in store.due_schedules(now)] == ["early", "late"]
        assert store.next_due() == T0 + dt.timedelta(minutes=10)
        later = T0 + dt.timedelta(hours=1)
        due = T0 + dt.timedelta(minutes=10)
        assert store.claim_schedule("early", expected_due=due, next_due=later)
        assert not store.claim_schedule("early", expected_due=due, next_due=later)
        assert not store.claim_schedule("held", expected_due=due, next_due=later)
        assert [e.cohort_id for e in store.due_schedules(now)] == ["late"]
        assert store.claim_schedule("late", expected_due=now, next_due=None)
        late = store.get_schedule("late")
        assert late is not None
        assert (late.state, late.next_due) == ("done", None)
        assert store.next_due() == later
        store.update_schedule("early", state="paused", paused_reason="401", next_due=None)
        assert store.next_due() == T0 + dt.timedelta(hours=5)
        store.set_schedule_last_run("future", 7)
        future = store.get_schedule("future")
        assert future is not None
        assert future.last_run_id == 7
        assert store.delete_schedule("future")
        assert not store.delete_schedule("future")
        assert store.next_due() is None

    def test_racing_claims_of_one_slot_succeed_once(self, store: Store) -> None:
        """Threads claiming the same due slot: exactly one claim succeeds."""
        store.put_schedule(_entry())
        barrier = threading.Barrier(4)
        won: list[bool] = []

        def claim() -> None:
            barrier.wait(10)
            won.append(
                store.claim_schedule("c1", expected_due=T0, next_due=T0 + dt.timedelta(hours=1))
            )

        threads = [threading.Thread(target=claim) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(won) == [False, False, False, True]


class TestDocs:
    def test_examples_in_the_store_page_run(self) -> None:
        """The examples in docs/store.md run as shown."""
        assert run_doc_examples("store.md") > 5


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _old_schema_file(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    for statements in _store._MIGRATIONS[:version]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


class TestFileSafety:
    """Where the file comes from, who may read it, and opening it without writing."""

    @pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
    def test_new_file_and_directories_are_private(self, tmp_path: Path) -> None:
        """Missing directories are created 0700, the file and its -wal/-shm 0600, any umask."""
        path = tmp_path / "a" / "b" / "state.db"
        old = os.umask(0o022)
        try:
            store = SQLiteStore(path)
            try:
                store.start_run(_run())  # a write: the -wal and -shm files exist now
                assert (path.parent / "state.db-wal").exists()
                modes = {p.name: _mode(p) for p in path.parent.iterdir()}
            finally:
                store.close()
        finally:
            os.umask(old)
        assert modes == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
        assert (_mode(tmp_path / "a"), _mode(tmp_path / "a" / "b")) == (0o700, 0o700)

    @pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
    def test_an_existing_file_keeps_its_permissions(self, tmp_path: Path) -> None:
        """A file the owner made group-readable (for a monitoring user) is not tightened."""
        path = tmp_path / "state.db"
        SQLiteStore(path).close()
        path.chmod(0o640)
        SQLiteStore(path).close()
        assert _mode(path) == 0o640

    def test_empty_file_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        """A 0-byte file (``: > state.db``) is refused, not taken for a fresh state."""
        path = tmp_path / "state.db"
        path.touch()
        for read_only in (False, True):
            with pytest.raises(StoreError, match=r"empty \(0-byte\)"):
                SQLiteStore(path, read_only=read_only)
        assert path.stat().st_size == 0

    def test_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory given as the file is a clear StoreError."""
        with pytest.raises(StoreError, match="is a directory"):
            SQLiteStore(tmp_path)

    def test_concurrent_creation_never_shows_an_empty_file(self, tmp_path: Path) -> None:
        """Processes creating one new store at once all open it; none sees a 0-byte file."""
        path = tmp_path / "state.db"
        code = (
            "import sys\nfrom braze_cohorts import SQLiteStore\nSQLiteStore(sys.argv[1]).close()\n"
        )
        for _ in range(3):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True
                )
                for _ in range(4)
            ]
            errors = [p.communicate(timeout=60)[1] for p in procs]
            assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
            assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
            path.unlink()

    def test_read_only_missing_file_is_not_created(self, tmp_path: Path) -> None:
        """Read-only, a missing file is an error and nothing is created."""
        with pytest.raises(StoreError, match="no state store"):
            SQLiteStore(tmp_path / "x" / "state.db", read_only=True)
        assert list(tmp_path.iterdir()) == []

    def test_read_only_reads_and_never_writes(self, tmp_path: Path) -> None:
        """A read-only store reads history and schedules; SQLite itself refuses its writes.

        The proof does not rely on file permissions (the tests may run as root, whom chmod does
        not stop): the connection is opened with ``mode=ro``, so SQLite refuses every write of
        it, and the file's bytes stay identical.
        """
        path = tmp_path / "state.db"
        with SQLiteStore(path) as store:
            run = store.start_run(_run())
            store.finish_run(attrs.evolve(run, result="succeeded", finished_at=T0))
        before = path.read_bytes()
        with SQLiteStore(path, read_only=True) as ro:
            assert ro.read_only
            assert [r.result for r in ro.history("c1")] == ["succeeded"]
            assert ro.list_schedules() == []
            with pytest.raises(StoreError, match="readonly"):
                ro.start_run(_run())
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                ro._conn.execute("CREATE TABLE probe (x)")
        assert path.read_bytes() == before

    def test_read_only_while_a_writer_holds_the_file(self, tmp_path: Path) -> None:
        """A reader opens and reads while another connection holds the write lock."""
        path = tmp_path / "state.db"
        SQLiteStore(path).close()
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO cohorts (cohort_id) VALUES ('held')")
            with SQLiteStore(path, read_only=True, timeout=0.1) as ro:
                assert ro.member_count("held") == 0  # the uncommitted row is not visible
            writer.execute("COMMIT")
        finally:
            writer.close()

    @pytest.mark.parametrize("version", [1, 3])
    def test_read_only_refuses_a_file_that_needs_migrating(
        self, tmp_path: Path, version: int
    ) -> None:
        """An older file is not migrated read-only: a clear error, the file unchanged."""
        path = tmp_path / "state.db"
        _old_schema_file(path, version)
        before = path.read_bytes()
        with pytest.raises(StoreError, match="cannot migrate"):
            SQLiteStore(path, read_only=True)
        assert path.read_bytes() == before
