"""The ``schedule``, ``run-due`` and ``trigger`` commands, end to end against the emulator."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

import braze_cohorts as bc
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator

UTC = dt.timezone.utc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Sink:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.rcpt: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.rcpt.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def smtp_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Sink]:
    """A real SMTP server on loopback, configured through the BRAZE_COHORTS_SMTP_* variables."""
    sink = _Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("BRAZE_COHORTS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BRAZE_COHORTS_SMTP_PORT", str(port))
    monkeypatch.setenv("BRAZE_COHORTS_SMTP_SENDER", "braze-bot@example.com")
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, braze_emulator: BrazeEmulator
) -> BrazeEmulator:
    """Braze settings and the state path in the environment, pointing at the emulator."""
    for name in (
        "BRAZE_COHORTS_SMTP_HOST",
        "BRAZE_COHORTS_SMTP_PORT",
        "BRAZE_COHORTS_SMTP_SENDER",
        "BRAZE_COHORTS_SMTP_USERNAME",
        "BRAZE_COHORTS_SMTP_PASSWORD",
        "BRAZE_COHORTS_SMTP_STARTTLS",
        "BRAZE_COHORTS_SMTP_SSL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze_emulator.url)
    monkeypatch.setenv("BRAZE_PARTNER", braze_emulator.partner)
    monkeypatch.setenv("BRAZE_PARTNER_API_KEY", braze_emulator.partner_api_key)
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", braze_emulator.data_import_key)
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("BRAZE_COHORTS_STATE", str(tmp_path / "state" / "state.db"))
    braze_emulator.add_users(5, prefix="u")
    return braze_emulator


@pytest.fixture
def members(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    path.write_text("external_id\nu0\nu1\nu2\n", encoding="utf-8")
    return path


def _state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def _make_due(tmp_path: Path, cohort_id: str) -> None:
    """Move a stored schedule's due time into the past, as if its time had come."""
    store = bc.SQLiteStore(_state(tmp_path))
    try:
        entry = store.get_schedule(cohort_id)
        assert entry is not None
        store.update_schedule(
            cohort_id,
            state="active",
            paused_reason=None,
            next_due=dt.datetime.now(UTC) - dt.timedelta(minutes=1),
        )
    finally:
        store.close()


class TestScheduleSet:
    def test_set_list_show(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A daily schedule is stored and shows up in list and show, text and JSON."""
        code = main(
            [
                "schedule", "set", "churn", "--name", "Churn risk", "--source", str(members),
                "--daily", "09:00", "--tz", "Europe/Berlin", "--notify", "ops@example.com",
            ]
        )  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0
        assert "churn: daily 09:00 Europe/Berlin, next run" in out
        assert main(["schedule", "list"]) == 0
        listed = capsys.readouterr().out
        assert "churn" in listed
        assert "Churn risk" in listed
        assert "daily 09:00 Europe/Berlin" in listed
        assert "active" in listed
        assert main(["schedule", "show", "churn", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["recipients"] == ["ops@example.com"]
        assert shown["source"] == str(members.resolve())
        assert shown["state"] == "active"
        next_due = dt.datetime.fromisoformat(shown["next_due"])
        assert next_due.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (9, 10)

    @pytest.mark.parametrize(
        ("flags", "text"),
        [
            (["--hourly", "15"], "hourly 15"),
            (["--weekly", "mon,thu", "07:30"], "weekly mon,thu 07:30 UTC"),
            (["--monthly", "last", "06:00", "--tz", "America/New_York"], "monthly last 06:00"),
            (["--once", "2999-12-01T09:00+01:00"], "once 2999-12-01T09:00+01:00"),
            (["--once", "2999-12-01T09:00", "--tz", "Europe/Berlin"], "once 2999-12-01T09:00"),
        ],
    )
    def test_every_kind(
        self,
        env: BrazeEmulator,
        members: Path,
        capsys: pytest.CaptureFixture[str],
        flags: list[str],
        text: str,
    ) -> None:
        """Each schedule kind flag makes the matching schedule."""
        code = main(["schedule", "set", "c", "--name", "C", "--source", str(members), *flags])
        assert code == 0, capsys.readouterr().err
        assert text in capsys.readouterr().out

    def test_second_schedule_conflicts_unless_replace(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One live schedule per cohort: a second set fails (exit 1) unless --replace."""
        base = ["schedule", "set", "c", "--name", "C", "--source", str(members)]
        assert main([*base, "--hourly", "5"]) == 0
        assert main([*base, "--hourly", "6"]) == 1
        assert "already has a live schedule" in capsys.readouterr().err
        assert main([*base, "--hourly", "6", "--replace"]) == 0
        assert main(["schedule", "show", "c"]) == 0
        assert "hourly 06" in capsys.readouterr().out

    @pytest.mark.parametrize(
        "flags",
        [
            ["--daily", "25:00"],
            ["--monthly", "0", "06:00"],
            ["--daily", "09:00", "--tz", "Mars/Olympus"],
            ["--hourly", "15", "--tz", "Europe/Berlin"],
            ["--once", "2999-12-01T09:00"],
            ["--once", "2001-01-01T09:00+00:00"],
            ["--once", "tomorrow"],
            ["--daily", "09:00", "--notify", "not-an-address"],
        ],
    )
    def test_invalid_specs_are_usage_errors(
        self,
        env: BrazeEmulator,
        members: Path,
        capsys: pytest.CaptureFixture[str],
        flags: list[str],
    ) -> None:
        """Invalid schedules, zones and addresses exit 2 with a message, storing nothing."""
        other = ["schedule", "set", "other", "--name", "O", "--source", str(members)]
        assert main([*other, "--hourly", "5"]) == 0
        code = main(["schedule", "set", "c", "--name", "C", "--source", str(members), *flags])
        assert code == 2
        assert "braze-cohorts: error:" in capsys.readouterr().err
        assert main(["schedule", "list", "--json"]) == 0
        listed = [json.loads(line)["cohort_id"] for line in capsys.readouterr().out.splitlines()]
        assert listed == ["other"]

    def test_missing_source_file_is_refused_at_once(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A source that cannot be read is refused when the schedule is set, not at run time."""
        code = main(
            ["schedule", "set", "c", "--name", "C", "--source", str(tmp_path / "nope.csv"),
             "--hourly", "0"]
        )  # fmt: skip
        assert code == 2
        assert "nope.csv" in capsys.readouterr().err


class TestPauseResumeClear:
    def test_pause_resume_clear(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pause shows the reason, resume re-activates, clear deletes."""
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        capsys.readouterr()
        assert main(["schedule", "pause", "c", "--reason", "holiday"]) == 0
        assert "paused: holiday" in capsys.readouterr().out
        assert main(["schedule", "list"]) == 0
        assert "paused: holiday" in capsys.readouterr().out
        assert main(["schedule", "resume", "c"]) == 0
        assert "c: active, next run" in capsys.readouterr().out
        assert main(["schedule", "clear", "c"]) == 0
        assert main(["schedule", "list"]) == 0
        assert "no schedules" in capsys.readouterr().out

    @pytest.mark.parametrize("action", ["show", "pause", "resume", "clear"])
    def test_unknown_cohort(
        self,
        env: BrazeEmulator,
        members: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        action: str,
    ) -> None:
        """Acting on a cohort without schedule exits 1 and says so (2 without a database)."""
        assert main(["schedule", action, "nope"]) == 2
        assert f"no state database at {_state(tmp_path)}" in capsys.readouterr().err
        assert not _state(tmp_path).exists()
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        capsys.readouterr()
        assert main(["schedule", action, "nope"]) == 1
        assert "has no schedule" in capsys.readouterr().err


class TestRunDueAndTrigger:
    def test_trigger_runs_now_and_records_manual(
        self, env: BrazeEmulator, members: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Trigger imports the file now; Braze holds the members; history says manual."""
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--daily", "09:00"])
        assert main(["trigger", "c"]) == 0
        assert "c (C): manual import succeeded" in capsys.readouterr().out
        assert {m[1] for m in env.members("c")} == {"u0", "u1", "u2"}
        store = bc.SQLiteStore(_state(tmp_path))
        try:
            runs = store.history("c")
        finally:
            store.close()
        assert [(r.trigger, r.result) for r in runs] == [("manual", "succeeded")]

    def test_run_due_runs_due_schedule_once_and_mails(
        self,
        env: BrazeEmulator,
        smtp_sink: _Sink,
        members: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A due schedule runs once with trigger scheduled; its recipients get one email."""
        main(
            ["schedule", "set", "c", "--name", "Churn", "--source", str(members),
             "--daily", "09:00", "--notify", "ops@example.com", "b@example.com"]
        )  # fmt: skip
        capsys.readouterr()
        assert main(["run-due"]) == 0
        assert capsys.readouterr().out == ""  # not due yet
        _make_due(tmp_path, "c")
        assert main(["run-due"]) == 0
        assert "c (Churn): scheduled import succeeded" in capsys.readouterr().out
        assert main(["run-due"]) == 0
        assert capsys.readouterr().out == ""  # once per due time
        assert len(smtp_sink.messages) == 1
        msg = smtp_sink.messages[0]
        assert smtp_sink.rcpt[0] == ["ops@example.com", "b@example.com"]
        assert msg["Subject"] == "[braze-cohorts] Churn: succeeded"
        body = msg.get_content()
        assert "Users in the cohort: 3" in body
        assert "Added:     3" in body

    def test_revoked_key_pauses_and_mails_the_reason(
        self,
        env: BrazeEmulator,
        smtp_sink: _Sink,
        members: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A 401 fails the run (exit 1), pauses the schedule, and the email says why."""
        main(
            ["schedule", "set", "c", "--name", "Churn", "--source", str(members),
             "--hourly", "0", "--notify", "ops@example.com"]
        )  # fmt: skip
        env.revoke_data_import_key(env.data_import_key)
        _make_due(tmp_path, "c")
        assert main(["run-due"]) == 1
        capsys.readouterr()
        assert main(["schedule", "show", "c"]) == 0
        shown = capsys.readouterr().out
        assert "state:      paused: authentication failed" in shown
        assert "Churn: failed, schedule paused" in smtp_sink.messages[0]["Subject"]
        assert "PAUSED" in smtp_sink.messages[0].get_content()
        _make_due(tmp_path, "c")  # the due time is set, but a paused schedule does not run
        main(["schedule", "pause", "c", "--reason", "still broken"])
        assert main(["run-due"]) == 0
        assert len(smtp_sink.messages) == 1

    def test_mail_failure_does_not_fail_the_import(
        self,
        env: BrazeEmulator,
        members: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """With a dead mail server the import succeeds (exit 0) and a warning is printed."""
        monkeypatch.setenv("BRAZE_COHORTS_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("BRAZE_COHORTS_SMTP_PORT", str(_free_port()))
        monkeypatch.setenv("BRAZE_COHORTS_SMTP_SENDER", "bot@example.com")
        main(
            ["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0",
             "--notify", "ops@example.com"]
        )  # fmt: skip
        assert main(["trigger", "c"]) == 0
        captured = capsys.readouterr()
        assert "manual import succeeded" in captured.out
        assert "email for c not sent" in captured.err
        assert main(["schedule", "show", "c"]) == 0
        assert "email:      not sent" in capsys.readouterr().out

    def test_missing_credentials_is_a_usage_error(
        self,
        env: BrazeEmulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """run-due without Braze settings exits 2 naming the missing variable."""
        monkeypatch.delenv("BRAZE_DATA_IMPORT_KEY")
        assert main(["run-due"]) == 2
        assert "BRAZE_DATA_IMPORT_KEY" in capsys.readouterr().err

    def test_smtp_host_without_sender_is_a_usage_error(
        self, env: BrazeEmulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An SMTP host without a From address exits 2."""
        assert main(["run-due", "--smtp-host", "127.0.0.1"]) == 2
        assert "BRAZE_COHORTS_SMTP_SENDER" in capsys.readouterr().err

    def test_trigger_unknown_cohort(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Triggering a cohort without schedule exits 1."""
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        assert main(["trigger", "nope"]) == 1
        assert "has no schedule" in capsys.readouterr().err


class TestNarrowOutput:
    def test_long_paused_reason_keeps_list_narrow_and_show_complete(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 200-character paused reason is cut in `schedule list`, whole in `schedule show`."""
        reason = "Braze refused the data import key (HTTP 401): " + "rotate it; " * 16
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        assert main(["schedule", "pause", "c", "--reason", reason]) == 0
        capsys.readouterr()
        assert main(["schedule", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= 100, lines
        assert "paused: Braze refused" in lines[1]
        assert "…" in lines[1]
        assert main(["schedule", "show", "c"]) == 0
        assert " ".join(reason.split()) in capsys.readouterr().out

    def test_trigger_without_recipients_does_not_warn_about_smtp(
        self, env: BrazeEmulator, members: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No SMTP host: warn only when the schedule about to run has recipients."""
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        capsys.readouterr()
        assert main(["trigger", "c"]) == 0
        assert "SMTP" not in capsys.readouterr().err
        set_ = ["schedule", "set", "c", "--name", "C", "--source", str(members), "--replace"]
        main([*set_, "--hourly", "0", "--notify", "ops@example.com"])
        capsys.readouterr()
        assert main(["trigger", "c"]) == 0
        assert "no SMTP host is set" in capsys.readouterr().err


class TestReadOnlyDatabase:
    """`history`, `schedule list` and `schedule show` open the database read-only."""

    def _populate(self, members: Path, capsys: pytest.CaptureFixture[str]) -> None:
        main(["schedule", "set", "c", "--name", "C", "--source", str(members), "--hourly", "0"])
        assert main(["trigger", "c"]) == 0
        capsys.readouterr()

    def test_reading_commands_write_nothing(
        self,
        env: BrazeEmulator,
        members: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """On a read-only file in a read-only directory, the reading commands work unchanged.

        As root, chmod does not stop writes, so the proof is that nothing is written at all:
        the file's bytes stay identical and the write-ahead log stays empty (SQLiteStore's
        read-only tests show that SQLite itself refuses the read-only connection's writes).
        """
        self._populate(members, capsys)
        state = _state(tmp_path)
        before = state.read_bytes()
        listing = sorted(p.name for p in state.parent.iterdir())
        state.chmod(0o444)
        state.parent.chmod(0o555)
        try:
            assert main(["history", "c"]) == 0
            assert "succeeded" in capsys.readouterr().out
            assert main(["schedule", "list"]) == 0
            assert "hourly" in capsys.readouterr().out
            assert main(["schedule", "show", "c"]) == 0
            assert "last run:" in capsys.readouterr().out
            assert state.read_bytes() == before
            # SQLite lets any reader of a WAL file open -wal/-shm (as root it can create them);
            # not one page was written to the log.
            wal = state.with_name("state.db-wal")
            assert not wal.exists() or wal.stat().st_size == 0
            assert {p.name for p in state.parent.iterdir()} <= {*listing, wal.name, "state.db-shm"}
        finally:
            state.parent.chmod(0o755)
            state.chmod(0o644)

    def test_old_schema_is_not_migrated_by_a_reading_command(
        self,
        env: BrazeEmulator,
        members: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A file that needs migrating is left alone by readers: exit 2, a clear line."""
        self._populate(members, capsys)
        state = _state(tmp_path)
        import sqlite3

        conn = sqlite3.connect(state)
        conn.execute("PRAGMA user_version = 3")
        conn.close()
        before = state.read_bytes()
        for command in (["history", "c"], ["schedule", "list"], ["schedule", "show", "c"]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert "cannot migrate it" in err
            assert len(err.splitlines()) == 1
        assert state.read_bytes() == before
