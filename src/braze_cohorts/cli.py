"""The ``braze-cohorts`` command line.

Each subcommand lives in its own private module under ``braze_cohorts._cli`` and exposes
``register(subparsers)``; this module only assembles them. The CLI calls the public API only.

Exit codes: 0 success, 1 the import (or command) failed, 2 usage or configuration error, 130
interrupted (Ctrl-C), 143 terminated (SIGTERM); see docs/cli.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from braze_cohorts import __version__

__all__ = ["main"]

# Subcommand modules, in the order they appear in --help. Every one must exist: a missing
# module is a broken installation and fails loudly, never a silently shorter command line.
_COMMAND_MODULES = (
    "braze_cohorts._cli.sync",
    "braze_cohorts._cli.check",
    "braze_cohorts._cli.schedule",
    "braze_cohorts._cli.profile",
    "braze_cohorts._cli.scheduler",
    "braze_cohorts._cli.emulator",
    "braze_cohorts._cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand registered.

    Raises:
        ImportError: If a subcommand module is missing (a broken installation).
    """
    parser = argparse.ArgumentParser(
        prog="braze-cohorts",
        description="Keep Braze partner cohorts equal to a membership that lives elsewhere.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v INFO, -vv DEBUG)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ImportError(
                f"braze-cohorts is installed incompletely: the subcommand module {module_name} "
                f"cannot be imported ({exc}); reinstall the package"
            ) from exc
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from braze_cohorts._cli.common import configure_logging, run_command

    configure_logging(args.verbose)
    return run_command(args.handler, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
