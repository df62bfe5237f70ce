"""``braze-cohorts scheduler``: a long-running process that runs scheduled imports on time.

It is :meth:`Scheduler.run_forever <braze_cohorts.Scheduler.run_forever>` with the Braze
settings and the SMTP settings of ``run-due``, and a shutdown an orchestrator can rely on:

* **First SIGTERM or SIGINT**: no new import starts; an import that is running goes on to its
  end, is recorded and announced, and the process exits 0. With ``--grace SECONDS`` it goes on
  for at most that long, then is interrupted as by a second signal.
* **Second signal**: the running import is interrupted at its next safe point (after the next
  batch Braze answers, or the next member read): it starts no new request, lets the requests in
  flight finish, applies what Braze acknowledged, records the run as ``interrupted`` (and
  announces it, if the schedule's rule says so), and the process exits 130 (first signal SIGINT)
  or 143 (SIGTERM). The next import of that cohort converges, as after any interruption.
* **Third signal**: the process dies at once, as after SIGKILL. The next start finds the dead
  process's lock, records its run as ``interrupted``, and the next import converges.

The interruption is cooperative, never an exception thrown into whatever the process was doing
(which could land inside a database write): the import checks for it between batches and
between member records.

Exit codes: 0 stopped on request; 1 the state database kept failing; 2 usage or configuration
error; 130/143 stopped by a signal that interrupted an import.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

import braze_cohorts as bc
from braze_cohorts._cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_credential_args,
    add_state_arg,
    fail,
)
from braze_cohorts._cli.schedule import (
    ENV_SMTP_HOST,
    _add_smtp_args,
    _notifier,
    default_credentials,
    open_running_store,
)

__all__ = ["EXIT_STORE_FAILED", "JsonFormatter", "register"]

log = logging.getLogger(__name__)

#: The state database failed :data:`braze_cohorts._scheduler.MAX_STORE_FAILURES` times in a row.
EXIT_STORE_FAILED = EXIT_FAILED

#: The attributes every log record has; anything else on a record is an ``extra`` field.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def register(subparsers: Any) -> None:
    """Add the ``scheduler`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "scheduler",
        help="run scheduled imports on time, as a long-running process (no cron needed)",
        description=(
            "Run every schedule's import at its due time until stopped. Sleeps until the next "
            "due time and looks at the state database at least every --recheck seconds, so "
            "schedules set or changed meanwhile are seen. Several schedulers may share one state "
            "database: each due time runs once. First SIGTERM/SIGINT: start nothing new, let a "
            "running import finish (at most --grace seconds), exit 0. Second: interrupt it "
            "(in-flight requests finish, the run is recorded), exit 130/143. Third: die at once."
        ),
    )
    parser.add_argument(
        "--recheck",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="look at the state database at least this often (default 60)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after the first SIGTERM/SIGINT, let a running import go on for at most this long, "
        "then interrupt it (default: let it finish; set it below your orchestrator's kill "
        "timeout, e.g. 20 for Kubernetes' 30)",
    )
    parser.add_argument(
        "--requests-per-hour",
        type=float,
        default=250_000,
        help="stay under this many requests an hour (default 250,000, Braze's limit)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight at most (default 16)"
    )
    parser.add_argument(
        "--webhook-env",
        metavar="VAR",
        help="also tell the webhook whose URL is in environment variable VAR about every "
        "schedule's imports (as each schedule's rule says); the name, never the URL",
    )
    parser.add_argument(
        "--webhook-format",
        choices=("json", "slack"),
        default="json",
        help="the body --webhook-env gets: the run as JSON, or a Slack message (default json)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log one JSON object a line (with cohort_id and run_id fields), for log collectors",
    )
    add_state_arg(parser, sql_store=True)
    add_credential_args(parser)
    _add_smtp_args(parser)
    parser.set_defaults(handler=_run_scheduler)


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object: time, level, logger, message and extras.

    ``extra`` fields (``cohort_id``, ``run_id``) become keys of their own; an exception's
    traceback goes under ``exc_info``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                data[key] = (
                    value
                    if isinstance(value, (str, int, float, bool, type(None)))
                    else (str(value))
                )
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, sort_keys=True)


def _configure_logs(args: argparse.Namespace) -> None:
    """INFO lines of the scheduler by default (one per run); JSON lines with ``--log-json``."""
    if args.verbose <= 0:
        for name in ("braze_cohorts._scheduler", __name__):
            logging.getLogger(name).setLevel(logging.INFO)
    if args.log_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


class _Shutdown:
    """What SIGTERM and SIGINT do: stop, then interrupt, then die (see the module docstring)."""

    def __init__(self, stop: threading.Event, grace: float | None) -> None:
        self.stop = stop
        self.grace = grace
        self.first: int | None = None
        self.count = 0
        #: Set by the second signal (or the end of the grace period): interrupt the import.
        self.interrupt = threading.Event()
        self.timer: threading.Timer | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.first = signum
            limit = "" if self.grace is None else f" (for at most {self.grace:g} s)"
            log.warning(
                "%s: stopping; no new import starts and a running one finishes%s; "
                "send the signal again to interrupt it",
                name,
                limit,
            )
            # Event.set takes a lock the interrupted code may hold: set them from a thread.
            threading.Thread(target=self.stop.set, daemon=True).start()
            if self.grace is not None:
                self.timer = threading.Timer(self.grace, self._grace_over)
                self.timer.daemon = True
                self.timer.start()
            return
        if self.count == 2:
            log.warning(
                "%s again: interrupting the running import (requests in flight finish, the run "
                "is recorded); a third signal exits at once",
                name,
            )
            threading.Thread(target=self.interrupt.set, daemon=True).start()
            return
        log.error("%s a third time: exiting at once", name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _grace_over(self) -> None:
        if not self.interrupt.is_set():
            log.warning("the grace period is over: interrupting the running import")
            self.interrupt.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            if self.timer is not None:
                self.timer.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def exit_code(self) -> int:
        return 128 + (self.first or signal.SIGINT)


class _Interruptible:
    """The sync engine, with the shutdown's interruption checked at safe points.

    The check runs between member records and after each batch Braze answered (the upload's
    progress hook, in the thread that applies the batches): raising ``KeyboardInterrupt`` there
    makes the upload stop feeding, drain its in-flight requests and the sync engine record the
    run as ``interrupted``, exactly as Ctrl-C does, but never in the middle of a store write.
    """

    def __init__(self, sync: bc.CohortSync, interrupt: threading.Event) -> None:
        self._sync = sync
        self._interrupt = interrupt

    def __repr__(self) -> str:
        return repr(self._sync)

    def _check(self, _progress: object = None) -> None:
        if self._interrupt.is_set():
            raise KeyboardInterrupt

    def _members(self, members: Iterable[object]) -> Iterator[object]:
        check = self._interrupt.is_set
        for member in members:
            if check():
                raise KeyboardInterrupt
            yield member

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        trigger: bc.Trigger = "manual",
        notify: bool = True,
        **options: Any,
    ) -> bc.ImportRun:
        return self._sync.sync(
            cohort_id,
            name,
            self._members(members),
            trigger=trigger,
            notify=notify,
            progress=self._check,
            **options,
        )


def _warn_unconfigured(store: bc.SQLiteStore | bc.SQLStore, notifier: object) -> None:
    """Say at start what would fail at 3 a.m.: webhook variables unset, mail with no SMTP host."""
    entries = [e for e in store.list_schedules() if e.state != "done"]
    unset = sorted(
        {e.webhook_env for e in entries if e.webhook_env and not os.environ.get(e.webhook_env)}
    )
    if unset:
        log.warning(
            "schedules name webhook variables that are not set in this process: %s; their "
            "webhooks will fail until they are",
            ", ".join(unset),
        )
    if notifier is None and any(e.recipients for e in entries):
        log.warning(
            "schedules have email recipients but no SMTP host is set (--smtp-host / %s); no "
            "email is sent",
            ENV_SMTP_HOST,
        )
    for name in sorted({e.profile for e in entries if e.profile is not None}):
        profile = store.get_profile(name)
        if profile is None:
            log.warning("schedules name profile %s, which does not exist; they will fail", name)
            continue
        missing = [
            f"${var}"
            for var in (profile.partner_api_key_env, profile.data_import_key_env)
            if var is not None and not os.environ.get(var, "").strip()
        ] + [
            path
            for path in (profile.partner_api_key_file, profile.data_import_key_file)
            if path is not None and not os.path.isfile(path)
        ]
        if missing:
            log.warning(
                "profile %s: %s not found in this process; its schedules will fail until they are",
                name,
                ", ".join(missing),
            )


def _run_scheduler(args: argparse.Namespace) -> int:
    _configure_logs(args)
    try:
        if not 0 < args.recheck < math.inf:
            raise bc.ConfigurationError("--recheck must be a positive number of seconds")
        if args.grace is not None and not 0 <= args.grace < math.inf:
            raise bc.ConfigurationError("--grace must be a number of seconds, 0 or more")
        smtp = _notifier(args)
        webhook = (
            None
            if args.webhook_env is None
            else bc.WebhookNotifier(args.webhook_env, format=args.webhook_format)
        )
        if webhook is not None and not os.environ.get(webhook.url_env):
            log.warning(
                "--webhook-env %s: the variable is not set; the webhook will fail", webhook.url_env
            )
        store = open_running_store(args)  # must exist: set a schedule first
        try:
            live = [e for e in store.list_schedules() if e.state != "done"]
            creds = default_credentials(args, live)
        except BaseException:
            store.close()
            raise
    except (bc.ConfigurationError, bc.InputError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), EXIT_USAGE)
    stop = threading.Event()
    shutdown = _Shutdown(stop, args.grace)
    try:
        with contextlib.ExitStack() as stack:
            default: _Interruptible | None = None
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
                limiter = bc.MeteredLimiter(bc.RateLimiter(args.requests_per_hour))
                uploader = bc.BatchUploader(
                    client,
                    concurrency=args.concurrency,
                    requests_per_hour=args.requests_per_hour,
                    limiter=limiter,
                )
                syncer = bc.CohortSync(client, store, uploader=uploader)
                default = _Interruptible(syncer, shutdown.interrupt)
            # Each profile's workspace gets its own client and rate budget; keys are read at
            # each import, so a missing one fails only that profile's imports.
            profiles = stack.enter_context(
                bc.ProfileSyncs(
                    store,
                    requests_per_hour=args.requests_per_hour,
                    concurrency=args.concurrency,
                    limiter=bc.MeteredLimiter,
                )
            )

            def for_profile(profile: bc.ConnectionProfile) -> _Interruptible:
                return _Interruptible(profiles(profile), shutdown.interrupt)

            scheduler = bc.Scheduler(
                store,
                default,
                notifier=[n for n in (smtp, webhook) if n is not None],
                sync_for_profile=for_profile,
            )
            _warn_unconfigured(store, smtp)
            with shutdown.installed():
                log.info("scheduler running (pid %d)", os.getpid())
                scheduler.run_forever(stop=stop, recheck=args.recheck)
    except KeyboardInterrupt:
        if shutdown.first is None:  # Ctrl-C before the handler was installed
            shutdown.first = signal.SIGINT
        log.warning("scheduler stopped; the running import was interrupted and recorded")
        return shutdown.exit_code()
    except (bc.ConfigurationError, bc.InputError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except bc.StoreError as exc:
        return fail(f"the state database keeps failing: {exc}", EXIT_STORE_FAILED)
    finally:
        store.close()
    if shutdown.first is not None:
        log.info("scheduler stopped on %s", signal.Signals(shutdown.first).name)
    sys.stdout.flush()
    return EXIT_OK
