"""``braze-cohorts scheduler`` as real processes against the emulator: signals and replicas."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import braze_cohorts as bc
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from hook_server import HookServer

COHORT = "power-users"
UTC = dt.timezone.utc
#: Generous upper bound for anything a test waits for; never an assertion on speed.
PATIENCE = 120.0


@pytest.fixture
def env(braze_emulator: BrazeEmulator, tmp_path: Path) -> dict[str, str]:
    """The environment of a scheduler process pointed at the emulator and a state file."""
    environ = os.environ.copy()
    environ.update(
        BRAZE_REST_ENDPOINT=braze_emulator.url,
        BRAZE_PARTNER=braze_emulator.partner,
        BRAZE_PARTNER_API_KEY=braze_emulator.partner_api_key,
        BRAZE_DATA_IMPORT_KEY=braze_emulator.data_import_key,
        BRAZE_COHORTS_STATE=str(tmp_path / "state.db"),
    )
    environ.pop("BRAZE_COHORTS_SMTP_HOST", None)
    return environ


def write_csv(path: Path, ids: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id"])
        writer.writerows([uid] for uid in ids)
    return path


def schedule_due(state: str, cohort_id: str, source: Path) -> None:
    """Give ``cohort_id`` an hourly schedule that is already due (as after downtime)."""
    with bc.SQLiteStore(state) as store:
        bc.Scheduler(store).set_schedule(
            cohort_id,
            cohort_id.title(),
            "hourly 00",
            source=str(source),
            replace=True,
            now=dt.datetime.now(UTC) - dt.timedelta(hours=2),
        )


def history(state: str, cohort_id: str) -> list[bc.ImportRun]:
    with bc.SQLiteStore(state) as store:
        return store.history(cohort_id)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


class Scheduler:
    """A ``braze-cohorts scheduler`` process whose JSON log lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "braze_cohorts.cli", "scheduler", "--log-json", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def logged(self, pattern: str) -> list[dict[str, Any]]:
        return [r for r in list(self.lines) if re.search(pattern, r["message"])]

    def wait_logged(self, pattern: str) -> None:
        wait_for(lambda: bool(self.logged(pattern)) or self.proc.poll() is not None, pattern)
        assert self.logged(pattern), "".join(self.raw)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        code = self.proc.wait(timeout=PATIENCE)
        self.reader.join(PATIENCE)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def run_lines(self) -> list[dict[str, Any]]:
        """The scheduler's one line per run."""
        return [
            r
            for r in list(self.lines)
            if r["logger"] == "braze_cohorts._scheduler" and r.get("run_id") is not None
        ]


class TestSignals:
    def test_sigterm_lets_the_running_import_finish_then_exits_0(
        self, braze_emulator: BrazeEmulator, env: dict[str, str], tmp_path: Path
    ) -> None:
        """First SIGTERM mid-import: the import completes, is recorded and logged; exit 0."""
        state = env["BRAZE_COHORTS_STATE"]
        desired = braze_emulator.add_users(40_000, prefix="u")
        schedule_due(state, COHORT, write_csv(tmp_path / "m.csv", desired))
        # 40 member requests at 10 a second: the signal lands mid-import even on a loaded machine.
        proc = Scheduler(env, "--recheck", "5", "--requests-per-hour", "36000")
        wait_for(lambda: len(braze_emulator.request_log) >= 4, "the import to start")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, "".join(proc.raw)
        [run] = history(state, COHORT)
        assert run.result == "succeeded"
        assert {i[1] for i in braze_emulator.members(COHORT)} == set(desired)
        [line] = proc.run_lines()
        assert (line["cohort_id"], line["run_id"], line["level"]) == (COHORT, run.id, "INFO")
        assert "scheduled import of cohort power-users succeeded" in line["message"]
        assert proc.logged("SIGTERM: stopping")

    @pytest.mark.parametrize("how", ["second-signal", "grace-0"])
    def test_interrupted_import_is_recorded_and_the_next_start_converges(
        self, braze_emulator: BrazeEmulator, env: dict[str, str], tmp_path: Path, how: str
    ) -> None:
        """A second SIGTERM (or --grace 0) interrupts: recorded, exit 143; the next start heals."""
        state = env["BRAZE_COHORTS_STATE"]
        ids = braze_emulator.add_users(50_000, prefix="u")
        desired = ids[:40_000]
        source = write_csv(tmp_path / "m.csv", desired)
        schedule_due(state, COHORT, source)
        grace = ["--grace", "0"] if how == "grace-0" else []
        proc = Scheduler(env, "--recheck", "5", "--requests-per-hour", "36000", *grace)
        wait_for(lambda: len(braze_emulator.request_log) >= 4, "the import to start")
        proc.signal(signal.SIGTERM)
        if how == "second-signal":
            proc.wait_logged("SIGTERM: stopping")  # two signals at once would count as one
            proc.signal(signal.SIGTERM)
        assert proc.wait() == 128 + signal.SIGTERM, "".join(proc.raw)
        [run] = history(state, COHORT)
        assert run.result == "interrupted"
        partial = {i[1] for i in braze_emulator.members(COHORT)}
        assert partial != set(desired)
        [line] = proc.run_lines()
        assert (line["run_id"], line["level"]) == (run.id, "WARNING")
        with bc.SQLiteStore(state) as store:
            assert store.lock_holder(COHORT) is None

        # Membership changes meanwhile; the schedule comes due again; a new scheduler starts.
        changed = desired[:36_000] + ids[40_000:43_000]
        write_csv(source, changed)
        schedule_due(state, COHORT, source)
        again = Scheduler(env, "--recheck", "5")
        wait_for(lambda: len(history(state, COHORT)) == 2, "the next import")
        wait_for(lambda: history(state, COHORT)[0].result != "running", "it to finish")
        again.signal(signal.SIGINT)
        assert again.wait() == 0, "".join(again.raw)
        assert [r.result for r in history(state, COHORT)] == ["succeeded", "interrupted"]
        assert {i[1] for i in braze_emulator.members(COHORT)} == set(changed)


class TestReplicas:
    def test_two_replicas_run_each_due_slot_once(
        self, braze_emulator: BrazeEmulator, env: dict[str, str], tmp_path: Path
    ) -> None:
        """Two schedulers on one state database race for eight due schedules: each runs once."""
        state = env["BRAZE_COHORTS_STATE"]
        bc.SQLiteStore(state).close()
        replicas = [Scheduler(env, "--recheck", "0.2") for _ in range(2)]
        for replica in replicas:
            replica.wait_logged("scheduler running")
        cohorts = {f"cohort-{n}": braze_emulator.add_users(300, prefix=f"c{n}-") for n in range(8)}
        for cohort_id, ids in cohorts.items():  # both replicas see them on their next look
            schedule_due(state, cohort_id, write_csv(tmp_path / f"{cohort_id}.csv", ids))
        for cohort_id in cohorts:
            wait_for(
                lambda c=cohort_id: [r.result for r in history(state, c)] == ["succeeded"],  # type: ignore[misc]
                f"{cohort_id} to be imported",
            )
        for replica in replicas:
            replica.signal(signal.SIGTERM)
        assert [replica.wait() for replica in replicas] == [0, 0]
        for cohort_id, ids in cohorts.items():
            assert len(history(state, cohort_id)) == 1
            assert {i[1] for i in braze_emulator.members(cohort_id)} == set(ids)
        ran = [line["cohort_id"] for replica in replicas for line in replica.run_lines()]
        assert sorted(ran) == sorted(cohorts)


class TestConfiguration:
    def test_missing_state_database_is_a_usage_error(
        self,
        env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Without a state database there is nothing to run: exit 2 naming the path."""
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert main(["scheduler"]) == 2
        assert "no state database at" in capsys.readouterr().err

    @pytest.mark.parametrize("args", [["--recheck", "0"], ["--grace", "-1"], ["--recheck", "inf"]])
    def test_invalid_timing_flags_are_usage_errors(
        self, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str]
    ) -> None:
        """--recheck must be positive and finite, --grace zero or more."""
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert main(["scheduler", *args]) == 2

    def test_missing_credentials_is_a_usage_error(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Missing Braze settings are named (never a value) and exit 2."""
        for name in ("BRAZE_REST_ENDPOINT", "BRAZE_PARTNER", "BRAZE_PARTNER_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "dik-secret-value")
        assert main(["scheduler"]) == 2
        err = capsys.readouterr().err
        assert "BRAZE_PARTNER_API_KEY" in err
        assert "dik-secret-value" not in err

    def test_unset_webhook_variables_are_warned_about_at_start(
        self, braze_emulator: BrazeEmulator, env: dict[str, str], tmp_path: Path
    ) -> None:
        """A schedule's webhook variable unset in the scheduler's process is named at start."""
        state = env["BRAZE_COHORTS_STATE"]
        with bc.SQLiteStore(state) as store:
            bc.Scheduler(store).set_schedule(
                COHORT,
                "N",
                "daily 09:00",
                source=str(tmp_path / "m.csv"),
                webhook_env="TEAM_ALERTS_URL",
            )
        env.pop("TEAM_ALERTS_URL", None)
        proc = Scheduler(env, "--recheck", "60")
        proc.wait_logged("scheduler running")
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
        [warning] = proc.logged("webhook variables that are not set")
        assert "TEAM_ALERTS_URL" in warning["message"]


class TestWebhook:
    def test_webhook_env_tells_slack_about_each_run(
        self, braze_emulator: BrazeEmulator, env: dict[str, str], tmp_path: Path
    ) -> None:
        """--webhook-env names the variable; the scheduler posts each run's Slack message there."""
        state = env["BRAZE_COHORTS_STATE"]
        ids = braze_emulator.add_users(50, prefix="w")
        with HookServer() as hook:
            env["TEAM_ALERTS_URL"] = hook.url("/services/T0/B0/secret")
            schedule_due(state, COHORT, write_csv(tmp_path / "m.csv", ids))
            proc = Scheduler(
                env,
                "--recheck",
                "60",
                "--webhook-env",
                "TEAM_ALERTS_URL",
                "--webhook-format",
                "slack",
            )
            wait_for(lambda: bool(hook.received) or proc.proc.poll() is not None, "the webhook")
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, "".join(proc.raw)
        [(path, body)] = hook.received
        assert path == "/services/T0/B0/secret"
        assert body["text"].startswith(
            ":white_check_mark: *Power-Users* (`power-users`): scheduled import succeeded"
        )
        assert "secret" not in "".join(proc.raw)
        [run] = history(state, COHORT)
        assert run.notification_error is None
