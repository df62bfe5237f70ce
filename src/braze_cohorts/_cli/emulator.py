"""``braze-cohorts emulator``: serve the local Braze emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import urllib.parse
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
        "--requests-per-hour",
        "--rate-limit",
        dest="requests_per_hour",
        type=int,
        metavar="N",
        help="answer 429 past N requests per hour (sliding window)",
    )
    parser.add_argument(
        "--rate-limit-window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="the rate limit's sliding window (3600)",
    )
    parser.add_argument("--partner-api-key", help="use this partner API key (default: random)")
    parser.add_argument("--data-import-key", help="use this data import key (default: random)")
    parser.add_argument(
        "--partner-not-enabled",
        action="store_true",
        help="the default workspace does not enable the partner (every request gets 401)",
    )
    faults = parser.add_argument_group(
        "faults at start (more at any time through the admin API, see docs/testing.md)"
    )
    faults.add_argument(
        "--fail", type=int, default=0, metavar="N", help="answer the first N requests with --status"
    )
    faults.add_argument(
        "--status", type=int, default=503, help="the status of --fail answers (503)"
    )
    faults.add_argument(
        "--retry-after", type=float, metavar="SECONDS", help="Retry-After of --fail answers"
    )
    faults.add_argument(
        "--drop",
        type=int,
        default=0,
        metavar="N",
        help="then close N connections without answering, applying nothing",
    )
    faults.add_argument(
        "--drop-after-apply",
        type=int,
        default=0,
        metavar="N",
        help="then apply N requests but close without answering (outcome unknown)",
    )
    faults.add_argument(
        "--succeed-with-errors",
        type=int,
        default=0,
        metavar="N",
        help='then apply N requests and answer 200 {"message": "success", "errors": [...]}',
    )
    faults.add_argument(
        "--fault-path",
        metavar="SUFFIX",
        help="faults only hit paths ending with this (e.g. /cohorts/users)",
    )
    parser.add_argument(
        "--no-admin", action="store_true", help="do not serve the admin HTTP API at /_emulator/"
    )
    parser.set_defaults(handler=run)


def _emulator(args: argparse.Namespace) -> tuple[BrazeEmulator, int]:
    """The emulator the arguments describe, with its users and faults, and its user count."""
    emulator = BrazeEmulator(
        host=args.host,
        port=args.port,
        partner=args.partner or "kubit",
        region=args.region,
        latency=args.latency,
        jitter=args.jitter,
        requests_per_hour=args.requests_per_hour,
        rate_limit_window=args.rate_limit_window,
        partner_api_key=args.partner_api_key,
        data_import_key=args.data_import_key,
        admin=not args.no_admin,
    )
    if args.partner_not_enabled:
        for partner in emulator.partners:
            emulator.workspace.disable_partner(partner)
    users = emulator.load_users(args.users) if args.users else 0
    users += len(emulator.add_users(args.add_users, prefix=args.prefix))
    counts = (args.fail, args.drop, args.drop_after_apply, args.succeed_with_errors)
    if any(n < 0 for n in counts):
        raise ValueError("fault counts must not be negative")
    path = args.fault_path
    if args.fail:
        emulator.fail_next(args.fail, args.status, retry_after=args.retry_after, path=path)
    if args.drop:
        emulator.drop_next(args.drop, path=path)
    if args.drop_after_apply:
        emulator.drop_next(args.drop_after_apply, when="after_apply", path=path)
    if args.succeed_with_errors:
        emulator.succeed_with_errors_next(args.succeed_with_errors, path=path)
    return emulator, users


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to reach it, and serve until interrupted."""
    try:
        emulator, users = _emulator(args)
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
        wildcard = urllib.parse.urlsplit(emulator.url).hostname != emulator.host
        bound = f", bound to {emulator.host}" if wildcard else ""
        print(
            f"Braze emulator listening on {emulator.url} "
            f"(partner {emulator.partner}, region {emulator.region}, {users} users{bound})"
        )
        print(f"export {ENV_ENDPOINT}={emulator.url}")
        print(f"export {ENV_PARTNER}={emulator.partner}")
        print(f"export {ENV_PARTNER_API_KEY}={emulator.partner_api_key}")
        print(f"export {ENV_DATA_IMPORT_KEY}={emulator.data_import_key}")
        if not args.no_admin:
            print(f"Admin API: {emulator.admin_url}/ (see docs/testing.md)")
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
