"""What every subcommand shares: logging, credentials from flags or the environment, errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

import braze_cohorts as bc

__all__ = [
    "ENV_DATA_IMPORT_KEY",
    "ENV_ENDPOINT",
    "ENV_PARTNER",
    "ENV_PARTNER_API_KEY",
    "ENV_STATE",
    "ENV_STORE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "add_credential_args",
    "add_state_arg",
    "configure_logging",
    "default_state_path",
    "fail",
    "open_state",
    "open_store",
    "run_command",
    "state_path",
    "table",
]

ENV_ENDPOINT = "BRAZE_REST_ENDPOINT"
ENV_PARTNER = "BRAZE_PARTNER"
ENV_PARTNER_API_KEY = "BRAZE_PARTNER_API_KEY"
ENV_DATA_IMPORT_KEY = "BRAZE_DATA_IMPORT_KEY"
ENV_STATE = "BRAZE_COHORTS_STATE"
ENV_STORE = "BRAZE_COHORTS_STORE"
_APP_DIR = "braze-cohorts"
_STATE_FILE = "state.db"


def default_state_path() -> Path:
    r"""The state database used when neither ``--state`` nor ``$BRAZE_COHORTS_STATE`` is given.

    It lives in the user's state directory, never in the working directory (a cron line that
    forgot its ``cd`` must find the same state): ``$XDG_STATE_HOME/braze-cohorts/state.db``,
    else ``~/.local/state/braze-cohorts/state.db``; on Windows
    ``%LOCALAPPDATA%\braze-cohorts\state.db``.
    """
    return Path(_default_state_path(windows=os.name == "nt", home=str(Path.home())))


def _default_state_path(*, windows: bool, home: str) -> PurePath:
    if windows:
        local = os.environ.get("LOCALAPPDATA", "")
        base = PureWindowsPath(local) if local else PureWindowsPath(home, "AppData", "Local")
        return base / _APP_DIR / _STATE_FILE
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG specification says a relative path is invalid and must be ignored.
    posix = PurePosixPath(xdg) if xdg and PurePosixPath(xdg).is_absolute() else None
    return (posix or PurePosixPath(home, ".local", "state")) / _APP_DIR / _STATE_FILE


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


def add_state_arg(
    parser: argparse.ArgumentParser, *, creates: bool = False, sql_store: bool = False
) -> None:
    """Add ``--state PATH`` (and ``--create-state-dir`` to commands that may create the file).

    ``sql_store`` adds ``--store URL`` too: the state in a database (:class:`bc.SQLStore`).
    """
    parser.add_argument(
        "--state",
        type=Path,
        help=f"state database (default: env {ENV_STATE}, else "
        "$XDG_STATE_HOME/braze-cohorts/state.db or ~/.local/state/braze-cohorts/state.db)",
    )
    if sql_store:
        parser.add_argument(
            "--store",
            metavar="URL",
            help=f"keep the state in this database instead, a SQLAlchemy URL such as "
            f"postgresql+psycopg://host/db (default: env {ENV_STORE}; see docs/warehouse.md)",
        )
    if creates:
        parser.add_argument(
            "--create-state-dir",
            action="store_true",
            help="create the state database's missing directories (0700); without it a "
            "--state or $BRAZE_COHORTS_STATE in a missing directory is refused",
        )


def _state_location(args: argparse.Namespace) -> tuple[Path, bool]:
    """The state database path and whether it is the default one."""
    flag: Path | None = getattr(args, "state", None)
    if flag is not None:
        return flag.expanduser(), False
    env = os.environ.get(ENV_STATE)
    if env:
        return Path(env).expanduser(), False
    return default_state_path(), True


def state_path(args: argparse.Namespace) -> Path:
    """The state database path: ``--state``, else ``$BRAZE_COHORTS_STATE``, else the default."""
    return _state_location(args)[0]


def open_state(
    args: argparse.Namespace, *, write: bool, create: bool = False
) -> bc.SQLiteStore | bc.SQLStore:
    """:func:`open_store`, or the :class:`bc.SQLStore` that ``--store URL`` names.

    ``$BRAZE_COHORTS_STORE`` stands for ``--store`` in commands that take it. The store's tables
    are created in that database when missing.
    """
    url = getattr(args, "store", None) or (
        os.environ.get(ENV_STORE) if hasattr(args, "store") else None
    )
    if not url:
        return open_store(args, write=write, create=create)
    try:
        return bc.SQLStore(url)
    except bc.StoreError as exc:
        raise bc.ConfigurationError(str(exc)) from exc


def open_store(args: argparse.Namespace, *, write: bool, create: bool = False) -> bc.SQLiteStore:
    """Open the state database the command was given.

    A command that only reads (``write=False``) opens it read-only. Only a command that may
    create it (``create=True``: ``sync``, ``schedule set``) creates a missing file (0600),
    and not, unless ``--create-state-dir`` was given, a missing directory: a typo in
    ``--state`` must not start a fresh state silently. The default location's directory is
    always created (0700).

    Raises:
        ConfigurationError: If the database is missing, empty, in a missing directory, or
            cannot be opened (the message names the path).
    """
    path, is_default = _state_location(args)
    if not path.exists():
        if not create:
            hint = "" if is_default else f" (from --state or {ENV_STATE})"
            raise bc.ConfigurationError(
                f"no state database at {path}{hint}: nothing was imported or scheduled with "
                "this state yet; check the path"
            )
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise bc.ConfigurationError(
                f"cannot create the state database {path}: {parent} is not a directory"
            )
        if not parent.exists() and not (is_default or getattr(args, "create_state_dir", False)):
            raise bc.ConfigurationError(
                f"cannot create the state database {path}: its directory {parent} does not "
                "exist; check the path, or pass --create-state-dir to create it"
            )
    try:
        return bc.SQLiteStore(path, read_only=not write)
    except bc.StoreError as exc:
        raise bc.ConfigurationError(str(exc)) from exc


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


#: Exit codes of every command (docs/cli.md lists them per command).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(SystemExit):
    """Raised in the main thread when the process gets SIGTERM, to stop like Ctrl-C does.

    A ``SystemExit`` so that the sync engine records the run as ``interrupted``, releases the
    cohort's lock and re-raises it, like a ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        super().__init__(EXIT_TERMINATED)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into :class:`Terminated`; ignore repeats while cleaning up."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand's handler; turn every error and signal into one line and an exit code.

    ``KeyboardInterrupt`` exits 130 and SIGTERM 143, after the import in progress (if any)
    was recorded as ``interrupted`` and its lock released. Library errors exit 2 when they
    are about the command's input (configuration, input files, schedules) and 1 otherwise; an
    ``OSError`` (a path that cannot be used) exits 2. A traceback is printed only with -vv.
    """
    verbose = int(getattr(args, "verbose", 0) or 0)
    try:
        with _sigterm_raises():
            return handler(args)
    except KeyboardInterrupt:
        _trace(verbose)
        print("braze-cohorts: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        _trace(verbose)
        print("braze-cohorts: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except bc.BrazeCohortsError as exc:
        _trace(verbose)
        return fail(_one_line(exc), EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILED)
    except OSError as exc:
        _trace(verbose)
        return fail(_one_line(exc), EXIT_USAGE)


def _trace(verbose: int) -> None:
    if verbose >= 2:
        traceback.print_exc()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
