"""The progress bar of ``braze-cohorts sync`` on a terminal, and its one-line phase summary.

Three phases: **read** (records read and matched; their total is estimated from the file's
lines, so the bar has a percentage and an ETA), **diff** (the change is computed; no count to
show), **send** (ids acknowledged by Braze out of the change's size). Nothing is written when
the stream is not a terminal: cron mail and CI logs stay clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import braze_cohorts as bc

__all__ = ["ProgressBar", "estimate_records", "format_seconds"]

#: Seconds between two redraws at most (phase changes are always drawn).
REDRAW_EVERY = 0.1
_BAR_WIDTH = 24
_LINE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def estimate_records(path: Path) -> int | None:
    """About how many records ``path`` holds: its lines, less a CSV/TSV header.

    Blank lines count too, so this is an upper bound; ``None`` for a ``.json`` array or a file
    that cannot be read (the reader reports that better).
    """
    suffix = path.suffix.lower()
    if suffix not in _LINE_SUFFIXES:
        return None
    lines = 0
    last = b"\n"
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    if last != b"\n":
        lines += 1  # a last line without its newline
    if suffix in (".csv", ".tsv"):
        lines -= 1
    return max(lines, 0)


def format_seconds(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3:07`` or ``1:02:03``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _rate(count: int, seconds: float) -> str:
    per_second = count / seconds if seconds > 0 else 0.0
    return f"{per_second:,.0f}/s"


class ProgressBar:
    """Draws a sync's phases on a terminal and sums them up at the end.

    Pass :meth:`phase` as ``on_phase`` and :meth:`upload` as ``progress`` to
    :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>`, then call :meth:`close`.

    Args:
        stream: Where to draw (stderr); nothing is written unless ``stream.isatty()``.
        enabled: ``False`` draws nothing even on a terminal (``--no-progress``).
        records_total: The estimated number of records (``None``: unknown, no percentage).
        clock: Monotonic seconds; inject one in tests.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool = True,
        records_total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self.enabled = enabled and stream.isatty()
        self._clock = clock
        self._records_total = records_total
        self._started = clock()
        self._phase = "read"
        self._phase_started = self._started
        self._drawn_at = -float("inf")
        self._width = 0
        self._records = 0
        self._to_send = 0
        self._sent = 0
        self._requests = 0
        self._closed = False
        #: Seconds spent in each finished phase.
        self._times: dict[str, float] = {}

    # -- hooks ---------------------------------------------------------------------------------

    def phase(self, event: bc.PhaseProgress) -> None:
        """The ``on_phase`` hook."""
        if not self.enabled:
            return
        self._records = event.records
        if event.phase != self._phase:
            self._enter(event.phase)
            if event.phase == "send":
                self._to_send = event.adds + event.removes
            self._draw(force=True)
        else:
            self._draw()

    def upload(self, progress: Any) -> None:
        """The ``progress`` hook: an :class:`~braze_cohorts.UploadProgress` per request."""
        if not self.enabled:
            return
        if self._phase != "send":
            self._enter("send")
        self._sent = int(getattr(progress, "ids_done", 0))
        self._requests = int(getattr(progress, "requests", 0))
        self._draw()

    def close(self, run: bc.ImportRun | None = None) -> None:
        """End the bar's line and write the phase summary (on a terminal only)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        self._enter("done")
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
        if run is not None:
            self._stream.write(self.summary(run) + "\n")
        self._stream.flush()

    # -- text ----------------------------------------------------------------------------------

    def summary(self, run: bc.ImportRun) -> str:
        """``phases: read … in …; diff … in …; send … in …; total …``."""
        times = self._times
        read = self._records or (run.rejected_total + run.added + run.removed)
        parts = [f"read {read:,} records in {format_seconds(times.get('read', 0.0))}"]
        if "diff" in times:
            parts.append(
                f"diff +{run.added:,} -{run.removed:,}"
                + (" (would send)" if run.result == "dry_run" else "")
                + f" in {format_seconds(times['diff'])}"
            )
        if "send" in times:
            parts.append(
                f"send {run.added + run.removed:,} ids in {run.requests:,} requests in "
                f"{format_seconds(times['send'])}"
            )
        total = sum(times.values())
        return "phases: " + "; ".join(parts) + f"; total {format_seconds(total)}"

    def line(self) -> str:
        """The bar as it would be drawn now."""
        elapsed = self._clock() - self._phase_started
        if self._phase == "read":
            return self._bar("reading", self._records, self._records_total, "records", elapsed)
        if self._phase == "diff":
            return f"diffing {self._records:,} records against the state…"
        return self._bar("sending", self._sent, self._to_send or None, "ids", elapsed)

    def _bar(self, label: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
        rate = _rate(done, elapsed)
        if not total or done > total:
            return f"{label} {done:,} {unit}  {rate}"
        share = done / total
        filled = int(share * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        eta = "ETA --"
        if done and elapsed > 0:
            eta = "ETA " + format_seconds((total - done) * elapsed / done)
        return f"{label} [{bar}] {share:4.0%} {done:,}/{total:,} {unit}  {rate}  {eta}"

    # -- internals -----------------------------------------------------------------------------

    def _enter(self, phase: str) -> None:
        now = self._clock()
        self._times[self._phase] = self._times.get(self._phase, 0.0) + now - self._phase_started
        self._phase = phase
        self._phase_started = now

    def _draw(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._drawn_at < REDRAW_EVERY:
            return
        self._drawn_at = now
        text = self.line()
        pad = max(self._width - len(text), 0)
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._width = len(text)
