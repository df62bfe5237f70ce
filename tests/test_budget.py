"""SharedRateLimiter: one request budget per workspace, shared through the state store."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

import braze_cohorts as bc
from braze_cohorts import RateLimitInfo, SharedRateLimiter, SQLiteStore, StoreError
from braze_cohorts.testing import MemoryStore
from braze_cohorts.typing import BudgetStore


class FakeTime:
    """A wall clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(seconds, 0.0)


def _limiter(store: BudgetStore, clock: FakeTime, **kwargs: object) -> SharedRateLimiter:
    return SharedRateLimiter(
        store,
        "ws1:test",
        requests_per_hour=3600 / 0.99,  # one start a second
        wall_clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


class TestSharedRateLimiter:
    def test_two_stores_on_one_file_share_one_budget(self, tmp_path: Path) -> None:
        """Two jobs (two store objects, as two processes would have) get alternate starts."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as a, SQLiteStore(tmp_path / "s.db") as b:
            first, second = _limiter(a, clock), _limiter(b, clock)
            starts = []
            for limiter in (first, second) * 5:
                limiter.acquire(clock.sleep)
                starts.append(clock())
                limiter.finish()
        gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(starts)]
        assert gaps == [1.0] * 9  # one budget: evenly spaced, whoever asks

    def test_starts_go_in_the_order_they_were_reserved(self, tmp_path: Path) -> None:
        """Reservations queue: the n-th one asked for is the n-th slot, whatever the job."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as store:
            slots = [store.reserve_start("ws", 0.5, clock()) for _ in range(4)]
            assert slots == [clock.now + 0.5 * i for i in range(4)]
            assert store.reserve_start("other", 0.5, clock()) == clock.now  # its own budget

    def test_a_killed_jobs_reservations_simply_pass(self, tmp_path: Path) -> None:
        """Reserved starts nobody takes are not saved up, nor owed: the budget goes on."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as store:
            for _ in range(16):  # a job's 16 threads reserved, then the job was killed
                store.reserve_start("ws", 1.0, clock())
            clock.sleep(60)  # long after: the next start is now, not a burst of 16
            assert store.reserve_start("ws", 1.0, clock()) == clock.now
            assert store.reserve_start("ws", 1.0, clock()) == clock.now + 1.0

    def test_a_429_holds_every_job_sharing_the_budget(self, tmp_path: Path) -> None:
        """hold() by one job delays the next start of another."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as a, SQLiteStore(tmp_path / "s.db") as b:
            first, second = _limiter(a, clock), _limiter(b, clock)
            first.acquire(clock.sleep)
            first.finish()
            first.hold(30)
            before = clock()
            second.acquire(clock.sleep)
            assert clock() - before >= 30
            second.finish()

    def test_rate_limit_headers_near_zero_hold_everyone(self, tmp_path: Path) -> None:
        """X-RateLimit-Remaining at or below the requests in flight pauses the whole budget."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as store:
            limiter = _limiter(store, clock)
            limiter.acquire(clock.sleep)
            limiter.finish(RateLimitInfo(limit=100, remaining=0, reset=clock() + 20))
            assert store.claim_start("ws1:test", clock(), 1.0, 1) == pytest.approx(20)

    def test_the_window_refuses_bunched_starts(self, tmp_path: Path) -> None:
        """More than the window's share of starts within it waits, whoever started them."""
        with SQLiteStore(tmp_path / "s.db") as store:
            assert [store.claim_start("ws", 100.0 + i / 10, 1.0, 3) for i in range(3)] == [0.0] * 3
            assert store.claim_start("ws", 100.25, 1.0, 3) == pytest.approx(0.75)
            assert store.claim_start("ws", 101.0, 1.0, 3) == 0.0

    def test_the_cap_paces_one_job_below_the_shared_budget(self, tmp_path: Path) -> None:
        """With a cap of one start every 2 s, a budget of one a second does not speed it up."""
        clock = FakeTime()
        with SQLiteStore(tmp_path / "s.db") as store:
            cap = bc.RateLimiter(1800 / 0.99, clock=clock, wall_clock=clock)
            limiter = _limiter(store, clock, cap=cap)
            starts = []
            for _ in range(4):
                limiter.acquire(clock.sleep)
                starts.append(clock())
                limiter.finish()
            assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [2.0] * 3
            assert cap.in_flight == 0

    def test_an_abandoned_wait_counts_nothing(self, tmp_path: Path) -> None:
        """A sleep that raises (deadline, stop) leaves no request in flight, here or in the cap."""
        clock = FakeTime()

        def give_up(seconds: float) -> None:
            raise KeyboardInterrupt

        with SQLiteStore(tmp_path / "s.db") as store:
            cap = bc.RateLimiter(3600, clock=clock, wall_clock=clock)
            limiter = _limiter(store, clock, cap=cap)
            with pytest.raises(KeyboardInterrupt):
                limiter.acquire(give_up)
            assert cap.in_flight == 0

    def test_a_failing_store_falls_back_to_the_cap(self) -> None:
        """A budget that cannot be reached never fails an import: the cap alone paces it."""

        class Broken:
            def reserve_start(self, workspace: str, interval: float, now: float) -> float:
                raise StoreError("database is locked")

            def claim_start(self, workspace: str, now: float, window: float, limit: int) -> float:
                raise StoreError("database is locked")

            def hold_budget(self, workspace: str, until: float) -> None:
                raise StoreError("database is locked")

        clock = FakeTime()
        limiter = _limiter(Broken(), clock, cap=bc.RateLimiter(3600, clock=clock))
        limiter.acquire(clock.sleep)
        limiter.hold(5)
        limiter.finish()

    def test_invalid_arguments_are_refused(self, tmp_path: Path) -> None:
        """A non-positive limit or an empty workspace is a ConfigurationError."""
        with SQLiteStore(tmp_path / "s.db") as store:
            with pytest.raises(bc.ConfigurationError):
                SharedRateLimiter(store, "ws", requests_per_hour=0)
            with pytest.raises(bc.ConfigurationError):
                SharedRateLimiter(store, "")


class _WorkspaceClient:
    workspace = "ws1:fingerprint"

    def name_cohort(
        self, cohort_id: str, name: str, created_at: object = None
    ) -> bc.CohortResponse:
        return bc.CohortResponse(status_code=201, message="success")

    def update_members(
        self, cohort_id: str, add: object = (), remove: object = ()
    ) -> bc.CohortResponse:
        return bc.CohortResponse(status_code=201, message="success")


class TestCohortSyncDefault:
    def test_a_sqlite_store_shares_the_workspace_budget_by_default(self, tmp_path: Path) -> None:
        """CohortSync paces the uploader's requests with a SharedRateLimiter of the workspace."""
        with SQLiteStore(tmp_path / "s.db") as store:
            uploader = bc.BatchUploader(_WorkspaceClient(), requests_per_hour=1e9)
            sync = bc.CohortSync(_WorkspaceClient(), store, uploader=uploader)
            limiter = sync.uploader.limiter
            assert isinstance(limiter, SharedRateLimiter)
            assert limiter.workspace == "ws1:fingerprint"
            assert limiter.cap is None  # the job's limit is not stricter than the budget's
            run = sync.sync("c1", "C", ["u1", "u2"])
            assert run.result == "succeeded"
            assert store.reserve_start("ws1:fingerprint", 0.0, 0.0) > 0  # the budget was used

    def test_a_stricter_job_limit_stays_a_cap(self, tmp_path: Path) -> None:
        """An uploader limited below the workspace budget keeps its limiter in front of it."""
        with SQLiteStore(tmp_path / "s.db") as store:
            uploader = bc.BatchUploader(_WorkspaceClient(), requests_per_hour=100_000)
            sync = bc.CohortSync(_WorkspaceClient(), store, uploader=uploader)
            limiter = sync.uploader.limiter
            assert isinstance(limiter, SharedRateLimiter)
            assert limiter.cap is uploader.limiter

    def test_off_when_asked_or_when_the_store_keeps_no_budgets(self, tmp_path: Path) -> None:
        """workspace_requests_per_hour=None, a MemoryStore, or no workspace: the uploader's own."""
        with SQLiteStore(tmp_path / "s.db") as store:
            uploader = bc.BatchUploader(_WorkspaceClient())
            off = bc.CohortSync(
                _WorkspaceClient(), store, uploader=uploader, workspace_requests_per_hour=None
            )
            assert off.uploader is uploader
        memory = bc.CohortSync(_WorkspaceClient(), MemoryStore(), uploader=uploader)
        assert memory.uploader is uploader

    def test_an_invalid_budget_is_refused(self, tmp_path: Path) -> None:
        """A budget that is not a positive number is a ConfigurationError."""
        with SQLiteStore(tmp_path / "s.db") as store, pytest.raises(bc.ConfigurationError):
            bc.CohortSync(_WorkspaceClient(), store, workspace_requests_per_hour=-1)
