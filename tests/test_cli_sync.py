"""The ``sync``, ``history`` and ``demo`` commands, run in-process and as real processes."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from helpers import run_cli

COHORT = "power-users"


@pytest.fixture
def env(braze_env: BrazeEmulator, tmp_path: Path) -> Path:
    """The CLI pointed at the emulator through the environment (conftest's braze_env); the
    state path."""
    return tmp_path / "state.db"


def write_csv(path: Path, ids: list[str], *, extra_rows: list[list[str]] = ()) -> Path:  # type: ignore[assignment]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "plan"])
        for uid in ids:
            writer.writerow([uid, "pro"])
        for row in extra_rows:
            writer.writerow(row)
    return path


def members(emulator: BrazeEmulator) -> set[str]:
    return {ident[1] for ident in emulator.members(COHORT)}


class TestSyncCommand:
    def test_imports_then_sends_only_the_change(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A second sync of a changed file sends only who entered and who left."""
        ids = braze_emulator.add_users(3000, prefix="u")
        src = write_csv(tmp_path / "members.csv", ids[:2500])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "Power users"]) == 0
        assert members(braze_emulator) == set(ids[:2500])
        out = capsys.readouterr().out
        assert "succeeded" in out
        assert "+2,500 added" in out

        braze_emulator.reset_log()
        write_csv(src, ids[100:2600])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "Power users"]) == 0
        assert members(braze_emulator) == set(ids[100:2600])
        sent = [r for r in braze_emulator.request_log if r.endpoint == "users"]
        assert sum(r.added for r in sent) == 100
        assert sum(r.removed for r in sent) == 100
        assert braze_emulator.cohort_name(COHORT) == "Power users"

    def test_keys_are_never_printed(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Neither key appears in the command's output, even with -vv logging."""
        ids = braze_emulator.add_users(10, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        assert main(["-vv", "sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        out, err = capfd.readouterr()
        for key in (braze_emulator.partner_api_key, braze_emulator.data_import_key):
            assert key not in out
            assert key not in err

    def test_dry_run_sends_nothing_and_writes_plan_and_rejects(
        self, braze_emulator: BrazeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A dry run needs no keys, sends no request and writes the plan and the rejects."""
        for var in ("BRAZE_REST_ENDPOINT", "BRAZE_PARTNER_API_KEY", "BRAZE_DATA_IMPORT_KEY"):
            monkeypatch.delenv(var, raising=False)
        src = write_csv(tmp_path / "m.csv", ["a", "b"], extra_rows=[[" padded ", "x"]])
        plan, rejects = tmp_path / "plan.csv", tmp_path / "rejects.csv"
        code = main(
            [
                "sync", str(src), "--cohort-id", COHORT, "--name", "N", "--dry-run",
                "--state", str(tmp_path / "s.db"), "--plan-out", str(plan),
                "--rejects-out", str(rejects),
            ]
        )  # fmt: skip
        assert code == 0
        assert braze_emulator.request_log == []
        plan_rows = list(csv.DictReader(plan.read_text(encoding="utf-8").splitlines()))
        assert sorted(r["external_id"] for r in plan_rows) == ["a", "b"]
        assert {r["action"] for r in plan_rows} == {"add"}
        reject_rows = list(csv.DictReader(rejects.read_text(encoding="utf-8").splitlines()))
        assert len(reject_rows) == 1
        assert reject_rows[0]["reason"] == "invalid_external_id"

    def test_missing_settings_exit_2_naming_what_is_missing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without endpoint and keys the command exits 2 and names the flags and variables."""
        for var in ("BRAZE_REST_ENDPOINT", "BRAZE_PARTNER", "BRAZE_PARTNER_API_KEY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "secret-dik-value")
        src = write_csv(tmp_path / "m.csv", ["a"])
        code = main(
            [
                "sync",
                str(src),
                "--cohort-id",
                COHORT,
                "--name",
                "N",
                "--state",
                str(tmp_path / "s.db"),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2
        assert "BRAZE_REST_ENDPOINT" in err
        assert "BRAZE_PARTNER_API_KEY" in err
        assert "secret-dik-value" not in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("content", "name", "message"),
        [
            ("", "empty.csv", "empty"),
            ("email,plan\nx@y.z,pro\n", "nocols.csv", "external_id"),
            ("external_id\nu1\n", "members.xlsx", "file type"),
        ],
    )
    def test_unreadable_input_exits_2_with_a_clear_error(
        self,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        content: str,
        name: str,
        message: str,
    ) -> None:
        """Empty files, files without id columns and unknown formats exit 2, no traceback."""
        src = tmp_path / name
        src.write_text(content, encoding="utf-8")
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 2
        err = capsys.readouterr().err
        assert message in err.lower()
        assert "Traceback" not in err

    def test_missing_file_exits_2(
        self, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file that does not exist is a usage error."""
        assert main(["sync", str(tmp_path / "nope.csv"), "--cohort-id", COHORT, "--name", "N"]) == 2
        assert "Traceback" not in capsys.readouterr().err

    def test_malformed_rows_are_rejected_and_valid_rows_kept(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Broken rows and invalid ids are counted as rejected; every valid row still lands."""
        ids = braze_emulator.add_users(5, prefix="u")
        src = tmp_path / "m.csv"
        src.write_text(
            f"external_id,plan\n{ids[0]},pro\ntoo,many,fields\n{ids[1]},pro\n,\n{ids[2]},pro\n",
            encoding="utf-8",
        )
        argv = ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--max-rejected", "0.5"]
        assert main(argv) == 0
        assert members(braze_emulator) == set(ids[:3])
        out = capsys.readouterr().out
        assert "2 rejected" in out
        assert "malformed_row: 1" in out
        assert "missing_identifier: 1" in out

    def test_jsonl_input(self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path) -> None:
        """JSON Lines files work, aliases and anonymous device ids included."""
        braze_emulator.add_user("u1")
        braze_emulator.add_user(aliases=[("a@x.io", "email")])
        braze_emulator.add_user(device_ids=["anon-1"])
        src = tmp_path / "m.jsonl"
        src.write_text(
            '{"external_id": "u1"}\n'
            '{"alias_name": "a@x.io", "alias_label": "email"}\n'
            "not json\n"
            '{"device_id": "anon-1"}\n',
            encoding="utf-8",
        )
        argv = ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--max-rejected", "0.3"]
        assert main(argv) == 0
        assert braze_emulator.members(COHORT) == {
            ("external_id", "u1"),
            ("alias", "a@x.io", "email"),
            ("device_id", "anon-1"),
        }

    def test_revoked_key_fails_with_exit_1(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A revoked data import key fails the import (exit 1) and the history records why."""
        ids = braze_emulator.add_users(3, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        braze_emulator.revoke_data_import_key(braze_emulator.data_import_key)
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 1
        out = capsys.readouterr().out
        assert "failed" in out
        assert main(["history", COHORT, "--json"]) == 0
        runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert runs[0]["result"] == "failed"
        assert runs[0]["error_kind"] == "AuthenticationError"
        assert "client secret" in runs[0]["error"].lower()


class TestHistoryCommand:
    def test_history_table_and_json(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """History lists runs newest first, as a table or as JSON Lines."""
        ids = braze_emulator.add_users(20, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids[:10])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        write_csv(src, ids[5:15])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        capsys.readouterr()
        assert main(["history", COHORT]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:4] == ["started", "(UTC)", "trigger", "kind"]
        assert len(table) == 6
        assert table[2].split()[3:5] == ["full", "(first_import)"]
        assert table[3].startswith("* members acknowledged by Braze")
        assert table[4] == "warnings:"
        assert "first import of this cohort with this state" in table[5]
        assert main(["history", COHORT, "--json"]) == 0
        runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["added"], r["removed"], r["users"]) for r in runs] == [(5, 5, 10), (10, 0, 10)]
        assert all(r["trigger"] == "manual" and r["result"] == "succeeded" for r in runs)

    def test_history_without_state_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Asking for history with no state database is a usage error, not a new empty database."""
        path = tmp_path / "none.db"
        assert main(["history", COHORT, "--state", str(path)]) == 2
        assert not path.exists()


class TestDemoCommand:
    def test_demo_converges(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The demo imports twice and ends with Braze holding exactly the desired members."""
        assert main(["demo", "--users", "300", "--state", str(tmp_path / "demo.db")]) == 0
        out = capsys.readouterr().out
        assert "holds exactly" in out
        assert "+30 added; -30 removed" in out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "braze_cohorts.cli", *args]


def _paced_sync(
    src: Path, requests_per_hour: int, *, stdout: int, text: bool = True
) -> subprocess.Popen[Any]:
    """``braze-cohorts sync src`` in a subprocess, paced so that a signal lands mid-import."""
    argv = ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--no-progress"]
    return subprocess.Popen(
        _cli(*argv, "--requests-per-hour", str(requests_per_hour)),
        env=os.environ.copy(),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=text,
    )


class TestKilledImport:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_sigkill_mid_import_then_next_run_converges(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path, seed: int
    ) -> None:
        """A CLI import killed with SIGKILL at a random point loses nothing; the next converges."""
        rng = random.Random(seed)
        ids = braze_emulator.add_users(30_000, prefix="u")
        desired = ids[:20_000]
        src = write_csv(tmp_path / "m.csv", desired)
        # Some requests land after being applied but are never answered: outcome unknown.
        braze_emulator.drop_next(1, when="after_apply")
        # 20 member requests at 20 a second: the kill lands mid-import even on a loaded machine.
        proc = _paced_sync(src, 72000, stdout=subprocess.DEVNULL, text=False)
        kill_after = rng.randint(2, 15)
        deadline = time.monotonic() + 60
        while len(braze_emulator.request_log) < kill_after and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        partial = members(braze_emulator)
        assert partial != set(desired)

        # Membership changes in between: some leave, some enter.
        changed = [u for u in desired if rng.random() > 0.1] + ids[
            20_000 : 20_000 + rng.randint(0, 3000)
        ]
        write_csv(src, changed)
        result = run_cli("sync", str(src), "--cohort-id", COHORT, "--name", "N", "--no-progress")
        assert result.returncode == 0, result.stderr
        assert members(braze_emulator) == set(changed)

        history = run_cli("history", COHORT, "--json", timeout=60)
        assert history.returncode == 0, history.stderr
        runs = [json.loads(line) for line in history.stdout.splitlines()]
        assert [r["result"] for r in runs] == ["succeeded", "interrupted"]
        # The killed run's counts are what it had committed: never more than Braze held.
        assert runs[1]["added"] <= len(partial)
        assert runs[1]["users"] <= len(partial)

    def test_sigkilled_run_shows_the_counts_committed_so_far(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path
    ) -> None:
        """A run killed after more than a second shows in history what it had committed."""
        ids = braze_emulator.add_users(20_000, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        # 20 member requests at 10 a second; the counts are saved at most once a second.
        proc = _paced_sync(src, 36000, stdout=subprocess.DEVNULL)
        _wait_for_requests(braze_emulator, 16, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        held = len(members(braze_emulator))
        history = run_cli("history", COHORT, "--json", timeout=60)
        assert history.returncode == 0, history.stderr
        [run] = [json.loads(x) for x in history.stdout.splitlines()]
        assert run["result"] == "running"  # nobody has looked at the lock yet
        # Saved after at least one second, i.e. several acknowledged batches; never more than
        # Braze holds.
        assert 1000 <= run["added"] <= held
        assert 1000 <= run["users"] <= held
        assert run["requests"] >= run["added"] // 1000


class TestUploadOptions:
    def test_requests_per_hour_and_concurrency_reach_the_uploader(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """--requests-per-hour and --concurrency configure the uploader the import runs with."""
        import braze_cohorts as bc

        made: list[bc.BatchUploader] = []

        class Recording(bc.BatchUploader):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        monkeypatch.setattr(bc, "BatchUploader", Recording)
        ids = braze_emulator.add_users(2500, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        args = ["sync", str(src), "--cohort-id", COHORT, "--name", "N"]
        assert main([*args, "--concurrency", "3", "--requests-per-hour", "54000"]) == 0
        assert members(braze_emulator) == set(ids)
        [uploader] = made
        assert (uploader.concurrency, uploader.requests_per_hour) == (3, 54_000)
        assert isinstance(uploader.limiter, bc.MeteredLimiter)  # rate-limit waits are metered
        assert isinstance(uploader.limiter.limiter, bc.RateLimiter)
        assert uploader.limiter.limiter.interval == pytest.approx(3600 / (0.99 * 54_000))

    def test_retries_and_breaker_flags_change_what_a_dead_braze_costs(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path
    ) -> None:
        """--retries 0 sends each failing batch once; the breaker stops after 3 failed in a row
        unless --no-breaker; unsent ids are re-sent by the next import."""
        ids = braze_emulator.add_users(5000, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        args = ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--concurrency", "1"]
        braze_emulator.fail_next(10**6, 503, path="/cohorts/users")
        assert main([*args, "--retries", "0"]) == 1
        users = [r for r in braze_emulator.request_log if r.endpoint == "users"]
        assert len(users) == 3  # the default breaker: 3 failed batches in a row, 2 never sent
        braze_emulator.reset_log()
        assert main([*args, "--retries", "0", "--no-breaker"]) == 1
        assert len([r for r in braze_emulator.request_log if r.endpoint == "users"]) == 5
        braze_emulator.clear_faults()
        assert main(args) == 0
        assert members(braze_emulator) == set(ids)

    def test_timeout_flag_sets_the_read_timeout(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path
    ) -> None:
        """--timeout gives up on a slow answer (then retried per --retries)."""
        ids = braze_emulator.add_users(10, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        braze_emulator.set_latency(1.0)
        argv = ["sync", str(src), "--cohort-id", COHORT, "--name", "N"]
        assert main([*argv, "--timeout", "0.2", "--retries", "0"]) == 1
        braze_emulator.set_latency(0.0)

    @pytest.mark.parametrize(
        "flag", [["--timeout", "0"], ["--deadline", "-5"], ["--retries", "-1"], ["--timeout", "x"]]
    )
    def test_bad_outage_options_exit_2(
        self, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
    ) -> None:
        """A timeout or deadline that is not positive, or negative retries, is a usage error."""
        src = write_csv(tmp_path / "m.csv", ["u1"])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N", *flag]) == 2
        assert "Traceback" not in capsys.readouterr().err

    @pytest.mark.parametrize("flag", [["--concurrency", "0"], ["--requests-per-hour", "-1"]])
    def test_bad_upload_options_exit_2(
        self, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
    ) -> None:
        """A concurrency below 1 or a rate that is not positive is a configuration error."""
        src = write_csv(tmp_path / "m.csv", ["u1"])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N", *flag]) == 2
        assert "Traceback" not in capsys.readouterr().err


class TestConcurrentImport:
    def test_second_import_of_a_cohort_is_refused_with_exit_1(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """While another import holds the cohort's lock, sync exits 1 and names the holder."""
        import datetime as dt

        import braze_cohorts as bc

        src = write_csv(tmp_path / "m.csv", braze_emulator.add_users(3, prefix="u"))
        with bc.SQLiteStore(env) as store:
            running = store.start_run(
                bc.ImportRun(
                    cohort_id=COHORT,
                    name="N",
                    trigger="manual",
                    started_at=dt.datetime.now(dt.timezone.utc),
                )
            )
            assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 1
            err = capsys.readouterr().err
            assert str(os.getpid()) in err
            assert braze_emulator.request_log == []
            store.finish_run(attrs.evolve(running, result="failed", error="test"))
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0


def _one_line_error(err: str) -> str:
    """The stderr of a failed command: exactly one error line, no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("braze-cohorts: error: ")]
    assert len(lines) == 1, err
    return lines[0]


class TestStateLocation:
    """Where the state database lives, and what the CLI refuses to create or open."""

    def test_default_state_lives_in_the_xdg_state_directory(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without --state or the variable, the state goes to $XDG_STATE_HOME, not the cwd."""
        monkeypatch.delenv("BRAZE_COHORTS_STATE")
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        src = write_csv(tmp_path / "m.csv", braze_emulator.add_users(3, prefix="u"))
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        state = tmp_path / "xdg" / "braze-cohorts" / "state.db"
        assert state.is_file()
        assert list(work.iterdir()) == []
        if os.name != "nt":
            assert (state.parent.stat().st_mode & 0o777, state.stat().st_mode & 0o777) == (
                0o700,
                0o600,
            )
        # Another working directory finds the same state: the second run is a delta.
        monkeypatch.chdir(tmp_path)
        assert main(["history", COHORT, "--json"]) == 0

    def test_default_state_paths(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """~/.local/state without XDG_STATE_HOME (a relative one is ignored); LOCALAPPDATA."""
        from braze_cohorts._cli.common import _default_state_path

        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        posix = _default_state_path(windows=False, home="/home/ann")
        assert str(posix) == "/home/ann/.local/state/braze-cohorts/state.db"
        monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
        assert _default_state_path(windows=False, home="/home/ann") == posix
        monkeypatch.setenv("XDG_STATE_HOME", "/var/lib/ann")
        xdg = _default_state_path(windows=False, home="/home/ann")
        assert str(xdg) == "/var/lib/ann/braze-cohorts/state.db"
        monkeypatch.setenv("LOCALAPPDATA", r"C:\Users\ann\AppData\Local")
        win = _default_state_path(windows=True, home=r"C:\Users\ann")
        assert str(win) == r"C:\Users\ann\AppData\Local\braze-cohorts\state.db"
        monkeypatch.delenv("LOCALAPPDATA")
        assert _default_state_path(windows=True, home=r"C:\Users\ann") == win

    def test_empty_state_file_is_refused(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A state file emptied by `: > state.db` exits 2; nothing is sent, the file is kept."""
        src = write_csv(tmp_path / "m.csv", braze_emulator.add_users(3, prefix="u"))
        env.touch()
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert "empty (0-byte)" in line
        assert str(env) in line
        assert braze_emulator.request_log == []
        assert env.stat().st_size == 0
        for command in (["history", COHORT], ["schedule", "list"], ["run-due"]):
            assert main(command) == 2
            assert "empty (0-byte)" in _one_line_error(capsys.readouterr().err)

    def test_state_in_a_missing_directory_is_refused_unless_asked(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A --state typo does not create directories; --create-state-dir does (0700)."""
        src = write_csv(tmp_path / "m.csv", braze_emulator.add_users(3, prefix="u"))
        typo = tmp_path / "sate" / "deep" / "state.db"
        args = ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--state", str(typo)]
        assert main(args) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert str(typo.parent) in line
        assert "--create-state-dir" in line
        assert not (tmp_path / "sate").exists()
        assert braze_emulator.request_log == []
        assert main([*args, "--create-state-dir"]) == 0
        assert typo.is_file()
        if os.name != "nt":
            assert {
                (tmp_path / "sate").stat().st_mode & 0o777,
                typo.parent.stat().st_mode & 0o777,
            } == {0o700}
        assert members(braze_emulator) == {"u0", "u1", "u2"}

    def test_state_whose_parent_is_a_file_exits_2(
        self, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A --state below a regular file is one error line (was FileExistsError)."""
        src = write_csv(tmp_path / "m.csv", ["u1"])
        blocker = tmp_path / "file"
        blocker.write_text("x")
        for extra in ([], ["--create-state-dir"]):
            state = str(blocker / "sub" / "state.db")
            code = main(
                ["sync", str(src), "--cohort-id", COHORT, "--name", "N", "--state", state, *extra]
            )
            assert code == 2
            _one_line_error(capsys.readouterr().err)
        assert (
            main(
                [
                    "sync",
                    str(src),
                    "--cohort-id",
                    COHORT,
                    "--name",
                    "N",
                    "--state",
                    str(blocker / "s.db"),
                ]
            )
            == 2
        )
        assert "not a directory" in _one_line_error(capsys.readouterr().err)

    @pytest.mark.skipif(
        not Path("/sys").is_dir(), reason="needs Linux /sys, where mkdir is refused"
    )
    def test_state_directory_that_cannot_be_created_exits_2(
        self, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A directory that cannot be created (PermissionError, even as root): one line, exit 2."""
        src = write_csv(tmp_path / "m.csv", ["u1"])
        state = "/sys/braze-cohorts-test/state.db"
        code = main(
            [
                "sync",
                str(src),
                "--cohort-id",
                COHORT,
                "--name",
                "N",
                "--state",
                state,
                "--create-state-dir",
            ]
        )
        assert code == 2
        assert "/sys/braze-cohorts-test" in _one_line_error(capsys.readouterr().err)

    def test_first_import_warns_loudly_once(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A cohort's first import with a state warns (log, stderr, history); the next does not."""
        ids = braze_emulator.add_users(5, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids[:3])
        with caplog.at_level("WARNING", logger="braze_cohorts"):
            assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        assert any("cannot remove them" in r.getMessage() for r in caplog.records)
        [summary] = capsys.readouterr().out.splitlines()
        assert "; WARNING: first import of this cohort with this state" in summary
        assert "full resync with the old membership" in summary
        caplog.clear()
        write_csv(src, ids[1:4])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        assert "WARNING" not in capsys.readouterr().out
        assert not caplog.records
        assert main(["history", COHORT, "--json"]) == 0
        runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [len(r["warnings"]) for r in runs] == [0, 1]
        assert "fresh cohort id" in runs[1]["warnings"][0]

    def test_lost_state_warns_that_braze_keeps_old_members(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """After the state file is lost, the import says Braze may hold members it cannot remove."""
        ids = braze_emulator.add_users(10, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids)
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        for suffix in ("", "-wal", "-shm"):
            Path(f"{env}{suffix}").unlink(missing_ok=True)
        capsys.readouterr()
        write_csv(src, ids[:5])
        assert main(["sync", str(src), "--cohort-id", COHORT, "--name", "N"]) == 0
        assert "cannot remove them" in capsys.readouterr().out
        assert members(braze_emulator) == set(ids)  # the five who left are still there


class TestMissingState:
    """Reading commands on a database that does not exist."""

    @pytest.mark.parametrize(
        "command",
        [
            ["history", COHORT],
            ["schedule", "list"],
            ["schedule", "show", COHORT],
            ["run-due"],
            ["trigger", COHORT],
        ],
    )
    def test_missing_database_exits_2_naming_the_path(
        self, env: Path, capsys: pytest.CaptureFixture[str], command: list[str]
    ) -> None:
        """A missing database (a cron line without its cd) exits 2 naming the path; none is made."""
        assert main(command) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert f"no state database at {env}" in line
        assert not env.exists()


class TestErrors:
    """Every failure is one line and a documented exit code; tracebacks only with -vv."""

    @pytest.mark.parametrize("limit", ["-1", "0", "ten"])
    def test_history_bad_limit_exits_2(
        self, env: Path, capsys: pytest.CaptureFixture[str], limit: str
    ) -> None:
        """--limit below 1 or not a number is a usage error (was a ValueError traceback)."""
        assert main(["history", COHORT, "--limit", limit]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "at least 1" in err

    def test_errors_become_one_line_and_an_exit_code(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Library errors exit 1 (2 for input/configuration), OSError 2; -vv adds the traceback."""
        import argparse

        import braze_cohorts as bc
        from braze_cohorts._cli.common import run_command

        def raising(exc: BaseException) -> Any:
            def handler(args: argparse.Namespace) -> int:
                raise exc

            return handler

        cases: list[tuple[BaseException, int]] = [
            (bc.StoreError("disk\nfull"), 1),
            (bc.ConfigurationError("bad flag"), 2),
            (bc.InputError("bad file"), 2),
            (PermissionError(13, "Permission denied", "/x"), 2),
            (FileExistsError(17, "File exists", "/y"), 2),
            (KeyboardInterrupt(), 130),
        ]
        for exc, code in cases:
            assert run_command(raising(exc), argparse.Namespace(verbose=0)) == code
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert len(err.splitlines()) == 1, err
        assert run_command(raising(bc.StoreError("x")), argparse.Namespace(verbose=2)) == 1
        assert "Traceback" in capsys.readouterr().err


def _wait_for_requests(emulator: BrazeEmulator, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(emulator.request_log) < count and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the import ended before the signal could be sent"


class TestSignals:
    """SIGTERM and Ctrl-C stop an import cleanly: recorded, lock released, one line."""

    @pytest.mark.parametrize(
        ("signum", "code", "line"),
        [
            (signal.SIGTERM, 143, "braze-cohorts: terminated (SIGTERM)"),
            (signal.SIGINT, 130, "braze-cohorts: interrupted (Ctrl-C)"),
        ],
    )
    def test_signal_mid_import_records_interrupted_and_releases_the_lock(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        signum: int,
        code: int,
        line: str,
    ) -> None:
        """The signalled import exits 143/130 with one line; the next runs at once and converges."""
        ids = braze_emulator.add_users(30_000, prefix="u")
        src = write_csv(tmp_path / "m.csv", ids[:20_000])
        # 20 member requests at 10 a second: the signal lands mid-import.
        proc = _paced_sync(src, 36000, stdout=subprocess.PIPE)
        _wait_for_requests(braze_emulator, 4, proc)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1] == line
        sent_before = len(braze_emulator.request_log)
        assert sent_before < 21  # it stopped sending
        history = run_cli("history", COHORT, "--json", timeout=60)
        assert history.returncode == 0, history.stderr
        [run] = [json.loads(x) for x in history.stdout.splitlines()]
        assert run["result"] == "interrupted"
        assert run["finished_at"] is not None
        assert 0 < run["added"] == run["users"] <= len(members(braze_emulator))
        import braze_cohorts as bc

        with bc.SQLiteStore(env, read_only=True) as store:
            assert store.lock_holder(COHORT) is None
        # The lock is free: the next import starts at once (no stale-lock take-over needed).
        changed = ids[1000:21_000]
        write_csv(src, changed)
        result = run_cli("sync", str(src), "--cohort-id", COHORT, "--name", "N", "--no-progress")
        assert result.returncode == 0, result.stderr
        assert members(braze_emulator) == set(changed)
