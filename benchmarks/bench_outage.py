"""Outage benchmark: how long a large upload takes against a Braze that is down.

``BatchUploader`` with its defaults (16 threads, ``DEFAULT_RETRY``, ``DEFAULT_BREAKER``, no
deadline) uploads ``--ids`` external ids through a real ``CohortClient`` to the Braze emulator,
which either answers 503 to every request (``--mode 503``) or accepts every request and never
answers (``--mode hang``; each attempt then waits for the client's read timeout, ``--timeout``).
Real time, real sleeps: this measures what a user would wait. Pass ``--no-breaker`` to see the
behaviour without the breaker (long: about 18 minutes for 503 and hours for a hang at 2M ids).

Run from the repository root::

    .venv/bin/python benchmarks/bench_outage.py --mode 503
    .venv/bin/python benchmarks/bench_outage.py --mode hang --timeout 30
"""

from __future__ import annotations

import argparse
import sys
import time

from braze_cohorts import BatchUploader, CircuitOpenError, CohortClient
from braze_cohorts.testing import BrazeEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["503", "hang"], default="503")
    parser.add_argument("--ids", type=int, default=2_000_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="client read timeout (s)")
    parser.add_argument("--no-breaker", action="store_true")
    args = parser.parse_args(argv)

    with BrazeEmulator(latency=3_600.0 if args.mode == "hang" else 0.0) as emulator:
        if args.mode == "503":
            emulator.fail_next(10**9, 503, path="/cohorts/users")
        with CohortClient(
            emulator.url,
            partner=emulator.partner,
            partner_api_key=emulator.partner_api_key,
            data_import_key=emulator.data_import_key,
            timeout=(5.0, args.timeout),
        ) as client:
            uploader = (
                BatchUploader(client, breaker=None) if args.no_breaker else BatchUploader(client)
            )
            started = time.monotonic()
            report = uploader.upload("outage", add=(f"u{i}" for i in range(args.ids)))
            wall = time.monotonic() - started
    rule = next(
        (f.error.rule for f in report.failed_batches if isinstance(f.error, CircuitOpenError)),
        None,
    )
    print(
        f"{args.mode} (read timeout {args.timeout:g} s), {args.ids:,} ids: {wall:.1f} s, "
        f"{report.requests:,} requests, {len(report.failed_batches):,} failed batches, "
        f"stopped_reason={report.stopped_reason}, rule={rule}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
