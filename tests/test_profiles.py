"""Connection profiles: the value, its secrets, one scheduler serving two emulator workspaces."""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import threading
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator, SettableClock
from doc_examples import run_doc_examples

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = "dik-0123-never-shown"


def _profile(**changes: object) -> bc.ConnectionProfile:
    fields: dict[str, object] = {
        "name": "acme",
        "endpoint": "US-03",
        "partner": "kubit",
        "partner_api_key_env": "ACME_PARTNER_KEY",
        "data_import_key_env": "ACME_IMPORT_KEY",
    }
    fields.update(changes)
    return bc.ConnectionProfile(**fields)  # type: ignore[arg-type]


def _members(braze: BrazeEmulator, cohort_id: str, workspace: str | None = None) -> set[str]:
    return {i[1] for i in braze.members(cohort_id, workspace)}


def _write_csv(path: Path, ids: list[str]) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id"])
        writer.writerows([uid] for uid in ids)
    return str(path)


class TestConnectionProfile:
    def test_each_key_needs_exactly_one_source(self) -> None:
        """A key with no source, or with both a variable and a file, is refused."""
        with pytest.raises(bc.ConfigurationError, match="exactly one source"):
            _profile(partner_api_key_env=None)
        with pytest.raises(bc.ConfigurationError, match="exactly one source"):
            _profile(data_import_key_file="/run/secrets/key")

    def test_a_key_pasted_as_a_variable_name_is_refused_without_echo(self) -> None:
        """A value that is not a variable's name (a key, say) is refused, never repeated."""
        with pytest.raises(bc.ConfigurationError) as info:
            _profile(data_import_key_env=SECRET)
        assert SECRET not in str(info.value)

    def test_invalid_name_endpoint_and_partner_are_refused(self) -> None:
        """Bad names, unknown clusters and partners with spaces fail at construction."""
        for changes in ({"name": "a b"}, {"name": ""}, {"endpoint": "XX-99"}, {"partner": "a b"}):
            with pytest.raises(bc.ConfigurationError):
                _profile(**changes)

    def test_file_paths_are_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative secret file path is stored as an absolute path."""
        monkeypatch.chdir(tmp_path)
        profile = _profile(data_import_key_env=None, data_import_key_file="key.txt")
        assert profile.data_import_key_file == str(tmp_path / "key.txt")

    def test_client_reads_the_variables_at_call_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The keys are read when client() is called, so a variable set later is picked up."""
        profile = _profile()
        monkeypatch.delenv("ACME_PARTNER_KEY", raising=False)
        monkeypatch.delenv("ACME_IMPORT_KEY", raising=False)
        with pytest.raises(bc.ConfigurationError, match="ACME_PARTNER_KEY"):
            profile.client()
        monkeypatch.setenv("ACME_PARTNER_KEY", "pk-1234567890")
        with pytest.raises(bc.ConfigurationError, match="ACME_IMPORT_KEY") as info:
            profile.client()
        assert "pk-1234567890" not in str(info.value)
        monkeypatch.setenv("ACME_IMPORT_KEY", SECRET)
        with profile.client() as client:
            assert client.partner == "kubit"
            assert SECRET not in repr(client)

    def test_client_reads_secret_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Keys come from files (trailing newline stripped); a missing or empty file is named."""
        monkeypatch.setenv("ACME_PARTNER_KEY", "pk-1234567890")
        key_file = tmp_path / "import-key"
        profile = _profile(data_import_key_env=None, data_import_key_file=key_file)
        with pytest.raises(bc.ConfigurationError, match=r"import-key.*cannot be read"):
            profile.client()
        key_file.write_text("\n")
        with pytest.raises(bc.ConfigurationError, match="is empty"):
            profile.client()
        key_file.write_text(SECRET + "\n")
        with (
            profile.client() as client,
            bc.CohortClient(
                "US-03", partner="kubit", partner_api_key="pk-1234567890", data_import_key=SECRET
            ) as same,
        ):
            assert client.workspace == same.workspace

    def test_repr_and_dict_hold_no_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A profile's repr and dict name variables, never values; the dict round-trips."""
        monkeypatch.setenv("ACME_IMPORT_KEY", SECRET)
        profile = _profile()
        assert SECRET not in repr(profile)
        assert SECRET not in json.dumps(profile.to_dict())
        assert bc.ConnectionProfile.from_dict(profile.to_dict()) == profile
        with pytest.raises(bc.ConfigurationError):
            bc.ConnectionProfile.from_dict({**profile.to_dict(), "data_import_key": SECRET})

    @given(
        name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
        env=st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True),
    )
    def test_any_valid_profile_round_trips(self, name: str, env: str) -> None:
        """Every valid name and variable survives to_dict/from_dict unchanged."""
        profile = _profile(name=name, data_import_key_env=env)
        assert bc.ConnectionProfile.from_dict(profile.to_dict()) == profile


def _never(profile: bc.ConnectionProfile) -> bc.CohortSync:
    raise AssertionError(f"no engine should be made for {profile.name}")


# -- one scheduler, two workspaces --------------------------------------------------------------


@pytest.fixture
def two_workspaces(braze_emulator: BrazeEmulator, monkeypatch: pytest.MonkeyPatch) -> BrazeEmulator:
    """Two customer workspaces on one emulator, their keys in environment variables."""
    braze = braze_emulator
    for name in ("acme", "globex"):
        braze.create_workspace(name)
        braze.add_users(5, prefix=f"{name}-", workspace=name)
        monkeypatch.setenv(f"{name.upper()}_IMPORT_KEY", braze.create_data_import_key(name))
    monkeypatch.setenv("KUBIT_PARTNER_KEY", braze.partner_api_key)
    return braze


def _add_profiles(store: bc.SQLiteStore, braze: BrazeEmulator, *names: str) -> None:
    for name in names:
        store.put_profile(
            bc.ConnectionProfile(
                name=name,
                endpoint=braze.url,
                partner=braze.partner,
                partner_api_key_env="KUBIT_PARTNER_KEY",
                data_import_key_env=f"{name.upper()}_IMPORT_KEY",
            )
        )


class TestOneSchedulerManyWorkspaces:
    def test_run_forever_lands_each_cohort_in_its_own_workspace(
        self, two_workspaces: BrazeEmulator, tmp_path: Path
    ) -> None:
        """One run_forever with a settable clock runs both profiles' schedules at their times."""
        braze = two_workspaces
        clock = SettableClock(T0)
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            _add_profiles(store, braze, "acme", "globex")
            syncs = bc.ProfileSyncs(store, clock=clock)
            scheduler = bc.Scheduler(store, clock=clock, sync_for_profile=syncs)
            for name, minute in (("acme", 5), ("globex", 10)):
                ids = [f"{name}-{i}" for i in range(3)]
                scheduler.set_schedule(
                    f"{name}-power",
                    f"{name.title()} power users",
                    f"hourly {minute}",
                    source=_write_csv(tmp_path / f"{name}.csv", ids),
                    profile=name,
                )
            stop = threading.Event()
            waits: list[float] = []

            def wait(seconds: float) -> bool:
                waits.append(seconds)
                clock.advance(seconds=seconds)
                if clock() >= T0 + dt.timedelta(minutes=15):
                    stop.set()
                return stop.is_set()

            ran = scheduler.run_forever(stop=stop, wait=wait, recheck=3600)
            syncs.close()
            assert ran == 2
            assert waits[:2] == [300.0, 300.0]  # woke at :05, then at :10: never polled
            assert _members(braze, "acme-power", "acme") == {"acme-0", "acme-1", "acme-2"}
            assert _members(braze, "globex-power", "globex") == {"globex-0", "globex-1", "globex-2"}
            # Nothing crossed over, and nothing reached the default workspace.
            assert set(braze.cohorts("acme")) == {"acme-power"}
            assert set(braze.cohorts("globex")) == {"globex-power"}
            assert not set(braze.cohorts())
            # Each cohort's state is bound to its own workspace.
            assert store.workspace("acme-power") != store.workspace("globex-power")

    def test_a_missing_variable_fails_only_its_schedule_and_is_recorded(
        self,
        two_workspaces: BrazeEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An unset key variable fails that schedule's run (in history, no traceback)."""
        braze = two_workspaces
        monkeypatch.delenv("GLOBEX_IMPORT_KEY")
        clock = SettableClock(T0)
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            _add_profiles(store, braze, "acme", "globex")
            with bc.ProfileSyncs(store, clock=clock) as syncs:
                scheduler = bc.Scheduler(store, clock=clock, sync_for_profile=syncs)
                for name in ("acme", "globex"):
                    scheduler.set_schedule(
                        name,
                        name.title(),
                        "hourly 05",
                        source=_write_csv(tmp_path / f"{name}.csv", [f"{name}-1"]),
                        profile=name,
                    )
                clock.advance(minutes=5)
                with caplog.at_level(logging.INFO, logger="braze_cohorts"):
                    runs = {r.cohort_id: r for r in scheduler.run_due()}
            assert runs["acme"].result == "succeeded"
            assert _members(braze, "acme", "acme") == {"acme-1"}
            failed = runs["globex"]
            assert (failed.result, failed.error_kind) == ("failed", "ConfigurationError")
            assert "GLOBEX_IMPORT_KEY" in (failed.error or "")
            assert store.history("globex") == [failed]  # recorded, with an id
            assert store.get_schedule("globex").state == "active"  # type: ignore[union-attr]
            assert store.get_schedule("globex").last_run_id == failed.id  # type: ignore[union-attr]
            assert not any(r.exc_info for r in caplog.records)

    def test_unknown_profile_and_no_default_engine_fail_that_run_only(
        self, tmp_path: Path, braze_emulator: BrazeEmulator
    ) -> None:
        """A deleted profile, or a schedule with no profile and no default engine, fail alone."""
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            store.put_profile(_profile())
            scheduler = bc.Scheduler(store, clock=SettableClock(T0), sync_for_profile=_never)
            scheduler.set_schedule(
                "a", "A", "hourly 00", source=_write_csv(tmp_path / "a.csv", ["u"]), profile="acme"
            )
            scheduler.set_schedule(
                "b", "B", "hourly 00", source=_write_csv(tmp_path / "b.csv", ["u"])
            )
            assert store.delete_profile("acme")
            runs = {r.cohort_id: r for r in scheduler.run_due(T0 + dt.timedelta(hours=1))}
            assert "no connection profile called 'acme'" in (runs["a"].error or "")
            assert "no default Braze connection" in (runs["b"].error or "")
            assert [r.result for r in store.history("a")] == ["failed"]

    def test_set_schedule_refuses_an_unknown_profile(self, tmp_path: Path) -> None:
        """Naming a profile that is not in the store fails when the schedule is set."""
        with (
            bc.SQLiteStore(tmp_path / "state.db") as store,
            pytest.raises(bc.ConfigurationError, match="no connection profile"),
        ):
            bc.Scheduler(store).set_schedule(
                "a", "A", "hourly 00", source=str(tmp_path / "a.csv"), profile="nope"
            )

    def test_one_run_due_serves_every_profile(
        self,
        two_workspaces: BrazeEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`run-due` without default credentials runs both profiles' due schedules."""
        braze = two_workspaces
        for var in (
            "BRAZE_REST_ENDPOINT",
            "BRAZE_PARTNER",
            "BRAZE_PARTNER_API_KEY",
            "BRAZE_DATA_IMPORT_KEY",
        ):
            monkeypatch.delenv(var, raising=False)
        state = str(tmp_path / "state.db")
        monkeypatch.setenv("BRAZE_COHORTS_STATE", state)
        for name in ("acme", "globex"):
            assert (
                main(
                    [
                        "profile",
                        "add",
                        name,
                        "--endpoint",
                        braze.url,
                        "--partner",
                        braze.partner,
                        "--partner-api-key-env",
                        "KUBIT_PARTNER_KEY",
                        "--data-import-key-env",
                        f"{name.upper()}_IMPORT_KEY",
                    ]
                )
                == 0
            )
        with bc.SQLiteStore(state) as store:
            for name in ("acme", "globex"):
                bc.Scheduler(store).set_schedule(
                    f"{name}-c",
                    name,
                    "hourly 00",
                    source=_write_csv(tmp_path / f"{name}.csv", [f"{name}-0", f"{name}-4"]),
                    profile=name,
                    now=dt.datetime.now(UTC) - dt.timedelta(hours=2),
                )
        capsys.readouterr()
        assert main(["run-due", "--json"]) == 0
        runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted((r["cohort_id"], r["result"]) for r in runs) == [
            ("acme-c", "succeeded"),
            ("globex-c", "succeeded"),
        ]
        assert _members(braze, "acme-c", "acme") == {"acme-0", "acme-4"}
        assert _members(braze, "globex-c", "globex") == {"globex-0", "globex-4"}

        # A missing variable fails only that profile's run; exit 1, no traceback.
        monkeypatch.delenv("ACME_IMPORT_KEY")
        assert main(["trigger", "acme-c"]) == 1
        out, err = capsys.readouterr()
        assert "ACME_IMPORT_KEY" in out
        assert "Traceback" not in out + err
        assert main(["trigger", "globex-c"]) == 0

    def test_schedules_without_a_profile_still_need_the_default_settings(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`run-due` with a due schedule naming no profile and no settings is a usage error."""
        for var in (
            "BRAZE_REST_ENDPOINT",
            "BRAZE_PARTNER",
            "BRAZE_PARTNER_API_KEY",
            "BRAZE_DATA_IMPORT_KEY",
        ):
            monkeypatch.delenv(var, raising=False)
        state = str(tmp_path / "state.db")
        with bc.SQLiteStore(state) as store:
            bc.Scheduler(store).set_schedule(
                "plain",
                "Plain",
                "hourly 00",
                source=_write_csv(tmp_path / "p.csv", ["u"]),
                now=dt.datetime.now(UTC) - dt.timedelta(hours=2),
            )
        assert main(["run-due", "--state", state]) == 2
        assert "BRAZE_DATA_IMPORT_KEY" in capsys.readouterr().err


class TestProfileSyncs:
    def test_the_engine_is_kept_per_workspace_and_remade_after_rotation(
        self, two_workspaces: BrazeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Same keys: the same engine (and rate budget); a rotated key: a new engine."""
        braze = two_workspaces
        with bc.SQLiteStore(tmp_path / "s.db") as store:
            _add_profiles(store, braze, "acme")
            profile = store.get_profile("acme")
            assert profile is not None
            with bc.ProfileSyncs(store) as syncs:
                first = syncs(profile)
                assert syncs(profile) is first
                monkeypatch.setenv("ACME_IMPORT_KEY", braze.create_data_import_key("acme"))
                assert syncs(profile) is not first
                changed = attrs.evolve(profile, partner_api_key_env="OTHER")
                monkeypatch.setenv("OTHER", braze.partner_api_key)
                assert syncs(changed) is not syncs(profile)

    def test_a_bad_budget_fails_at_construction(self, tmp_path: Path) -> None:
        """A rate budget that is not positive is refused before any import."""
        with bc.SQLiteStore(tmp_path / "s.db") as store, pytest.raises(bc.ConfigurationError):
            bc.ProfileSyncs(store, requests_per_hour=0)


class TestDocs:
    def test_profiles_section_of_the_schedules_page_runs(self) -> None:
        """The examples in the profiles section of docs/schedules.md run as shown."""
        assert run_doc_examples("schedules.md", section="profiles") > 8


class TestSchedulerStartWarning:
    def test_unset_profile_variables_are_named_at_start(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """`braze-cohorts scheduler` warns at start about a profile's unset variable (no value)."""
        from braze_cohorts._cli.scheduler import _warn_unconfigured

        monkeypatch.delenv("ACME_IMPORT_KEY", raising=False)
        monkeypatch.setenv("ACME_PARTNER_KEY", SECRET)
        with bc.SQLiteStore(tmp_path / "s.db") as store:
            store.put_profile(_profile())
            bc.Scheduler(store).set_schedule(
                "c", "C", "hourly 00", source=_write_csv(tmp_path / "c.csv", ["u"]), profile="acme"
            )
            with caplog.at_level(logging.WARNING):
                _warn_unconfigured(store, None)
        assert "profile acme: $ACME_IMPORT_KEY not found" in caplog.text
        assert "ACME_PARTNER_KEY" not in caplog.text
        assert SECRET not in caplog.text
