"""``braze-cohorts schedule …``, ``braze-cohorts run-due`` and ``braze-cohorts trigger ID``.

``schedule set|list|show|pause|resume|clear`` only touch the state database (no Braze
credentials needed). ``run-due`` (for cron, every minute) and ``trigger`` run imports, so they need
the Braze settings, and mail the schedule's recipients when an SMTP host is configured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import braze_cohorts as bc
from braze_cohorts._cli.common import (
    add_credential_args,
    add_state_arg,
    credentials,
    fail,
    open_state,
    table,
)
from braze_cohorts._cli.sync import (
    add_json_arg,
    add_source_args,
    column_options,
    print_run_json,
    query_source,
    split_warnings,
)

__all__ = [
    "ENV_SMTP_HOST",
    "ENV_SMTP_PASSWORD",
    "ENV_SMTP_PORT",
    "ENV_SMTP_SENDER",
    "ENV_SMTP_SSL",
    "ENV_SMTP_STARTTLS",
    "ENV_SMTP_USERNAME",
    "register",
]

ENV_SMTP_HOST = "BRAZE_COHORTS_SMTP_HOST"
ENV_SMTP_PORT = "BRAZE_COHORTS_SMTP_PORT"
ENV_SMTP_SENDER = "BRAZE_COHORTS_SMTP_SENDER"
ENV_SMTP_USERNAME = "BRAZE_COHORTS_SMTP_USERNAME"
ENV_SMTP_PASSWORD = "BRAZE_COHORTS_SMTP_PASSWORD"  # noqa: S105 - the variable's name, not a secret
ENV_SMTP_STARTTLS = "BRAZE_COHORTS_SMTP_STARTTLS"
ENV_SMTP_SSL = "BRAZE_COHORTS_SMTP_SSL"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def register(subparsers: Any) -> None:
    """Add the ``schedule``, ``run-due`` and ``trigger`` subcommands."""
    schedule: argparse.ArgumentParser = subparsers.add_parser(
        "schedule",
        help="set, list, show, pause, resume or clear a cohort's import schedule",
        description=(
            "Manage import schedules (one live schedule per cohort). Schedules run when "
            "`braze-cohorts run-due` is called, e.g. from cron every minute."
        ),
    )
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    set_ = actions.add_parser(
        "set",
        help="give a cohort its schedule",
        description=(
            "Give cohort ID a schedule. Exactly one of --once, --hourly, --daily, --weekly, "
            "--monthly. Times are wall-clock times in --tz (default UTC); hourly runs at MM "
            "minutes past each UTC hour."
        ),
    )
    set_.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    set_.add_argument("--name", required=True, help="the cohort's name shown in Braze")
    set_.add_argument(
        "--source",
        type=Path,
        metavar="FILE",
        help="members file read at each run (.csv, .tsv, .jsonl, .json, .parquet, compressed "
        "or not); stored as a full path, with the read options given; or use --query / "
        "--query-file",
    )
    add_source_args(set_)
    when = set_.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--once",
        metavar="WHEN",
        help="one time, at an ISO 8601 time (2026-12-01T09:00+01:00, or without offset in --tz)",
    )
    when.add_argument("--hourly", metavar="MM", help="every hour at MM minutes past (UTC)")
    when.add_argument("--daily", metavar="HH:MM", help="every day at HH:MM")
    when.add_argument(
        "--weekly", nargs=2, metavar=("DAYS", "HH:MM"), help="on DAYS (mon,thu) at HH:MM"
    )
    when.add_argument(
        "--monthly",
        nargs=2,
        metavar=("DAY", "HH:MM"),
        help="on DAY (1-31 or last; short months use their last day) at HH:MM",
    )
    set_.add_argument("--tz", help="IANA time zone of the times (default UTC)")
    set_.add_argument(
        "--notify",
        nargs="+",
        action="extend",
        default=[],
        metavar="ADDR",
        help="email these addresses after each import (repeatable)",
    )
    set_.add_argument(
        "--notify-when",
        metavar="RULE",
        help="when to tell the recipients and the webhook: always (default), on_failure, "
        "rejected>N, rejected>P%%, joined with commas (on_failure,rejected>5%%)",
    )
    set_.add_argument(
        "--webhook-env",
        metavar="VAR",
        help="also tell the webhook whose URL is in environment variable VAR (the name, never "
        "the URL; read by the process that runs the import)",
    )
    set_.add_argument(
        "--webhook-format",
        choices=("json", "slack"),
        default="json",
        help="the body the webhook gets: the run as JSON, or a Slack message (default json)",
    )
    set_.add_argument(
        "--profile",
        metavar="NAME",
        help="import into the workspace of this connection profile (see `profile add`); "
        "default: the Braze settings of the process that runs it",
    )
    set_.add_argument(
        "--resync-every",
        metavar="PERIOD",
        help="make an import a full resync when the cohort's last one is older than PERIOD "
        "(12h, 7d, 2w) or never (off); default: the sync engine's (7d)",
    )
    set_.add_argument(
        "--replace", action="store_true", help="replace the cohort's existing schedule"
    )
    add_state_arg(set_, creates=True, sql_store=True)
    set_.set_defaults(handler=_run_set)

    list_ = actions.add_parser("list", help="list every schedule")
    list_.add_argument("--json", action="store_true", help="print JSON Lines, one schedule a line")
    add_state_arg(list_, sql_store=True)
    list_.set_defaults(handler=_run_list)

    show = actions.add_parser("show", help="show one cohort's schedule and its last import")
    show.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_state_arg(show, sql_store=True)
    show.set_defaults(handler=_run_show)

    pause = actions.add_parser("pause", help="stop a schedule from running until resumed")
    pause.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    pause.add_argument("--reason", default="paused by user", help="shown by list and show")
    add_state_arg(pause, sql_store=True)
    pause.set_defaults(handler=_run_pause)

    resume = actions.add_parser("resume", help="re-activate a paused schedule")
    resume.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    add_state_arg(resume, sql_store=True)
    resume.set_defaults(handler=_run_resume)

    clear = actions.add_parser("clear", help="delete a cohort's schedule (its history stays)")
    clear.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    add_state_arg(clear, sql_store=True)
    clear.set_defaults(handler=_run_clear)

    run_due: argparse.ArgumentParser = subparsers.add_parser(
        "run-due",
        help="run every scheduled import whose time has come (call it from cron every minute)",
        description=(
            "Run every scheduled import that is due, each at most once per due time; safe to "
            "call every minute and from two machines sharing the state database. Exit code 1 "
            "if any import failed."
        ),
    )
    add_json_arg(run_due)
    add_state_arg(run_due, sql_store=True)
    add_credential_args(run_due)
    _add_smtp_args(run_due)
    run_due.set_defaults(handler=_run_run_due)

    trigger: argparse.ArgumentParser = subparsers.add_parser(
        "trigger",
        help="run a cohort's scheduled import now",
        description="Run cohort ID's scheduled import now (trigger 'manual', kept in history).",
    )
    trigger.add_argument("cohort_id", metavar="ID", help="the cohort's id")
    add_json_arg(trigger)
    add_state_arg(trigger, sql_store=True)
    add_credential_args(trigger)
    _add_smtp_args(trigger)
    trigger.set_defaults(handler=_run_trigger)


def _add_smtp_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "email after each import (flags override the environment; no host: no email)"
    )
    group.add_argument("--smtp-host", help=f"SMTP server (env {ENV_SMTP_HOST})")
    group.add_argument(
        "--smtp-port", type=int, help=f"SMTP port (env {ENV_SMTP_PORT}; default 25, 465 with SSL)"
    )
    group.add_argument("--smtp-sender", help=f"From address (env {ENV_SMTP_SENDER})")
    group.add_argument("--smtp-username", help=f"login user (env {ENV_SMTP_USERNAME})")
    group.add_argument(
        "--smtp-password", help=f"login password (env {ENV_SMTP_PASSWORD}); never echoed"
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--smtp-starttls",
        action="store_true",
        default=None,
        help=f"upgrade with STARTTLS (env {ENV_SMTP_STARTTLS}=1)",
    )
    tls.add_argument(
        "--smtp-ssl",
        action="store_true",
        default=None,
        help=f"connect with implicit TLS (env {ENV_SMTP_SSL}=1)",
    )


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bc.ConfigurationError(f"{name} must be 1/0, true/false, yes/no or on/off")


def _notifier(args: argparse.Namespace) -> bc.SmtpNotifier | None:
    """The SMTP notifier from flags and environment, or ``None`` when no host is set.

    Raises:
        ConfigurationError: If a host is set but the sender is missing or a setting is invalid.
    """
    host = args.smtp_host or os.environ.get(ENV_SMTP_HOST, "").strip()
    if not host:
        return None
    sender = args.smtp_sender or os.environ.get(ENV_SMTP_SENDER, "").strip()
    if not sender:
        raise bc.ConfigurationError(
            f"an SMTP host is set but no sender: give --smtp-sender or {ENV_SMTP_SENDER}"
        )
    if args.smtp_starttls or args.smtp_ssl:
        starttls, use_ssl = bool(args.smtp_starttls), bool(args.smtp_ssl)
    else:
        starttls, use_ssl = _env_flag(ENV_SMTP_STARTTLS), _env_flag(ENV_SMTP_SSL)
    port: int | None = args.smtp_port
    if port is None:
        raw = os.environ.get(ENV_SMTP_PORT, "").strip()
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise bc.ConfigurationError(f"{ENV_SMTP_PORT} must be a port number") from None
    if port is None:
        port = 465 if use_ssl else 25
    return bc.SmtpNotifier(
        host,
        port,
        sender=sender,
        username=args.smtp_username or os.environ.get(ENV_SMTP_USERNAME) or None,
        password=args.smtp_password or os.environ.get(ENV_SMTP_PASSWORD) or None,
        starttls=starttls,
        ssl=use_ssl,
    )


# -- schedule set / list / show / pause / resume / clear -----------------------------------


def _zone_or_none(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise bc.ScheduleError(f"unknown time zone {name!r} (use an IANA name)") from exc


def _schedule_from_args(args: argparse.Namespace) -> bc.Schedule:
    """Build the schedule from the one kind flag given.

    Raises:
        ScheduleError: If the values do not make a valid schedule.
    """
    tz = args.tz or "UTC"
    if args.once is not None:
        try:
            at = dt.datetime.fromisoformat(args.once)
        except ValueError as exc:
            raise bc.ScheduleError(
                f"--once needs an ISO 8601 time like 2026-12-01T09:00+01:00, not {args.once!r}"
            ) from exc
        if at.tzinfo is None:
            zone = _zone_or_none(args.tz)
            if zone is None:
                raise bc.ScheduleError("--once needs a UTC offset in the time, or --tz")
            at = at.replace(tzinfo=zone)
        return bc.Schedule.once(at)
    if args.hourly is not None:
        if args.tz is not None:
            raise bc.ScheduleError("--tz does not apply to --hourly (it counts minutes in UTC)")
        return bc.Schedule.hourly(args.hourly)
    if args.daily is not None:
        return bc.Schedule.daily(args.daily, tz)
    if args.weekly is not None:
        days, at_time = args.weekly
        return bc.Schedule.weekly(days, at_time, tz)
    day, at_time = args.monthly
    return bc.Schedule.monthly(day, at_time, tz)


#: The widest a cell of ``schedule list`` gets; ``schedule show`` prints the whole text.
_CELL = 32


def _cell(text: str, width: int = _CELL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _format_due(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def _schedule_json(entry: bc.ScheduledImport) -> dict[str, object]:
    return {
        "cohort_id": entry.cohort_id,
        "name": entry.name,
        "schedule": str(entry.schedule),
        "spec": entry.schedule.to_dict(),
        "source": _source_json(entry.source),
        "recipients": list(entry.recipients),
        "state": entry.state,
        "paused_reason": entry.paused_reason,
        "next_due": entry.next_due.isoformat() if entry.next_due else None,
        "last_run_id": entry.last_run_id,
        "notify_when": str(entry.notify_when),
        "webhook_env": entry.webhook_env,
        "webhook_format": entry.webhook_format,
        "profile": entry.profile,
        "resync_every": None
        if entry.resync_every is None
        else bc.format_period(entry.resync_every),
    }


def _source_json(source: str | bc.FileSource | bc.QuerySource | None) -> object:
    """A plain path as itself; a file with options or a query as ``{"file"|"query": {...}}``."""
    if source is None or isinstance(source, str):
        return source
    return {"query" if isinstance(source, bc.QuerySource) else "file": source.to_dict()}


def _source_text(source: str | bc.FileSource | bc.QuerySource | None) -> str:
    """One line saying where a schedule's members come from."""
    if source is None:
        return "(a registered Python function)"
    if isinstance(source, str):
        return source
    if isinstance(source, bc.QuerySource):
        return f"query ({len(source.sql):,} characters of SQL) on ${source.url_env}"
    options = ", ".join(f"{k}={v}" for k, v in source.to_dict().items() if k != "path")
    return f"{source.path} ({options})" if options else source.path


def _schedule_source(args: argparse.Namespace) -> str | bc.FileSource | bc.QuerySource:
    """The --source file (with its read options) or the --query / --query-file source.

    Raises:
        ConfigurationError: If not exactly one is given, or an option does not fit.
        InputError: If the file (or the query file) cannot be read.
    """
    query = query_source(args)
    if query is not None:
        if args.source is not None:
            raise bc.ConfigurationError(
                "give --source or a query (--query, --query-file), not both"
            )
        return query
    if args.source is None:
        raise bc.ConfigurationError("give the members: --source FILE, --query or --query-file")
    path = args.source.expanduser().resolve()
    options = {
        name: getattr(args, name)
        for name in ("format", "encoding", "delimiter")
        if getattr(args, name) is not None
    }
    options.update(column_options(args))
    if not options:
        bc.read_records(path)  # fail now, not at 3 a.m.: missing file, wrong type, no id column
        return str(path)
    return bc.FileSource(path=path, **options)


def _state_text(entry: bc.ScheduledImport) -> str:
    return f"paused: {entry.paused_reason}" if entry.state == "paused" else entry.state


def _run_set(args: argparse.Namespace) -> int:
    try:
        spec = _schedule_from_args(args)
        source = _schedule_source(args)
        store = open_state(args, write=True, create=True)
        try:
            entry = bc.Scheduler(store).set_schedule(
                args.cohort_id,
                args.name,
                spec,
                source=source,
                recipients=args.notify,
                replace=args.replace,
                notify_when=bc.NotifyRule() if args.notify_when is None else args.notify_when,
                webhook_env=args.webhook_env,
                webhook_format=args.webhook_format,
                profile=args.profile,
                resync_every=args.resync_every,
            )
        finally:
            store.close()
    except bc.ScheduleConflictError as exc:
        return fail(str(exc), 1)
    except (bc.ConfigurationError, bc.InputError, bc.ScheduleError) as exc:
        return fail(str(exc), 2)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    print(f"{entry.cohort_id}: {entry.schedule}, next run {_format_due(entry.next_due)}")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    try:
        store = open_state(args, write=False)
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    try:
        try:
            entries = bc.Scheduler(store).schedules()
        finally:
            store.close()
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    if args.json:
        for entry in entries:
            print(json.dumps(_schedule_json(entry), sort_keys=True))
        return 0
    if not entries:
        print("no schedules")
        return 0
    header = ("cohort", "name", "schedule", "state", "next run", "notify")
    rows = [header] + [
        (
            _cell(e.cohort_id),
            _cell(e.name),
            str(e.schedule),
            _cell(_state_text(e)),
            _format_due(e.next_due),
            str(len(e.recipients)),
        )
        for e in entries
    ]
    print("\n".join(table(rows)))
    return 0


def _with_runner(args: argparse.Namespace, action: str) -> tuple[int, bc.ScheduledImport | None]:
    """Run one of show/pause/resume/clear; return (exit code, the schedule afterwards)."""
    try:
        store = open_state(args, write=action != "show")
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2), None
    try:
        runner = bc.Scheduler(store)
        if action == "show":
            return 0, runner.get_schedule(args.cohort_id)
        if action == "pause":
            return 0, runner.pause(args.cohort_id, args.reason)
        if action == "resume":
            return 0, runner.resume(args.cohort_id)
        runner.clear(args.cohort_id)
        return 0, None
    finally:
        store.close()


def _run_show(args: argparse.Namespace) -> int:
    try:
        code, entry = _with_runner(args, "show")
        if entry is None:
            return code
        store = open_state(args, write=False)
        try:
            runs = store.history(args.cohort_id, limit=1)
        finally:
            store.close()
        last = runs[0] if runs else None
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    except bc.ScheduleNotFoundError as exc:
        return fail(str(exc), 1)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    if args.json:
        data = _schedule_json(entry)
        print(json.dumps(data, sort_keys=True, indent=2))
        return 0
    lines = [
        f"cohort:     {entry.cohort_id}",
        f"name:       {entry.name}",
        f"schedule:   {entry.schedule}",
        f"state:      {_state_text(entry)}",
        f"next run:   {_format_due(entry.next_due)}",
        f"source:     {_source_text(entry.source)}",
        f"notify:     {', '.join(entry.recipients) or '-'}",
        f"notify when: {entry.notify_when}",
        "webhook:    "
        + (
            "-"
            if entry.webhook_env is None
            else f"URL from ${entry.webhook_env} ({entry.webhook_format})"
        ),
        f"profile:    {entry.profile or '(the Braze settings of the process running it)'}",
        "resync:     "
        + (
            "every " + bc.format_period(entry.resync_every)
            if isinstance(entry.resync_every, dt.timedelta)
            else "off (only on request or when the workspace changes)"
            if entry.resync_every is not None
            else "the sync engine's period"
        ),
    ]
    if last is not None:
        lines.append(
            f"last run:   {last.started_at.strftime('%Y-%m-%d %H:%M UTC')} {last.trigger} "
            f"{last.result} (+{last.added:,} / -{last.removed:,}, {last.users:,} users)"
        )
        if last.error:
            lines.append(f"last error: {last.error}")
        if last.notification_error:
            lines.append(f"email:      not sent: {last.notification_error}")
    print("\n".join(lines))
    return 0


def _simple(args: argparse.Namespace, action: str) -> int:
    try:
        code, entry = _with_runner(args, action)
    except bc.ScheduleNotFoundError as exc:
        return fail(str(exc), 1)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    if code:
        return code
    if entry is None:
        print(f"{args.cohort_id}: schedule cleared")
    else:
        print(f"{entry.cohort_id}: {_state_text(entry)}, next run {_format_due(entry.next_due)}")
    return 0


def _run_pause(args: argparse.Namespace) -> int:
    return _simple(args, "pause")


def _run_resume(args: argparse.Namespace) -> int:
    return _simple(args, "resume")


def _run_clear(args: argparse.Namespace) -> int:
    return _simple(args, "clear")


# -- run-due / trigger ----------------------------------------------------------------------


def _run_line(run: bc.ImportRun) -> str:
    parts = [
        f"{run.cohort_id} ({run.name}): {run.trigger} import {run.result}",
        f"{run.users:,} users",
        f"+{run.added:,}",
        f"-{run.removed:,}",
    ]
    if run.rejected_total:
        parts.append(f"{run.rejected_total:,} rejected")
    line = ", ".join(parts)
    if run.error:
        line += f"; error: {run.error}"
    first, _ = split_warnings(run)
    if first is not None:
        line += f"; WARNING: {first}"
    return line


def _report(runs: list[bc.ImportRun], *, as_json: bool = False) -> int:
    for run in runs:
        if as_json:
            print_run_json(run)
        else:
            print(_run_line(run))
        if run.notification_error:
            print(
                f"braze-cohorts: warning: email for {run.cohort_id} not sent: "
                f"{run.notification_error}",
                file=sys.stderr,
            )
    return 0 if all(r.result == "succeeded" for r in runs) else 1


def default_credentials(
    args: argparse.Namespace, entries: list[bc.ScheduledImport]
) -> dict[str, str] | None:
    """The default Braze settings, required only when a schedule names no profile.

    Raises:
        ConfigurationError: If settings are missing and one of ``entries`` needs them.
    """
    try:
        return credentials(args)
    except bc.ConfigurationError:
        if any(e.profile is None for e in entries):
            raise
        return None


def open_running_store(args: argparse.Namespace) -> bc.SQLiteStore | bc.SQLStore:
    """Open the state database (or the ``--store URL`` database) of a command that runs imports.

    Raises:
        ConfigurationError: If it cannot be opened; when the Braze settings are missing too,
            the error names them (the usual first mistake), not the database.
    """
    try:
        return open_state(args, write=True)
    except bc.ConfigurationError:
        credentials(args)  # raises the missing settings' error, if any
        raise


def _running(args: argparse.Namespace, cohort_id: str | None) -> int:
    try:
        notifier = _notifier(args)
        store = open_running_store(args)
        try:
            probe = bc.Scheduler(store)
            # Only warn when mail would be sent: the schedules about to run have recipients.
            about_to_run = (
                store.due_schedules(probe.now())
                if cohort_id is None
                else [probe.get_schedule(cohort_id)]
            )
            creds = default_credentials(args, about_to_run)
            with contextlib.ExitStack() as stack:
                syncer: bc.CohortSync | None = None
                if creds is not None:
                    client = stack.enter_context(
                        bc.CohortClient(
                            creds["endpoint"],
                            partner=creds["partner"],
                            partner_api_key=creds["partner_api_key"],
                            data_import_key=creds["data_import_key"],
                        )
                    )
                    # Metered: rate-limit waits reach the metrics when OpenTelemetry is installed.
                    limiter = bc.MeteredLimiter(bc.RateLimiter(250_000))  # Braze's limit
                    uploader = bc.BatchUploader(client, limiter=limiter)
                    syncer = bc.CohortSync(client, store, uploader=uploader, notifier=notifier)
                # Each profile's workspace gets its own client and rate budget.
                profiles = stack.enter_context(
                    bc.ProfileSyncs(store, limiter=bc.MeteredLimiter, notifier=notifier)
                )
                scheduler = bc.Scheduler(
                    store, syncer, notifier=notifier, sync_for_profile=profiles
                )
                if notifier is None and any(e.recipients for e in about_to_run):
                    print(
                        "braze-cohorts: warning: schedules have recipients but no SMTP host is "
                        f"set (--smtp-host / {ENV_SMTP_HOST}); no email is sent",
                        file=sys.stderr,
                    )
                runs = scheduler.run_due() if cohort_id is None else [scheduler.trigger(cohort_id)]
        finally:
            store.close()
    except bc.ScheduleNotFoundError as exc:
        return fail(str(exc), 1)
    except bc.ImportInProgressError as exc:
        return fail(str(exc), 1)
    except (bc.ConfigurationError, bc.InputError) as exc:
        return fail(str(exc), 2)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    return _report(runs, as_json=args.json)


def _run_run_due(args: argparse.Namespace) -> int:
    return _running(args, None)


def _run_trigger(args: argparse.Namespace) -> int:
    return _running(args, args.cohort_id)
