"""How fast, and in how much memory, do the member sources deliver a very large cohort?

N ids (default 10,000,000, ``user-<i>``) are read from each source into a consuming loop
(``collections.deque(records, maxlen=0)``), each case in its own subprocess:

* ``generator`` — a Python generator of ``str``: **the hand-written baseline**.
* ``parquet``   — ``bc.read_records("ids.parquet")`` (pyarrow, by record batch).
* ``pandas``    — ``bc.frame_records(df)`` of a pandas DataFrame already in memory.
* ``polars``    — ``bc.frame_records(df)`` of a polars DataFrame already in memory.
* ``postgres``  — ``bc.query_records(conn, "SELECT id AS external_id FROM ids")`` with psycopg,
  against a throwaway PostgreSQL server on 127.0.0.1 (server-side cursor, 10,000 rows a fetch).
* ``copy``      — ``COPY (SELECT id FROM ids) TO STDOUT`` read by psycopg, messages counted
  (the server sends one per row) and not decoded: the practical ceiling of moving ids out of
  PostgreSQL with psycopg.

With ``--refresh``, each source instead feeds a dry-run refresh through ``CohortSync.sync(...,
dry_run=True)`` (a null client; the state holds a first import of the N ids ``user-0 ..``, the
source the same N shifted by 1 %: 1 % churn), beside the same refresh fed by the generator. The
``copy`` case is left out (it yields no records).

Wall time covers the loop only (a frame is built before the clock starts: it is what the
caller already holds). Peak RSS is the child's high-water mark, reset (``/proc/self/clear_refs``)
just before the loop, so it is what reading adds on top of what the process held (the frame);
``held`` is the RSS before the loop. Run::

    .venv/bin/python benchmarks/bench_sources.py                # 10M ids
    .venv/bin/python benchmarks/bench_sources.py --ids 1000000 --repeat 3
    .venv/bin/python benchmarks/bench_sources.py --refresh --ids 1000000

Needs the dev extra (pyarrow, pandas, polars, psycopg) and the PostgreSQL server binaries.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("generator", "parquet", "pandas", "polars", "postgres", "copy")
COHORT = "bench-cohort"


class NullClient:
    """Acknowledges every request at once: the benchmark measures the library, not a network."""

    def name_cohort(self, cohort_id: str, name: str, created_at: object = None) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")

    def update_members(self, cohort_id: str, add: Any = (), remove: Any = ()) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")


def _make_sync(db: str) -> Any:
    from braze_cohorts import BatchUploader, CohortSync, SQLiteStore

    client = NullClient()
    uploader = BatchUploader(client, concurrency=4, requests_per_hour=1e12)  # type: ignore[arg-type]
    return CohortSync(client, SQLiteStore(db), uploader=uploader)  # type: ignore[arg-type]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def child(case: str, ids: int, parquet: str, url: str, state: str | None) -> dict[str, Any]:
    import braze_cohorts as bc

    holder: Any = None
    count = 0
    shift = ids // 100 if state else 0
    if case == "generator":
        records: Any = (f"user-{i}" for i in range(shift, ids + shift))
    elif case == "parquet":
        records = bc.read_records(parquet)
    elif case == "pandas":
        import pandas as pd

        holder = pd.read_parquet(parquet)
        records = bc.frame_records(holder)
    elif case == "polars":
        import polars as pl

        holder = pl.read_parquet(parquet)
        records = bc.frame_records(holder)
    else:
        import psycopg

        connection = psycopg.connect(url, autocommit=True)
        records = bc.query_records(connection, "SELECT id AS external_id FROM ids")
    held = _rss_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if state is not None:
        run = _make_sync(state).sync(COHORT, "Benchmark", records, dry_run=True)
        assert (run.result, run.users, run.added, run.removed) == ("dry_run", ids, shift, shift), (
            run
        )
        count = run.users
    elif case == "copy":
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY (SELECT id FROM ids) TO STDOUT") as copy,
        ):
            for _block in copy:  # PostgreSQL sends one CopyData message per row
                count += 1
    else:
        # Counted in C (zip with a counter, keep the last pair) so the check costs next to nothing.
        last = collections.deque(zip(records, itertools.count(1)), maxlen=1)
        count = last[0][1] if last else 0
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    assert count == ids, (case, count)
    return {"case": case, "seconds": seconds, "held_mb": held / 1024, "peak_mb": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--refresh", action="store_true", help="a dry-run refresh per source")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ids, args.parquet, args.url, args.state)))
        return

    sys.path.insert(0, str(ROOT / "tests"))
    import psycopg
    import pyarrow as pa
    import pyarrow.parquet as pq

    from postgres_server import postgres_server

    folder = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    try:
        parquet = folder / "ids.parquet"
        shift = args.ids // 100 if args.refresh else 0
        state = str(folder / "state.db") if args.refresh else None
        if state is not None:
            first = _make_sync(state).sync(COHORT, "Benchmark", (f"user-{i}" for i in
                                                                 range(args.ids)))  # fmt: skip
            assert (first.result, first.users) == ("succeeded", args.ids), first
        ids = pa.array([f"user-{i}" for i in range(shift, args.ids + shift)], pa.string())
        pq.write_table(pa.table({"external_id": ids}), parquet)
        del ids
        with postgres_server() as url:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute(
                    "CREATE TABLE ids AS SELECT 'user-' || i AS id "
                    f"FROM generate_series({shift}, {args.ids + shift - 1}) AS i"
                )
                connection.execute("VACUUM ANALYZE ids")
            results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
            if args.refresh:
                del results["copy"]
            cases = [c for c in CASES if not (args.refresh and c == "copy")]
            for _ in range(args.repeat):
                for case in cases:
                    extra = ["--state", state] if state is not None else []
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", case, "--ids", str(args.ids),
                         "--parquet", str(parquet), "--url", url, *extra],
                        check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    results[case].append(json.loads(out.stdout))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    base = statistics.median(r["seconds"] for r in results["generator"])
    what = "dry-run refresh, 1 % churn" if args.refresh else "consuming loop"
    print(f"{args.ids:,} ids, median of {args.repeat} run(s), {what}")
    header = ("source", "seconds", "min-max", "x gen", "ids/s", "held MB", "+read MB")
    print("{:<10} {:>8} {:>13} {:>6} {:>12} {:>8} {:>8}".format(*header))
    for case in results:
        runs = [r["seconds"] for r in results[case]]
        seconds = statistics.median(runs)
        held = statistics.median(r["held_mb"] for r in results[case])
        peak = statistics.median(r["peak_mb"] - r["held_mb"] for r in results[case])
        spread = f"{min(runs):.2f}-{max(runs):.2f}"
        print(
            f"{case:<10} {seconds:>8.2f} {spread:>13} {seconds / base:>6.2f} "
            f"{args.ids / seconds:>12,.0f} {held:>8.0f} {peak:>8.0f}"
        )
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
