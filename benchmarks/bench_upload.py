"""Upload benchmark: BatchUploader against a hand-written requests.post loop, side by side.

The Braze emulator runs in a separate process (so its CPU is not counted), with 200,000 known
users. Two measurements, in one run:

1. 0 ms latency: client CPU seconds (``time.process_time`` of this process, all threads) per
   1,000 ids, for the uploader and for a sequential loop of ``requests.Session.post`` calls in
   chunks of 1,000 ids. Goal: the uploader costs no more CPU per id than the loop.
2. 100 ms latency per request, client limit 360,000 requests/hour (100/s): the request rate the
   server saw (goal: at least 95 % of the limit, and never above it, also over any 1-second
   window) and the uploader's ids/s against the sequential loop's (goal: at least 8 times).

Run from the repository root::

    .venv/bin/python benchmarks/bench_upload.py

Options: ``--ids`` (200,000), ``--rounds`` (3), ``--concurrency`` (16), ``--loop-ids``
(ids the sequential loop sends in part 2; its rate is flat, so a slice suffices; 20,000).

``--send-paths`` adds a diagnostic: client CPU per 1,000-id request of the three ways to hand a
prepared request to ``requests`` (``session.post``, ``Session.send``, the adapter's ``send``),
interleaved over nine rounds, so the cost of ``CohortClient`` sending through ``Session.send``
(which honours a caller's hooks, auth, mounts and cookies) is measured apart from the noise of
the full uploads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters

from braze_cohorts import BatchUploader, CohortClient
from braze_cohorts.testing import BrazeEmulator

COHORT = "bench"
PREFIX = "u"


# -- the emulator's process ---------------------------------------------------------------------


def serve(conn: multiprocessing.connection.Connection, users: int) -> None:
    """Run the emulator and answer commands from the benchmark until told to stop."""
    emulator = BrazeEmulator()
    emulator.add_users(users, prefix=PREFIX)
    emulator.start()
    conn.send(
        {
            "url": emulator.url,
            "partner": emulator.partner,
            "partner_api_key": emulator.partner_api_key,
            "data_import_key": emulator.data_import_key,
            "pid": os.getpid(),
        }
    )
    while True:
        command, arg = conn.recv()
        if command == "latency":
            emulator.set_latency(arg)
            conn.send(None)
        elif command == "reset":
            emulator.reset_log()
            conn.send(None)
        elif command == "log":
            conn.send(
                [
                    (r.received_at, r.status, r.ids)
                    for r in emulator.request_log
                    if r.endpoint == "users"
                ]
            )
        elif command == "members":
            try:
                conn.send(len(emulator.members(COHORT)))
            except KeyError:
                conn.send(0)
        elif command == "stop":
            emulator.stop()
            conn.send(None)
            return


class Server:
    """The benchmark's handle on the emulator process."""

    def __init__(self, users: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, users), daemon=True)
        self.process.start()
        self.info: dict[str, Any] = self.conn.recv()

    def call(self, command: str, arg: object = None) -> Any:
        self.conn.send((command, arg))
        return self.conn.recv()

    def close(self) -> None:
        self.call("stop")
        self.process.join(10)


# -- the two senders ----------------------------------------------------------------------------


def chunks(ids: list[str], size: int = 1000) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def hand_loop(info: dict[str, Any], ids: list[str], *, remove: bool = False) -> None:
    """The baseline: one keep-alive session, one ``post`` per 1,000 ids, in sequence."""
    url = f"{info['url']}/partners/{info['partner']}/cohorts/users"
    with requests.Session() as session:
        for chunk in chunks(ids):
            change: dict[str, object] = {"user_ids": chunk}
            if remove:
                change["should_remove"] = True
            body = {
                "partner_api_key": info["partner_api_key"],
                "client_secret": info["data_import_key"],
                "cohort_id": COHORT,
                "cohort_changes": [change],
            }
            response = session.post(url, json=body, timeout=30)
            response.raise_for_status()


class TimedAdapter(requests.adapters.HTTPAdapter):
    """A transport adapter that notes when each request starts (the client side of the rate)."""

    def __init__(self) -> None:
        super().__init__(pool_maxsize=64, max_retries=0)
        self.starts: list[float] = []

    def send(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.starts.append(time.time())  # list.append is atomic under the GIL
        return super().send(*args, **kwargs)


class TimedSession(requests.Session):
    """A session whose requests all go through one :class:`TimedAdapter`."""

    def __init__(self) -> None:
        super().__init__()
        self.adapter = TimedAdapter()
        self.mount("http://", self.adapter)

    @property
    def starts(self) -> list[float]:
        return self.adapter.starts


def make_client(info: dict[str, Any], session: requests.Session | None = None) -> CohortClient:
    return CohortClient(
        info["url"],
        partner=info["partner"],
        partner_api_key=info["partner_api_key"],
        data_import_key=info["data_import_key"],
        session=session,
    )


def client_loop(info: dict[str, Any], ids: list[str]) -> None:
    """The client alone: ``CohortClient.update_members`` per 1,000 ids, in sequence."""
    with make_client(info) as client:
        for chunk in chunks(ids):
            client.update_members(COHORT, add=chunk)


def uploader_run(
    info: dict[str, Any],
    ids: list[str],
    *,
    remove: bool = False,
    concurrency: int,
    requests_per_hour: float,
    session: requests.Session | None = None,
) -> None:
    """The library: a CohortClient and a BatchUploader."""
    with make_client(info, session) as client:
        uploader = BatchUploader(
            client, concurrency=concurrency, requests_per_hour=requests_per_hour
        )
        report = (
            uploader.upload(COHORT, remove=iter(ids))
            if remove
            else uploader.upload(COHORT, add=iter(ids))
        )
    if not report.ok:
        raise SystemExit(f"upload failed: {len(report.failed_batches)} failed batches")


def send_paths(info: dict[str, Any], requests_per_round: int = 300) -> dict[str, float]:
    """Median client CPU microseconds per 1,000-id request for each way of sending it."""
    url = f"{info['url']}/partners/{info['partner']}/cohorts/users"
    body = json.dumps(
        {
            "partner_api_key": info["partner_api_key"],
            "client_secret": info["data_import_key"],
            "cohort_id": COHORT,
            "cohort_changes": [{"user_ids": [f"{PREFIX}{i}" for i in range(1000)]}],
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=4, max_retries=0))
    template = session.prepare_request(requests.Request("POST", url, headers=headers))
    settings = dict(session.merge_environment_settings(url, {}, None, None, None))
    settings.pop("stream", None)

    def prepared() -> requests.PreparedRequest:
        request = template.copy()
        request.prepare_body(body, None)
        return request

    def via_post() -> None:
        _ = session.post(url, data=body, headers=headers, timeout=30).content

    def via_session_send() -> None:
        response = session.send(
            prepared(), allow_redirects=False, stream=False, timeout=(5, 30), **settings
        )
        _ = response.content

    def via_adapter() -> None:
        adapter = session.get_adapter(url)
        _ = adapter.send(prepared(), stream=False, timeout=(5, 30), **settings).content

    ways = {
        "session.post": via_post,
        "Session.send": via_session_send,
        "adapter.send": via_adapter,
    }
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for send in ways.values():
        for _ in range(50):
            send()
    for _ in range(9):
        for name, send in ways.items():
            started = time.process_time()
            for _ in range(requests_per_round):
                send()
            cpu[name].append((time.process_time() - started) / requests_per_round * 1e6)
    session.close()
    return {name: statistics.median(values) for name, values in cpu.items()}


def measure(run: Callable[[], None]) -> tuple[float, float]:
    """Return (client CPU seconds, wall seconds) of ``run``."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def max_in_window(times: list[float], window: float) -> int:
    """The most requests whose times fall in any half-open window ``(t - window, t]``."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the benchmark ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--loop-ids", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--limit", type=float, default=360_000, help="client requests/hour")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--send-paths", action="store_true", help="also compare the ways to send a request"
    )
    args = parser.parse_args(argv)

    ids = [f"{PREFIX}{i}" for i in range(args.ids)]
    server = Server(args.ids)
    info = server.info
    figures: dict[str, float] = {}
    try:
        print(
            f"Upload benchmark: {args.ids:,} external ids; emulator in a separate process "
            f"(pid {info['pid']}); Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"requests {requests.__version__}"
        )
        # Warm-up: imports, connection set-up, first-call costs.
        hand_loop(info, ids[:5000])
        uploader_run(info, ids[:5000], concurrency=args.concurrency, requests_per_hour=1e9)
        hand_loop(info, ids[:5000], remove=True)

        # 1) 0 ms latency: CPU per 1,000 ids, rounds interleaved so drift hits both alike.
        loop_cpu: list[float] = []
        up_cpu: list[float] = []
        client_cpu: list[float] = []
        loop_wall: list[float] = []
        up_wall: list[float] = []
        for _ in range(args.rounds):
            cpu, wall = measure(lambda: hand_loop(info, ids))
            loop_cpu.append(cpu)
            loop_wall.append(wall)
            hand_loop(info, ids, remove=True)
            cpu, _ = measure(lambda: client_loop(info, ids))
            client_cpu.append(cpu)
            hand_loop(info, ids, remove=True)
            cpu, wall = measure(
                lambda: uploader_run(info, ids, concurrency=args.concurrency, requests_per_hour=1e9)
            )
            up_cpu.append(cpu)
            up_wall.append(wall)
            members = server.call("members")
            if members != args.ids:
                raise SystemExit(f"the emulator holds {members} members, not {args.ids}")
            hand_loop(info, ids, remove=True)
        per_k = 1000 / args.ids
        loop_k = statistics.median(loop_cpu) * per_k
        up_k = statistics.median(up_cpu) * per_k
        client_k = statistics.median(client_cpu) * per_k
        figures.update(
            client_loop_cpu_per_1000=client_k,
            loop_cpu_per_1000=loop_k,
            uploader_cpu_per_1000=up_k,
            cpu_ratio=up_k / loop_k,
            loop_wall_0ms=statistics.median(loop_wall),
            uploader_wall_0ms=statistics.median(up_wall),
        )
        print()
        print(f"1) 0 ms latency: client CPU seconds per 1,000 ids (median of {args.rounds} rounds)")
        print(
            f"   requests.post loop (sequential)     {loop_k * 1000:8.3f} ms   "
            f"wall {statistics.median(loop_wall):6.2f} s"
        )
        print(
            f"   BatchUploader (concurrency {args.concurrency:>2})      {up_k * 1000:8.3f} ms   "
            f"wall {statistics.median(up_wall):6.2f} s"
        )
        print(
            f"   ratio uploader / loop                {up_k / loop_k:8.2f}      goal <= 1.00  "
            f"{verdict(up_k <= loop_k)}"
        )
        print(
            f"   (diagnostic: CohortClient.update_members in sequence, no uploader: "
            f"{client_k * 1000:.3f} ms = {client_k / loop_k:.2f}x the loop)"
        )

        # 2) 100 ms latency, client limit 100/s.
        server.call("latency", args.latency)
        loop_slice = ids[: args.loop_ids]
        server.call("reset")
        _, loop_seconds = measure(lambda: hand_loop(info, loop_slice))
        loop_ids_per_s = len(loop_slice) / loop_seconds
        hand_loop(info, loop_slice, remove=True)
        server.call("reset")
        session = TimedSession()
        _, up_seconds = measure(
            lambda: uploader_run(
                info,
                ids,
                concurrency=args.concurrency,
                requests_per_hour=args.limit,
                session=session,
            )
        )
        session.close()
        client_max_1s = max_in_window(session.starts, 1.0)
        log = server.call("log")
        members = server.call("members")
        if members != args.ids or any(status != 200 for _, status, _ in log):
            raise SystemExit("the paced upload did not deliver every id")
        times = sorted(t for t, _, _ in log)
        limit_per_s = args.limit / 3600
        rate = (len(times) - 1) / (times[-1] - times[0])
        max_1s = max_in_window(times, 1.0)
        up_ids_per_s = args.ids / up_seconds
        figures.update(
            requests=len(times),
            limit_per_s=limit_per_s,
            server_rate=rate,
            rate_share=rate / limit_per_s,
            max_in_1s=max_1s,
            client_max_in_1s=client_max_1s,
            uploader_ids_per_s=up_ids_per_s,
            loop_ids_per_s=loop_ids_per_s,
            speedup=up_ids_per_s / loop_ids_per_s,
        )
        print()
        print(
            f"2) {args.latency * 1000:.0f} ms latency per request, client limit "
            f"{args.limit:,.0f} requests/hour ({limit_per_s:.0f}/s), concurrency "
            f"{args.concurrency}"
        )
        print(
            f"   server-side request rate             {rate:8.1f}/s = {rate / limit_per_s:6.1%} "
            f"of the limit   goal >= 95% and <= 100%  "
            f"{verdict(0.95 <= rate / limit_per_s <= 1.0)}"
        )
        print(
            f"   most requests in any 1 s window      {max_1s:8d}   (limit {limit_per_s:.0f})"
            f"            goal <= limit  {verdict(max_1s <= limit_per_s)}"
        )
        print(f"   (diagnostic: the same, by the client's own post() start times: {client_max_1s})")
        print(
            f"   ids/s uploader vs sequential loop    {up_ids_per_s:8,.0f} vs "
            f"{loop_ids_per_s:,.0f} = {up_ids_per_s / loop_ids_per_s:.1f}x"
            f"      goal >= 8x  {verdict(up_ids_per_s >= 8 * loop_ids_per_s)}"
        )
        print(
            f"   ({len(times)} requests in {up_seconds:.2f} s; the loop sent "
            f"{len(loop_slice):,} ids in {loop_seconds:.2f} s)"
        )
        if args.send_paths:
            server.call("latency", 0.0)
            paths = send_paths(info)
            figures.update({f"send_path_us_{k}": v for k, v in paths.items()})
            print()
            print("3) client CPU per 1,000-id request by send path (median of 9 rounds of 300)")
            for name, micros in paths.items():
                print(f"   {name:<36} {micros:8.1f} us")
        if args.json:
            print(json.dumps(figures, indent=2))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
