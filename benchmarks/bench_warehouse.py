"""The delta computed inside the database beside the SQLite store fed by the same query.

A cohort of N members (``u0 .. u<N-1>``) was imported; its membership is now a table
``members`` in DuckDB or PostgreSQL with 1 % churn (0.5 % left, 0.5 % entered). Each case runs a
dry-run refresh ``CohortSync.sync(..., dry_run=True)`` (a null client; the delta is computed and
counted, nothing is sent) in its own subprocess:

* ``sqlite`` — **the baseline**: ``SQLiteStore`` fed by ``bc.query_records(conn, "SELECT
  external_id FROM members")`` (every id streams out of the database into Python, the store
  diffs them against its snapshot on disk).
* ``indb``   — ``SQLStore`` in the same database, fed by ``store.query_members("SELECT
  external_id FROM members")``: the database runs the anti-joins against the snapshot table
  and only the adds and removes are fetched.
* ``indb-256MB`` (DuckDB only) — the same with DuckDB's ``memory_limit`` at 256 MB: DuckDB
  runs inside the Python process, so its hash tables count in the process's RSS unless capped.
* ``indb-wm256`` (PostgreSQL only) — the same on a connection with ``work_mem = 256MB``
  (the default 4 MB makes the hash joins of 10M rows spill to disk in many batches).

Both states hold the same snapshot (the N ids), the same name and a recent full resync, so
both compute the same delta (asserted). Wall time covers the refresh only; peak RSS is the
child's high-water mark, reset just before it (``/proc/self/clear_refs``), so it is what the
refresh adds to the process. "Bytes moved" is the id text that crosses from the database into
Python (``sum(length(id))`` over the rows fetched; protocol overhead not counted). Run::

    .venv/bin/python benchmarks/bench_warehouse.py --members 10000000 --db duckdb
    .venv/bin/python benchmarks/bench_warehouse.py --members 10000000 --db postgres

Needs the dev extra (duckdb, duckdb-engine, sqlalchemy, psycopg) and, for ``--db postgres``,
the PostgreSQL server binaries (tests/postgres_server.py starts a throwaway server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
COHORT = "bench-cohort"
SQL = "SELECT external_id FROM members"


class NullClient:
    """Acknowledges every request at once: the benchmark measures the library, not a network."""

    def name_cohort(self, cohort_id: str, name: str, created_at: object = None) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")

    def update_members(self, cohort_id: str, add: Any = (), remove: Any = ()) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(case: str, members: int, sa_url: str, raw: str, state: str) -> dict[str, Any]:
    import braze_cohorts as bc
    from braze_cohorts._sqlstore import SQLStore

    moved = 0

    class Counting(SQLStore):
        """Counts the id text fetched into Python (after the fetch: not in its cost)."""

        def _fetch(self, conn: Any, statement: Any, delta: Any) -> None:
            nonlocal moved
            super()._fetch(conn, statement, delta)
            moved = sum(len(k) - 2 for k in delta.iter_adds())  # minus the "e:" prefix
            moved += sum(len(k) - 2 for k in delta.iter_removes())

    connection: Any = None
    if case.startswith("indb"):
        engine = sa_url
        if case == "indb-256MB":  # DuckDB runs in this process: cap its memory (it spills)
            import sqlalchemy as sa

            engine = sa.create_engine(sa_url, connect_args={"config": {"memory_limit": "256MB"}})
        elif case == "indb-wm256":  # PostgreSQL's default work_mem (4 MB) spills the hash joins
            import sqlalchemy as sa

            engine = sa.create_engine(sa_url, connect_args={"options": "-c work_mem=256MB"})
        store: Any = Counting(engine)
        records: Any = store.query_members(SQL)
    else:
        store = bc.SQLiteStore(state)
        if raw.startswith("postgresql://"):
            import psycopg

            connection = psycopg.connect(raw, autocommit=True)
        else:
            import duckdb

            connection = duckdb.connect(raw, read_only=True)
        records = bc.query_records(connection, SQL)
    client = NullClient()
    uploader = bc.BatchUploader(client, concurrency=4, requests_per_hour=1e12)  # type: ignore[arg-type]
    sync = bc.CohortSync(client, store, uploader=uploader)  # type: ignore[arg-type]
    held = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    run = sync.sync(COHORT, "Benchmark", records, dry_run=True)
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    shift = members // 200
    assert (run.result, run.added, run.removed) == ("dry_run", shift, shift), run
    store.close()
    return {
        "case": case,
        "seconds": seconds,
        "held_mb": held / 1024,
        "peak_mb": peak / 1024,
        "moved": moved if case.startswith("indb") else None,
    }


def _prepare(db: str, members: int, work: Path, pg_url: str | None) -> tuple[str, str, int]:
    """Load the tables and both states; return (SQLAlchemy URL, raw URL, bytes of all ids)."""
    import sqlalchemy as sa

    import braze_cohorts as bc

    shift = members // 200
    now = dt.datetime.now(dt.timezone.utc)
    if db == "duckdb":
        raw = str(work / "wh.duckdb")
        sa_url = f"duckdb:///{raw}"
        series = "range({lo}, {hi}) AS t(i)"
    else:
        assert pg_url is not None
        raw = pg_url
        sa_url = pg_url.replace("postgresql://", "postgresql+psycopg://")
        series = "generate_series({lo}, {hi} - 1) AS i"
    engine = sa.create_engine(sa_url)
    store = bc.SQLStore(engine)
    store.record_name(COHORT, "Benchmark", named_at=now)
    store.record_full_resync(COHORT, at=now)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE members AS SELECT 'u' || CAST(i AS VARCHAR) AS external_id FROM "
                + series.format(lo=shift, hi=members + shift)
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO braze_cohorts.snapshot (cohort_id, key, entered) SELECT "
                f"'{COHORT}', 'e:u' || CAST(i AS VARCHAR), NULL FROM "
                + series.format(lo=0, hi=members)
            )
        )
        conn.execute(
            sa.text("UPDATE braze_cohorts.cohorts SET members = :n WHERE cohort_id = :c"),
            {"n": members, "c": COHORT},
        )
        total = conn.execute(sa.text("SELECT sum(length(external_id)) FROM members")).scalar()
        if db == "postgres":
            conn.execute(sa.text("ANALYZE"))
    store.close()
    engine.dispose()
    state = bc.SQLiteStore(work / "state.db")
    state.record_name(COHORT, "Benchmark", named_at=now)
    state.record_full_resync(COHORT, at=now)
    step = 1_000_000
    for lo in range(0, members, step):
        state.apply_batch(COHORT, added=[f"e:u{i}" for i in range(lo, min(lo + step, members))])
    state.close()
    return sa_url, raw, int(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000_000)
    parser.add_argument("--db", choices=("duckdb", "postgres"), default="duckdb")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, members, sa_url, raw, state = args.child
        print(json.dumps(child(case, int(members), sa_url, raw, state)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp:
        work = Path(tmp)
        pg: Any = None
        pg_url = None
        if args.db == "postgres":
            from postgres_server import postgres_server

            pg = postgres_server()
            pg_url = pg.__enter__()
        try:
            start = time.perf_counter()
            sa_url, raw, total = _prepare(args.db, args.members, work, pg_url)
            print(
                f"{args.db}: {args.members:,} members, 1 % churn; loaded in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
            extra = "indb-256MB" if args.db == "duckdb" else "indb-wm256"
            cases = ("sqlite", "indb", extra)
            for case in cases:
                out = subprocess.run(
                    [sys.executable, __file__, "--members", str(args.members), "--db", args.db,
                     "--child", case, str(args.members), sa_url, raw, str(work / "state.db")],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                moved = total if r["moved"] is None else r["moved"]
                grown = r["peak_mb"] - r["held_mb"]
                print(
                    f"  {case:10}  {r['seconds']:7.1f} s  peak RSS +{grown:7.1f}"
                    f" MB (held {r['held_mb']:.0f} MB)  moved {moved / 1e6:8.2f} MB",
                    flush=True,
                )
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)


if __name__ == "__main__":
    main()
