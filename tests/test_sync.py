"""CohortSync against the in-memory FakeClient: naming, deltas, convergence, dry run, history."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts import (
    AuthenticationError,
    BatchUploader,
    CohortSync,
    ConfigurationError,
    DeviceId,
    ExternalId,
    ImportInProgressError,
    ImportRun,
    InputError,
    InvalidRequestError,
    NotificationError,
    RetryPolicy,
    ServerError,
    SQLiteStore,
    UserAlias,
)
from braze_cohorts._sync import PLAN_HEADER, REJECTS_HEADER
from braze_cohorts.testing import FakeClient, MemoryStore, SettableClock
from doc_examples import run_doc_examples

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


class RecordingNotifier:
    def __init__(self, error: Exception | None = None) -> None:
        self.runs: list[ImportRun] = []
        self.error = error

    def notify(self, run: ImportRun) -> None:
        self.runs.append(run)
        if self.error is not None:
            raise self.error


def _keys(ids: Iterable[str]) -> set[str]:
    return {f"e:{i}" for i in ids}


Store = SQLiteStore | MemoryStore


def _clock() -> SettableClock:
    """T0, then one second later at every reading."""
    return SettableClock(T0, tick=dt.timedelta(seconds=1))


def _open(kind: str, directory: Path) -> Store:
    return SQLiteStore(directory / "state.db") if kind == "sqlite" else MemoryStore()


@pytest.fixture
def braze() -> FakeClient:
    return FakeClient()


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The sync engine is tested over both stores: their contract is one."""
    with _open(request.param, tmp_path) as s:
        yield s


def _sync(braze: FakeClient, store: Store, **options: object) -> CohortSync:
    uploader = BatchUploader(
        braze,
        concurrency=2,
        batch_size=3,
        retry=RetryPolicy(attempts=1),
        sleep=lambda _s: None,
    )
    return CohortSync(braze, store, uploader=uploader, clock=_clock(), **options)  # type: ignore[arg-type]


@pytest.fixture
def sync(braze: FakeClient, store: Store) -> CohortSync:
    return _sync(braze, store)


class TestFirstImport:
    def test_names_the_cohort_then_adds_every_member(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """The first import names the cohort before any member is sent, then adds them all."""
        run = sync.sync("c1", "Power users", ["u1", "u2", "u3", "u4", "u2"])
        first = braze.calls[0]
        assert (first.kind, first.cohort_id, first.name) == ("name", "c1", "Power users")
        assert all(c.kind == "update" for c in braze.calls[1:])
        assert braze.members("c1") == _keys(["u1", "u2", "u3", "u4"])
        assert (run.result, run.users, run.added, run.removed) == ("succeeded", 4, 4, 0)
        assert run.requests == len(braze.calls)  # naming and the member requests
        assert run.error is None

    def test_run_is_recorded_with_times_and_trigger(self, sync: CohortSync) -> None:
        """The run is in the history with its trigger and UTC start and end."""
        run = sync.sync("c1", "Power users", ["u1"], trigger="scheduled")
        (stored,) = sync.history("c1")
        assert stored == run
        assert run.trigger == "scheduled"
        assert run.started_at == T0
        assert run.finished_at is not None
        assert run.finished_at > run.started_at

    def test_every_identifier_kind_round_trips(self, sync: CohortSync, braze: FakeClient) -> None:
        """External ids, aliases and device ids all reach Braze as themselves."""
        members = [ExternalId("u1"), UserAlias("a@x.io", "email"), DeviceId("d-1")]
        sync.sync("c1", "C", members)
        assert braze.members("c1") == {m.key for m in members}


class TestRefresh:
    def test_only_the_delta_travels(self, sync: CohortSync, braze: FakeClient) -> None:
        """A refresh sends just who entered and who left, and does not rename."""
        sync.sync("c1", "C", [f"u{n}" for n in range(10)])
        braze.clear_calls()
        run = sync.sync("c1", "C", [f"u{n}" for n in range(2, 12)])
        adds, removes = braze.sent()
        assert adds == _keys(["u10", "u11"])
        assert removes == _keys(["u0", "u1"])
        assert all(c.kind == "update" for c in braze.calls)
        assert (run.added, run.removed, run.users) == (2, 2, 10)

    def test_unchanged_membership_sends_nothing(self, sync: CohortSync, braze: FakeClient) -> None:
        """When nothing changed, no request is made and the run still succeeds."""
        sync.sync("c1", "C", ["u1", "u2"])
        braze.clear_calls()
        run = sync.sync("c1", "C", ["u2", "u1"])
        assert braze.calls == []
        assert (run.result, run.requests, run.users) == ("succeeded", 0, 2)

    def test_a_new_name_renames_the_cohort(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """Changing the name re-names the cohort, and only then."""
        sync.sync("c1", "Old", ["u1"])
        sync.sync("c1", "New", ["u1"])
        sync.sync("c1", "New", ["u1"])
        names = [c.name for c in braze.namings()]
        assert names == ["Old", "New"]
        assert store.known_name("c1") == "New"
        assert braze.name("c1") == "New"

    def test_emptying_a_cohort_removes_everyone_when_allowed(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """An empty membership removes every member Braze holds, when mass removal is allowed."""
        sync.sync("c1", "C", ["u1", "u2"])
        run = sync.sync("c1", "C", [], allow_mass_removal=True)
        assert braze.members("c1") == set()
        assert (run.removed, run.users) == (2, 0)


class TestFailures:
    def test_naming_failure_sends_no_members(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """If Braze refuses the name, no member is sent and the name is not remembered."""
        braze.fail_next(AuthenticationError("Invalid client secret", cause="x"), on="name")
        run = sync.sync("c1", "C", ["u1"])
        assert run.result == "failed"
        assert run.error is not None
        assert run.error.startswith("HTTP 401")
        assert braze.updates() == []
        assert store.known_name("c1") is None
        assert store.pending_count("c1") == 0
        again = sync.sync("c1", "C", ["u1"])
        assert again.result == "succeeded"
        assert braze.members("c1") == {"e:u1"}

    def test_failed_batch_fails_the_run_and_is_retried_next_time(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """A batch that failed keeps its ids uncertain; the next import sends them again."""
        braze.fail_next(ServerError("down", status_code=503))
        run = sync.sync("c1", "C", [f"u{n}" for n in range(6)])
        assert run.result == "failed"
        assert run.error is not None
        assert "1 of 2 request(s) failed" in run.error
        assert "HTTP 503" in run.error
        assert not any(f"u{n}" in run.error for n in range(6))
        assert (run.users, store.pending_count("c1")) == (3, 3)
        again = sync.sync("c1", "C", [f"u{n}" for n in range(6)])
        assert again.result == "succeeded"
        assert braze.members("c1") == _keys(f"u{n}" for n in range(6))
        assert store.pending_count("c1") == 0

    def test_unknown_outcome_is_resolved_by_the_desired_state(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """An add whose answer was lost is removed next time if the user left meanwhile."""
        braze.lose_answer_next()
        sync.sync("c1", "C", ["u1", "u2", "u3"])
        assert braze.members("c1") == _keys(["u1", "u2", "u3"])
        assert store.member_count("c1") == 0
        assert store.pending_count("c1") == 3
        sync.sync("c1", "C", ["u1"])
        assert braze.members("c1") == {"e:u1"}
        assert sorted(store.snapshot_keys("c1")) == ["e:u1"]

    def test_auth_error_stops_and_fails_the_run(self, sync: CohortSync, braze: FakeClient) -> None:
        """A 401 during the upload fails the run with Braze's message, which pauses schedules."""
        braze.fail_next(*[AuthenticationError("Invalid client secret", path="/p")] * 10)
        run = sync.sync("c1", "C", [f"u{n}" for n in range(30)])
        assert run.result == "failed"
        assert run.error is not None
        assert run.error.startswith("HTTP 401")
        assert len(braze.updates()) < 10

    def test_acknowledged_batches_count_even_when_the_run_stops(
        self, braze: FakeClient, store: Store
    ) -> None:
        """Batches acknowledged before a 401 are applied to the snapshot and counted."""
        uploader = BatchUploader(braze, concurrency=1, batch_size=2, retry=RetryPolicy(attempts=1))
        sync = CohortSync(braze, store, uploader=uploader, clock=_clock())
        braze.pass_next()
        braze.fail_next(AuthenticationError("Invalid client secret"))
        run = sync.sync("c1", "C", ["u1", "u2", "u3", "u4", "u5"])
        assert run.result == "failed"
        # One request named the cohort, one added two users, one was refused.
        assert (run.added, run.users, run.requests) == (2, 2, 3)

    def test_store_failure_in_a_hook_fails_the_run(
        self,
        sync: CohortSync,
        braze: FakeClient,
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """If the store cannot apply a batch, the upload stops and the run fails with the reason."""
        from braze_cohorts import StoreError

        def broken(*_a: object, **_k: object) -> None:
            raise StoreError("disk full")

        monkeypatch.setattr(store, "apply_batch", broken)
        run = sync.sync("c1", "C", ["u1"])
        assert (run.result, run.error) == ("failed", "disk full")


def _queue_fault(braze: FakeClient, fault: str) -> None:
    """Queue one answer for the next update request, by name."""
    if fault == "ok":
        braze.pass_next()
    elif fault == "drop_after":  # applied, then the answer is lost: the outcome is unknown
        braze.lose_answer_next()
    elif fault == "503":
        braze.fail_next(ServerError("down", status_code=503))
    else:
        braze.fail_next(InvalidRequestError("bad", status_code=400))


class TestConvergence:
    @pytest.mark.parametrize("kind", ["sqlite", "memory"])
    @settings(max_examples=40, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(
                st.frozensets(st.integers(0, 14)),
                st.lists(st.sampled_from(["ok", "503", "drop_after", "400"]), max_size=6),
            ),
            min_size=1,
            max_size=5,
        ),
        final=st.frozensets(st.integers(0, 14)),
    )
    def test_a_clean_run_after_any_failures_converges_exactly(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        kind: str,
        steps: list[tuple[frozenset[int], list[str]]],
        final: frozenset[int],
    ) -> None:
        """Whatever failed before, the next clean import leaves Braze holding exactly those."""
        braze = FakeClient()
        with _open(kind, tmp_path_factory.mktemp("conv")) as store:
            sync = _sync(braze, store)
            for members, fault_names in steps:
                braze.clear_faults()
                for fault in fault_names:
                    _queue_fault(braze, fault)
                sync.sync("c1", "C", [f"u{n}" for n in members], allow_mass_removal=True)
            braze.clear_faults()
            run = sync.sync("c1", "C", [f"u{n}" for n in final], allow_mass_removal=True)
            assert run.result == "succeeded"
            assert braze.members("c1") == _keys(f"u{n}" for n in final)
            assert sorted(store.snapshot_keys("c1")) == sorted(_keys(f"u{n}" for n in final))
            assert store.pending_count("c1") == 0
            assert run.users == len(final)


class TestDryRun:
    def test_dry_run_sends_nothing_and_changes_nothing(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """A dry run reports the planned delta without a request or a state change."""
        sync.sync("c1", "C", ["u1", "u2"])
        braze.clear_calls()
        run = sync.sync("c1", "Renamed", ["u2", "u3", "u4"], dry_run=True)
        assert braze.calls == []
        assert (run.result, run.added, run.removed, run.users) == ("dry_run", 2, 1, 2)
        assert sorted(store.snapshot_keys("c1")) == ["e:u1", "e:u2"]
        assert store.known_name("c1") == "C"
        assert store.pending_count("c1") == 0
        assert [r.result for r in sync.history("c1")] == ["dry_run", "succeeded"]

    def test_plan_and_rejects_files(self, sync: CohortSync, tmp_path: Path) -> None:
        """The plan lists each id with its action; the rejects file each bad record and why."""
        sync.sync("c1", "C", ["gone"])
        plan_path = tmp_path / "plan.csv"
        rejects = io.StringIO()
        members: list[object] = [
            "u1",
            {"alias_name": "a@x.io", "alias_label": "email"},
            {"device_id": "d-1"},
            " padded ",
            {"nothing": 1},
        ]
        run = sync.sync("c1", "C", members, dry_run=True, plan_out=plan_path, rejects_out=rejects)
        assert run.rejected == {"invalid_external_id": 1, "missing_identifier": 1}
        with plan_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == PLAN_HEADER
        assert sorted(rows[1:]) == sorted(
            [
                ["add", "external_id", "u1", "", "", ""],
                ["add", "alias", "", "a@x.io", "email", ""],
                ["add", "device_id", "", "", "", "d-1"],
                ["remove", "external_id", "gone", "", "", ""],
            ]
        )
        rej = list(csv.reader(io.StringIO(rejects.getvalue())))
        assert tuple(rej[0]) == REJECTS_HEADER
        assert [(r[0], r[2]) for r in rej[1:]] == [
            ("3", "invalid_external_id"),
            ("4", "missing_identifier"),
        ]
        assert json.loads(rej[2][4]) == {"nothing": 1}

    def test_unwritable_plan_path_is_a_configuration_error(
        self, sync: CohortSync, tmp_path: Path
    ) -> None:
        """A plan file that cannot be created fails before anything is recorded."""
        with pytest.raises(ConfigurationError):
            sync.sync("c1", "C", ["u1"], plan_out=tmp_path / "missing-dir" / "plan.csv")
        assert sync.history("c1") == []


class TestBadInput:
    def test_rejections_never_stop_valid_members(self, braze: FakeClient, store: Store) -> None:
        """Invalid records are counted by reason while every valid member is imported."""
        sync = _sync(braze, store, max_reject_fraction=None)
        run = sync.sync("c1", "C", ["u1", "", {"alias_name": "x"}, "u2", 3.5])
        assert braze.members("c1") == _keys(["u1", "u2"])
        assert run.result == "succeeded"
        assert run.rejected_total == 3
        assert run.rejected["incomplete_alias"] == 1

    def test_a_failing_source_is_recorded_and_returned(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """An exception from the members iterable fails the run, which is returned; nothing sent."""

        def members() -> Iterator[str]:
            yield "u1"
            raise InputError("cannot read members.csv: no such file")

        run = sync.sync("c1", "C", members())
        assert braze.calls == []
        assert sync.history("c1") == [run]
        assert (run.result, run.error_kind) == ("failed", "InputError")
        assert run.error == "reading the members failed: cannot read members.csv: no such file"
        with pytest.raises(bc.ImportFailedError, match=r"members\.csv") as caught:
            run.raise_for_result()
        assert caught.value.run == run

    def test_a_foreign_exception_is_recorded_without_its_text(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """A bug in the caller's iterable fails the run by class name; its text stays out."""

        def members() -> Iterator[str]:
            yield "u1"
            raise KeyError("secret-looking text")

        run = sync.sync("c1", "C", members())
        assert (run.result, run.error_kind) == ("failed", "KeyError")
        assert "secret-looking" not in (run.error or "")
        assert braze.calls == []

    def test_interrupt_is_recorded_and_raised(self, sync: CohortSync) -> None:
        """Ctrl-C while reading members marks the run interrupted and propagates."""

        def members() -> Iterator[str]:
            yield "u1"
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sync.sync("c1", "C", members())
        assert sync.history("c1")[0].result == "interrupted"
        assert sync.sync("c1", "C", ["u1"]).result == "succeeded"

    @pytest.mark.parametrize(
        ("cohort_id", "name", "members", "trigger"),
        [
            ("", "C", [], "manual"),
            ("c1", " ", [], "manual"),
            ("c1", "C", "u1", "manual"),
            ("c1", "C", [], "cron"),
        ],
    )
    def test_invalid_arguments_fail_before_anything_is_recorded(
        self,
        sync: CohortSync,
        braze: FakeClient,
        cohort_id: str,
        name: str,
        members: object,
        trigger: str,
    ) -> None:
        """Bad arguments raise ConfigurationError and leave no trace."""
        with pytest.raises(ConfigurationError):
            sync.sync(cohort_id, name, members, trigger=trigger)  # type: ignore[arg-type]
        assert braze.calls == []
        assert sync.history(cohort_id) == []


class TestConcurrency:
    def test_second_import_of_the_same_cohort_is_refused(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """While one import runs, another of the same cohort raises ImportInProgressError."""
        started, release = threading.Event(), threading.Event()
        results: list[ImportRun] = []

        def slow_members() -> Iterator[str]:
            yield "u1"
            started.set()
            assert release.wait(10)
            yield "u2"

        worker = threading.Thread(
            target=lambda: results.append(sync.sync("c1", "C", slow_members()))
        )
        worker.start()
        try:
            assert started.wait(10)
            with pytest.raises(ImportInProgressError, match="already being imported"):
                sync.sync("c1", "C", ["u3"])
            assert sync.sync("c2", "Other", ["u3"]).result == "succeeded"
        finally:
            release.set()
            worker.join(10)
        assert results[0].result == "succeeded"
        assert braze.members("c1") == _keys(["u1", "u2"])
        assert [r.result for r in sync.history("c1")] == ["succeeded"]


class TestNotifier:
    def test_notifier_hears_of_every_real_run(self, braze: FakeClient, store: Store) -> None:
        """The notifier gets each finished run, not dry runs, and not when told not to."""
        notifier = RecordingNotifier()
        sync = _sync(braze, store, notifier=notifier)
        run = sync.sync("c1", "C", ["u1"])
        sync.sync("c1", "C", ["u1"], dry_run=True)
        sync.sync("c1", "C", ["u1"], notify=False)
        assert notifier.runs == [run]

    def test_notifier_errors_are_recorded_not_raised(self, braze: FakeClient, store: Store) -> None:
        """A failing notifier leaves the import succeeded and records why it failed."""
        sync = _sync(braze, store, notifier=RecordingNotifier(NotificationError("SMTP 550")))
        run = sync.sync("c1", "C", ["u1"])
        assert (run.result, run.notification_error) == ("succeeded", "SMTP 550")
        assert sync.history("c1")[0].notification_error == "SMTP 550"


class TestSyncDelta:
    def test_entered_and_left_are_sent(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """A given delta adds who entered, removes who left, and names the cohort first."""
        run = sync.sync_delta("c1", "C", entered=["u1", "u2", ExternalId("u3")])
        assert braze.calls[0].kind == "name"
        assert (run.result, run.added, run.users) == ("succeeded", 3, 3)
        run = sync.sync_delta("c1", "C", entered=["u4", "u1"], left=["u2", "never-there"])
        assert braze.members("c1") == _keys(["u1", "u3", "u4"])
        assert (run.added, run.removed, run.users) == (1, 1, 3)

    def test_uncertain_ids_are_resent_as_last_sent(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """An id whose removal had an unknown outcome is removed again by the next delta."""
        sync.sync_delta("c1", "C", entered=["u1", "u2"])
        braze.fail_next(ServerError("down", status_code=503))
        assert sync.sync_delta("c1", "C", left=["u1"]).result == "failed"
        braze.clear_calls()
        run = sync.sync_delta("c1", "C", entered=["u9"])
        assert braze.members("c1") == _keys(["u2", "u9"])
        assert braze.sent() == (_keys(["u9"]), _keys(["u1"]))
        assert run.users == 2

    def test_overlapping_delta_is_refused(self, sync: CohortSync, braze: FakeClient) -> None:
        """A user both entering and leaving is an input error; nothing is sent."""
        run = sync.sync_delta("c1", "C", entered=["u1"], left=["u1"])
        assert braze.updates() == []
        assert (run.result, run.error_kind) == ("failed", "InputError")
        assert "both in entered and in left" in (run.error or "")
        assert sync.history("c1") == [run]

    def test_dry_run_of_a_delta(self, sync: CohortSync, braze: FakeClient) -> None:
        """A dry delta reports what would travel and sends nothing."""
        run = sync.sync_delta("c1", "C", entered=["u1"], left=["u2"], dry_run=True)
        assert (run.result, run.added, run.removed) == ("dry_run", 1, 0)
        assert braze.calls == []


class TestDocs:
    def test_examples_in_the_sync_page_run(self) -> None:
        """The examples in docs/sync.md run as shown."""
        assert run_doc_examples("sync.md") > 10


class TestMatchingFastPath:
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    "u1",
                    "u2",
                    "",
                    " u3",
                    "u\x00",
                    "日本",
                    {"external_id": "u4"},
                    {"device_id": "d"},
                    7,
                ]
            ),
            max_size=40,
        ),
        st.integers(min_value=1, max_value=8),
    )
    def test_bulk_matching_agrees_with_record_by_record(
        self, records: list[object], chunk: int
    ) -> None:
        """Chunks of plain str go a bulk way that gives the keys and rejections of match_one."""
        import braze_cohorts._sync as sync_module

        matcher = bc.IdentifierMatcher()
        expected_keys = []
        expected_rejected: collections.Counter[str] = collections.Counter()
        for i, record in enumerate(records):
            item = matcher.match_one(record, index=i)
            if isinstance(item, bc.Rejection):
                expected_rejected[item.reason.value] += 1
            else:
                expected_keys.append(item.key)
        old = sync_module._MATCH_CHUNK
        sync_module._MATCH_CHUNK = chunk
        try:
            matching = sync_module._Matching(matcher, None)
            keys = list(matching.keys(records))
        finally:
            sync_module._MATCH_CHUNK = old
        assert keys == expected_keys
        assert matching.rejected == expected_rejected
