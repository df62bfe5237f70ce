"""The long-running scheduler loop, notification rules and per-schedule webhooks."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts._scheduler import MAX_STORE_FAILURES
from braze_cohorts.testing import FakeClient, MemoryStore, SettableClock
from doc_examples import run_doc_examples
from hook_server import HookServer

UTC = dt.timezone.utc


@pytest.fixture
def hook() -> Iterator[HookServer]:
    """A webhook server on loopback, stopped after the test."""
    with HookServer() as server:
        yield server


T0 = dt.datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


class RecordingNotifier:
    """Keeps the runs it is told about, with the pause reason."""

    def __init__(self) -> None:
        self.sent: list[tuple[bc.ImportRun, str | None]] = []

    def notify_recipients(
        self, run: bc.ImportRun, recipients: Sequence[str], *, paused_reason: str | None = None
    ) -> None:
        self.sent.append((run, paused_reason))


@attrs.define
class Rig:
    clock: SettableClock
    store: MemoryStore
    client: FakeClient
    notifier: RecordingNotifier
    scheduler: bc.Scheduler
    stop: threading.Event
    waits: list[float]

    def wait_until(self, end: dt.datetime) -> Any:
        """A ``wait`` for run_forever that moves the clock and stops once it reaches ``end``."""

        def wait(seconds: float) -> bool:
            self.waits.append(seconds)
            self.clock.advance(seconds=seconds)
            if self.clock.now >= end:
                self.stop.set()
            return self.stop.is_set()

        return wait


@pytest.fixture
def rig() -> Rig:
    clock = SettableClock(T0)
    store = MemoryStore(clock=clock)
    client = FakeClient(clock=clock)
    notifier = RecordingNotifier()
    sync = bc.CohortSync(client, store, clock=clock)
    scheduler = bc.Scheduler(store, sync, notifier=notifier, clock=clock)
    return Rig(clock, store, client, notifier, scheduler, threading.Event(), [])


def _members(*ids: str) -> Any:
    return lambda: list(ids)


class TestRunForever:
    def test_two_schedules_run_at_their_times_and_it_sleeps_until_each(self, rig: Rig) -> None:
        """Each import runs at its due time; between them the loop sleeps exactly until then."""
        rig.scheduler.set_schedule("a", "A", "daily 09:00 UTC", source=_members("u1", "u2"))
        rig.scheduler.set_schedule("b", "B", "hourly 30", source=_members("u3"))
        ran = rig.scheduler.run_forever(
            stop=rig.stop, recheck=3600, wait=rig.wait_until(T0 + dt.timedelta(hours=2))
        )
        assert ran == 3
        starts = {
            cohort: [r.started_at for r in reversed(rig.store.history(cohort))]
            for cohort in ("a", "b")
        }
        assert starts == {
            "a": [T0 + dt.timedelta(hours=1)],
            "b": [T0 + dt.timedelta(minutes=30), T0 + dt.timedelta(minutes=90)],
        }
        # 08:00 → 08:30 (b) → 09:00 (a) → 09:30 (b) → 10:30 (b again): no polling in between.
        assert rig.waits == [1800, 1800, 1800, 3600]
        assert rig.client.members("a") == {"e:u1", "e:u2"}
        assert [r.trigger for r, _ in rig.notifier.sent] == ["scheduled"] * 3

    def test_rechecks_the_store_for_schedules_added_meanwhile(self, rig: Rig) -> None:
        """With nothing due it looks again every ``recheck`` seconds and sees a new schedule."""
        other = bc.Scheduler(rig.store, clock=rig.clock)  # another process, same store
        waits = rig.wait_until(T0 + dt.timedelta(minutes=5))

        def wait(seconds: float) -> bool:
            if not rig.waits:
                other.set_schedule(
                    "late",
                    "Late",
                    bc.Schedule.once(T0 + dt.timedelta(seconds=90)),
                    source=None,
                )
                rig.scheduler.register_source("late", _members("u9"))
            stopped: bool = waits(seconds)
            return stopped

        assert rig.scheduler.run_forever(stop=rig.stop, recheck=60, wait=wait) == 1
        assert rig.waits[:3] == [60, 30, 60]
        [run] = rig.store.history("late")
        assert (run.started_at, run.result) == (T0 + dt.timedelta(seconds=90), "succeeded")
        assert rig.store.get_schedule("late").state == "done"  # type: ignore[union-attr]

    def test_stop_during_an_import_lets_it_finish_and_starts_no_other(self, rig: Rig) -> None:
        """Setting stop mid-import: that import completes; the next due one is left unclaimed."""
        due = T0 - dt.timedelta(hours=2)

        def first() -> list[str]:
            rig.stop.set()
            return ["u1"]

        rig.scheduler.set_schedule("a", "A", "hourly 59", source=first, now=due)
        rig.scheduler.set_schedule("b", "B", "hourly 59", source=_members("u2"), now=due)
        before = rig.store.get_schedule("b")
        assert rig.scheduler.run_forever(stop=rig.stop, wait=lambda s: pytest.fail("waited")) == 1
        assert [r.result for r in rig.store.history("a")] == ["succeeded"]
        assert rig.store.history("b") == []
        assert rig.store.get_schedule("b") == before  # still due: the next start runs it

    def test_keyboard_interrupt_records_and_announces_the_run_then_propagates(
        self, rig: Rig
    ) -> None:
        """Ctrl-C inside an import: the run is recorded interrupted, announced, and re-raised."""

        def interrupted() -> Iterator[str]:
            yield "u1"
            raise KeyboardInterrupt

        rig.scheduler.set_schedule(
            "a",
            "A",
            "hourly 00",
            source=interrupted,
            now=T0 - dt.timedelta(hours=1),
            notify_when="on_failure",
        )
        with pytest.raises(KeyboardInterrupt):
            rig.scheduler.run_forever(stop=rig.stop, wait=lambda s: pytest.fail("waited"))
        [run] = rig.store.history("a")
        assert run.result == "interrupted"
        assert [(r.id, r.result) for r, _ in rig.notifier.sent] == [(run.id, "interrupted")]
        assert rig.store.get_schedule("a").last_run_id == run.id  # type: ignore[union-attr]
        assert rig.store.lock_holder("a") is None

    def test_a_failing_store_is_retried_then_given_up(self, rig: Rig) -> None:
        """A store error is logged and retried after ``recheck``; too many in a row raise."""
        calls = {"n": 0}
        real = rig.store.due_schedules

        def flaky(now: dt.datetime) -> list[bc.ScheduledImport]:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise bc.StoreError("database is locked")
            return real(now)

        rig.store.due_schedules = flaky  # type: ignore[method-assign]
        rig.scheduler.set_schedule("a", "A", "hourly 10", source=_members("u1"))
        ran = rig.scheduler.run_forever(
            stop=rig.stop, recheck=120, wait=rig.wait_until(T0 + dt.timedelta(minutes=15))
        )
        assert ran == 1
        assert rig.waits[:2] == [120, 120]  # two failed rounds, each retried after recheck
        [run] = rig.store.history("a")
        assert run.started_at == T0 + dt.timedelta(minutes=10)

    def test_a_store_that_keeps_failing_raises(self, rig: Rig) -> None:
        """After MAX_STORE_FAILURES failures in a row, StoreError ends the loop."""

        def broken(now: dt.datetime) -> list[bc.ScheduledImport]:
            raise bc.StoreError("disk I/O error")

        rig.store.due_schedules = broken  # type: ignore[method-assign]
        with pytest.raises(bc.StoreError):
            rig.scheduler.run_forever(
                stop=rig.stop, recheck=5, wait=rig.wait_until(T0 + dt.timedelta(days=1))
            )
        assert rig.waits == [5] * (MAX_STORE_FAILURES - 1)

    def test_invalid_recheck_and_missing_sync_are_refused(self, rig: Rig) -> None:
        """recheck must be a positive number; a scheduler without a sync engine cannot run."""
        for bad in (0, -1, float("inf"), True):
            with pytest.raises(bc.ConfigurationError):
                rig.scheduler.run_forever(stop=rig.stop, recheck=bad)
        with pytest.raises(bc.ConfigurationError):
            bc.Scheduler(rig.store).run_forever(stop=rig.stop)

    def test_one_log_line_per_run_with_ids_as_extra(
        self, rig: Rig, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every run logs one line from the scheduler carrying cohort_id and run_id."""
        rig.scheduler.set_schedule("a", "A", "hourly 30", source=_members("u1"))
        caplog.set_level("INFO", logger="braze_cohorts._scheduler")
        rig.scheduler.run_forever(
            stop=rig.stop, recheck=3600, wait=rig.wait_until(T0 + dt.timedelta(minutes=100))
        )
        lines = [
            r
            for r in caplog.records
            if r.name == "braze_cohorts._scheduler" and getattr(r, "run_id", None) is not None
        ]
        runs = list(reversed(rig.store.history("a")))
        assert [(r.cohort_id, r.run_id) for r in lines] == [("a", run.id) for run in runs]  # type: ignore[attr-defined]
        assert all("scheduled import of cohort a succeeded" in r.getMessage() for r in lines)


class TestNotifyRule:
    @pytest.mark.parametrize(
        "text",
        [
            "always",
            "on_failure",
            "never",
            "on_failure,rejected>5%",
            "rejected>100",
            "always,rejected>0.5%,rejected>3",
        ],
    )
    def test_text_round_trips(self, text: str) -> None:
        """str(parse(text)) reads back to the same rule, and so does to_dict/from_dict."""
        rule = bc.NotifyRule.parse(text)
        assert bc.NotifyRule.parse(str(rule)) == rule
        assert bc.NotifyRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule

    @pytest.mark.parametrize(
        "text", ["", "sometimes", "on_failure,always", "rejected>", "rejected>1.5", "rejected>x%"]
    )
    def test_invalid_text_is_refused(self, text: str) -> None:
        """A rule that does not parse is a ConfigurationError (a ValueError)."""
        with pytest.raises(bc.ConfigurationError):
            bc.NotifyRule.parse(text)

    @given(
        result=st.sampled_from(["succeeded", "failed", "refused", "interrupted", "dry_run"]),
        rejected=st.integers(0, 1000),
        users=st.integers(0, 1000),
        share=st.none() | st.floats(0, 0.99),
        count=st.none() | st.integers(0, 1000),
        on=st.sampled_from(["always", "on_failure", "never"]),
    )
    def test_wants_is_the_or_of_its_parts(
        self,
        result: str,
        rejected: int,
        users: int,
        share: float | None,
        count: int | None,
        on: Any,
    ) -> None:
        """A run is announced iff the condition, the count or the share says so."""
        rule = bc.NotifyRule(on=on, rejected_share=share, rejected_count=count)
        expected = (
            on == "always"
            or (on == "on_failure" and result in ("failed", "refused", "interrupted"))
            or (count is not None and rejected > count)
            or (
                share is not None and rejected + users > 0 and rejected / (rejected + users) > share
            )
        )
        assert rule.wants(result, rejected=rejected, users=users) is expected


class TestRulesInTheScheduler:
    def test_on_failure_skips_successes_and_announces_failures(self, rig: Rig) -> None:
        """An on_failure schedule is quiet after a success and announces a failed import."""
        rig.scheduler.set_schedule(
            "a", "A", "hourly 30", source=_members("u1"), notify_when="on_failure"
        )
        rig.client.fail_next(bc.InvalidRequestError("bad request", status_code=400))
        failed = rig.scheduler.trigger("a")
        assert failed.result == "failed"
        assert [r.id for r, _ in rig.notifier.sent] == [failed.id]
        assert rig.scheduler.trigger("a").result == "succeeded"
        assert len(rig.notifier.sent) == 1

    def test_rejection_share_announces_a_successful_import(self, rig: Rig) -> None:
        """A successful import whose rejections pass the share is announced; others are not."""
        records = [{"external_id": f"u{i}"} for i in range(19)] + [{"external_id": ""}]
        rig.scheduler.set_schedule(
            "a", "A", "hourly 30", source=lambda: records, notify_when="rejected>4%"
        )
        first = rig.scheduler.trigger("a")
        assert (first.result, first.rejected_total) == ("succeeded", 1)
        assert [r.id for r, _ in rig.notifier.sent] == [first.id]  # 1 / 20 = 5% > 4%
        records[-1] = {"external_id": "u19"}
        rig.scheduler.trigger("a")
        assert len(rig.notifier.sent) == 1

    def test_a_paused_schedule_is_announced_whatever_the_rule(self, rig: Rig) -> None:
        """An import that pauses its schedule (credentials refused) is always announced."""
        rig.scheduler.set_schedule(
            "a", "A", "hourly 30", source=_members("u1"), notify_when="never"
        )
        rig.client.fail_next(
            bc.AuthenticationError("Invalid client secret", cause="data_import_key"),
            on="name",
        )
        rig.clock.set(T0 + dt.timedelta(minutes=30))
        [run] = rig.scheduler.run_due()
        assert run.error_kind == "AuthenticationError"
        [(sent, reason)] = rig.notifier.sent
        assert sent.id == run.id
        assert reason is not None
        assert "data import key" in reason


class TestSeveralNotifiers:
    def test_a_list_of_notifiers_each_told_even_when_one_fails(self, rig: Rig) -> None:
        """Scheduler(notifier=[a, b]): both are told; a failing one is recorded, not fatal."""

        class Failing:
            def notify(self, run: bc.ImportRun) -> None:
                raise bc.NotificationError("chat is down")

        second = RecordingNotifier()
        scheduler = bc.Scheduler(
            rig.store,
            bc.CohortSync(rig.client, rig.store, clock=rig.clock),
            notifier=[Failing(), second],
            clock=rig.clock,
        )
        scheduler.set_schedule("a", "A", "hourly 30", source=_members("u1"))
        run = scheduler.trigger("a")
        assert run.notification_error == "chat is down"
        assert [r.id for r, _ in second.sent] == [run.id]


class TestWebhookPerSchedule:
    def test_schedule_webhook_gets_a_slack_message_beside_the_email(
        self, rig: Rig, hook: HookServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The schedule's webhook variable is read at run time; email and webhook both go."""
        monkeypatch.setenv("TEAM_ALERTS_URL", hook.url("/services/T0/B0/secret"))
        rig.scheduler.set_schedule(
            "a",
            "A & B",
            "hourly 30",
            source=_members("u1"),
            webhook_env="TEAM_ALERTS_URL",
            webhook_format="slack",
        )
        run = rig.scheduler.trigger("a")
        assert run.notification_error is None
        [(path, body)] = hook.received
        assert path == "/services/T0/B0/secret"
        assert set(body) == {"text"}
        assert "*A &amp; B* (`a`): manual import succeeded" in body["text"]
        assert [r.id for r, _ in rig.notifier.sent] == [run.id]

    def test_a_failing_webhook_is_recorded_and_the_email_still_goes(
        self, rig: Rig, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset webhook variable fails the webhook only; it is recorded on the run."""
        monkeypatch.delenv("MISSING_HOOK", raising=False)
        rig.scheduler.set_schedule(
            "a", "A", "hourly 30", source=_members("u1"), webhook_env="MISSING_HOOK"
        )
        run = rig.scheduler.trigger("a")
        assert run.result == "succeeded"
        assert run.notification_error == "the webhook URL variable $MISSING_HOOK is not set"
        assert rig.store.history("a")[0].notification_error == run.notification_error
        assert len(rig.notifier.sent) == 1

    def test_a_url_is_refused_as_the_webhook_variable(self, rig: Rig) -> None:
        """Giving the URL instead of a variable's name fails, without echoing it."""
        with pytest.raises(bc.ConfigurationError) as info:
            rig.scheduler.set_schedule(
                "a",
                "A",
                "hourly 30",
                source=_members("u1"),
                webhook_env="https://hooks.slack.com/services/T0/B0/secret",
            )
        assert "secret" not in str(info.value)
        assert rig.store.get_schedule("a") is None

    def test_rules_and_webhook_survive_the_sqlite_store(self, tmp_path: Path) -> None:
        """The SQLite store keeps a schedule's rule and webhook variable (never a URL)."""
        path = tmp_path / "state.db"
        with bc.SQLiteStore(path) as store:
            bc.Scheduler(store).set_schedule(
                "a",
                "A",
                "hourly 30",
                source=str(tmp_path / "m.csv"),
                notify_when="on_failure,rejected>2%",
                webhook_env="TEAM_ALERTS_URL",
                webhook_format="slack",
                now=T0,
            )
            assert store.next_due() == T0 + dt.timedelta(minutes=30)
        with bc.SQLiteStore(path) as store:
            entry = store.get_schedule("a")
            assert entry is not None
            assert (str(entry.notify_when), entry.webhook_env, entry.webhook_format) == (
                "on_failure,rejected>2%",
                "TEAM_ALERTS_URL",
                "slack",
            )


class TestNextDue:
    @pytest.mark.parametrize("kind", ["sqlite", "memory"])
    def test_earliest_active_due_time(self, kind: str, tmp_path: Path) -> None:
        """next_due is the earliest due time of active schedules; paused and done are ignored."""
        store: Any = bc.SQLiteStore(tmp_path / "s.db") if kind == "sqlite" else MemoryStore()
        scheduler = bc.Scheduler(store)
        assert store.next_due() is None
        scheduler.set_schedule("a", "A", "hourly 40", source="a.csv", now=T0)
        scheduler.set_schedule("b", "B", "hourly 20", source="b.csv", now=T0)
        assert store.next_due() == T0 + dt.timedelta(minutes=20)
        scheduler.pause("b")
        assert store.next_due() == T0 + dt.timedelta(minutes=40)
        store.claim_schedule("a", expected_due=T0 + dt.timedelta(minutes=40), next_due=None)
        assert store.next_due() is None


class TestDocs:
    def test_operations_page_examples_run(self) -> None:
        """The run_forever example in docs/operations.md runs as shown."""
        assert run_doc_examples("operations.md", section="operations") >= 8


class TestResyncPeriodPerSchedule:
    """A schedule's ``resync_every`` overrides the sync engine's period for its cohort."""

    def _daily_runs(self, rig: Rig, cohort_id: str, days: int) -> list[bc.ImportRun]:
        runs: list[bc.ImportRun] = []
        for _ in range(days):
            rig.clock.advance(days=1)
            runs += rig.scheduler.run_due()
        return [r for r in runs if r.cohort_id == cohort_id]

    def test_a_short_period_resyncs_each_time_it_elapses(self, rig: Rig) -> None:
        """With 2d on the schedule (engine: 7d), every second daily run is a full resync."""
        rig.scheduler.set_schedule(
            "c", "C", "daily 08:00", source=_members("u1", "u2"), resync_every="2d"
        )
        runs = self._daily_runs(rig, "c", 5)
        assert [r.full_resync_reason for r in runs] == [
            "first_import",
            None,
            "period_elapsed",
            None,
            "period_elapsed",
        ]
        assert runs[2].added == 2  # a full resync re-sends every member

    def test_off_never_resyncs_where_the_engine_would(self, rig: Rig) -> None:
        """With 'off', no run is a periodic full resync, though the engine's 1d has elapsed."""
        sync = bc.CohortSync(
            rig.client, rig.store, clock=rig.clock, resync_every=dt.timedelta(days=1)
        )
        scheduler = bc.Scheduler(rig.store, sync, clock=rig.clock)
        scheduler.set_schedule(
            "off", "Off", "daily 08:00", source=_members("u1"), resync_every="off"
        )
        scheduler.set_schedule("eng", "Eng", "daily 08:00", source=_members("u1"))
        runs: list[bc.ImportRun] = []
        for _ in range(3):
            rig.clock.advance(days=1)
            runs += scheduler.run_due()
        reasons = {
            cid: [r.full_resync_reason for r in runs if r.cohort_id == cid]
            for cid in ("off", "eng")
        }
        assert reasons["off"] == ["first_import", None, None]
        assert reasons["eng"] == ["first_import", "period_elapsed", "period_elapsed"]

    def test_a_custom_importer_without_the_option_still_runs_other_schedules(
        self, rig: Rig
    ) -> None:
        """resync_every reaches the importer only when the schedule sets it."""
        seen: list[dict[str, Any]] = []

        class Importer:
            def sync(self, cohort_id: str, name: str, members: Any, **options: Any) -> bc.ImportRun:
                seen.append(options)
                return bc.ImportRun(
                    cohort_id=cohort_id,
                    name=name,
                    trigger="scheduled",
                    started_at=T0,
                    finished_at=T0,
                    result="succeeded",
                )

        scheduler = bc.Scheduler(rig.store, Importer(), clock=rig.clock)
        scheduler.set_schedule("a", "A", "hourly 00", source=_members("u"))
        scheduler.set_schedule("b", "B", "hourly 00", source=_members("u"), resync_every="12h")
        scheduler.run_due(T0 + dt.timedelta(hours=1))
        assert [o.get("resync_every", "unset") for o in seen] == ["unset", dt.timedelta(hours=12)]


class TestPeriodText:
    @given(st.integers(min_value=1, max_value=10_000), st.sampled_from("mhdw"))
    def test_parse_and_format_round_trip(self, n: int, unit: str) -> None:
        """Every period text reads back to the same timedelta through its formatted form."""
        period = bc.parse_period(f"{n}{unit}")
        assert isinstance(period, dt.timedelta)
        assert bc.parse_period(bc.format_period(period)) == period

    def test_invalid_periods_are_refused(self) -> None:
        """Zero, negative, unit-less and unknown-unit periods are configuration errors."""
        for text in ("0d", "-1d", "7", "7y", "", "d"):
            with pytest.raises(bc.ConfigurationError):
                bc.parse_period(text)
        with pytest.raises(bc.ConfigurationError):
            bc.ScheduledImport(
                cohort_id="c",
                name="C",
                schedule=bc.Schedule.hourly(0),
                resync_every=dt.timedelta(seconds=30),
            )


class TestSyncResyncOverride:
    """``CohortSync.sync(resync_every=)``: the period for one call, the engine's by default."""

    def test_per_call_period_overrides_the_engines(self, rig: Rig) -> None:
        """None turns the period off for the call; a shorter period makes it elapse sooner."""
        sync = bc.CohortSync(rig.client, rig.store, clock=rig.clock)  # engine: 7 days
        assert sync.sync("c", "C", ["u1"]).full_resync_reason == "first_import"
        rig.clock.advance(days=2)
        assert sync.sync("c", "C", ["u1"]).full_resync_reason is None
        run = sync.sync("c", "C", ["u1"], resync_every=dt.timedelta(days=1))
        assert run.full_resync_reason == "period_elapsed"
        rig.clock.advance(days=30)
        assert sync.sync("c", "C", ["u1"], resync_every=None).full_resync_reason is None
        assert sync.sync("c", "C", ["u1"]).full_resync_reason == "period_elapsed"

    def test_an_invalid_period_is_refused_before_anything_is_recorded(self, rig: Rig) -> None:
        """A period that is not a positive timedelta fails at once, even on a first import."""
        sync = bc.CohortSync(rig.client, rig.store, clock=rig.clock)
        for bad in (dt.timedelta(0), "7d", 7):
            with pytest.raises(bc.ConfigurationError, match="resync_every"):
                sync.sync("c", "C", ["u1"], resync_every=bad)  # type: ignore[arg-type]
        assert rig.store.history("c") == []
