"""The progress bar of ``sync`` on a terminal: phases, share, rate, ETA, summary; else nothing."""

from __future__ import annotations

import datetime as dt
import io
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts._cli.progress import ProgressBar, estimate_records, format_seconds
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator

_T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frames(stream: io.StringIO) -> list[str]:
    """What was drawn, one entry per redraw, trailing padding removed."""
    return [frame.rstrip() for frame in stream.getvalue().split("\r") if frame.strip()]


def _read(records: int) -> bc.PhaseProgress:
    return bc.PhaseProgress(phase="read", records=records)


class TestBar:
    def test_reading_with_a_total_shows_share_rate_and_eta(self) -> None:
        """Read events draw a bar with percentage, counts, rate and ETA from the clock."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, records_total=2_000_000, clock=clock)
        bar.phase(_read(0))
        clock.now += 4
        bar.phase(_read(500_000))
        assert _frames(tty) == [
            "reading [------------------------]   0% 0/2,000,000 records  0/s  ETA --",
            "reading [######------------------]  25% 500,000/2,000,000 records  125,000/s  ETA 12s",
        ]

    def test_redraws_at_most_every_tenth_of_a_second(self) -> None:
        """Events closer than 0.1 s apart are not drawn; phase changes always are."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, records_total=100, clock=clock)
        bar.phase(_read(0))
        clock.now += 0.05
        bar.phase(_read(10))
        assert len(_frames(tty)) == 1
        bar.phase(bc.PhaseProgress(phase="diff", records=10))
        assert _frames(tty)[-1] == "diffing 10 records against the state…"
        clock.now += 0.01
        bar.upload(bc.UploadProgress(added=5, requests=1))  # within 0.1 s: not drawn
        assert len(_frames(tty)) == 2

    def test_unknown_total_shows_count_and_rate(self) -> None:
        """Without an estimate (a .json array) the bar shows what is known."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, clock=clock)
        clock.now += 2
        bar.phase(_read(3_000))
        assert _frames(tty) == ["reading 3,000 records  1,500/s"]

    def test_more_records_than_estimated_drops_the_percentage(self) -> None:
        """An estimate that was too low never shows more than 100 %."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, records_total=10, clock=clock)
        clock.now += 1
        bar.phase(_read(20))
        assert _frames(tty) == ["reading 20 records  20/s"]

    def test_sending_then_summary(self) -> None:
        """Send shows ids out of the change; close clears the line and sums up each phase."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, records_total=1_000, clock=clock)
        clock.now += 2
        bar.phase(_read(1_000))
        bar.phase(bc.PhaseProgress(phase="diff", records=1_000))
        clock.now += 0.5
        bar.phase(bc.PhaseProgress(phase="send", records=1_000, adds=300, removes=100))
        clock.now += 1
        bar.upload(bc.UploadProgress(added=100, removed=100, requests=2, batches_done=2))
        assert _frames(tty)[-1] == (
            "sending [############------------]  50% 200/400 ids  200/s  ETA 1.0s"
        )
        clock.now += 1
        bar.upload(bc.UploadProgress(added=300, removed=100, requests=4, batches_done=4))
        run = bc.ImportRun(
            "c", "C", "manual", _T0, result="succeeded", added=300, removed=100, requests=5
        )
        bar.close(run)
        bar.close(run)  # a second close writes nothing more
        text = tty.getvalue()
        assert text.endswith(
            "phases: read 1,000 records in 2.0s; diff +300 -100 in 0.5s; "
            "send 400 ids in 5 requests in 2.0s; total 4.5s\n"
        )
        assert text.count("phases:") == 1

    def test_dry_run_summary_has_no_send(self) -> None:
        """A dry run reads and diffs; the summary says the counts would be sent."""
        tty, clock = Terminal(), Clock()
        bar = ProgressBar(tty, clock=clock)
        bar.phase(_read(0))
        clock.now += 1
        bar.phase(_read(5))
        bar.phase(bc.PhaseProgress(phase="diff", records=5))
        clock.now += 12
        run = bc.ImportRun("c", "C", "manual", _T0, result="dry_run", added=5)
        bar.close(run)
        assert tty.getvalue().endswith(
            "phases: read 5 records in 1.0s; diff +5 -0 (would send) in 12s; total 13s\n"
        )

    @pytest.mark.parametrize("enabled", [True, False])
    def test_nothing_when_not_a_terminal_or_disabled(self, enabled: bool) -> None:
        """A pipe (cron, CI) gets nothing, and --no-progress silences a terminal."""
        stream = io.StringIO() if enabled else Terminal()
        bar = ProgressBar(stream, enabled=enabled, records_total=10, clock=Clock())
        bar.phase(_read(5))
        bar.phase(bc.PhaseProgress(phase="send", adds=1))
        bar.upload(bc.UploadProgress(added=1))
        bar.close(bc.ImportRun("c", "C", "manual", _T0, result="succeeded"))
        assert stream.getvalue() == ""
        assert not bar.enabled


class TestHelpers:
    def test_estimate_records(self, tmp_path: Path) -> None:
        """Lines less the header for CSV/TSV, lines for JSON Lines, nothing for .json."""
        (tmp_path / "a.csv").write_text("external_id\nu1\nu2\nu3\n", encoding="utf-8")
        (tmp_path / "b.tsv").write_text("external_id\nu1\nu2", encoding="utf-8")
        (tmp_path / "c.jsonl").write_text('{"external_id": "u"}\n' * 7, encoding="utf-8")
        (tmp_path / "d.json").write_text("[]", encoding="utf-8")
        (tmp_path / "e.csv").write_text("", encoding="utf-8")
        assert estimate_records(tmp_path / "a.csv") == 3
        assert estimate_records(tmp_path / "b.tsv") == 2
        assert estimate_records(tmp_path / "c.jsonl") == 7
        assert estimate_records(tmp_path / "d.json") is None
        assert estimate_records(tmp_path / "e.csv") == 0
        assert estimate_records(tmp_path / "missing.csv") is None

    @given(st.lists(st.text(alphabet="ab,\r", max_size=5), max_size=50))
    def test_estimate_is_the_line_count(self, rows: list[str]) -> None:
        """The estimate is the number of lines, whatever they hold."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory, "m.jsonl")
            path.write_bytes("".join(f"{r}\n" for r in rows).encode())
            assert estimate_records(path) == len(rows)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0.04, "0.0s"), (9.94, "9.9s"), (12.4, "12s"), (187, "3:07"), (3723, "1:02:03")],
    )
    def test_format_seconds(self, seconds: float, text: str) -> None:
        """Short spans to a tenth, minutes as m:ss, hours as h:mm:ss."""
        assert format_seconds(seconds) == text


class TestSyncCommand:
    def test_terminal_gets_the_bar_and_the_summary(
        self,
        braze_env: BrazeEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """sync on a terminal draws reading and sending and ends with the phase summary."""
        ids = braze_env.add_users(3_000, prefix="u")
        src = tmp_path / "m.csv"
        src.write_text("external_id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
        tty = Terminal()
        monkeypatch.setattr(sys, "stderr", tty)
        assert main(["sync", str(src), "--cohort-id", "c", "--name", "C", "--json"]) == 0
        frames = _frames(tty)
        assert frames[0].startswith("reading [")
        assert "/3,000 records" in frames[0]
        assert any(f.startswith("sending [") for f in frames)
        assert frames[-1].startswith("phases: read 3,000 records in ")
        assert "diff +3,000 -0 in " in frames[-1]
        assert "send 3,000 ids in " in frames[-1]
        assert capsys.readouterr().out.count("\n") == 1  # the JSON line only

        tty.truncate(0)
        tty.seek(0)
        assert main(["sync", str(src), "--cohort-id", "c", "--name", "C", "--no-progress"]) == 0
        assert tty.getvalue() == ""
