"""CohortSync with a real CohortClient and SQLiteStore against the Braze emulator over HTTP."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braze_cohorts import (
    BatchUploader,
    CohortClient,
    CohortSync,
    ImportInProgressError,
    ImportRun,
    RetryPolicy,
    SQLiteStore,
    Timeout,
)
from braze_cohorts.testing import BrazeEmulator, RequestRecord

USERS = "/cohorts/users"
NAMES = "/cohorts"
#: Retries that wait nothing (sleep is injected anyway): faults show as retries or failures.
QUICK_RETRY = RetryPolicy(attempts=2, initial_backoff=0.0, max_backoff=0.0, jitter="none")


def make_client(emulator: BrazeEmulator, *, read_timeout: float = 30.0) -> CohortClient:
    return CohortClient(
        emulator.url,
        partner=emulator.partner,
        partner_api_key=emulator.partner_api_key,
        data_import_key=emulator.data_import_key,
        timeout=Timeout(connect=5.0, read=read_timeout),
    )


def make_sync(client: CohortClient, store: SQLiteStore, *, batch_size: int = 1000) -> CohortSync:
    uploader = BatchUploader(
        client,
        concurrency=4,
        batch_size=batch_size,
        requests_per_hour=1e9,
        retry=QUICK_RETRY,
        sleep=lambda _s: None,
    )
    return CohortSync(client, store, uploader=uploader)


def members_of(emulator: BrazeEmulator, cohort_id: str) -> set[str]:
    """The external ids the emulator's cohort holds (empty if it has none yet)."""
    try:
        found = emulator.members(cohort_id)
    except KeyError:
        return set()
    assert all(kind == "external_id" for kind, *_ in found)
    return {ident[1] for ident in found}


def user_records(emulator: BrazeEmulator, cohort_id: str) -> list[RequestRecord]:
    return [r for r in emulator.request_log if r.endpoint == "users" and r.cohort_id == cohort_id]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    braze_emulator.add_users(3_000, prefix="u")
    return braze_emulator


@pytest.fixture
def client(emulator: BrazeEmulator) -> Iterator[CohortClient]:
    with make_client(emulator) as c:
        yield c


class TestImports:
    def test_first_import_names_then_adds(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """The name request comes first, then the members, and Braze holds exactly them."""
        sync = make_sync(client, store)
        wanted = [f"u{n}" for n in range(2_500)]
        run = sync.sync("c1", "Power users", wanted)
        log = emulator.request_log
        assert (log[0].endpoint, log[0].name) == ("cohorts", "Power users")
        assert {r.endpoint for r in log[1:]} == {"users"}
        assert all(r.status == 200 for r in log)
        assert len(log) == 1 + 3
        assert members_of(emulator, "c1") == set(wanted)
        assert emulator.cohort_name("c1") == "Power users"
        # One request names the cohort, three add the members.
        assert (run.result, run.users, run.added, run.requests) == ("succeeded", 2_500, 2_500, 4)

    def test_refresh_sends_only_the_delta(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """A refresh of 2,000 members with 30 changes sends 30 ids in one request, no name."""
        sync = make_sync(client, store)
        sync.sync("c1", "C", [f"u{n}" for n in range(2_000)])
        emulator.reset_log()
        wanted = [f"u{n}" for n in range(15, 2_015)]
        run = sync.sync("c1", "C", wanted)
        (record,) = emulator.request_log
        assert record.endpoint == "users"
        assert (record.user_ids, record.removed) == (30, 15)
        assert members_of(emulator, "c1") == set(wanted)
        assert (run.added, run.removed, run.users) == (15, 15, 2_000)

    def test_rename_names_again(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """A new name is sent to Braze even when the members did not change."""
        sync = make_sync(client, store)
        sync.sync("c1", "Old name", ["u1"])
        emulator.reset_log()
        sync.sync("c1", "New name", ["u1"])
        assert [(r.endpoint, r.name) for r in emulator.request_log] == [("cohorts", "New name")]
        assert emulator.cohort_name("c1") == "New name"

    def test_dry_run_sends_nothing(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """A dry run makes no request at all, not even the name."""
        sync = make_sync(client, store)
        run = sync.sync("c1", "C", ["u1", "u2"], dry_run=True)
        assert emulator.request_log == []
        assert (run.result, run.added) == ("dry_run", 2)

    def test_revoked_key_fails_the_run(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """A revoked data import key fails the run with Braze's 401, and nothing is applied."""
        sync = make_sync(client, store)
        sync.sync("c1", "C", ["u1"])
        emulator.revoke_data_import_key(emulator.data_import_key)
        run = sync.sync("c1", "C", ["u1", "u2"])
        assert run.result == "failed"
        assert run.error is not None
        assert run.error.startswith("HTTP 401")
        assert "Invalid client secret" in run.error
        assert members_of(emulator, "c1") == {"u1"}

    def test_concurrent_import_of_the_same_cohort_is_refused(
        self, emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore
    ) -> None:
        """While one import runs, a second one of the same cohort is refused, another cohort not."""
        sync = make_sync(client, store)
        reading, release = threading.Event(), threading.Event()
        results: list[ImportRun] = []

        def members() -> Iterator[str]:
            yield "u1"
            reading.set()
            assert release.wait(10)
            yield "u2"

        worker = threading.Thread(target=lambda: results.append(sync.sync("c1", "C", members())))
        worker.start()
        try:
            assert reading.wait(10)
            with pytest.raises(ImportInProgressError, match="already being imported"):
                sync.sync("c1", "C", ["u3"])
            assert sync.sync("c2", "Other", ["u3"]).result == "succeeded"
        finally:
            release.set()
            worker.join(10)
        assert results[0].result == "succeeded"
        assert members_of(emulator, "c1") == {"u1", "u2"}
        assert members_of(emulator, "c2") == {"u3"}


_FAULTS = st.sampled_from(
    ["ok", "429", "503", "drop_before", "drop_after", "permanent", "timeout", "name_500"]
)
_counter = itertools.count()


class TestConvergence:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        steps=st.lists(
            st.tuples(
                st.frozensets(st.integers(0, 39)),
                st.sampled_from(["A", "B"]),
                st.lists(_FAULTS, min_size=1, max_size=3),
            ),
            min_size=1,
            max_size=4,
        ),
        final=st.frozensets(st.integers(0, 39)),
    )
    def test_after_any_faults_a_clean_import_converges_exactly(
        self,
        emulator: BrazeEmulator,
        store: SQLiteStore,
        steps: list[tuple[frozenset[int], str, list[str]]],
        final: frozenset[int],
    ) -> None:
        """After imports hit by 429s, 5XX, drops, timeouts and dead batches, one clean import
        leaves the emulator's cohort holding exactly the desired members."""
        cohort = f"cohort-{next(_counter)}"
        with make_client(emulator) as client, make_client(emulator, read_timeout=0.05) as slow:
            sync = make_sync(client, store, batch_size=7)
            impatient = make_sync(slow, store, batch_size=7)
            for members, name, faults in steps:
                emulator.clear_faults()
                runner = sync
                for fault in faults:
                    if fault == "429":
                        emulator.fail_next(1, 429, retry_after=0, path=USERS)
                    elif fault == "503":
                        emulator.fail_next(1, 503, path=USERS)
                    elif fault == "drop_before":
                        emulator.drop_next(1, when="before_apply", path=USERS)
                    elif fault == "drop_after":
                        emulator.drop_next(1, when="after_apply", path=USERS)
                    elif fault == "permanent":
                        emulator.fail_next(1_000, 503, path=USERS)
                    elif fault == "name_500":
                        emulator.fail_next(1, 500, path=NAMES)
                    elif fault == "timeout":
                        runner = impatient
                if runner is impatient:
                    emulator.set_latency(0.15)
                logged_before = len(emulator.request_log)
                run = runner.sync(cohort, name, [f"u{n}" for n in members], allow_mass_removal=True)
                if runner is impatient:
                    emulator.set_latency(0.0)
                    # Timed-out requests still land, late. Let them land before the next import
                    # (as a real caller would, by not overlapping imports), so that a late add
                    # cannot overtake a newer remove.
                    # run.requests counts every request sent, naming attempts included.
                    sent = run.requests
                    deadline = time.monotonic() + 10
                    while (
                        len(emulator.request_log) - logged_before < sent
                        and time.monotonic() < deadline
                    ):
                        time.sleep(0.01)
                assert run.result in ("succeeded", "failed"), run.error
            emulator.clear_faults()
            run = sync.sync(cohort, "Final", [f"u{n}" for n in final], allow_mass_removal=True)
        assert run.result == "succeeded", run.error
        assert members_of(emulator, cohort) == {f"u{n}" for n in final}
        assert run.users == len(final)
        assert store.pending_count(cohort) == 0
        assert emulator.cohort_name(cohort) == "Final"
