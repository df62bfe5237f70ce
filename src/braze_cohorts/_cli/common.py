"""What every subcommand shares: logging, credentials from flags or the environment, errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ENV_DATA_IMPORT_KEY",
    "ENV_ENDPOINT",
    "ENV_PARTNER",
    "ENV_PARTNER_API_KEY",
    "ENV_STATE",
    "add_credential_args",
    "add_state_arg",
    "configure_logging",
    "fail",
    "state_path",
    "table",
]

ENV_ENDPOINT = "BRAZE_REST_ENDPOINT"
ENV_PARTNER = "BRAZE_PARTNER"
ENV_PARTNER_API_KEY = "BRAZE_PARTNER_API_KEY"
ENV_DATA_IMPORT_KEY = "BRAZE_DATA_IMPORT_KEY"
ENV_STATE = "BRAZE_COHORTS_STATE"
DEFAULT_STATE = Path(".braze_cohorts") / "state.db"


def configure_logging(verbosity: int) -> None:
    """Send the library's log records to stderr: WARNING by default, -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def add_credential_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--endpoint``, ``--partner`` and the two key flags (defaults from the environment)."""
    group = parser.add_argument_group("Braze connection (flags override the environment)")
    group.add_argument("--endpoint", help=f"cluster name or REST URL (env {ENV_ENDPOINT})")
    group.add_argument("--partner", help=f"partner name in the API path (env {ENV_PARTNER})")
    group.add_argument(
        "--partner-api-key", help=f"partner API key (env {ENV_PARTNER_API_KEY}); never echoed"
    )
    group.add_argument(
        "--data-import-key", help=f"data import key (env {ENV_DATA_IMPORT_KEY}); never echoed"
    )


def credentials(args: argparse.Namespace) -> dict[str, str]:
    """Resolve endpoint, partner and keys from flags, then the environment.

    Raises:
        ConfigurationError: If any of them is missing (naming the flag and variable, never a value).
    """
    from braze_cohorts.exceptions import ConfigurationError

    found: dict[str, str] = {}
    missing: list[str] = []
    for attr, env in (
        ("endpoint", ENV_ENDPOINT),
        ("partner", ENV_PARTNER),
        ("partner_api_key", ENV_PARTNER_API_KEY),
        ("data_import_key", ENV_DATA_IMPORT_KEY),
    ):
        value = getattr(args, attr, None) or os.environ.get(env, "")
        if value:
            found[attr] = value
        else:
            missing.append(f"--{attr.replace('_', '-')} / {env}")
    if missing:
        raise ConfigurationError("missing Braze settings: " + ", ".join(missing))
    return found


def add_state_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--state PATH``."""
    parser.add_argument(
        "--state",
        type=Path,
        help=f"state database (default: env {ENV_STATE}, else ./{DEFAULT_STATE})",
    )


def state_path(args: argparse.Namespace) -> Path:
    """The state database path: ``--state``, else ``$BRAZE_COHORTS_STATE``, else the default."""
    flag: Path | None = getattr(args, "state", None)
    if flag is not None:
        return flag
    env = os.environ.get(ENV_STATE)
    return Path(env) if env else DEFAULT_STATE


def fail(message: str, code: int = 2) -> int:
    """Print ``message`` to stderr as ``braze-cohorts: error: …`` and return ``code``."""
    print(f"braze-cohorts: error: {message}", file=sys.stderr)
    return code


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay out ``rows`` (the header first) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
