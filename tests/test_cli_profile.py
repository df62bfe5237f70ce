"""``braze-cohorts profile add|list|remove`` and the profile/rule flags of ``schedule set``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import braze_cohorts as bc
from braze_cohorts.cli import main

KEY = "dik-5e1f-very-secret-value"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state path in the environment, and a key value set in a profile's variable."""
    path = tmp_path / "state.db"
    monkeypatch.setenv("BRAZE_COHORTS_STATE", str(path))
    monkeypatch.setenv("ACME_IMPORT_KEY", KEY)
    monkeypatch.setenv("KUBIT_KEY", "pk-" + KEY)
    return path


@pytest.fixture
def members(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    path.write_text("external_id\nu0\nu1\n", encoding="utf-8")
    return path


def _add(name: str = "acme", *extra: str) -> int:
    return main(
        [
            "profile", "add", name, "--endpoint", "EU-01", "--partner", "kubit",
            "--partner-api-key-env", "KUBIT_KEY", "--data-import-key-env", "ACME_IMPORT_KEY",
            *extra,
        ]
    )  # fmt: skip


def _set_c1(members: Path, *flags: str) -> int:
    """``schedule set c1 --name C1 --source MEMBERS --hourly 5 FLAGS``."""
    return main(
        ["schedule", "set", "c1", "--name", "C1", "--source", str(members), "--hourly", "5", *flags]
    )


class TestProfileCommands:
    def test_add_list_remove_never_print_a_key(
        self, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """add, list (text and JSON) and remove show names and paths, never a key's value."""
        assert _add() == 0
        secret_file = tmp_path / "globex.key"
        assert (
            main(
                [
                    "profile",
                    "add",
                    "globex",
                    "--endpoint",
                    "US-03",
                    "--partner",
                    "kubit",
                    "--partner-api-key-env",
                    "KUBIT_KEY",
                    "--data-import-key-file",
                    str(secret_file),
                ]
            )
            == 0
        )
        assert main(["profile", "list"]) == 0
        assert main(["profile", "list", "--json"]) == 0
        out, err = capsys.readouterr()
        assert KEY not in out + err
        assert "env ACME_IMPORT_KEY" in out
        assert f"file {secret_file}" in out
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert [r["name"] for r in rows] == ["acme", "globex"]
        assert rows[0]["data_import_key_env"] == "ACME_IMPORT_KEY"
        assert main(["profile", "remove", "globex"]) == 0
        assert main(["profile", "remove", "globex"]) == 1
        with bc.SQLiteStore(state) as store:
            assert [p.name for p in store.list_profiles()] == ["acme"]

    def test_a_second_add_needs_replace(
        self, state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Adding an existing name fails (exit 2) unless --replace is given."""
        assert _add() == 0
        assert _add() == 2
        assert "exists already" in capsys.readouterr().err
        assert _add("acme", "--replace") == 0

    def test_a_key_given_as_a_variable_name_is_refused_without_echo(
        self, state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pasting the key itself where a variable's name goes fails and never repeats it."""
        code = main(
            [
                "profile", "add", "acme", "--endpoint", "EU-01", "--partner", "kubit",
                "--partner-api-key-env", "KUBIT_KEY", "--data-import-key-env", KEY,
            ]
        )  # fmt: skip
        assert code == 2
        assert KEY not in capsys.readouterr().err
        assert not state.exists() or bc.SQLiteStore(state).list_profiles() == []

    def test_remove_refuses_a_profile_schedules_use(
        self, state: Path, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A profile a live schedule names is kept unless --force."""
        assert _add() == 0
        assert _set_c1(members, "--profile", "acme") == 0
        assert main(["profile", "remove", "acme"]) == 1
        assert "c1" in capsys.readouterr().err
        assert main(["profile", "remove", "acme", "--force"]) == 0


class TestScheduleSetFlags:
    def test_profile_period_rule_and_webhook_are_stored_and_shown(
        self, state: Path, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """schedule set stores every flag; show prints them; list stays narrow."""
        assert _add() == 0
        code = main(
            [
                "schedule", "set", "c1", "--name", "C1", "--source", str(members),
                "--daily", "06:00", "--profile", "acme", "--resync-every", "3d",
                "--notify-when", "on_failure,rejected>5%", "--webhook-env", "OPS_HOOK",
                "--webhook-format", "slack",
            ]
        )  # fmt: skip
        assert code == 0
        with bc.SQLiteStore(state) as store:
            entry = store.get_schedule("c1")
        assert entry is not None
        assert entry.profile == "acme"
        assert entry.resync_every == bc.parse_period("3d")
        assert entry.notify_when == bc.NotifyRule.parse("on_failure,rejected>5%")
        assert (entry.webhook_env, entry.webhook_format) == ("OPS_HOOK", "slack")
        capsys.readouterr()
        assert main(["schedule", "show", "c1"]) == 0
        shown = capsys.readouterr().out
        assert "profile:    acme" in shown
        assert "resync:     every 3d" in shown
        assert "notify when: on_failure,rejected>5%" in shown
        assert "URL from $OPS_HOOK (slack)" in shown
        assert main(["schedule", "show", "c1", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["profile"], data["resync_every"], data["notify_when"]) == (
            "acme",
            "3d",
            "on_failure,rejected>5%",
        )
        assert main(["schedule", "list"]) == 0
        assert "acme" not in capsys.readouterr().out  # the narrow table leaves them to show

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (["--profile", "nope"], "no connection profile called 'nope'"),
            (["--resync-every", "soon"], "invalid period"),
            (["--notify-when", "sometimes"], "invalid notify rule"),
            (["--webhook-env", "https://hooks.example.com/x"], "name of an environment variable"),
        ],
    )
    def test_invalid_flags_are_usage_errors(
        self,
        state: Path,
        members: Path,
        capsys: pytest.CaptureFixture[str],
        flags: list[str],
        message: str,
    ) -> None:
        """An unknown profile, a bad period, rule or webhook variable exit 2 with the reason."""
        code = main(
            [
                "schedule",
                "set",
                "c1",
                "--name",
                "C1",
                "--source",
                str(members),
                "--hourly",
                "5",
                *flags,
            ]
        )
        assert code == 2
        err = capsys.readouterr().err
        assert message in err
        assert "hooks.example.com" not in err

    def test_off_is_shown_as_off(
        self, state: Path, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--resync-every off stores 'off' and show says so."""
        assert _set_c1(members, "--resync-every", "off") == 0
        capsys.readouterr()
        assert main(["schedule", "show", "c1"]) == 0
        assert "resync:     off" in capsys.readouterr().out
