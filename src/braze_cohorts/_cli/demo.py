"""``braze-cohorts demo``: the whole job against the bundled emulator, no Braze account needed."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import braze_cohorts as bc
from braze_cohorts._cli.common import fail
from braze_cohorts._cli.sync import format_history, summary_line
from braze_cohorts.testing import BrazeEmulator

__all__ = ["register", "run_demo"]

_COHORT_ID = "power-users"
_NAME = "Power users"


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="import a sample cohort into the local emulator twice and show the history",
        description=(
            "Start the bundled Braze emulator on loopback, import a sample cohort, change its "
            "membership, import again (only the change travels) and print the history."
        ),
    )
    parser.add_argument("--users", type=int, default=5_000, help="sample cohort size (5,000)")
    parser.add_argument(
        "--state", type=Path, help="keep the state database here (default: a temporary folder)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.users < 10:
        return fail("--users must be at least 10", 2)
    if args.state is not None:
        state: Path = args.state.expanduser()
        if not state.parent.is_dir():
            return fail(
                f"cannot create the state database {state}: {state.parent} is not a directory", 2
            )
        return run_demo(args.users, state)
    with tempfile.TemporaryDirectory(prefix="braze-cohorts-demo-") as tmp:
        return run_demo(args.users, Path(tmp) / "state.db")


def run_demo(size: int, state: Path, *, echo: Any = print) -> int:
    """Run the demo with a cohort of ``size`` users and the state database at ``state``.

    Returns:
        0 when Braze (the emulator) ends up holding exactly the desired members, else 1.
    """
    with BrazeEmulator() as braze:
        known = braze.add_users(size * 2, prefix="user-")
        anonymous = [f"device-{i}" for i in range(size // 10)]
        for device in anonymous:
            braze.add_user(device_ids=[device])
        echo(f"Braze emulator at {braze.url} with {len(known) + len(anonymous):,} known users")

        first = [{"external_id": uid} for uid in known[:size]]
        first += [{"device_id": d} for d in anonymous]
        first.append({"external_id": " padded "})  # rejected: surrounding whitespace
        # One in ten leaves, as many new users enter.
        churn = size // 10
        second = first[churn:size] + [{"external_id": uid} for uid in known[size : size + churn]]
        second += [{"device_id": d} for d in anonymous]

        store = bc.SQLiteStore(state)
        try:
            with bc.CohortClient(
                braze.url,
                partner=braze.partner,
                partner_api_key=braze.partner_api_key,
                data_import_key=braze.data_import_key,
            ) as client:
                syncer = bc.CohortSync(client, store)
                for label, members in (("first import", first), ("second import", second)):
                    run = syncer.sync(_COHORT_ID, _NAME, members)
                    echo(f"{label}: {summary_line(run)}")
                echo("")
                echo(f"history of {_COHORT_ID}:")
                echo(format_history(syncer.history(_COHORT_ID)))
        finally:
            store.close()

        expected = {("external_id", r["external_id"]) for r in second if "external_id" in r}
        expected |= {("device_id", r["device_id"]) for r in second if "device_id" in r}
        held = set(braze.members(_COHORT_ID))
        echo("")
        if held == expected:
            echo(f"Braze holds exactly the {len(held):,} desired members of {_NAME!r}.")
            return 0
        echo(f"MISMATCH: Braze holds {len(held):,} members, {len(expected):,} desired.")
        return 1
