"""Type-checked only (``mypy --strict tests/typing`` in CI), never run: the public API's types.

Each assignment states what a user of the library may rely on; a change that breaks one of
them is a change users would notice in their own type checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import braze_cohorts as bc
from braze_cohorts.testing import BrazeEmulator
from braze_cohorts.typing import (
    MembersClient,
    Notifier,
    RequestLimiter,
    StateStore,
    SyncClient,
)


def client_and_store(emulator: BrazeEmulator, path: str) -> bc.ImportRun:
    client = bc.CohortClient(
        emulator.url,
        partner=emulator.partner,
        partner_api_key=emulator.partner_api_key,
        data_import_key=emulator.data_import_key,
        timeout=bc.Timeout(connect=2.0, read=10.0),
    )
    as_members: MembersClient = client  # CohortClient satisfies the uploader's Protocol
    as_sync: SyncClient = client  # and the sync engine's
    store: StateStore = bc.SQLiteStore(path)
    response: bc.CohortResponse | None = as_members.update_members(
        "c1", add=["u1", bc.ExternalId("u2"), bc.UserAlias("a@x.io", "email")]
    )
    named: bc.CohortResponse = as_sync.name_cohort(
        "c1", "Cohort", created_at=dt.datetime.now(dt.timezone.utc)
    )
    del response, named
    uploader = bc.BatchUploader(client, concurrency=4, retry=bc.RetryPolicy(attempts=3))
    report: bc.UploadReport = uploader.upload("c1", add=iter(["u1"]), remove=[bc.DeviceId("d")])
    failed: tuple[bc.FailedBatch, ...] = report.failed_batches
    unknown: list[bool] = [f.outcome_unknown for f in failed]
    del unknown
    limiter: RequestLimiter = bc.RateLimiter(100_000)  # the default limiter fits the seam
    bounded = bc.BatchUploader(
        client,
        deadline=600.0,
        breaker=bc.BreakerPolicy(consecutive_failures=5, window=200, failure_ratio=0.8),
        limiter=limiter,
    )
    stopped: bc.StopReason | None = bounded.upload("c1", add=["u1"]).stopped_reason
    stop_errors: tuple[type[bc.BrazeCohortsError], ...] = (
        bc.DeadlineExceededError,
        bc.CircuitOpenError,
    )
    del stopped, stop_errors
    metered: RequestLimiter = bc.MeteredLimiter(bc.RateLimiter(100_000))  # it fits the seam too
    del metered
    sync = bc.CohortSync(client, store, uploader=uploader)
    phases: list[bc.PhaseProgress] = []
    watched: bc.ImportRun = sync.sync("c1", "Cohort", ["u1"], on_phase=phases.append)
    sizes: list[tuple[str, int, int, int]] = [
        (p.phase, p.records, p.adds, p.removes) for p in phases
    ]
    del watched, sizes
    run: bc.ImportRun = sync.sync("c1", "Cohort", [{"external_id": "u1"}, "u2"], dry_run=True)
    delta_run: bc.ImportRun = sync.sync_delta("c1", "Cohort", entered=["u3"], left=["u1"])
    history: list[bc.ImportRun] = sync.history("c1")
    del delta_run, history
    return run


def matching(records: Iterable[object]) -> list[str]:
    matcher = bc.IdentifierMatcher(alias_label="email", alias_name_field="email")
    result: bc.MatchResult = matcher.match(records)
    reasons: dict[str, int] = dict(result.counts)
    del reasons
    users: tuple[bc.UserRef, ...] = result.users
    return [bc.key_of(user) for user in users]


def schedules(now: dt.datetime) -> dt.datetime | None:
    schedule: bc.Schedule = bc.Schedule.weekly(["mon", "thu"], "07:30", "Europe/Berlin")
    again: bc.Schedule = bc.Schedule.parse(str(schedule))
    cron: str | None = again.to_cron()
    del cron
    return bc.Schedule.from_dict(schedule.to_dict()).next_run(now)


def errors(exc: bc.BrazeCohortsError) -> float | None:
    if isinstance(exc, bc.RateLimitedError):
        return exc.retry_after
    if isinstance(exc, bc.AuthenticationError):
        cause: str = exc.cause
        del cause
    if isinstance(exc, bc.TransportError):
        unknown: bool = exc.outcome_unknown
        del unknown
    retryable: bool = exc.retryable
    del retryable
    return None


def notifier() -> Notifier:
    return bc.SmtpNotifier("127.0.0.1", 2525, sender="bot@example.com")


def webhook() -> Notifier:
    return bc.WebhookNotifier("SLACK_ALERTS_URL", format="slack", timeout=5, retries=1)


def scheduler_loop(store: bc.SQLiteStore, sync: bc.CohortSync) -> int:
    import threading

    rule: bc.NotifyRule = bc.NotifyRule.parse("on_failure,rejected>5%")
    scheduler = bc.Scheduler(store, sync, notifier=bc.WebhookNotifier())
    entry: bc.ScheduledImport = scheduler.set_schedule(
        "c",
        "C",
        "hourly 15",
        source="m.csv",
        notify_when=rule,
        webhook_env="X",
        webhook_format="json",
    )
    due: dt.datetime | None = store.next_due()
    del entry, due
    return scheduler.run_forever(stop=threading.Event(), recheck=30.0, wait=lambda s: True)


def sources_in_schedules(store: bc.SQLiteStore, sync: bc.CohortSync) -> list[bc.ImportRun]:
    query = bc.QuerySource(sql="SELECT 1 AS external_id", url_env="WAREHOUSE_URL")
    file = bc.FileSource(path="m.txt", format="csv", external_id_column="user_id")
    scheduler = bc.Scheduler(store, sync)
    scheduler.set_schedule("q", "Q", "daily 09:00 UTC", source=query)
    entry = scheduler.set_schedule("f", "F", "daily 09:00 UTC", source=file)
    stored: str | bc.FileSource | bc.QuerySource | None = entry.source
    del stored
    return bc.sync_many(
        sync,
        [{"external_id": "u1", "cohort_id": "c1"}],
        cohort_column="cohort_id",
        name_column=None,
        remove_missing=["c2"],
        dry_run=True,
    )
