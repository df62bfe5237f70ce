"""The delta computed inside the database: SQLStore.query_members through CohortSync.sync, on
PostgreSQL and DuckDB, with every guarantee that makes imports exact."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts import BatchUploader, CohortSync, RetryPolicy, ServerError, SQLStore
from braze_cohorts._sqlstore import QueryMembers
from braze_cohorts.testing import FakeClient, SettableClock

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


class Warehouse:
    """A database holding a ``members`` table and the store, side by side."""

    def __init__(self, engine: Any, schema: str | None) -> None:
        self.engine = engine
        self.table = f"{schema}.members" if schema else "members"
        self.store = SQLStore(engine, schema=schema)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {self.table} (id VARCHAR(64), active INTEGER)"))

    def set_members(self, ids: Iterable[str], inactive: Iterable[str] = ()) -> None:
        rows = [{"i": i, "a": 1} for i in ids] + [{"i": i, "a": 0} for i in inactive]
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.table}"))
            if rows:
                conn.execute(sa.text(f"INSERT INTO {self.table} VALUES (:i, :a)"), rows)

    def members(self) -> QueryMembers:
        return self.store.query_members(
            f"SELECT id AS external_id FROM {self.table} WHERE active = :on", {"on": 1}
        )


@pytest.fixture(params=["postgres", "duckdb"])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg://")
        engine = sa.create_engine(url)
        schema = f"w_{uuid.uuid4().hex[:12]}"
    else:
        engine = sa.create_engine(f"duckdb:///{tmp_path / 'wh.duckdb'}")
        schema = None
    w = Warehouse(engine, schema)
    yield w
    w.store.close()
    engine.dispose()


def _sync(braze: FakeClient, store: Any, **options: Any) -> CohortSync:
    uploader = BatchUploader(
        braze, concurrency=2, batch_size=3, retry=RetryPolicy(attempts=1), sleep=lambda _s: None
    )
    clock = SettableClock(T0, tick=dt.timedelta(seconds=1))
    return CohortSync(braze, store, uploader=uploader, clock=clock, **options)


def _keys(ids: Iterable[str]) -> set[str]:
    return {f"e:{i}" for i in ids}


@pytest.fixture
def no_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the membership query's rows are ever fetched into Python."""

    def refuse(self: QueryMembers) -> Iterator[str]:
        raise AssertionError("the members were streamed out of the database")

    monkeypatch.setattr(QueryMembers, "_stream", refuse)


@pytest.mark.usefixtures("no_streaming")
class TestInDatabase:
    def test_only_the_changes_leave_the_database(self, wh: Warehouse) -> None:
        """First import adds everyone; a refresh sends who entered and who left, nothing else."""
        braze = FakeClient()
        sync = _sync(braze, wh.store)
        wh.set_members([f"u{n}" for n in range(10)], inactive=["x1", "", " "])
        run = sync.sync("c1", "C", wh.members())
        assert run.result == "succeeded", run.error
        assert braze.members("c1") == _keys(f"u{n}" for n in range(10))
        assert (run.added, run.users, run.full_resync_reason) == (10, 10, "first_import")
        braze.clear_calls()
        wh.set_members([f"u{n}" for n in range(2, 12)] + ["u5", ""])  # a duplicate, a blank
        run = sync.sync("c1", "C", wh.members())
        adds, removes = braze.sent()
        assert (adds, removes) == (_keys(["u10", "u11"]), _keys(["u0", "u1"]))
        assert (run.result, run.added, run.removed, run.users) == ("succeeded", 2, 2, 10)
        assert sorted(wh.store.snapshot_keys("c1")) == sorted(_keys(f"u{n}" for n in range(2, 12)))
        assert wh.store.pending_count("c1") == 0

    def test_failed_batches_stay_uncertain_and_are_resent(self, wh: Warehouse) -> None:
        """Ids of a failed request are pending; the next in-database diff re-sends them."""
        braze = FakeClient()
        sync = _sync(braze, wh.store)
        wh.set_members(["a", "b", "c"])
        sync.sync("c1", "C", wh.members())
        wh.set_members(["b", "c", "d", "e"])
        braze.fail_next(ServerError("boom", status_code=503))
        failed = sync.sync("c1", "C", wh.members())
        assert failed.result == "failed"
        assert wh.store.pending_count("c1") > 0
        run = sync.sync("c1", "C", wh.members())
        assert run.result == "succeeded", run.error
        assert braze.members("c1") == _keys(["b", "c", "d", "e"])
        assert wh.store.pending_count("c1") == 0

    def test_mass_removal_is_refused(self, wh: Warehouse) -> None:
        """An empty query result would remove everyone: the guard refuses, nothing is sent."""
        braze = FakeClient()
        sync = _sync(braze, wh.store, max_remove_fraction=0.5)
        wh.set_members([f"u{n}" for n in range(10)])
        sync.sync("c1", "C", wh.members())
        braze.clear_calls()
        wh.set_members([])
        run = sync.sync("c1", "C", wh.members())
        assert (run.result, run.error_kind) == ("refused", "MassRemovalError")
        assert braze.calls == []
        assert wh.store.member_count("c1") == 10

    def test_workspace_change_is_a_full_resync(self, wh: Warehouse) -> None:
        """New credentials: every member is sent again there and the state is rebound."""
        braze = FakeClient()
        sync = _sync(braze, wh.store)
        wh.set_members(["a", "b"])
        sync.sync("c1", "C", wh.members())
        braze.workspace = "other-workspace"
        run = sync.sync("c1", "C", wh.members())
        assert (run.full_resync_reason, run.added) == ("workspace_changed", 2)
        assert braze.members("c1", workspace="other-workspace") == _keys(["a", "b"])
        assert wh.store.workspace("c1") == "other-workspace"

    def test_recent_entrants_are_resent_within_the_window(self, wh: Warehouse) -> None:
        """A member who entered within resend_window is sent again; older ones are not."""
        braze = FakeClient()
        sync = _sync(braze, wh.store, resend_window=dt.timedelta(hours=1))
        wh.set_members(["a"])
        sync.sync("c1", "C", wh.members())
        wh.set_members(["a", "b"])
        sync.sync("c1", "C", wh.members())
        braze.clear_calls()
        run = sync.sync("c1", "C", wh.members())
        assert braze.sent() == (_keys(["b"]), set())
        assert run.added == 1

    def test_dry_run_sends_and_changes_nothing(self, wh: Warehouse) -> None:
        """A dry run reports the in-database delta only."""
        braze = FakeClient()
        sync = _sync(braze, wh.store)
        wh.set_members(["a", "b"])
        run = sync.sync("c1", "C", wh.members(), dry_run=True)
        assert (run.result, run.added) == ("dry_run", 2)
        assert braze.calls == []
        assert wh.store.member_count("c1") == 0


def test_elsewhere_the_query_streams_its_ids(wh: Warehouse, tmp_path: Path) -> None:
    """Given to another store, or iterated, the query is an ordinary source of external ids."""
    wh.set_members(["a", "b", "b"], inactive=["z"])
    assert sorted(wh.members()) == ["a", "b"]
    braze = FakeClient()
    with bc.SQLiteStore(tmp_path / "state.db") as other:
        run = _sync(braze, other).sync("c1", "C", wh.members())
    assert (run.result, run.added) == ("succeeded", 2)


def test_a_failing_query_fails_the_run(wh: Warehouse) -> None:
    """A query the database refuses is a failed run that sent nothing."""
    braze = FakeClient()
    members = wh.store.query_members(f"SELECT nope AS external_id FROM {wh.table}")
    run = _sync(braze, wh.store).sync("c1", "C", members)
    assert (run.result, run.error_kind) == ("failed", "StoreError")
    assert braze.calls == []


def test_blank_sql_is_refused(wh: Warehouse) -> None:
    with pytest.raises(bc.ConfigurationError):
        wh.store.query_members(" ")


_ID = st.sampled_from([f"u{n}" for n in range(12)])


@settings(max_examples=12, deadline=None)
@given(
    steps=st.lists(st.tuples(st.frozensets(_ID), st.integers(0, 3)), min_size=1, max_size=4),
    last=st.frozensets(_ID),
)
def test_imports_converge_whatever_fails(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[frozenset[str], int]],
    last: frozenset[str],
) -> None:
    """Whatever failed before, one clean in-database import leaves Braze holding exactly the
    query's members (DuckDB)."""
    engine = sa.create_engine(f"duckdb:///{tmp_path_factory.mktemp('p') / 'wh.duckdb'}")
    wh = Warehouse(engine, None)
    braze = FakeClient()
    sync = _sync(braze, wh.store, max_remove_fraction=None)
    try:
        for members, failures in steps:
            wh.set_members(members)
            braze.fail_next(*(ServerError("x", status_code=503) for _ in range(failures)))
            sync.sync("c1", "C", wh.members())
            braze.clear_faults()
        wh.set_members(last)
        run = sync.sync("c1", "C", wh.members())
        assert run.result == "succeeded", run.error
        assert braze.members("c1") == _keys(last)
        assert sorted(wh.store.snapshot_keys("c1")) == sorted(_keys(last))
    finally:
        wh.store.close()
        engine.dispose()


class TestCli:
    def test_sync_and_history_keep_the_state_in_the_store_url(
        self,
        braze_env: bc.testing.BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """--store URL (or $BRAZE_COHORTS_STORE) puts the state in that database, not a file."""
        from braze_cohorts.cli import main

        ids = braze_env.add_users(30, prefix="u")
        src = tmp_path / "members.csv"
        src.write_text("external_id\n" + "\n".join(ids) + "\n", encoding="utf-8")
        url = f"duckdb:///{tmp_path / 'state.duckdb'}"
        assert main(["sync", str(src), "--cohort-id", "c1", "--name", "N", "--store", url]) == 0
        assert not (tmp_path / "state.db").exists()
        with SQLStore(url) as store:
            assert store.member_count("c1") == 30
        monkeypatch.setenv("BRAZE_COHORTS_STORE", url)
        capsys.readouterr()
        assert main(["history", "c1", "--json"]) == 0
        assert '"added": 30' in capsys.readouterr().out
        assert main(["history", "c1", "--store", "nosuchdialect://x"]) == 2
        assert "store" in capsys.readouterr().err

    def test_schedules_run_due_and_trigger_keep_the_state_in_the_store_url(
        self,
        braze_env: bc.testing.BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """schedule/run-due/trigger take --store URL: schedules, runs and snapshot live there."""
        from braze_cohorts.cli import main

        ids = braze_env.add_users(12, prefix="u")
        src = tmp_path / "members.csv"
        src.write_text("external_id\n" + "\n".join(ids) + "\n", encoding="utf-8")
        url = f"duckdb:///{tmp_path / 'state.duckdb'}"
        store = ["--store", url]
        set_ = ["schedule", "set", "c1", "--name", "N", "--source", str(src), "--hourly", "15"]
        assert main([*set_, *store]) == 0
        assert main(["run-due", *store]) == 0
        capsys.readouterr()
        with SQLStore(url) as db:  # make it due: an hour ago
            db.update_schedule(
                "c1",
                state="active",
                paused_reason=None,
                next_due=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1),
            )
        assert main(["run-due", *store]) == 0
        assert "c1 (N): scheduled import succeeded" in capsys.readouterr().out
        assert main(["run-due", *store]) == 0
        assert capsys.readouterr().out == ""  # once per due time
        assert main(["trigger", "c1", *store]) == 0
        assert "c1 (N): manual import succeeded" in capsys.readouterr().out
        assert main(["schedule", "list", "--json", *store]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [entry["cohort_id"] for entry in listed] == ["c1"]
        assert not (tmp_path / "state.db").exists()
        with SQLStore(url) as db:
            assert db.member_count("c1") == 12
            assert [r.trigger for r in db.history("c1")] == ["manual", "scheduled"]
            entry = db.get_schedule("c1")
            assert entry is not None
            assert entry.last_run_id == db.history("c1")[0].id
        # A profile kept in the same database names another schedule's workspace.
        monkeypatch.setenv("ACME_PARTNER_KEY", braze_env.partner_api_key)
        monkeypatch.setenv("ACME_IMPORT_KEY", braze_env.data_import_key)
        profile = ["profile", "add", "acme", "--endpoint", braze_env.url, "--partner",
                   braze_env.partner, "--partner-api-key-env", "ACME_PARTNER_KEY",
                   "--data-import-key-env", "ACME_IMPORT_KEY"]  # fmt: skip
        assert main([*profile, *store]) == 0
        set_c2 = ["schedule", "set", "c2", "--name", "Two", "--source", str(src), "--hourly", "5"]
        assert main([*set_c2, "--profile", "acme", *store]) == 0
        capsys.readouterr()
        assert main(["trigger", "c2", *store]) == 0
        assert "c2 (Two): manual import succeeded" in capsys.readouterr().out
        assert main(["schedule", "clear", "c1", *store]) == 0
        with SQLStore(url) as db:
            assert [e.cohort_id for e in db.list_schedules()] == ["c2"]
            assert [p.name for p in db.list_profiles()] == ["acme"]
            assert db.member_count("c2") == 12
        assert not (tmp_path / "state.db").exists()


def test_examples_in_the_warehouse_page_run() -> None:
    """The examples in docs/warehouse.md run as shown."""
    from doc_examples import run_doc_examples

    assert run_doc_examples("warehouse.md") > 10


class TestStoreOwnRules:
    """What SQLStore decides itself: the lock's takeover and the schema version."""

    def _lock(self, wh: Warehouse, *, pid: int, host: str) -> int:
        run = wh.store.start_run(bc.ImportRun(cohort_id="c1", name="C", trigger="manual",
                                              started_at=T0))  # fmt: skip
        assert run.id is not None
        locks = wh.store._t["locks"]
        with wh.engine.begin() as conn:
            conn.execute(sa.update(locks).values(pid=pid, host=host))
        return run.id

    def test_stale_lock_of_a_dead_process_of_this_host_is_taken_over(self, wh: Warehouse) -> None:
        """A lock whose process on this host has exited is taken over, its run interrupted."""
        import subprocess
        import sys

        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        old = self._lock(wh, pid=proc.pid, host=wh.store._host)
        run = wh.store.start_run(bc.ImportRun(cohort_id="c1", name="C", trigger="manual",
                                              started_at=T0))  # fmt: skip
        stale = wh.store.get_run(old)
        assert stale is not None
        assert stale.result == "interrupted"
        holder = wh.store.lock_holder("c1")
        assert holder is not None
        assert holder.run_id == run.id

    def test_lock_of_another_host_is_kept_until_broken(self, wh: Warehouse) -> None:
        """Another host's lock cannot be judged: refused until break_lock()."""
        self._lock(wh, pid=1, host="elsewhere.example")
        start = bc.ImportRun(cohort_id="c1", name="C", trigger="manual", started_at=T0)
        with pytest.raises(bc.ImportInProgressError, match=r"elsewhere\.example"):
            wh.store.start_run(start)
        assert wh.store.break_lock("c1")
        assert wh.store.start_run(start).result == "running"

    def test_a_newer_schema_is_refused(self, wh: Warehouse) -> None:
        """A store written by a newer version is not touched."""
        meta = wh.store._t["meta"]
        with wh.engine.begin() as conn:
            conn.execute(sa.update(meta).values(value="99"))
        with pytest.raises(bc.StoreError, match="schema version 99"):
            SQLStore(wh.engine, schema=wh.store.schema)

    def test_a_version_1_store_is_migrated_keeping_its_state(self, wh: Warehouse) -> None:
        """A store from before schedules (version 1) gains them on open; its state stays."""
        wh.store.apply_batch("c1", ["e:u1", "e:u2"])
        wh.store.record_name("c1", "C", named_at=T0)
        with wh.engine.begin() as conn:
            for name in ("schedules", "profiles"):
                wh.store._t[name].drop(conn)
            conn.execute(sa.update(wh.store._t["meta"]).values(value="1"))
        with SQLStore(wh.engine, schema=wh.store.schema) as store:
            with wh.engine.connect() as conn:
                version = conn.execute(sa.select(store._t["meta"].c.value)).scalar_one()
            assert version == "2"
            assert (store.member_count("c1"), store.known_name("c1")) == (2, "C")
            entry = bc.ScheduledImport(
                cohort_id="c1", name="C", schedule=bc.Schedule.hourly(5), next_due=T0
            )
            store.put_schedule(entry)
            assert store.list_schedules() == [entry]
