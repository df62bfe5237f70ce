"""``braze-cohorts emulator``: serve the local Braze emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from braze_cohorts._cli.common import (
    ENV_DATA_IMPORT_KEY,
    ENV_ENDPOINT,
    ENV_PARTNER,
    ENV_PARTNER_API_KEY,
    fail,
)
from braze_cohorts.testing import BrazeEmulator

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``emulator`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run a local Braze partner cohort API emulator (for tests and demos)",
        description=(
            "Serve a local emulator of Braze's partner cohort import API until Ctrl-C or "
            "SIGTERM. Prints its URL and its (test-only) keys as shell export lines."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one (8080)"
    )
    parser.add_argument(
        "--partner",
        action="append",
        help="partner name served at /partners/NAME/... (repeatable; default kubit)",
    )
    parser.add_argument(
        "--region", choices=("US", "EU", "AU"), default="US", help="partner-key region (US)"
    )
    parser.add_argument("--users", type=Path, help="users.json with the known users (see docs)")
    parser.add_argument(
        "--add-users", type=int, default=0, metavar="N", help="also add N users PREFIX0..PREFIXN-1"
    )
    parser.add_argument("--prefix", default="user-", help="external id prefix for --add-users")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="up to this many more seconds")
    parser.add_argument(
        "--requests-per-hour", type=int, help="answer 429 past this many requests per hour"
    )
    parser.add_argument("--partner-api-key", help="use this partner API key (default: random)")
    parser.add_argument("--data-import-key", help="use this data import key (default: random)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to reach it, and serve until interrupted."""
    try:
        emulator = BrazeEmulator(
            host=args.host,
            port=args.port,
            partner=args.partner or "kubit",
            region=args.region,
            latency=args.latency,
            jitter=args.jitter,
            requests_per_hour=args.requests_per_hour,
            partner_api_key=args.partner_api_key,
            data_import_key=args.data_import_key,
        )
        users = emulator.load_users(args.users) if args.users else 0
        users += len(emulator.add_users(args.add_users, prefix=args.prefix))
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    try:
        emulator.start()
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_signal) if in_main else None
    try:
        print(
            f"Braze emulator listening on {emulator.url} "
            f"(partner {emulator.partner}, region {emulator.region}, {users} users)"
        )
        print(f"export {ENV_ENDPOINT}={emulator.url}")
        print(f"export {ENV_PARTNER}={emulator.partner}")
        print(f"export {ENV_PARTNER_API_KEY}={emulator.partner_api_key}")
        print(f"export {ENV_DATA_IMPORT_KEY}={emulator.data_import_key}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    print("Braze emulator stopped.", file=sys.stderr)
    return 0
