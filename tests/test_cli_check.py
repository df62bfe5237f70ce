"""The ``check`` command against the emulator over real HTTP, and how the CLI loads its commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from braze_cohorts import cli as cli_module
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from helpers import braze_environ, emulator_client, free_port, run_cli


@pytest.fixture
def env(braze_env: BrazeEmulator) -> BrazeEmulator:
    """Point the CLI at the emulator through the environment, as ``sync`` reads it."""
    return braze_env


def seed_cohort(emulator: BrazeEmulator) -> None:
    """A real cohort with members, to prove that check changes none."""
    emulator.add_users(3, prefix="u")
    with emulator_client(emulator) as client:
        client.name_cohort("real", "Real")
        client.update_members("real", add=["u0", "u1", "u2"])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("braze-cohorts: error: ")
    assert "Traceback" not in err
    return lines[0]


class TestCheckCommand:
    def test_accepted_credentials_exit_0_and_change_nothing(
        self, env: BrazeEmulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Good settings: exit 0, one 'ok' line, every cohort's members as before."""
        seed_cohort(env)
        before = {c: env.members(c) for c in env.cohorts()}
        assert main(["check"]) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"ok: {env.url} accepted")
        assert err == ""
        assert {c: env.members(c) for c in before} == before
        assert all(not env.members(c) for c in env.cohorts() if c not in before)
        assert [r.endpoint for r in env.request_log][-1] == "users"
        assert env.request_log[-1].removed == 1

    def test_flags_override_the_environment(
        self, env: BrazeEmulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A --data-import-key flag is used instead of the environment's key."""
        assert main(["check", "--data-import-key", "not-the-key"]) == 1
        assert "data import key" in one_error_line(capsys.readouterr().err)

    @pytest.mark.parametrize(
        ("variable", "says"),
        [
            ("BRAZE_PARTNER_API_KEY", "refused the partner API key"),
            ("BRAZE_DATA_IMPORT_KEY", "refused the data import key"),
            ("BRAZE_PARTNER", "without saying which"),
        ],
    )
    def test_a_refused_credential_is_named_in_one_line(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        variable: str,
        says: str,
    ) -> None:
        """A wrong key (or partner) exits 1 with one line naming it, never showing a key."""
        wrong = "wrong-value-0123456789"
        monkeypatch.setenv(variable, wrong)
        assert main(["check"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert says in line
        for secret in (env.partner_api_key, env.data_import_key):
            assert secret not in line
        if variable != "BRAZE_PARTNER":  # a partner name is no secret: it is in the path
            assert wrong not in line

    def test_revoked_data_import_key(
        self, env: BrazeEmulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A key revoked in Braze is refused as the data import key."""
        env.revoke_data_import_key(env.data_import_key)
        assert main(["check"]) == 1
        assert "refused the data import key" in one_error_line(capsys.readouterr().err)

    def test_partner_not_enabled(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A workspace that has not enabled the partner is named as such, not as a bad key."""
        key = env.create_data_import_key(env.create_workspace("staging", partners=()))
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", key)
        assert main(["check"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert "has not enabled the partner integration" in line
        assert "refused the data import key" not in line
        assert key not in line

    def test_missing_settings_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without settings: exit 2, naming the flags and variables, nothing sent."""
        for name in (
            "BRAZE_REST_ENDPOINT",
            "BRAZE_PARTNER",
            "BRAZE_PARTNER_API_KEY",
            "BRAZE_DATA_IMPORT_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
        assert main(["check"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "--endpoint / BRAZE_REST_ENDPOINT" in line
        assert "--data-import-key / BRAZE_DATA_IMPORT_KEY" in line

    def test_endpoint_given_a_key_is_refused_without_echoing_it(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``--endpoint $BRAZE_PARTNER_API_KEY``: exit 2, the key's length, never the key."""
        key = env.partner_api_key
        assert main(["check", "--endpoint", key]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert key not in line
        assert f"{len(key)}-character" in line
        assert env.request_log == []

    def test_unreachable_endpoint_exit_1(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Nothing listening: exit 1, 'could not reach'."""
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        assert main(["check"]) == 1
        assert "could not reach the endpoint" in one_error_line(capsys.readouterr().err)

    def test_endpoint_that_is_not_the_api_exit_1(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A URL where Braze's API is not (a 404): exit 1, the endpoint blamed."""
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"{env.url}/not-braze")
        assert main(["check"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert "did not answer as Braze's partner API" in line
        assert "HTTP 404" in line

    def test_runs_as_a_process(self, braze_emulator: BrazeEmulator, tmp_path: Path) -> None:
        """``braze-cohorts check`` as a real process: exit 0 with good keys, 1 with a bad one."""
        base = {**os.environ, **braze_environ(braze_emulator)}
        good = run_cli("check", env=base, cwd=tmp_path, timeout=60)
        assert (good.returncode, good.stderr) == (0, "")
        bad = run_cli(
            "check", env={**base, "BRAZE_DATA_IMPORT_KEY": "nope"}, cwd=tmp_path, timeout=60
        )
        assert bad.returncode == 1
        assert "refused the data import key" in one_error_line(bad.stderr)


class TestCommandModules:
    def test_every_command_module_is_registered(self) -> None:
        """check is on the command line beside the others."""
        help_text = cli_module.build_parser().format_help()
        for command in ("sync", "history", "check", "schedule", "emulator", "demo"):
            assert command in help_text

    def test_a_missing_command_module_fails_loudly(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A subcommand module that cannot be imported is an error, not a shorter CLI."""
        monkeypatch.setattr(
            cli_module,
            "_COMMAND_MODULES",
            (*cli_module._COMMAND_MODULES, "braze_cohorts._cli.no_such_command"),
        )
        with pytest.raises(ImportError, match="no_such_command"):
            cli_module.build_parser()
        with pytest.raises(ImportError, match="installed incompletely"):
            main(["check"])
