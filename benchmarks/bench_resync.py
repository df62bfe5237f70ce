"""What do recent-entrant re-sends and a full resync cost beside the plain daily delta?

Scenario: a cohort of N members (default 1,000,000) is imported on day 0; on each of days 1-4
``--churn`` of the members leave and as many enter. On day 4 the same membership is imported
three ways, each on its own copy of the day-3 state:

* ``delta``   — ``resend_window=None``: only who entered and who left travels (the baseline);
* ``window``  — the default ``resend_window`` of 3 days: the members who entered on days 1-3 are
  re-sent as adds too (they may not have existed in Braze when they were first sent);
* ``full``    — ``full_resync=True``: every member is sent again.

The client acknowledges every request at once (no network), so the wall time is the library's
own; the requests each import needs are counted, and the minutes Braze's limit of 250,000
requests an hour takes to accept them are computed from that count. Run::

    .venv/bin/python benchmarks/bench_resync.py                     # 1,000,000 members
    .venv/bin/python benchmarks/bench_resync.py --members 10000000  # slow: ~10 minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import braze_cohorts as bc
from braze_cohorts.testing import SettableClock

COHORT = "bench-resync"
DAY0 = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.timezone.utc)
BRAZE_REQUESTS_PER_SECOND = 250_000 / 3600


class NullClient:
    """Acknowledges every request at once."""

    def name_cohort(
        self, cohort_id: str, name: str, created_at: object = None
    ) -> bc.CohortResponse:
        return bc.CohortResponse(status_code=201, message="success")

    def update_members(
        self, cohort_id: str, add: object = (), remove: object = ()
    ) -> bc.CohortResponse:
        return bc.CohortResponse(status_code=201, message="success")


def members(n: int, churn: int, day: int) -> Iterator[str]:
    """Day ``day``'s membership: ``churn`` members a day leave from the bottom, as many enter."""
    start = day * churn
    for x in range(start, start + n):
        yield f"user-{x:09d}"


def import_day(path: Path, n: int, churn: int, day: int, **options: object) -> dict[str, float]:
    clock = SettableClock(DAY0 + dt.timedelta(days=day))
    client = NullClient()
    uploader = bc.BatchUploader(client, requests_per_hour=1e12, concurrency=4)  # type: ignore[arg-type]
    full = bool(options.pop("full_resync", False))
    with bc.SQLiteStore(path) as store:
        sync = bc.CohortSync(
            client,  # type: ignore[arg-type]
            store,
            uploader=uploader,
            clock=clock,
            resync_every=None,
            max_remove_fraction=None,
            **options,  # type: ignore[arg-type]
        )
        began = time.perf_counter()
        run = sync.sync(COHORT, "Bench", members(n, churn, day), full_resync=full)
        took = time.perf_counter() - began
    assert run.result == "succeeded", run.error
    requests = run.requests - (1 if day == 0 else 0)  # the naming request of the first import
    return {
        "added": run.added,
        "removed": run.removed,
        "requests": requests,
        "seconds": took,
        "braze_minutes": requests / BRAZE_REQUESTS_PER_SECOND / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--churn", type=float, default=0.01, help="share that leaves (and enters) a day"
    )
    args = parser.parse_args()
    n, churn = args.members, int(args.members * args.churn)
    window = bc.DEFAULT_RESEND_WINDOW
    tmp = Path(tempfile.mkdtemp(prefix="bench-resync-"))
    try:
        base = tmp / "state.db"
        for day in range(4):
            import_day(base, n, churn, day, resend_window=window)
        rows = {}
        for kind, options in (
            ("delta", {"resend_window": None}),
            ("window", {"resend_window": window}),
            ("full", {"resend_window": window, "full_resync": True}),
        ):
            copy = tmp / f"{kind}.db"
            shutil.copy(base, copy)
            for suffix in ("-wal", "-shm"):
                if Path(str(base) + suffix).exists():
                    shutil.copy(str(base) + suffix, str(copy) + suffix)
            rows[kind] = import_day(copy, n, churn, 4, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# {n:,} members, {churn:,} enter and leave a day, resend window {window}, day 4")
    header = ("adds", "removes", "requests", "Braze min", "library s")
    print(f"{'import':8} " + " ".join(f"{h:>10}" for h in header))
    for kind, row in rows.items():
        print(
            f"{kind:8} {row['added']:>10,.0f} {row['removed']:>10,.0f} {row['requests']:>10,.0f} "
            f"{row['braze_minutes']:>10.2f} {row['seconds']:>10.2f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
