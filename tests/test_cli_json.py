"""``--json`` of ``sync``, ``trigger`` and ``run-due``: one JSON object per run, nothing else."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

import braze_cohorts as bc
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from helpers import run_cli

UTC = dt.timezone.utc
#: Every field of ImportRun, and what run_to_json adds.
RUN_KEYS = {f.name for f in attrs.fields(bc.ImportRun)} | {"rejected_total", "seconds"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, braze_env: BrazeEmulator) -> BrazeEmulator:
    """Braze settings and the state path in the environment, pointing at the emulator."""
    monkeypatch.delenv("BRAZE_COHORTS_SMTP_HOST", raising=False)
    braze_env.add_users(10, prefix="u")
    return braze_env


def _csv(path: Path, *ids: str) -> Path:
    path.write_text("external_id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path


def _lines(out: str) -> list[dict[str, Any]]:
    """stdout as JSON Lines: every line must be one JSON object."""
    objects = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(o, dict) for o in objects)
    return objects


def _sync(path: Path, *extra: str) -> list[str]:
    return ["sync", str(path), "--cohort-id", "c", "--name", "C", "--json", *extra]


class TestSyncJson:
    def test_one_object_with_every_field(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A first import prints one object: counts, the first-import warning, full resync."""
        src = _csv(tmp_path / "m.csv", "u0", "u1", "u2", " bad")
        assert main(_sync(src, "--max-rejected", "0.5")) == 0
        out, err = capsys.readouterr()
        [run] = _lines(out)
        assert set(run) == RUN_KEYS
        assert run["result"] == "succeeded"
        assert (run["added"], run["removed"], run["users"]) == (3, 0, 3)
        assert run["rejected"] == {"invalid_external_id": 1}
        assert run["rejected_total"] == 1
        assert (run["full_resync"], run["full_resync_reason"]) == (True, "first_import")
        assert run["warnings"][0].startswith("first import of this cohort")
        assert run["requests"] >= 2
        assert run["error"] is run["error_kind"] is run["error_cause"] is None
        assert dt.datetime.fromisoformat(run["started_at"]).tzinfo is not None
        assert run["seconds"] >= 0
        assert isinstance(run["id"], int)
        assert "{" not in err

    def test_same_object_as_history(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The printed run is the recorded run: history --json prints the same object."""
        src = _csv(tmp_path / "m.csv", "u0", "u1")
        assert main(_sync(src)) == 0
        _csv(src, "u1", "u3")
        assert main(_sync(src)) == 0
        printed = _lines(capsys.readouterr().out)
        assert main(["history", "c", "--json"]) == 0
        history = _lines(capsys.readouterr().out)
        assert history == printed[::-1]
        assert (printed[1]["added"], printed[1]["removed"], printed[1]["full_resync"]) == (
            1,
            1,
            False,
        )

    def test_refused_import_exits_1_with_its_reason(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refusal is still a run: printed with error_kind, exit code 1."""
        src = _csv(tmp_path / "m.csv", "u0", "u1", "u2")
        assert main(_sync(src)) == 0
        capsys.readouterr()
        _csv(src, "u0")
        assert main(_sync(src)) == 1
        [run] = _lines(capsys.readouterr().out)
        assert (run["result"], run["error_kind"]) == ("refused", "MassRemovalError")
        assert "remove 2 of the 3" in run["error"]

    def test_revoked_key_names_the_cause(
        self,
        env: BrazeEmulator,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A refused key fails the run: error_kind and error_cause say which key, exit 1."""
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "not-the-key")
        assert main(_sync(_csv(tmp_path / "m.csv", "u0"))) == 1
        [run] = _lines(capsys.readouterr().out)
        assert (run["result"], run["error_kind"]) == ("failed", "AuthenticationError")
        assert run["error_cause"] is not None

    def test_dry_run(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A dry run prints its planned counts with result dry_run."""
        assert main(_sync(_csv(tmp_path / "m.csv", "u0", "u1"), "--dry-run")) == 0
        [run] = _lines(capsys.readouterr().out)
        assert (run["result"], run["added"], run["requests"]) == ("dry_run", 2, 0)

    def test_usage_error_prints_no_json(
        self,
        env: BrazeEmulator,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """No run, no object: a missing setting exits 2 with the message on stderr only."""
        monkeypatch.delenv("BRAZE_PARTNER")
        assert main(_sync(_csv(tmp_path / "m.csv", "u0"))) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "BRAZE_PARTNER" in err

    def test_as_a_real_process(self, env: BrazeEmulator, tmp_path: Path) -> None:
        """Run as a process with -v: stdout is exactly one JSON line; the logs are on stderr."""
        src = _csv(tmp_path / "m.csv", "u0", "u1", "u2")
        done = run_cli("-v", *_sync(src))
        assert done.returncode == 0, done.stderr
        [run] = _lines(done.stdout)
        assert (run["cohort_id"], run["result"], run["added"]) == ("c", "succeeded", 3)
        assert "import of cohort c succeeded" in done.stderr  # -v logs, never on stdout


def _make_due(state: Path, cohort_id: str) -> None:
    due = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    with bc.SQLiteStore(state) as store:
        store.update_schedule(cohort_id, state="active", paused_reason=None, next_due=due)


class TestScheduledJson:
    def _set(self, cohort_id: str, source: Path) -> None:
        args = ["schedule", "set", cohort_id, "--name", cohort_id.upper(), "--source", str(source)]
        assert main([*args, "--daily", "09:00"]) == 0

    def test_trigger_prints_the_run(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """trigger --json prints one object, trigger manual."""
        self._set("a", _csv(tmp_path / "a.csv", "u0", "u1"))
        capsys.readouterr()
        assert main(["trigger", "a", "--json"]) == 0
        [run] = _lines(capsys.readouterr().out)
        assert set(run) == RUN_KEYS
        assert (run["cohort_id"], run["trigger"], run["result"], run["added"]) == (
            "a",
            "manual",
            "succeeded",
            2,
        )

    def test_trigger_unknown_cohort_prints_nothing(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No schedule, no run: exit 1, nothing on stdout."""
        self._set("a", _csv(tmp_path / "a.csv", "u0"))
        capsys.readouterr()
        assert main(["trigger", "nope", "--json"]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert "nope" in err

    def test_run_due_prints_one_line_per_run(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nothing due: no output; two due: two objects; a failed one makes exit code 1."""
        self._set("a", _csv(tmp_path / "a.csv", "u0", "u1"))
        self._set("b", _csv(tmp_path / "b.csv", " bad", "\tworse"))  # every record rejected
        capsys.readouterr()
        assert main(["run-due", "--json"]) == 0
        assert capsys.readouterr().out == ""
        _make_due(tmp_path / "state.db", "a")
        _make_due(tmp_path / "state.db", "b")
        assert main(["run-due", "--json"]) == 1
        runs = {r["cohort_id"]: r for r in _lines(capsys.readouterr().out)}
        assert set(runs) == {"a", "b"}
        assert all(set(r) == RUN_KEYS for r in runs.values())
        assert (runs["a"]["trigger"], runs["a"]["result"]) == ("scheduled", "succeeded")
        assert (runs["b"]["result"], runs["b"]["error_kind"]) == ("refused", "TooManyRejectedError")
        assert runs["b"]["rejected_total"] == 2

    def test_run_due_as_a_real_process(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """run-due --json in a process: stdout parses as JSON Lines, exit code 0."""
        self._set("a", _csv(tmp_path / "a.csv", "u0"))
        _make_due(tmp_path / "state.db", "a")
        done = run_cli("run-due", "--json")
        assert done.returncode == 0, done.stderr
        [run] = _lines(done.stdout)
        assert (run["cohort_id"], run["result"]) == ("a", "succeeded")
