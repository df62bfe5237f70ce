"""sync_many beside a hand-grouped baseline: one source of N rows refreshing C cohorts (dry runs).

The baseline is what a caller would write without sync_many: the rows already grouped by cohort
(generated per cohort, nothing to sort), one ``CohortSync.sync`` per cohort. sync_many reads the
same rows interleaved (row n belongs to cohort n % C), sorts them into per-cohort spill files
and then runs the same imports. Each variant runs in a fresh process; *held* is its RSS before
the timed runs (the state and the FakeClient's cohorts), *+MB* what its peak RSS grew by during
them (the high-water mark is reset just before).

    python benchmarks/bench_many.py --rows 1000000 --cohorts 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _rows(rows: int, cohorts: int) -> Iterator[dict[str, object]]:
    for n in range(rows):
        yield {"external_id": f"user-{n}", "cohort_id": f"c{n % cohorts}"}


def _variant(name: str, rows: int, cohorts: int) -> dict[str, float]:
    import braze_cohorts as bc
    from braze_cohorts.testing import FakeClient

    with tempfile.TemporaryDirectory() as tmp:
        store = bc.SQLiteStore(Path(tmp) / "state.db")
        sync = bc.CohortSync(FakeClient(), store)
        # Not timed: a first import of every cohort, so that the timed runs are refreshes
        # (each cohort's rows diffed against what its state holds), 1 % of each cohort new.
        for c in range(cohorts):
            sync.sync(f"c{c}", f"c{c}", (f"user-{n}" for n in range(c, rows, cohorts) if n % 100))
        held = _rss_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        start = time.perf_counter()
        if name == "baseline":
            for c in range(cohorts):
                ids = (f"user-{n}" for n in range(c, rows, cohorts))
                run = sync.sync(f"c{c}", f"c{c}", ids, dry_run=True)
                assert run.result == "dry_run"
        else:
            runs = bc.sync_many(sync, _rows(rows, cohorts), name_column=None, dry_run=True)
            assert len(runs) == cohorts
            assert all(r.result == "dry_run" for r in runs)
        seconds = time.perf_counter() - start
        grew = _rss_mb("VmHWM") - held
        store.close()
    return {"seconds": seconds, "held_mb": held, "grew_mb": grew}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cohorts", type=int, default=50)
    parser.add_argument("--variant", choices=["baseline", "sync_many"])
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(_variant(args.variant, args.rows, args.cohorts)))
        return
    print(f"{args.rows:,} rows, {args.cohorts} cohorts, dry runs")
    for variant in ("baseline", "sync_many"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--rows", str(args.rows),
             "--cohorts", str(args.cohorts)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        result = json.loads(out)
        print(
            f"{variant:10} {result['seconds']:6.2f} s  held {result['held_mb']:4.0f} MB  "
            f"+{result['grew_mb']:.0f} MB during the timed runs"
        )


if __name__ == "__main__":
    main()
