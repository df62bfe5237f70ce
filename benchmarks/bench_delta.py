"""How fast, and in how much memory, is the delta of a very large cohort computed?

Scenario: a cohort of N members (default 10,000,000) is imported once; then 1 % of them leave
and as many new ones enter (``--churn``), and the cohort is synced again. Measured, each in its
own subprocess so that peak RSS (``ru_maxrss`` of that child, from ``os.wait4``) belongs to it
alone:

* ``first``    — the first import through ``CohortSync.sync`` with a client that acknowledges
  every request at once (no network): matching, diff, pending marks, upload, snapshot commits.
  Setup for the rest; reported for information.
* ``delta``    — the second import's delta: ``SQLiteStore.diff()`` streaming the N desired
  keys against the stored snapshot, every add and remove read out. **The measured target.**
* ``second``   — the whole second import through ``CohortSync.sync`` (same null client):
  matching, delta, pending marks, upload of the changes, commits. For information.
* ``baseline`` — the naive way: two Python sets of all the keys, diffed in memory.

Every side produces its keys with the same generator, so generation cost is shared. Run::

    .venv/bin/python benchmarks/bench_delta.py                # 10M members, 1 % churn
    .venv/bin/python benchmarks/bench_delta.py --members 1000000 --keep-dir /tmp/d
    .venv/bin/python benchmarks/bench_delta.py --keep-dir /tmp/d --reuse --repeat 3

``delta`` and ``baseline`` run ``--repeat`` times, alternating, and the medians are compared
(the machine may be shared). ``second`` runs on a copy of the state file, so ``--reuse`` can
measure the delta again without redoing the first import.

``--e2e`` measures something else: a first import of ``--members`` (use 1,000,000) through
``CohortSync`` with a real ``CohortClient`` against the Braze emulator running in a separate
process (0 ms latency), in ids/s, beside a hand-written sequential ``requests.post`` loop of
1,000 ids per request to the same emulator::

    .venv/bin/python benchmarks/bench_delta.py --e2e --members 1000000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

COHORT = "bench-cohort"
_STEP = 2_654_435_761  # odd and not a multiple of 5: coprime with any 2**a * 5**b


def _permuted(n: int) -> Iterator[int]:
    """0 .. n-1 in a scrambled order (a fixed permutation), so nothing arrives sorted."""
    step = _STEP
    while math.gcd(step, n) != 1:
        step += 2
    for i in range(n):
        yield (i * step) % n


def ids(n: int, churn: int, second: bool) -> Iterator[str]:
    """External ids of the first (0 .. n-1) or the second (churn .. n+churn-1) membership."""
    shift = churn if second else 0
    for x in _permuted(n):
        yield f"user-{x + shift:09d}"


def keys(n: int, churn: int, second: bool) -> Iterator[str]:
    """The same members as canonical keys (what the store's diff consumes)."""
    for value in ids(n, churn, second):
        yield "e:" + value


class NullClient:
    """Acknowledges every request at once: the benchmark measures the library, not a network."""

    def name_cohort(self, cohort_id: str, name: str, created_at: object = None) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")

    def update_members(
        self, cohort_id: str, add: Iterable[object] = (), remove: Iterable[object] = ()
    ) -> object:
        from braze_cohorts import CohortResponse

        return CohortResponse(status_code=201, message="success")


def _make_sync(db: str) -> object:
    from braze_cohorts import BatchUploader, CohortSync, SQLiteStore

    client = NullClient()
    uploader = BatchUploader(client, concurrency=4, requests_per_hour=1e12)  # type: ignore[arg-type]
    return CohortSync(client, SQLiteStore(db), uploader=uploader)  # type: ignore[arg-type]


def child(kind: str, db: str, n: int, churn: int) -> dict[str, object]:
    """Run one side; return its figures (wall time is measured here, RSS by the parent)."""
    start = time.perf_counter()
    if kind == "first":
        run = _make_sync(db).sync(COHORT, "Benchmark", ids(n, churn, False))  # type: ignore[attr-defined]
        out = {
            "result": run.result,
            "added": run.added,
            "users": run.users,
            "requests": run.requests,
        }
    elif kind == "second":
        run = _make_sync(db).sync(COHORT, "Benchmark", ids(n, churn, True))  # type: ignore[attr-defined]
        out = {"result": run.result, "added": run.added, "removed": run.removed, "users": run.users}
    elif kind == "delta":
        from braze_cohorts import SQLiteStore

        with SQLiteStore(db) as store, store.diff(COHORT, keys(n, churn, True)) as delta:
            adds = sum(1 for _ in delta.iter_adds())
            removes = sum(1 for _ in delta.iter_removes())
        out = {"adds": adds, "removes": removes}
    elif kind == "refresh":
        run = _make_sync(db).sync(COHORT, "Benchmark", ids(n, churn, True), dry_run=True)  # type: ignore[attr-defined]
        out = {"adds": run.added, "removes": run.removed, "result": run.result}
    elif kind == "sets":
        old_ids = set(ids(n, churn, False))
        new_ids = set(ids(n, churn, True))
        out = {"adds": len(new_ids - old_ids), "removes": len(old_ids - new_ids)}
    elif kind == "baseline":
        old = set(keys(n, churn, False))
        new = set(keys(n, churn, True))
        adds_set = new - old
        removes_set = old - new
        out = {"adds": len(adds_set), "removes": len(removes_set)}
    else:
        raise SystemExit(f"unknown side {kind!r}")
    out["seconds"] = time.perf_counter() - start
    return out


def measure(kind: str, db: str, n: int, churn: int) -> dict[str, object]:
    """Run one side in a fresh subprocess; add its peak RSS (MB) from os.wait4."""
    cmd = [sys.executable, __file__, "--child", kind, "--db", db, "--members", str(n)]
    cmd += ["--churn-count", str(churn)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed with exit code {proc.returncode}")
    figures: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    figures["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    # CPU of the child (user + system): what a loaded, shared machine distorts least.
    figures["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    return figures


def _serve(conn: Any, users: int) -> None:
    """The emulator's process: serve until told to stop; answer member counts."""
    from braze_cohorts.testing import BrazeEmulator

    with BrazeEmulator() as emulator:
        emulator.add_users(users, prefix="user-")
        conn.send(
            {
                "url": emulator.url,
                "partner": emulator.partner,
                "partner_api_key": emulator.partner_api_key,
                "data_import_key": emulator.data_import_key,
            }
        )
        while (command := conn.recv()) != "stop":
            try:
                conn.send(len(emulator.members(command)))
            except KeyError:
                conn.send(0)


def _timed(client: Any) -> tuple[list[float], list[float]]:
    """Record when each batch request of ``client`` started and ended (naming left out)."""
    starts: list[float] = []
    ends: list[float] = []
    method = client.update_members

    def timed(*args: Any, **kwargs: Any) -> Any:
        starts.append(time.perf_counter())
        try:
            return method(*args, **kwargs)
        finally:
            ends.append(time.perf_counter())

    client.update_members = timed
    return starts, ends


def _timing(starts: list[float], ends: list[float], begin: float, end: float, rate: float) -> str:
    """Split one sync's wall time: before the first batch, the batches' span, the tail."""
    paced = (len(starts) - 1) * 3600 / (0.99 * rate)  # the pacing's own span for these starts
    span = starts[-1] - starts[0]
    return (
        f"{starts[0] - begin:.2f} s before the first batch, {span:.2f} s from its start to the "
        f"last one's (the pacing alone: {paced:.2f} s, so {span - paced:.2f} s lost to late "
        f"starts), {end - max(ends):.2f} s after the last answer"
    )


def e2e(n: int, rate: float, shared: bool = True) -> None:
    """First import of ``n`` members through CohortSync vs a requests.post loop, over HTTP."""
    import multiprocessing

    import requests

    from braze_cohorts import BatchUploader, CohortClient, CohortSync, SQLiteStore

    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child_conn, n), daemon=True)
    server.start()
    info = conn.recv()
    all_ids = [f"user-{x}" for x in _permuted(n)]  # as the emulator's add_users names them
    try:
        url = f"{info['url']}/partners/{info['partner']}/cohorts/users"
        start = time.perf_counter()
        with requests.Session() as session:
            for i in range(0, n, 1000):
                body = {
                    "partner_api_key": info["partner_api_key"],
                    "client_secret": info["data_import_key"],
                    "cohort_id": "loop",
                    "cohort_changes": [{"user_ids": all_ids[i : i + 1000]}],
                }
                session.post(url, json=body, timeout=30).raise_for_status()
        loop_seconds = time.perf_counter() - start
        conn.send("loop")
        assert conn.recv() == n

        workdir = tempfile.mkdtemp(prefix="bench-e2e-")
        try:
            with (
                CohortClient(
                    info["url"],
                    partner=info["partner"],
                    partner_api_key=info["partner_api_key"],
                    data_import_key=info["data_import_key"],
                ) as client,
                SQLiteStore(os.path.join(workdir, "state.db")) as store,
            ):
                sync = CohortSync(
                    client,
                    store,
                    uploader=BatchUploader(client, requests_per_hour=rate),
                    workspace_requests_per_hour=rate if shared else None,
                )
                starts, ends = _timed(client)
                marks: list[float] = []
                start = time.perf_counter()
                run = sync.sync(
                    COHORT,
                    "Benchmark",
                    iter(all_ids),
                    progress=lambda p: marks.append(time.perf_counter()) if not marks else None,
                )
                first_ack = marks[0] - start
                sync_seconds = time.perf_counter() - start
                timings = [_timing(starts, ends, start, start + sync_seconds, rate)]
                starts.clear()
                ends.clear()
                start = time.perf_counter()
                resync = sync.sync(COHORT, "Benchmark", iter(all_ids), full_resync=True)
                resync_seconds = time.perf_counter() - start
                timings.append(_timing(starts, ends, start, start + resync_seconds, rate))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        conn.send(COHORT)
        held = conn.recv()
        assert (run.result, run.users, held) == ("succeeded", n, n), (run, held)
        assert (resync.result, resync.added, resync.users) == ("succeeded", n, n), resync
    finally:
        conn.send("stop")
        server.join(30)
    print(
        f"first import of {n:,} members over HTTP, emulator in its own process, 0 ms latency\n"
        f"requests.post loop (sequential, 1,000 ids): {n / loop_seconds:>9,.0f} ids/s "
        f"({loop_seconds:.1f} s)\n"
        f"(first import: first request acknowledged {first_ack:.2f} s after the call; shared "
        f"workspace budget {'on' if shared else 'off'})"
    )
    for (what, done, seconds), timing in zip(
        (("first import", run, sync_seconds), ("full resync", resync, resync_seconds)),
        timings,
        strict=True,
    ):
        floor = done.requests / (rate / 3600)
        print(
            f"CohortSync.sync {what} (requests_per_hour={rate:,.0f}): {n / seconds:>9,.0f} ids/s "
            f"({seconds:.2f} s, {done.requests} requests, {done.retries} retries); Braze's floor "
            f"for {done.requests} requests {floor:.2f} s: {seconds / floor:.3f}x (goal <= 1.10)"
        )
        print(f"  where the time went: {timing}")


def refresh_rounds(
    args: argparse.Namespace, db: str, n: int, churn: int, reuse: bool, workdir: str
) -> None:
    """A dry-run sync() (str ids in, the whole engine) against two Python sets of the ids."""
    rounds: dict[str, list[dict[str, object]]] = {"refresh": [], "sets": []}
    try:
        if not reuse:
            print(f"first    {measure('first', db, n, churn)}", flush=True)
        for _ in range(args.repeat):
            for kind in ("refresh", "sets"):
                rounds[kind].append(measure(kind, db, n, churn))
                print(f"{kind:<8} {rounds[kind][-1]}", flush=True)
    finally:
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    for kind in rounds:
        first = rounds[kind][0]
        assert (first["adds"], first["removes"]) == (churn, churn), (kind, first)

    def median(kind: str, field: str) -> float:
        return statistics.median(float(r[field]) for r in rounds[kind])  # type: ignore[arg-type]

    refresh, sets = median("refresh", "seconds"), median("sets", "seconds")
    refresh_cpu, sets_cpu = median("refresh", "cpu_seconds"), median("sets", "cpu_seconds")
    print(
        f"\nmedian of {args.repeat} round(s): dry-run sync() {refresh:.2f} s, two sets "
        f"{sets:.2f} s, ratio {refresh / sets:.2f} (goal <= 1.00); CPU {refresh_cpu:.2f} s "
        f"vs {sets_cpu:.2f} s, ratio {refresh_cpu / sets_cpu:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10_000_000)
    parser.add_argument("--churn", type=float, default=0.01, help="share that leaves (and enters)")
    parser.add_argument("--keep-dir", help="put the state file here and keep it")
    parser.add_argument("--skip-second", action="store_true", help="skip the full second sync")
    parser.add_argument("--reuse", action="store_true", help="keep the state file of --keep-dir")
    parser.add_argument("--repeat", type=int, default=1, help="delta/baseline rounds (median)")
    parser.add_argument("--e2e", action="store_true", help="first import over HTTP instead")
    parser.add_argument(
        "--rate", type=float, default=250_000, help="requests/hour for --e2e (Braze: 250,000)"
    )
    parser.add_argument(
        "--no-shared", action="store_true", help="--e2e without the shared workspace budget"
    )
    parser.add_argument(
        "--first-only", action="store_true", help="only the first import (null client)"
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="a dry-run sync() of the second membership (fed str ids) vs two sets of the ids",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--churn-count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.db, args.members, args.churn_count)))
        return

    if args.e2e:
        e2e(args.members, args.rate, shared=not args.no_shared)
        return
    n = args.members
    churn = round(n * args.churn)
    workdir = args.keep_dir or tempfile.mkdtemp(prefix="bench-delta-")
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, "state.db")
    reuse = args.reuse and os.path.exists(db)
    if not reuse:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    print(f"{n:,} members, {churn:,} leave and {churn:,} enter; state in {db}", flush=True)
    if args.first_only:
        try:
            first = measure("first", db, n, churn)
        finally:
            if not args.keep_dir:
                shutil.rmtree(workdir, ignore_errors=True)
        rate = n / float(first["seconds"])  # type: ignore[arg-type]
        print(
            f"first import of {n:,} members, null client: {float(first['seconds']):.1f} s "  # type: ignore[arg-type]
            f"= {rate:,.0f} ids/s (goal >= 150,000), peak RSS {first['peak_rss_mb']} MB "
            f"(goal <= 200)"
        )
        return
    if args.refresh:
        refresh_rounds(args, db, n, churn, reuse, workdir)
        return
    rounds: dict[str, list[dict[str, object]]] = {"delta": [], "baseline": []}
    try:
        if not reuse:
            print(f"first    {measure('first', db, n, churn)}", flush=True)
        for _ in range(args.repeat):
            for kind in ("delta", "baseline"):
                rounds[kind].append(measure(kind, db, n, churn))
                print(f"{kind:<8} {rounds[kind][-1]}", flush=True)
        if not args.skip_second:
            copy = os.path.join(workdir, "second.db")
            shutil.copyfile(db, copy)
            print(f"second   {measure('second', copy, n, churn)}", flush=True)
            os.remove(copy)
    finally:
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)

    def median(kind: str, field: str) -> float:
        return statistics.median(float(r[field]) for r in rounds[kind])  # type: ignore[arg-type]

    delta, base = rounds["delta"][0], rounds["baseline"][0]
    assert (delta["adds"], delta["removes"]) == (base["adds"], base["removes"]) == (churn, churn)
    ratio = median("delta", "seconds") / median("baseline", "seconds")
    rss = max(float(r["peak_rss_mb"]) for r in rounds["delta"])  # type: ignore[arg-type]
    print(
        f"\nmedian of {args.repeat} round(s)\n"
        f"delta of the second sync: {median('delta', 'seconds'):.1f} s, "
        f"peak RSS {rss:.1f} MB (largest)\n"
        f"two Python sets:          {median('baseline', 'seconds'):.1f} s, "
        f"peak RSS {median('baseline', 'peak_rss_mb'):.1f} MB\n"
        f"time ratio {ratio:.2f} (target <= 1.00): {'met' if ratio <= 1 else 'MISSED'}; "
        f"peak RSS target <= 200 MB: {'met' if rss <= 200 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
