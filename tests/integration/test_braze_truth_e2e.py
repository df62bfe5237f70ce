"""Braze's truth over real HTTP: users Braze ignored, resyncs, workspaces, the guards, warnings.

Braze silently ignores ids of users it does not know. These tests run CohortSync with a real
CohortClient and SQLiteStore against the emulator, whose users appear late, whose cohorts are
edited out of band, and whose workspaces and keys change, and check what the library can and
cannot heal, and when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts import BatchUploader, CohortClient, CohortSync, RetryPolicy, SQLiteStore
from braze_cohorts.testing import BrazeEmulator
from helpers import emulator_client

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


class Clock:
    """A settable clock for the sync engine."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def client_for(emulator: BrazeEmulator, data_import_key: str | None = None) -> CohortClient:
    return emulator_client(emulator, data_import_key=data_import_key or emulator.data_import_key)


def sync_for(
    client: CohortClient, store: SQLiteStore, clock: Clock, **options: object
) -> CohortSync:
    uploader = BatchUploader(
        client,
        concurrency=2,
        requests_per_hour=1e9,
        retry=RetryPolicy(attempts=1),
        sleep=lambda _s: None,
    )
    return CohortSync(client, store, uploader=uploader, clock=clock, **options)  # type: ignore[arg-type]


def held(emulator: BrazeEmulator, cohort_id: str, workspace: str | None = None) -> set[str]:
    try:
        found = emulator.members(cohort_id, workspace)
    except KeyError:
        return set()
    return {ident[1] for ident in found}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TestUsersBrazeIgnored:
    def test_the_issue_example_heals_at_the_next_full_resync(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """u3 unknown at the first import, created an hour later: a full resync adds it."""
        braze_emulator.add_users(3, prefix="u")
        sync = sync_for(client, store, clock)
        first = sync.sync("c", "C", ["u0", "u1", "u2", "u3"])
        assert (first.result, first.full_resync_reason) == ("succeeded", "first_import")
        assert first.users == 4  # acknowledged, not matched: Braze never says which it ignored
        assert held(braze_emulator, "c") == {"u0", "u1", "u2"}
        braze_emulator.add_user("u3")
        clock.advance(hours=1)
        assert sync.sync("c", "C", ["u0", "u1", "u2", "u3"]).requests == 0
        assert held(braze_emulator, "c") == {"u0", "u1", "u2"}
        run = sync.sync("c", "C", ["u0", "u1", "u2", "u3"], full_resync=True)
        assert (run.full_resync, run.full_resync_reason, run.added) == (True, "requested", 4)
        assert held(braze_emulator, "c") == {"u0", "u1", "u2", "u3"}

    def test_a_recent_entrant_created_an_hour_later_joins_at_the_next_import(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """A member who entered by a delta, unknown to Braze then, joins once Braze knows it."""
        braze_emulator.add_users(3, prefix="u")
        sync = sync_for(client, store, clock, resend_window=dt.timedelta(days=2))
        sync.sync("c", "C", ["u0", "u1"])
        clock.advance(hours=1)
        entered = sync.sync("c", "C", ["u0", "u1", "late"])
        assert (entered.added, held(braze_emulator, "c")) == (1, {"u0", "u1"})
        braze_emulator.add_user("late")
        clock.advance(hours=1)
        run = sync.sync("c", "C", ["u0", "u1", "late"])
        assert (run.result, run.full_resync, run.added) == ("succeeded", False, 1)
        assert held(braze_emulator, "c") == {"u0", "u1", "late"}
        # Once the window has passed it is no longer re-sent: only deltas travel.
        clock.advance(days=3)
        assert sync.sync("c", "C", ["u0", "u1", "late"]).requests == 0

    def test_created_after_the_window_joins_at_the_periodic_full_resync(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """Past the window only the full resync of resync_every heals; then the period restarts."""
        braze_emulator.add_users(2, prefix="u")
        sync = sync_for(
            client,
            store,
            clock,
            resend_window=dt.timedelta(hours=6),
            resync_every=dt.timedelta(days=7),
        )
        sync.sync("c", "C", ["u0"])
        clock.advance(hours=1)
        sync.sync("c", "C", ["u0", "late"])
        clock.advance(days=1)
        braze_emulator.add_user("late")
        assert sync.sync("c", "C", ["u0", "late"]).requests == 0
        assert held(braze_emulator, "c") == {"u0"}
        clock.advance(days=6)
        run = sync.sync("c", "C", ["u0", "late"])
        assert (run.full_resync_reason, run.added) == ("period_elapsed", 2)
        assert held(braze_emulator, "c") == {"u0", "late"}
        clock.advance(days=1)
        assert not sync.sync("c", "C", ["u0", "late"]).full_resync

    def test_a_cohort_emptied_out_of_band_is_restored_by_a_full_resync(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """Edits made in Braze are invisible to a delta; full_resync=True restores the members."""
        braze_emulator.add_users(5, prefix="u")
        sync = sync_for(client, store, clock)
        members = [f"u{n}" for n in range(5)]
        sync.sync("c", "C", members)
        braze_emulator.empty_cohort("c")
        assert sync.sync("c", "C", members).requests == 0
        assert held(braze_emulator, "c") == set()
        run = sync.sync("c", "C", members, full_resync=True)
        assert (run.result, run.added) == ("succeeded", 5)
        assert held(braze_emulator, "c") == set(members)


class TestWorkspaceBinding:
    def test_one_state_file_two_workspaces_and_a_rotated_key(
        self, braze_emulator: BrazeEmulator, store: SQLiteStore, clock: Clock
    ) -> None:
        """The same state against staging, production and a new key leaves each exact."""
        braze_emulator.add_users(6, prefix="u")
        staging = braze_emulator.create_workspace("staging")
        staging_key = braze_emulator.create_data_import_key(staging)
        braze_emulator.add_users(6, prefix="u", workspace=staging)
        members = ["u0", "u1", "u2"]
        with client_for(braze_emulator) as prod_client:
            first = sync_for(prod_client, store, clock).sync("c", "C", members)
            assert first.result == "succeeded"
        clock.advance(hours=1)
        with client_for(braze_emulator, staging_key) as staging_client:
            assert staging_client.workspace != prod_client.workspace
            run = sync_for(staging_client, store, clock).sync("c", "C staging", members[:2])
            assert (run.full_resync_reason, run.result) == ("workspace_changed", "succeeded")
        assert held(braze_emulator, "c", staging.name) == {"u0", "u1"}
        assert braze_emulator.cohort_name("c", staging.name) == "C staging"
        assert held(braze_emulator, "c") == {"u0", "u1", "u2"}  # production untouched
        clock.advance(hours=1)
        rotated = braze_emulator.create_data_import_key()
        braze_emulator.revoke_data_import_key(braze_emulator.data_import_key)
        with client_for(braze_emulator, rotated) as rotated_client:
            run = sync_for(rotated_client, store, clock).sync("c", "C", ["u1", "u2", "u3"])
        assert (run.full_resync_reason, run.added) == ("workspace_changed", 3)
        assert held(braze_emulator, "c") == {"u1", "u2", "u3"}
        assert held(braze_emulator, "c", staging.name) == {"u0", "u1"}

    def test_no_key_is_written_to_the_state_file(
        self, braze_emulator: BrazeEmulator, store: SQLiteStore, clock: Clock, tmp_path: Path
    ) -> None:
        """The binding is a one-way fingerprint: neither key appears in the database."""
        braze_emulator.add_users(2, prefix="u")
        with client_for(braze_emulator) as client:
            sync_for(client, store, clock).sync("c", "C", ["u0", "u1"])
            assert store.workspace("c") == client.workspace
        store.close()
        data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        for key in (braze_emulator.data_import_key, braze_emulator.partner_api_key):
            assert key.encode() not in data

    def test_a_delta_against_another_workspace_is_refused(
        self, braze_emulator: BrazeEmulator, store: SQLiteStore, clock: Clock
    ) -> None:
        """sync_delta cannot be right against a workspace the state never saw: refused."""
        braze_emulator.add_users(3, prefix="u")
        with client_for(braze_emulator) as client:
            sync_for(client, store, clock).sync("c", "C", ["u0"])
        other = braze_emulator.create_workspace("other")
        key = braze_emulator.create_data_import_key(other)
        with client_for(braze_emulator, key) as other_client:
            run = sync_for(other_client, store, clock).sync_delta("c", "C", entered=["u1"])
        assert (run.result, run.error_kind) == ("refused", "WorkspaceChangedError")
        assert "run a full sync" in (run.error or "")
        assert braze_emulator.cohorts("other") == {}


class TestRemovalGuard:
    @pytest.mark.parametrize("keep", [0, 2])
    def test_mass_removal_is_refused_with_nothing_sent(
        self,
        braze_emulator: BrazeEmulator,
        client: CohortClient,
        store: SQLiteStore,
        clock: Clock,
        keep: int,
    ) -> None:
        """Emptying (100 %) or removing 80 % is refused before naming or sending anything."""
        braze_emulator.add_users(10, prefix="u")
        sync = sync_for(client, store, clock)
        members = [f"u{n}" for n in range(10)]
        sync.sync("c", "C", members)
        braze_emulator.reset_log()
        run = sync.sync("c", "Renamed", members[:keep])
        assert (run.result, run.error_kind) == ("refused", "MassRemovalError")
        assert f"remove {10 - keep} of the 10" in (run.error or "")
        assert "allow_mass_removal" in (run.error or "")
        assert braze_emulator.request_log == []
        assert held(braze_emulator, "c") == set(members)
        with pytest.raises(bc.ImportFailedError) as caught:
            run.raise_for_result()
        assert caught.value.run.error_kind == "MassRemovalError"
        allowed = sync.sync("c", "C", members[:keep], allow_mass_removal=True)
        assert (allowed.result, allowed.removed) == ("succeeded", 10 - keep)
        assert held(braze_emulator, "c") == set(members[:keep])

    def test_threshold_is_configurable_and_off(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """max_remove_fraction sets the share; None turns the guard off."""
        braze_emulator.add_users(10, prefix="u")
        members = [f"u{n}" for n in range(10)]
        strict = sync_for(client, store, clock, max_remove_fraction=0.2)
        strict.sync("c", "C", members)
        assert strict.sync("c", "C", members[:7]).result == "refused"
        assert strict.sync("c", "C", members[:8]).result == "succeeded"
        off = sync_for(client, store, clock, max_remove_fraction=None)
        assert off.sync("c", "C", []).result == "succeeded"
        assert held(braze_emulator, "c") == set()


class TestWarnings:
    def test_a_success_with_errors_reaches_the_history_and_its_ids_are_resent(
        self, braze_emulator: BrazeEmulator, client: CohortClient, store: SQLiteStore, clock: Clock
    ) -> None:
        """Braze's errors on a 2XX are kept on the run; that request's ids are sent again."""
        braze_emulator.add_users(3, prefix="u")
        sync = sync_for(client, store, clock)
        sync.sync("c", "C", ["u0"])
        braze_emulator.succeed_with_errors_next(
            1, ["some ids were not processed"], path="/cohorts/users"
        )
        run = sync.sync("c", "C", ["u0", "u1", "u2"])
        assert run.result == "succeeded"
        assert run.warnings == ("some ids were not processed",)
        assert sync.history("c")[0].warnings == run.warnings
        assert store.pending_count("c") == 2
        braze_emulator.reset_log()
        again = sync.sync("c", "C", ["u0", "u1", "u2"])
        assert (again.added, again.warnings) == (2, ())
        assert store.pending_count("c") == 0


class TestConvergenceWithLateUsersAndDashboardEdits:
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        steps=st.lists(
            st.tuples(
                st.frozensets(st.integers(0, 19)),  # desired members
                st.frozensets(st.integers(0, 19)),  # users created in Braze before this import
                st.frozensets(st.integers(0, 19)),  # members removed in the dashboard
            ),
            min_size=1,
            max_size=4,
        ),
        final=st.frozensets(st.integers(0, 19)),
    )
    def test_after_a_full_resync_braze_holds_exactly_the_desired_members_that_exist(
        self,
        braze_emulator: BrazeEmulator,
        tmp_path_factory: pytest.TempPathFactory,
        steps: list[tuple[frozenset[int], frozenset[int], frozenset[int]]],
        final: frozenset[int],
    ) -> None:
        """Whatever Braze ignored or lost, a full resync ends exact over the users that exist."""
        cohort = f"late-{id(steps)}-{len(braze_emulator.cohorts())}"
        existing: set[int] = set()
        clock = Clock()
        path = tmp_path_factory.mktemp("truth") / "s.db"
        with client_for(braze_emulator) as client, SQLiteStore(path) as store:
            sync = sync_for(client, store, clock, max_remove_fraction=None)
            for desired, created, removed in steps:
                for n in sorted(created - existing):
                    braze_emulator.add_user(f"{cohort}-u{n}")
                existing |= created
                gone = [
                    uid
                    for uid in held(braze_emulator, cohort)
                    if int(uid.rsplit("u", 1)[1]) in removed
                ]
                if gone:
                    braze_emulator.remove_members(cohort, gone)
                clock.advance(hours=5)
                run = sync.sync(cohort, "C", [f"{cohort}-u{n}" for n in desired])
                assert run.result == "succeeded", run.error
            run = sync.sync(cohort, "C", [f"{cohort}-u{n}" for n in final], full_resync=True)
            assert run.result == "succeeded", run.error
        assert held(braze_emulator, cohort) == {f"{cohort}-u{n}" for n in final & existing}
