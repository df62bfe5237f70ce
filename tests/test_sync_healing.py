"""What the sync engine does about what nobody can see, and the guards before anything is sent.

Full resyncs (requested, period elapsed, workspace changed), recent entrants re-sent within the
resend window, users Braze did not know yet, out-of-band edits, the mass-removal and
too-many-rejected guards, warnings from success answers, counts recorded while running. Uses
the in-memory doubles of :mod:`braze_cohorts.testing`, over both stores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from braze_cohorts import (
    BatchUploader,
    CohortSync,
    ImportRun,
    RetryPolicy,
    SQLiteStore,
    UploadProgress,
    _sync,
)
from braze_cohorts._models import MAX_WARNING_CHARS, MAX_WARNINGS
from braze_cohorts._sync import FIRST_IMPORT_WARNING
from braze_cohorts.testing import FakeClient, MemoryStore, SettableClock

T0 = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.timezone.utc)
Store = SQLiteStore | MemoryStore


def _keys(ids: Iterable[str]) -> set[str]:
    return {f"e:{i}" for i in ids}


def _open(kind: str, directory: Path) -> Store:
    return SQLiteStore(directory / "state.db") if kind == "sqlite" else MemoryStore()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with _open(request.param, tmp_path) as s:
        yield s


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(T0)


@pytest.fixture
def braze() -> FakeClient:
    return FakeClient(workspace="ws-a")


def _engine(
    braze: FakeClient, store: Store, clock: SettableClock, *, batch_size: int = 3, **options: object
) -> CohortSync:
    uploader = BatchUploader(
        braze,
        concurrency=1,
        batch_size=batch_size,
        retry=RetryPolicy(attempts=1),
        sleep=lambda _s: None,
    )
    return CohortSync(braze, store, uploader=uploader, clock=clock, **options)  # type: ignore[arg-type]


@pytest.fixture
def sync(braze: FakeClient, store: Store, clock: SettableClock) -> CohortSync:
    return _engine(braze, store, clock)


USERS = [f"u{n}" for n in range(10)]


class TestFullResync:
    def test_requested_full_resync_resends_every_member(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """full_resync=True sends every desired member again, though the state says held."""
        first = sync.sync("c1", "C", USERS[:4])
        assert (first.full_resync, first.full_resync_reason) == (True, "first_import")
        braze.clear_calls()
        assert sync.sync("c1", "C", USERS[:4]).requests == 0
        run = sync.sync("c1", "C", USERS[:4], full_resync=True)
        assert (run.result, run.full_resync, run.full_resync_reason) == (
            "succeeded",
            True,
            "requested",
        )
        assert braze.sent() == (_keys(USERS[:4]), set())
        assert run.added == 4

    def test_elapsed_period_makes_a_full_resync_and_restarts_the_period(
        self, sync: CohortSync, braze: FakeClient, store: Store, clock: SettableClock
    ) -> None:
        """After resync_every (7 days) an ordinary sync re-sends everything; the period restarts."""
        sync.sync("c1", "C", USERS[:3])
        clock.advance(days=6, hours=23)
        braze.clear_calls()
        assert sync.sync("c1", "C", USERS[:3]).full_resync_reason is None
        assert braze.calls == []
        clock.advance(hours=1)  # 7 days since the first import's full resync
        run = sync.sync("c1", "C", USERS[:3])
        assert (run.full_resync, run.full_resync_reason) == (True, "period_elapsed")
        assert braze.sent() == (_keys(USERS[:3]), set())
        assert store.last_full_resync("c1") == clock.now
        braze.clear_calls()
        clock.advance(days=1)
        assert sync.sync("c1", "C", USERS[:3]).full_resync_reason is None
        assert braze.calls == []
        clock.advance(days=6)
        assert sync.sync("c1", "C", USERS[:3]).full_resync_reason == "period_elapsed"

    def test_out_of_band_removal_is_restored_by_a_full_resync(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """A member removed in the Braze dashboard stays out until the next full resync."""
        sync.sync("c1", "C", USERS[:3])
        braze.edit_out_of_band("c1", remove=["u0"])
        sync.sync("c1", "C", USERS[:3])
        assert braze.members("c1") == _keys(USERS[1:3])  # nobody can see it without a resync
        sync.sync("c1", "C", USERS[:3], full_resync=True)
        assert braze.members("c1") == _keys(USERS[:3])


class TestUsersBrazeDidNotKnow:
    def test_late_user_inside_the_window_joins_later_one_only_at_the_next_full_resync(
        self, store: Store, clock: SettableClock
    ) -> None:
        """Recent entrants are re-sent for resend_window; later, only a full resync heals."""
        braze = FakeClient(existing_users=["u0"])
        sync = _engine(braze, store, clock)
        sync.sync("c1", "C", ["u0"])  # first import: a full resync at T0
        clock.advance(hours=1)
        sync.sync("c1", "C", ["u0", "u1", "u2"])  # u1, u2 do not exist in Braze yet
        assert braze.members("c1") == _keys(["u0"])
        clock.advance(hours=1)
        braze.add_existing("u1")  # created 1 hour after entering
        clock.advance(days=1)
        run = sync.sync("c1", "C", ["u0", "u1", "u2"])
        assert run.full_resync_reason is None
        assert braze.members("c1") == _keys(["u0", "u1"])
        braze.add_existing("u2")  # created 4 days after entering: outside the 3-day window
        clock.advance(days=3)
        braze.clear_calls()
        assert sync.sync("c1", "C", ["u0", "u1", "u2"]).full_resync_reason is None
        assert braze.calls == []
        assert braze.members("c1") == _keys(["u0", "u1"])
        clock.advance(days=3)  # 7 days after the first import
        run = sync.sync("c1", "C", ["u0", "u1", "u2"])
        assert run.full_resync_reason == "period_elapsed"
        assert braze.members("c1") == _keys(["u0", "u1", "u2"])

    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    @settings(max_examples=30, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(
                st.frozensets(st.integers(0, 11)),  # desired members
                st.frozensets(st.integers(0, 11)),  # users created in Braze before the import
                st.frozensets(st.integers(0, 11)),  # members removed out of band
                st.integers(0, 200),  # hours until the next import
            ),
            min_size=1,
            max_size=6,
        ),
        existing=st.frozensets(st.integers(0, 11)),
        final=st.frozensets(st.integers(0, 11)),
    )
    def test_full_resync_leaves_exactly_the_desired_members_that_exist(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        kind: str,
        steps: list[tuple[frozenset[int], frozenset[int], frozenset[int], int]],
        existing: frozenset[int],
        final: frozenset[int],
    ) -> None:
        """Whatever was created late or removed out of band, a full resync heals it exactly."""
        braze = FakeClient(existing_users=[f"u{n}" for n in existing])
        clock = SettableClock(T0)
        created = set(existing)
        with _open(kind, tmp_path_factory.mktemp("heal")) as store:
            sync = _engine(braze, store, clock)
            for members, creates, removed, hours in steps:
                braze.add_existing(*(f"u{n}" for n in creates))
                created |= creates
                braze.edit_out_of_band("c1", remove=[f"u{n}" for n in removed])
                run = sync.sync("c1", "C", [f"u{n}" for n in members], allow_mass_removal=True)
                assert run.result == "succeeded"
                clock.advance(hours=hours)
            run = sync.sync(
                "c1", "C", [f"u{n}" for n in final], full_resync=True, allow_mass_removal=True
            )
        assert run.result == "succeeded"
        assert braze.members("c1") == _keys(f"u{n}" for n in final & created)


class TestWorkspace:
    def test_changed_workspace_resyncs_and_names_the_cohort_there(
        self, sync: CohortSync, braze: FakeClient, store: Store, clock: SettableClock
    ) -> None:
        """New credentials of another workspace: full resync, named again with a new created_at;
        a rename in the same workspace keeps created_at."""
        sync.sync("c1", "C", USERS[:3])
        clock.advance(hours=1)
        sync.sync("c1", "C2", USERS[:3])  # a rename in the same workspace
        assert [(c.workspace, c.name, c.created_at) for c in braze.namings()] == [
            ("ws-a", "C", T0),
            ("ws-a", "C2", T0),
        ]
        clock.advance(hours=1)
        braze.workspace = "ws-b"
        braze.clear_calls()
        run = sync.sync("c1", "C2", USERS[:3])
        assert (run.result, run.full_resync_reason) == ("succeeded", "workspace_changed")
        moved = T0 + dt.timedelta(hours=2)
        assert [(c.workspace, c.name, c.created_at) for c in braze.namings()] == [
            ("ws-b", "C2", moved)
        ]
        assert braze.members("c1") == _keys(USERS[:3])
        assert braze.name("c1") == "C2"
        assert (store.workspace("c1"), store.created_at("c1")) == ("ws-b", moved)
        clock.advance(hours=1)
        braze.clear_calls()
        sync.sync("c1", "C3", USERS[:3])
        assert [(c.name, c.created_at) for c in braze.namings()] == [("C3", moved)]

    def test_a_delta_against_a_changed_workspace_is_refused(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """sync_delta cannot be right against a workspace the state never saw: refused, no send."""
        sync.sync("c1", "C", USERS[:3])
        braze.workspace = "ws-b"
        braze.clear_calls()
        run = sync.sync_delta("c1", "C", entered=["u9"])
        assert (run.result, run.error_kind) == ("refused", "WorkspaceChangedError")
        assert "full sync" in (run.error or "")
        assert braze.calls == []
        assert store.workspace("c1") == "ws-a"
        assert store.pending_count("c1") == 0


class TestMassRemovalGuard:
    @pytest.mark.parametrize(
        ("keep", "refused"),
        [(0, True), (3, True), (4, True), (5, False), (9, False)],
    )
    def test_removing_more_than_half_is_refused_before_anything_is_sent(
        self, sync: CohortSync, braze: FakeClient, store: Store, keep: int, refused: bool
    ) -> None:
        """More than 50 % of the held members leaving (an empty membership: 100 %) is refused,
        with no request at all (no naming either); at most 50 % goes through."""
        sync.sync("c1", "C", USERS)
        braze.clear_calls()
        run = sync.sync("c1", "Renamed", USERS[:keep])
        if refused:
            assert (run.result, run.error_kind) == ("refused", "MassRemovalError")
            assert f"remove {10 - keep} of the 10" in (run.error or "")
            assert braze.calls == []
            assert (store.member_count("c1"), store.known_name("c1")) == (10, "C")
        else:
            assert run.result == "succeeded"
            assert braze.members("c1") == _keys(USERS[:keep])

    def test_allow_mass_removal_lets_it_through(self, sync: CohortSync, braze: FakeClient) -> None:
        """allow_mass_removal=True empties the cohort."""
        sync.sync("c1", "C", USERS)
        run = sync.sync("c1", "C", [], allow_mass_removal=True)
        assert (run.result, run.removed, run.users) == ("succeeded", 10, 0)
        assert braze.members("c1") == set()

    def test_uncertain_ids_are_not_counted_as_held(
        self, sync: CohortSync, braze: FakeClient, store: Store
    ) -> None:
        """Removing ids whose add had an unknown outcome is not a mass removal of held members."""
        sync.sync("c1", "C", USERS[:4])
        braze.lose_answer_next(2)  # both requests of the 6 new ids: applied, answers lost
        assert sync.sync("c1", "C", USERS).result == "failed"
        assert (store.member_count("c1"), store.pending_count("c1")) == (4, 6)
        run = sync.sync("c1", "C", USERS[:4])
        assert (run.result, run.removed) == ("succeeded", 6)
        assert braze.members("c1") == _keys(USERS[:4])


class TestRejectedGuard:
    @pytest.mark.parametrize(
        ("good", "bad", "refused"),
        [(0, 3, True), (8, 2, True), (19, 1, False)],
    )
    def test_mostly_rejected_input_is_refused(
        self, sync: CohortSync, braze: FakeClient, good: int, bad: int, refused: bool
    ) -> None:
        """All rejected, or more than 10 % rejected: refused with nothing sent; under: imported."""
        members = [f"u{n}" for n in range(good)] + [" padded"] * bad
        run = sync.sync("c1", "C", members)
        assert run.rejected_total == bad
        if refused:
            assert (run.result, run.error_kind) == ("refused", "TooManyRejectedError")
            assert f"{bad} of {good + bad} record(s)" in (run.error or "")
            assert braze.calls == []
        else:
            assert run.result == "succeeded"
            assert braze.members("c1") == _keys(f"u{n}" for n in range(good))

    def test_all_rejected_is_refused_even_without_a_limit(
        self, braze: FakeClient, store: Store, clock: SettableClock
    ) -> None:
        """Without a limit, an input with no valid record at all is still refused."""
        sync = _engine(braze, store, clock, max_reject_fraction=None)
        run = sync.sync("c1", "C", ["", " x"])
        assert (run.result, run.error_kind) == ("refused", "TooManyRejectedError")
        assert braze.calls == []
        assert sync.sync("c1", "C", ["u1", "", " x"]).result == "succeeded"


class TestWarnings:
    def test_errors_in_a_success_answer_become_warnings_and_their_ids_are_resent(
        self, braze: FakeClient, store: Store, clock: SettableClock
    ) -> None:
        """A 2XX carrying errors: the run keeps the messages, its ids stay uncertain and travel
        again with the next import."""
        sync = _engine(braze, store, clock, batch_size=1000)
        braze.answer_with_errors_next(["3 ids could not be matched", {"code": 7}])
        run = sync.sync("c1", "C", USERS[:3])
        assert run.result == "succeeded"
        # The first import of c1 with this store also warns, first, that it cannot remove
        # members Braze may already hold.
        assert run.warnings == (FIRST_IMPORT_WARNING, "3 ids could not be matched", "{'code': 7}")
        assert store.history("c1")[0].warnings == run.warnings
        assert store.pending_count("c1") == 3
        braze.clear_calls()
        again = sync.sync("c1", "C", USERS[:3])
        assert (again.warnings, again.added) == ((), 3)
        assert braze.sent() == (_keys(USERS[:3]), set())
        assert store.pending_count("c1") == 0

    @pytest.mark.parametrize("on", ["update", "name"])
    def test_warnings_are_bounded(
        self, braze: FakeClient, store: Store, clock: SettableClock, on: str
    ) -> None:
        """At most 20 distinct warnings of at most 300 characters each, whichever request."""
        sync = _engine(braze, store, clock)
        errors = [f"{n:02d}" + "x" * 500 for n in range(25)] * 2
        braze.answer_with_errors_next(errors, on=on)  # type: ignore[arg-type]
        run = sync.sync("c1", "C", USERS[:3])
        first, *from_braze = run.warnings
        assert first == FIRST_IMPORT_WARNING
        assert len(from_braze) == MAX_WARNINGS
        assert len(set(from_braze)) == MAX_WARNINGS
        assert all(len(w) == MAX_WARNING_CHARS for w in from_braze)
        assert from_braze[0].startswith("00x")


class TestProgressAndDryRun:
    def test_counts_are_recorded_while_the_import_runs(
        self,
        sync: CohortSync,
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The history shows a running run's counts so far (a run killed mid-way keeps them)."""
        monkeypatch.setattr(_sync, "_PROGRESS_EVERY", 0.0)
        seen: list[tuple[str, int]] = []

        def progress(_p: UploadProgress) -> None:
            latest: ImportRun = store.history("c1")[0]
            seen.append((latest.result, latest.added))

        run = sync.sync("c1", "C", USERS, progress=progress)
        assert run.added == 10
        assert seen[0] == ("running", 3)
        assert seen == [("running", n) for n in (3, 6, 9, 10)]

    def test_a_dry_run_says_a_real_import_would_be_refused(
        self, sync: CohortSync, braze: FakeClient
    ) -> None:
        """A dry run of a plan a guard would stop reports it as a warning and sends nothing."""
        sync.sync("c1", "C", USERS)
        braze.clear_calls()
        run = sync.sync("c1", "C", [], dry_run=True)
        assert (run.result, run.removed) == ("dry_run", 10)
        (warning,) = run.warnings
        assert warning.startswith("a real import would be refused: the import would remove 10")
        assert braze.calls == []
        assert sync.sync("c1", "C", USERS, dry_run=True).warnings == ()
