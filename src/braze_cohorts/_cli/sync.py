"""``braze-cohorts sync FILE`` and ``braze-cohorts history ID``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs

import braze_cohorts as bc
from braze_cohorts._cli.common import (
    add_credential_args,
    add_state_arg,
    credentials,
    fail,
    open_state,
    table,
)
from braze_cohorts._cli.progress import ProgressBar, estimate_records

__all__ = ["add_json_arg", "print_run_json", "register", "run_to_json"]


def register(subparsers: Any) -> None:
    """Add the ``sync`` and ``history`` subcommands."""
    sync = subparsers.add_parser(
        "sync",
        help="import a cohort from a file, standard input or a SQL query (only the changes travel)",
        description=(
            "Make the Braze cohort ID hold exactly the users in FILE (- for standard input) or "
            "in the rows of --query / --query-file. A file is CSV/TSV (a header with any of "
            "external_id, alias_name, alias_label, device_id), JSON Lines, JSON or Parquet. "
            "Only users who entered or left since the last import are sent. With "
            "--cohort-column, each cohort the source holds is imported as its own run."
        ),
    )
    sync.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="members: .csv, .tsv, .jsonl, .json, .parquet (optionally .gz/.bz2/.xz), or - for "
        "standard input (with --format); omitted with --query or --query-file",
    )
    add_source_args(sync)
    many = sync.add_argument_group("many cohorts in one pass")
    many.add_argument(
        "--cohort-column",
        metavar="COLUMN",
        help="import each cohort the source holds as its own run, by this column "
        "(--cohort-id and --name are then not given); cohorts absent from the source are not "
        "touched",
    )
    many.add_argument(
        "--name-column",
        metavar="COLUMN",
        help="with --cohort-column: the column holding each cohort's name (default: the "
        "cohort id is its name)",
    )
    many.add_argument(
        "--remove-missing",
        action="append",
        default=[],
        metavar="ID",
        help="with --cohort-column: empty cohort ID when the source holds none of its "
        "members (never done unless asked; repeatable)",
    )
    sync.add_argument("--cohort-id", help="the cohort's id (partner-chosen)")
    sync.add_argument("--name", help="the cohort's name shown in Braze")
    sync.add_argument("--dry-run", action="store_true", help="compute the change, send nothing")
    sync.add_argument("--plan-out", type=Path, help="write the planned changes to this CSV file")
    sync.add_argument("--rejects-out", type=Path, help="write rejected records to this CSV file")
    sync.add_argument(
        "--alias-label",
        help="match users by alias with this label; the alias name is read from --alias-field",
    )
    sync.add_argument(
        "--alias-field",
        default="alias_name",
        help="column holding alias names (default alias_name)",
    )
    sync.add_argument(
        "--full-resync",
        action="store_true",
        help="re-send every member, whatever the state says (heals users Braze ignored and "
        "edits made in Braze)",
    )
    sync.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="let this import remove more than half of the cohort (refused otherwise)",
    )
    sync.add_argument(
        "--max-rejected",
        type=_fraction,
        default=bc.DEFAULT_MAX_REJECT_FRACTION,
        metavar="FRACTION",
        help="refuse the import when more than this share of the records cannot be matched "
        f"(default {bc.DEFAULT_MAX_REJECT_FRACTION}; an all-rejected file is always refused)",
    )
    sync.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar and no phase summary, even on a terminal",
    )
    add_json_arg(sync)
    sync.add_argument(
        "--requests-per-hour",
        type=float,
        default=250_000,
        help="stay under this many requests an hour (default 250,000, Braze's limit): a cap "
        "for this job alone",
    )
    sync.add_argument(
        "--workspace-requests-per-hour",
        type=float,
        default=bc.DEFAULT_WORKSPACE_REQUESTS_PER_HOUR,
        metavar="N",
        help="the budget of the Braze workspace, shared by every job that uses the same state "
        "file (default 250,000, Braze's limit; 0: do not share)",
    )
    sync.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight at most (default 16)"
    )
    sync.add_argument(
        "--timeout",
        type=_positive,
        metavar="SECONDS",
        help="give up on one request after this long without an answer (default "
        f"{bc.DEFAULT_TIMEOUT.read:g}); it is retried",
    )
    sync.add_argument(
        "--deadline",
        type=_positive,
        metavar="SECONDS",
        help="stop sending after this long; what was not sent is re-sent by the next import",
    )
    sync.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help=f"retry a failed request up to N times (default {bc.DEFAULT_RETRY.attempts - 1})",
    )
    sync.add_argument(
        "--no-breaker",
        action="store_true",
        help="keep sending when Braze looks down (by default the upload stops after "
        f"{bc.DEFAULT_BREAKER.consecutive_failures} failed requests in a row)",
    )
    add_state_arg(sync, creates=True, sql_store=True)
    add_credential_args(sync)
    sync.set_defaults(handler=_run_sync)

    history = subparsers.add_parser("history", help="show a cohort's import history")
    history.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    history.add_argument("--json", action="store_true", help="print JSON Lines, one run a line")
    history.add_argument(
        "--limit", type=_positive_int, default=20, help="newest N runs (default 20)"
    )
    add_state_arg(history, sql_store=True)
    history.set_defaults(handler=_run_history)


_COLUMN_FLAGS = (
    "external_id_column",
    "alias_name_column",
    "alias_label_column",
    "device_id_column",
)
_FILE_FLAGS = ("format", "encoding", "delimiter")


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """Add the member-source options: a query instead of a file, and how a file is read."""
    query = parser.add_argument_group("a SQL query instead of a file")
    query.add_argument("--query", metavar="SQL", help="the members are this query's rows")
    query.add_argument(
        "--query-file",
        type=Path,
        metavar="FILE",
        help="the members are the rows of this .sql file's query",
    )
    query.add_argument(
        "--db-url-env",
        metavar="VAR",
        help="the environment variable holding the database's SQLAlchemy URL (the URL itself "
        "is never taken on the command line); needs pip install 'braze-cohorts[sql]' and the "
        "database's driver",
    )
    read = parser.add_argument_group("how the source is read")
    read.add_argument(
        "--format",
        metavar="FORMAT",
        help="csv, tsv, jsonl, json or parquet, optionally with .gz/.bz2/.xz (csv.gz): for "
        "standard input or a file whose name does not tell",
    )
    read.add_argument(
        "--encoding", help="the file's text encoding (default UTF-8; latin-1, utf-16 ...)"
    )
    read.add_argument("--delimiter", metavar="CHAR", help="the CSV delimiter (default: sniffed)")
    for flag, what in zip(
        _COLUMN_FLAGS, ("external id", "alias name", "alias label", "device id"), strict=True
    ):
        read.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            metavar="COLUMN",
            help=f"the column holding the {what} (matched ignoring case; default "
            f"{flag.removesuffix('_column')})",
        )


def column_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``*_column`` keywords given on the command line."""
    return {name: getattr(args, name) for name in _COLUMN_FLAGS if getattr(args, name) is not None}


def query_source(args: argparse.Namespace) -> bc.QuerySource | None:
    """The --query/--query-file source, or ``None`` when the members come from a file.

    Raises:
        ConfigurationError: If both are given, a file option is given with a query, or
            --db-url-env is missing (or given without a query).
        InputError: If the query file cannot be read.
    """
    if args.query is not None and args.query_file is not None:
        raise bc.ConfigurationError("give --query or --query-file, not both")
    if args.query is None and args.query_file is None:
        if args.db_url_env is not None:
            raise bc.ConfigurationError("--db-url-env goes with --query or --query-file")
        return None
    given = [f"--{name}" for name in _FILE_FLAGS if getattr(args, name) is not None]
    if given:
        raise bc.ConfigurationError(f"{', '.join(given)} apply to files, not to a query")
    if args.db_url_env is None:
        raise bc.ConfigurationError(
            "a query needs --db-url-env VAR: the environment variable holding the database URL"
        )
    columns = column_options(args)
    if args.query_file is not None:
        return bc.QuerySource.from_file(
            args.query_file.expanduser(), url_env=args.db_url_env, **columns
        )
    return bc.QuerySource(sql=args.query, url_env=args.db_url_env, **columns)


def _members(args: argparse.Namespace, keep: tuple[str, ...]) -> tuple[Any, Path | None]:
    """The records of FILE, --query or --query-file; and the file, when there is one."""
    query = query_source(args)
    if query is not None:
        if args.file is not None:
            raise bc.ConfigurationError("give FILE or a query (--query, --query-file), not both")
        # The variable is read now: a missing one fails before anything is recorded.
        url = query.url()
        records = bc.query_records(
            url,
            query.sql,
            external_id_column=query.external_id_column,
            alias_name_column=query.alias_name_column,
            alias_label_column=query.alias_label_column,
            device_id_column=query.device_id_column,
            id_columns=keep,
        )
        return records, None
    if args.file is None:
        raise bc.ConfigurationError(
            "give the members: FILE (- for standard input), --query or --query-file"
        )
    source: str | Path = "-" if args.file == "-" else Path(args.file).expanduser()
    records = bc.read_records(
        source,
        format=args.format,
        encoding=args.encoding,
        delimiter=args.delimiter,
        id_columns=keep,
        **column_options(args),
    )
    return records, source if isinstance(source, Path) else None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _uploader_options(args: argparse.Namespace) -> dict[str, Any]:
    """BatchUploader keywords from --deadline, --retries and --no-breaker."""
    options: dict[str, Any] = {}
    if args.deadline is not None:
        options["deadline"] = args.deadline
    if args.retries is not None:
        if args.retries < 0:
            raise bc.ConfigurationError("--retries must be 0 or more")
        options["retry"] = attrs.evolve(bc.DEFAULT_RETRY, attempts=args.retries + 1)
    if args.no_breaker:
        options["breaker"] = None
    return options


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--json``: one JSON object per run on stdout, and nothing else there."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each run as one JSON object a line (JSON Lines) on stdout, and nothing "
        "else there (messages go to stderr); the exit code is unchanged",
    )


def print_run_json(run: bc.ImportRun) -> None:
    """Print ``run`` as one line of JSON on stdout."""
    print(json.dumps(run_to_json(run), sort_keys=True), flush=True)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def summary_line(run: bc.ImportRun) -> str:
    """One line that says how an import ended."""
    kind = f" (full resync: {run.full_resync_reason})" if run.full_resync else ""
    parts = [
        f"{run.cohort_id} ({run.name}): {run.result}{kind}",
        f"{run.users:,} members acknowledged by Braze",
        f"+{run.added:,} added",
        f"-{run.removed:,} removed",
    ]
    if run.rejected_total:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(run.rejected.items()))
        parts.append(f"{run.rejected_total:,} rejected ({reasons})")
    parts.append(_count(run.requests, "request"))
    line = "; ".join(parts)
    if run.error:
        line += f"; error: {run.error}"
    first, braze = split_warnings(run)
    if braze:
        line += f"; {_count(len(braze), 'warning')} from Braze: {braze[0]}"
    if first is not None:
        line += f"; WARNING: {first}"
    return line


def split_warnings(run: bc.ImportRun) -> tuple[str | None, tuple[str, ...]]:
    """The first-import warning (the engine records it first) and the others of ``run``."""
    if run.full_resync_reason == "first_import" and run.warnings:
        return run.warnings[0], run.warnings[1:]
    return None, run.warnings


def _check_cohort_args(args: argparse.Namespace) -> None:
    if args.cohort_column is not None:
        given = [
            flag
            for flag, value in (
                ("--cohort-id", args.cohort_id),
                ("--name", args.name),
                ("--plan-out", args.plan_out),
                ("--rejects-out", args.rejects_out),
            )
            if value is not None
        ]
        if given:
            raise bc.ConfigurationError(f"{', '.join(given)} cannot go with --cohort-column")
        return
    if args.name_column is not None or args.remove_missing:
        raise bc.ConfigurationError("--name-column and --remove-missing go with --cohort-column")
    if args.cohort_id is None or args.name is None:
        raise bc.ConfigurationError("give --cohort-id and --name (or --cohort-column)")


def _run_sync(args: argparse.Namespace) -> int:
    try:
        _check_cohort_args(args)
        creds = credentials(args) if not args.dry_run else _optional_credentials(args)
        matcher = bc.IdentifierMatcher(
            alias_label=args.alias_label,
            alias_name_field=args.alias_field,
        )
        keep = matcher.fields
        if args.cohort_column is not None:
            keep = (*keep, args.cohort_column) + ((args.name_column,) if args.name_column else ())
        records, path = _members(args, tuple(dict.fromkeys(keep)))
        many = args.cohort_column is not None
        bar = not args.no_progress and sys.stderr.isatty() and not many
        progress = ProgressBar(
            sys.stderr,
            enabled=bar,
            records_total=estimate_records(path) if bar and path is not None else None,
        )
        timeout = bc.DEFAULT_TIMEOUT
        if args.timeout is not None:
            timeout = attrs.evolve(timeout, read=args.timeout)
        uploader_options = _uploader_options(args)
        with bc.CohortClient(
            creds["endpoint"],
            partner=creds["partner"],
            partner_api_key=creds["partner_api_key"],
            data_import_key=creds["data_import_key"],
            timeout=timeout,
        ) as client:
            store = open_state(args, write=True, create=True)
            try:
                # Metered: rate-limit waits reach the metrics when OpenTelemetry is installed.
                limiter = bc.MeteredLimiter(bc.RateLimiter(args.requests_per_hour))
                uploader = bc.BatchUploader(
                    client,
                    concurrency=args.concurrency,
                    requests_per_hour=args.requests_per_hour,
                    limiter=limiter,
                    **uploader_options,
                )
                syncer = bc.CohortSync(
                    client,
                    store,
                    uploader=uploader,
                    max_reject_fraction=args.max_rejected,
                    workspace_requests_per_hour=args.workspace_requests_per_hour or None,
                )
                if many:
                    runs = bc.sync_many(
                        syncer,
                        records,
                        cohort_column=args.cohort_column,
                        name_column=args.name_column,
                        remove_missing=args.remove_missing,
                        matcher=matcher,
                        dry_run=args.dry_run,
                        full_resync=args.full_resync,
                        allow_mass_removal=args.allow_mass_removal,
                    )
                else:
                    run = syncer.sync(
                        args.cohort_id,
                        args.name,
                        records,
                        matcher=matcher,
                        dry_run=args.dry_run,
                        full_resync=args.full_resync,
                        allow_mass_removal=args.allow_mass_removal,
                        plan_out=args.plan_out,
                        rejects_out=args.rejects_out,
                        progress=progress.upload,
                        on_phase=progress.phase,
                    )
                    progress.close(run)
                    runs = [run]
            finally:
                progress.close()
                store.close()
    except (bc.ConfigurationError, bc.InputError) as exc:
        return fail(str(exc), 2)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    for run in runs:
        if args.json:
            print_run_json(run)
        else:
            print(summary_line(run))
    if many and not args.json:
        print(f"{_count(len(runs), 'cohort')} imported from one source")
    return 0 if all(run.result in ("succeeded", "dry_run") for run in runs) else 1


def _optional_credentials(args: argparse.Namespace) -> dict[str, str]:
    """A dry run sends nothing, so it runs without credentials (placeholders stand in)."""
    try:
        return credentials(args)
    except bc.ConfigurationError:
        return {
            "endpoint": getattr(args, "endpoint", None) or "http://127.0.0.1:9",
            "partner": getattr(args, "partner", None) or "dry-run",
            "partner_api_key": "dry-run-key",
            "data_import_key": "dry-run-key",
        }


def _run_history(args: argparse.Namespace) -> int:
    try:
        store = open_state(args, write=False)
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    try:
        runs = store.history(args.cohort_id, limit=args.limit)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    finally:
        store.close()
    if args.json:
        for run in runs:
            print_run_json(run)
        return 0
    if not runs:
        print(f"no imports of {args.cohort_id} yet")
        return 0
    print(format_history(runs))
    return 0


def run_to_json(run: bc.ImportRun) -> dict[str, object]:
    """An ImportRun as a JSON-safe dict (:meth:`ImportRun.to_dict`)."""
    return run.to_dict()


def format_history(runs: list[bc.ImportRun]) -> str:
    """A plain table of runs, newest first."""
    header = (
        "started (UTC)",
        "trigger",
        "kind",
        "result",
        "members*",
        "added",
        "removed",
        "rejected",
    )
    rows = [header]
    for run in runs:
        rows.append(
            (
                run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                run.trigger,
                f"full ({run.full_resync_reason})" if run.full_resync else "delta",
                run.result,
                f"{run.users:,}",
                f"{run.added:,}",
                f"{run.removed:,}",
                f"{run.rejected_total:,}",
            )
        )
    lines = table(rows)
    lines.append("* members acknowledged by Braze; Braze ignores ids it does not know, unseen")
    errors = [f"  run {r.id}: {r.error}" for r in runs if r.error]
    warnings = [f"  run {r.id}: {w}" for r in runs for w in r.warnings]
    return "\n".join(
        lines
        + (["errors:", *errors] if errors else [])
        + (["warnings:", *warnings] if warnings else [])
    )
