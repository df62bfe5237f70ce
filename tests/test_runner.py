"""The scheduler: due and missed runs, claims, manual triggers, pausing, notifications."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pytest

import braze_cohorts as bc
from braze_cohorts import Scheduler
from braze_cohorts.testing import MemoryStore, SettableClock
from braze_cohorts.typing import Clock, ScheduleStore, StateStore
from doc_examples import run_doc_examples

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


class FakeImport:
    """Records each import it is asked for; can be told to fail.

    Like ``CohortSync.sync`` it records each import it runs in the store's history (when it has
    a store), so the scheduler's notes on a run land on a run that exists.
    """

    def __init__(self, clock: Clock, store: StateStore | None = None) -> None:
        self.clock = clock
        self.store = store
        self.calls: list[tuple[str, str, list[object], str]] = []
        self.fail_with: BaseException | None = None
        self.lock = threading.Lock()

    def __call__(
        self, cohort_id: str, name: str, members: Iterable[object], trigger: Any
    ) -> bc.ImportRun:
        if self.fail_with is not None:
            raise self.fail_with
        got = list(members)
        with self.lock:
            self.calls.append((cohort_id, name, got, trigger))
            run_id = len(self.calls)
        run = bc.ImportRun(
            cohort_id=cohort_id, name=name, trigger=trigger, started_at=self.clock(), id=run_id
        )
        if self.store is not None:
            run = self.store.start_run(run)
        run = attrs.evolve(
            run, finished_at=self.clock(), result="succeeded", users=len(got), added=len(got)
        )
        return run if self.store is None else self.store.finish_run(run)


class FnImporter:
    """A plain import function as the scheduler's sync engine."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def sync(
        self,
        cohort_id: str,
        name: str,
        members: Iterable[object],
        *,
        trigger: Any = "manual",
        notify: bool = True,
    ) -> bc.ImportRun:
        return self.fn(cohort_id, name, members, trigger)  # type: ignore[no-any-return]


def make_scheduler(store: Any, run_import: Any = None, **options: Any) -> Scheduler:
    return Scheduler(store, None if run_import is None else FnImporter(run_import), **options)


class RecordingNotifier:
    """Keeps what it is asked to send; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[bc.ImportRun, tuple[str, ...], str | None]] = []
        self.fail_with: Exception | None = None

    def notify_recipients(
        self, run: bc.ImportRun, recipients: Sequence[str], *, paused_reason: str | None = None
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((run, tuple(recipients), paused_reason))


@attrs.define
class Rig:
    clock: SettableClock
    store: MemoryStore
    run_import: FakeImport
    notifier: RecordingNotifier
    runner: Scheduler


@pytest.fixture
def rig() -> Rig:
    clock = SettableClock(T0)
    store = MemoryStore()
    run_import = FakeImport(clock, store)
    notifier = RecordingNotifier()
    runner = make_scheduler(store, run_import, notifier=notifier, clock=clock)
    return Rig(clock, store, run_import, notifier, runner)


def _members() -> list[str]:
    return ["u1", "u2", "u3"]


class TestSetSchedule:
    def test_stores_next_due_from_the_clock(self, rig: Rig) -> None:
        """A new daily schedule is active and due at the next 09:00 after now."""
        entry = rig.runner.set_schedule(
            "c1", "Cohort one", "daily 09:00 UTC", source=_members, recipients=["o@example.com"]
        )
        assert entry.state == "active"
        assert entry.next_due == dt.datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
        assert rig.runner.get_schedule("c1") == entry
        assert entry.recipients == ("o@example.com",)

    def test_explicit_now_sets_the_first_due_time(self, rig: Rig) -> None:
        """set_schedule(now=...) counts the first run from that time, not the clock."""
        later = T0 + dt.timedelta(days=2, hours=3)
        entry = rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", now=later)
        assert entry.next_due == dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        rig.runner.pause("c1")
        resumed = rig.runner.resume("c1", now=later + dt.timedelta(days=1))
        assert resumed.next_due == dt.datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

    def test_second_schedule_conflicts(self, rig: Rig) -> None:
        """One live schedule per cohort: a second one fails unless replace=True."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        with pytest.raises(bc.ScheduleConflictError):
            rig.runner.set_schedule("c1", "One", "hourly 5", source=_members)
        replaced = rig.runner.set_schedule("c1", "One", "hourly 5", source=_members, replace=True)
        assert str(replaced.schedule) == "hourly 05"
        assert rig.runner.get_schedule("c1").schedule == bc.Schedule.hourly(5)

    def test_one_time_schedule_in_the_past_is_refused(self, rig: Rig) -> None:
        """A one-time schedule that would never run is a ScheduleError."""
        with pytest.raises(bc.ScheduleError):
            rig.runner.set_schedule("c1", "One", bc.Schedule.once(T0 - dt.timedelta(hours=1)))

    def test_invalid_recipient_is_refused(self, rig: Rig) -> None:
        """A bad address fails before anything is stored."""
        with pytest.raises(bc.ConfigurationError):
            rig.runner.set_schedule("c1", "One", "hourly 0", recipients=["nope"])
        assert rig.store.list_schedules() == []

    def test_file_source_is_kept_as_an_absolute_path(self, rig: Rig, tmp_path: Any) -> None:
        """A path source is stored as an absolute path string, so cron's cwd does not matter."""
        entry = rig.runner.set_schedule("c1", "One", "hourly 0", source="members.csv")
        assert entry.source == os.path.join(os.getcwd(), "members.csv")
        other = rig.runner.set_schedule("c2", "Two", "hourly 0", source=tmp_path / "m.jsonl")
        assert other.source == str(tmp_path / "m.jsonl")

    def test_unknown_cohort_is_not_found(self, rig: Rig) -> None:
        """Show, pause, resume, clear and trigger of a cohort without schedule fail clearly."""
        for call in (
            rig.runner.get_schedule,
            rig.runner.pause,
            rig.runner.resume,
            rig.runner.clear,
            rig.runner.trigger,
        ):
            with pytest.raises(bc.ScheduleNotFoundError):
                call("nope")

    def test_naive_clock_is_refused(self, rig: Rig) -> None:
        """A clock returning naive datetimes is a configuration error."""
        runner = make_scheduler(rig.store, clock=lambda: dt.datetime(2026, 1, 1))
        with pytest.raises(bc.ConfigurationError):
            runner.set_schedule("c1", "One", "hourly 0", source=_members)


class TestRunDue:
    def test_not_due_runs_nothing(self, rig: Rig) -> None:
        """Before its time a schedule does not run."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        rig.clock.advance(minutes=59)
        assert rig.runner.run_due() == []
        assert rig.run_import.calls == []

    def test_due_runs_once_with_trigger_scheduled(self, rig: Rig) -> None:
        """At its time it runs once, with trigger 'scheduled'; the next due time moves on."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        rig.clock.advance(hours=1)
        runs = rig.runner.run_due()
        assert [(r.cohort_id, r.trigger, r.users) for r in runs] == [("c1", "scheduled", 3)]
        assert rig.run_import.calls == [("c1", "One", ["u1", "u2", "u3"], "scheduled")]
        entry = rig.runner.get_schedule("c1")
        assert entry.next_due == dt.datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
        assert entry.last_run_id == 1
        assert rig.runner.run_due() == []
        assert len(rig.run_import.calls) == 1

    def test_missed_runs_happen_once(self, rig: Rig) -> None:
        """After three days down, a daily schedule runs once, then is due tomorrow."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        rig.clock.advance(days=3, hours=4)  # 2026-12-01 12:00
        assert len(rig.runner.run_due()) == 1
        assert rig.runner.run_due() == []
        assert len(rig.run_import.calls) == 1
        assert rig.runner.get_schedule("c1").next_due == dt.datetime(2026, 12, 2, 9, tzinfo=UTC)

    def test_each_minute_from_cron_runs_each_slot_once(self, rig: Rig) -> None:
        """Called every minute for three hours, an hourly schedule runs exactly three times."""
        rig.runner.set_schedule("c1", "One", "hourly 30", source=_members)
        for _ in range(180):
            rig.clock.advance(minutes=1)
            rig.runner.run_due()
        assert len(rig.run_import.calls) == 3

    def test_explicit_now_overrides_the_clock(self, rig: Rig) -> None:
        """run_due(now=...) decides what is due by that time."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        assert rig.runner.run_due(now=T0 + dt.timedelta(hours=2)) != []
        with pytest.raises(bc.ConfigurationError):
            rig.runner.run_due(now=dt.datetime(2026, 11, 28, 10))

    def test_one_time_schedule_becomes_done(self, rig: Rig) -> None:
        """A one-time schedule runs once and is then done; a new one may then be set."""
        rig.runner.set_schedule(
            "c1", "One", bc.Schedule.once(T0 + dt.timedelta(minutes=5)), source=_members
        )
        rig.clock.advance(minutes=10)
        assert len(rig.runner.run_due()) == 1
        entry = rig.runner.get_schedule("c1")
        assert (entry.state, entry.next_due) == ("done", None)
        rig.clock.advance(days=1)
        assert rig.runner.run_due() == []
        rig.runner.set_schedule("c1", "One", "hourly 0", source=_members)  # done is not live

    def test_due_order_and_failure_isolation(self, rig: Rig) -> None:
        """Every due schedule runs in due order; one failing import does not stop the others."""
        rig.runner.set_schedule("b", "B", "daily 08:30 UTC", source=_members)
        rig.runner.set_schedule("a", "A", "daily 08:45 UTC", source=_members)

        def broken() -> list[str]:
            raise bc.InputError("members.csv: no such file")

        rig.runner.set_schedule("c", "C", "daily 08:10 UTC", source=broken)
        rig.clock.advance(hours=1)
        runs = rig.runner.run_due()
        assert [r.cohort_id for r in runs] == ["c", "b", "a"]
        assert runs[0].result == "failed"
        assert "no such file" in (runs[0].error or "")
        assert [c[0] for c in rig.run_import.calls] == ["b", "a"]

    def test_any_exception_from_a_source_fails_only_that_run(self, rig: Rig) -> None:
        """A member function raising a plain exception gives a failed run; others still run."""

        def buggy() -> list[str]:
            raise KeyError("user_id")

        rig.runner.set_schedule("a", "A", "hourly 10", source=buggy)
        rig.runner.set_schedule("b", "B", "hourly 20", source=_members)
        rig.clock.advance(hours=1)
        runs = rig.runner.run_due()
        assert [(r.cohort_id, r.result) for r in runs] == [("a", "failed"), ("b", "succeeded")]
        assert (runs[0].error, runs[0].error_kind) == ("unexpected error: KeyError", "KeyError")

    def test_runner_without_import_function_only_manages(self) -> None:
        """A runner made without run_import keeps schedules but refuses to run them."""
        clock = SettableClock(T0)
        runner = make_scheduler(MemoryStore(), clock=clock)
        runner.set_schedule("c1", "One", "hourly 30", source="m.csv")
        clock.advance(hours=1)
        with pytest.raises(bc.ConfigurationError):
            runner.trigger("c1")

    def test_unregistered_source_fails_the_run_only(self, rig: Rig) -> None:
        """A schedule without a file or registered function fails with a clear error."""
        rig.runner.set_schedule("c1", "One", "hourly 30", recipients=["o@example.com"])
        rig.clock.advance(hours=1)
        (run,) = rig.runner.run_due()
        assert run.result == "failed"
        assert "register_source" in (run.error or "")
        assert rig.notifier.sent[0][0].result == "failed"

    def test_registered_source_is_read_at_each_run(self, rig: Rig) -> None:
        """register_source gives the members; they are read afresh at each run."""
        members = ["u1"]
        rig.runner.set_schedule("c1", "One", "hourly 30")
        rig.runner.register_source("c1", lambda: list(members))
        rig.clock.advance(hours=1)
        rig.runner.run_due()
        members.append("u2")
        rig.clock.advance(hours=1)
        rig.runner.run_due()
        assert [c[2] for c in rig.run_import.calls] == [["u1"], ["u1", "u2"]]

    def test_file_source_uses_the_reader(self) -> None:
        """A file source is read with the reader at run time."""
        clock = SettableClock(T0)
        run_import = FakeImport(clock)
        read: list[str] = []

        def reader(path: str) -> list[object]:
            read.append(path)
            return [{"external_id": "x"}]

        runner = make_scheduler(MemoryStore(), run_import, clock=clock, read_file=reader)
        runner.set_schedule("c1", "One", "hourly 30", source="m.csv")
        clock.advance(hours=1)
        runner.run_due()
        assert read == [os.path.abspath("m.csv")]
        assert run_import.calls[0][2] == [{"external_id": "x"}]

    def test_busy_cohort_is_skipped(self, rig: Rig) -> None:
        """When another import holds the cohort's lock the scheduled run is skipped, not raised."""
        rig.runner.set_schedule("c1", "One", "hourly 30", source=_members)
        rig.run_import.fail_with = bc.ImportInProgressError("busy")
        rig.clock.advance(hours=1)
        assert rig.runner.run_due() == []
        assert rig.runner.get_schedule("c1").next_due == T0 + dt.timedelta(hours=1, minutes=30)


class TestConcurrentRunners:
    def test_claimed_schedule_is_not_run_twice(self, rig: Rig) -> None:
        """A second runner while the first is importing finds nothing to run."""
        inside = threading.Event()
        release = threading.Event()

        def slow() -> list[str]:
            inside.set()
            assert release.wait(10)
            return ["u1"]

        rig.runner.set_schedule("c1", "One", "hourly 30", source=slow)
        rig.clock.advance(hours=1)
        results: list[list[bc.ImportRun]] = []
        first = threading.Thread(target=lambda: results.append(rig.runner.run_due()))
        first.start()
        assert inside.wait(10)
        second = make_scheduler(rig.store, rig.run_import, clock=rig.clock)
        assert second.run_due() == []
        release.set()
        first.join(10)
        assert len(results[0]) == 1
        assert len(rig.run_import.calls) == 1

    def test_racing_runners_run_each_schedule_once(self, rig: Rig) -> None:
        """Four runners started together run each of 30 due schedules exactly once."""
        for i in range(30):
            rig.runner.set_schedule(f"c{i:02d}", f"C{i}", "hourly 30", source=_members)
        rig.clock.advance(hours=1)
        barrier = threading.Barrier(4)
        out: list[bc.ImportRun] = []
        lock = threading.Lock()

        def work() -> None:
            runner = make_scheduler(rig.store, rig.run_import, clock=rig.clock)
            for i in range(30):
                runner.register_source(f"c{i:02d}", _members)
            barrier.wait(10)
            runs = runner.run_due()
            with lock:
                out.extend(runs)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r.cohort_id for r in out) == [f"c{i:02d}" for i in range(30)]
        assert all(r.result == "succeeded" for r in out)
        assert sorted(c[0] for c in rig.run_import.calls) == [f"c{i:02d}" for i in range(30)]


class TestTrigger:
    def test_runs_now_with_trigger_manual(self, rig: Rig) -> None:
        """trigger() runs at once with trigger 'manual' and leaves the due time alone."""
        entry = rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        run = rig.runner.trigger("c1")
        assert (run.trigger, run.result) == ("manual", "succeeded")
        assert rig.run_import.calls[0][3] == "manual"
        assert rig.runner.get_schedule("c1").next_due == entry.next_due
        assert rig.runner.get_schedule("c1").last_run_id == run.id

    def test_busy_cohort_raises(self, rig: Rig) -> None:
        """A manual trigger of a cohort being imported says so."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        rig.run_import.fail_with = bc.ImportInProgressError("busy")
        with pytest.raises(bc.ImportInProgressError):
            rig.runner.trigger("c1")

    def test_paused_schedule_can_be_triggered(self, rig: Rig) -> None:
        """A paused schedule still runs by hand, and stays paused."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        rig.runner.pause("c1")
        assert rig.runner.trigger("c1").result == "succeeded"
        assert rig.runner.get_schedule("c1").state == "paused"


class TestPauseResume:
    def test_authentication_error_pauses_and_tells_recipients(self, rig: Rig) -> None:
        """A 401 pauses the schedule with the reason, and the email says so."""
        rig.runner.set_schedule(
            "c1", "One", "hourly 30", source=_members, recipients=["o@example.com"]
        )
        rig.run_import.fail_with = bc.AuthenticationError(
            "Invalid client_secret", cause="data_import_key"
        )
        rig.clock.advance(hours=1)
        (run,) = rig.runner.run_due()
        assert run.result == "failed"
        entry = rig.runner.get_schedule("c1")
        assert entry.state == "paused"
        assert entry.next_due is None
        assert "data import key" in (entry.paused_reason or "")
        (_run, recipients, reason) = rig.notifier.sent[0]
        assert recipients == ("o@example.com",)
        assert reason == entry.paused_reason
        rig.clock.advance(hours=5)
        assert rig.runner.run_due() == []

    @pytest.mark.parametrize(
        ("cause", "advice"),
        [
            ("data_import_key", "data import key"),
            ("partner_api_key", "partner API key"),
            ("partner_not_enabled", "not enabled for this workspace"),
            (None, "refused the credentials"),
        ],
    )
    def test_returned_401_run_pauses_with_advice_for_its_cause(
        self, rig: Rig, cause: str | None, advice: str
    ) -> None:
        """A recorded run failed by a 401 pauses the schedule; the reason names what to fix."""

        def import_401(cohort_id: str, name: str, members: Iterable[object], trigger: Any) -> Any:
            list(members)
            return bc.ImportRun(
                cohort_id=cohort_id,
                name=name,
                trigger=trigger,
                started_at=T0,
                result="failed",
                error="HTTP 401 from POST /partners/p/cohorts: whatever Braze said",
                error_kind="AuthenticationError",
                error_cause=cause,
                id=9,
            )

        runner = make_scheduler(rig.store, import_401, notifier=rig.notifier, clock=rig.clock)
        runner.set_schedule("c1", "One", "hourly 30", source=_members)
        rig.clock.advance(hours=1)
        runner.run_due()
        entry = runner.get_schedule("c1")
        assert entry.state == "paused"
        assert advice in (entry.paused_reason or "")

    def test_401_text_without_error_kind_does_not_pause(self, rig: Rig) -> None:
        """Pausing decides on error_kind, never on the text of a message."""

        def import_failed(
            cohort_id: str, name: str, members: Iterable[object], trigger: Any
        ) -> Any:
            return bc.ImportRun(
                cohort_id=cohort_id, name=name, trigger=trigger, started_at=T0, result="failed",
                error="HTTP 401 from POST /x: Invalid client_secret", error_kind="ServerError",
            )  # fmt: skip

        runner = make_scheduler(rig.store, import_failed, notifier=rig.notifier, clock=rig.clock)
        runner.set_schedule("c1", "One", "hourly 30", source=_members)
        runner.trigger("c1")
        assert runner.get_schedule("c1").state == "active"

    def test_done_schedule_is_not_revived_by_a_401(self, rig: Rig) -> None:
        """A manual trigger of a done one-time schedule that gets a 401 leaves it done."""
        rig.runner.set_schedule(
            "c1", "One", bc.Schedule.once(T0 + dt.timedelta(minutes=5)), source=_members
        )
        rig.clock.advance(minutes=10)
        rig.runner.run_due()
        rig.run_import.fail_with = bc.AuthenticationError("Invalid client secret")
        assert rig.runner.trigger("c1").result == "failed"
        assert rig.runner.get_schedule("c1").state == "done"
        assert rig.notifier.sent[-1][2] is None

    def test_other_failures_do_not_pause(self, rig: Rig) -> None:
        """A server error fails the run but keeps the schedule active."""
        rig.runner.set_schedule("c1", "One", "hourly 30", source=_members)
        rig.run_import.fail_with = bc.ServerError("down", status_code=503)
        rig.clock.advance(hours=1)
        (run,) = rig.runner.run_due()
        assert run.result == "failed"
        assert rig.runner.get_schedule("c1").state == "active"
        assert rig.notifier.sent[0][2] is None

    def test_resume_recomputes_next_due(self, rig: Rig) -> None:
        """Resume re-activates from now: the next slot after the resume time."""
        rig.runner.set_schedule("c1", "One", "daily 09:00 UTC", source=_members)
        paused = rig.runner.pause("c1", "holiday")
        assert (paused.state, paused.paused_reason, paused.next_due) == ("paused", "holiday", None)
        rig.clock.advance(days=2, hours=3)  # 2026-11-30 11:00
        assert rig.runner.run_due() == []
        resumed = rig.runner.resume("c1")
        assert resumed.state == "active"
        assert resumed.paused_reason is None
        assert resumed.next_due == dt.datetime(2026, 12, 1, 9, tzinfo=UTC)

    def test_resumed_past_one_time_schedule_runs_at_once(self, rig: Rig) -> None:
        """A paused one-time schedule whose time passed runs at the next run_due after resume."""
        rig.runner.set_schedule(
            "c1", "One", bc.Schedule.once(T0 + dt.timedelta(minutes=5)), source=_members
        )
        rig.runner.pause("c1")
        rig.clock.advance(hours=1)
        assert rig.runner.resume("c1").next_due == rig.clock.now
        assert len(rig.runner.run_due()) == 1
        assert rig.runner.get_schedule("c1").state == "done"

    def test_clear_removes_the_schedule(self, rig: Rig) -> None:
        """Clear deletes it; it no longer runs and a new one can be set without replace."""
        rig.runner.set_schedule("c1", "One", "hourly 30", source=_members)
        rig.runner.clear("c1")
        assert rig.runner.schedules() == []
        rig.clock.advance(hours=1)
        assert rig.runner.run_due() == []


class TestNotifications:
    def test_each_run_notifies_the_schedule_recipients(self, rig: Rig) -> None:
        """After each run the notifier gets the run and the schedule's recipients."""
        rig.runner.set_schedule(
            "c1", "One", "hourly 30", source=_members, recipients=["a@example.com"]
        )
        rig.clock.advance(hours=1)
        rig.runner.run_due()
        rig.runner.trigger("c1")
        assert [(r.trigger, to, p) for r, to, p in rig.notifier.sent] == [
            ("scheduled", ("a@example.com",), None),
            ("manual", ("a@example.com",), None),
        ]

    def test_notification_failure_is_recorded_not_raised(self, rig: Rig) -> None:
        """A failing notifier leaves the import succeeded and records the error on the run."""
        rig.runner.set_schedule(
            "c1", "One", "hourly 30", source=_members, recipients=["a@example.com"]
        )
        rig.notifier.fail_with = bc.NotificationError("could not send the email via x:25")
        rig.clock.advance(hours=1)
        (run,) = rig.runner.run_due()
        assert run.result == "succeeded"
        assert run.notification_error == "could not send the email via x:25"
        assert run.id is not None
        stored = rig.store.get_run(run.id)
        assert stored is not None
        assert stored.notification_error == "could not send the email via x:25"

    def test_unexpected_notifier_exception_is_recorded_too(self, rig: Rig) -> None:
        """Even a notifier bug (any exception) never fails the import."""
        rig.runner.set_schedule("c1", "One", "hourly 30", source=_members)
        rig.notifier.fail_with = RuntimeError("oops")
        assert rig.runner.trigger("c1").notification_error == "RuntimeError: oops"

    def test_plain_notifier_gets_notify_run(self, rig: Rig) -> None:
        """A notifier with only notify(run) is called with the run."""
        got: list[bc.ImportRun] = []

        class Plain:
            def notify(self, run: bc.ImportRun) -> None:
                got.append(run)

        runner = make_scheduler(rig.store, rig.run_import, notifier=Plain(), clock=rig.clock)
        runner.set_schedule("c1", "One", "hourly 30", source=_members)
        runner.trigger("c1")
        assert [r.cohort_id for r in got] == ["c1"]


def test_memory_store_satisfies_the_protocol() -> None:
    """The test double is a ScheduleStore (checked by mypy on the tests too)."""
    store: ScheduleStore = MemoryStore()
    assert store.list_schedules() == []


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    return str(tmp_path / "state.db")


class TestSQLiteSchedules:
    def test_round_trip_through_the_store(self, db_path: str) -> None:
        """A schedule read back from SQLite equals the one stored, in any process's view."""
        clock = SettableClock(T0)
        with bc.SQLiteStore(db_path) as store:
            runner = make_scheduler(store, clock=clock)
            entry = runner.set_schedule(
                "c1",
                "One",
                "monthly last 06:00 America/New_York",
                source="/data/m.csv",
                recipients=["Ops <ops@example.com>", "b@example.com"],
            )
        with bc.SQLiteStore(db_path) as other:
            assert make_scheduler(other).get_schedule("c1") == entry
            assert make_scheduler(other).schedules() == [entry]

    def test_conflict_replace_and_done(self, db_path: str) -> None:
        """SQLite enforces one live schedule per cohort; done ones may be replaced."""
        clock = SettableClock(T0)
        with bc.SQLiteStore(db_path) as store:
            runner = make_scheduler(store, FakeImport(clock), clock=clock)
            runner.set_schedule("c1", "One", bc.Schedule.once(T0 + dt.timedelta(minutes=1)))
            with pytest.raises(bc.ScheduleConflictError, match="already has a live schedule"):
                runner.set_schedule("c1", "One", "hourly 0")
            runner.register_source("c1", _members)
            clock.advance(minutes=2)
            assert len(runner.run_due()) == 1
            assert runner.get_schedule("c1").state == "done"
            runner.set_schedule("c1", "One", "hourly 0")
            assert runner.get_schedule("c1").state == "active"

    def test_claim_is_compare_and_set(self, db_path: str) -> None:
        """A claim with a stale due time changes nothing and says so."""
        clock = SettableClock(T0)
        with bc.SQLiteStore(db_path) as store:
            runner = make_scheduler(store, clock=clock)
            entry = runner.set_schedule("c1", "One", "hourly 30")
            assert entry.next_due is not None
            later = entry.next_due + dt.timedelta(hours=1)
            assert store.claim_schedule("c1", expected_due=entry.next_due, next_due=later)
            assert not store.claim_schedule("c1", expected_due=entry.next_due, next_due=later)
            assert runner.get_schedule("c1").next_due == later

    def test_runners_on_separate_connections_run_each_schedule_once(self, db_path: str) -> None:
        """Four runners, each with its own SQLite connection, run each of 40 schedules once."""
        clock = SettableClock(T0)
        run_import = FakeImport(clock)
        with bc.SQLiteStore(db_path) as store:
            setup = make_scheduler(store, clock=clock)
            for i in range(40):
                setup.set_schedule(f"c{i:02d}", f"C{i}", "hourly 30")
        clock.advance(hours=1)
        barrier = threading.Barrier(4)
        out: list[bc.ImportRun] = []
        lock = threading.Lock()

        def work() -> None:
            with bc.SQLiteStore(db_path) as own:
                runner = make_scheduler(own, run_import, clock=clock)
                for i in range(40):
                    runner.register_source(f"c{i:02d}", _members)
                barrier.wait(10)
                runs = runner.run_due()
            with lock:
                out.extend(runs)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(r.cohort_id for r in out) == [f"c{i:02d}" for i in range(40)]
        assert sorted(c[0] for c in run_import.calls) == [f"c{i:02d}" for i in range(40)]


def _process_import(
    cohort_id: str, name: str, members: Iterable[object], trigger: Any
) -> bc.ImportRun:
    got = list(members)
    return bc.ImportRun(
        cohort_id=cohort_id, name=name, trigger=trigger, started_at=T0, result="succeeded",
        users=len(got),
    )  # fmt: skip


def _process_worker(db_path: str, now: str, count: int, barrier: Any, queue: Any) -> None:
    """Run due schedules in a separate process and report which cohorts it ran."""
    at = dt.datetime.fromisoformat(now)
    with bc.SQLiteStore(db_path) as store:
        runner = make_scheduler(store, _process_import, clock=lambda: at)
        for i in range(count):
            runner.register_source(f"c{i:02d}", _members)
        barrier.wait(30)
        queue.put([run.cohort_id for run in runner.run_due()])


class TestSeparateProcesses:
    def test_two_processes_never_run_a_slot_twice(self, db_path: str) -> None:
        """Two processes calling run_due on the same file together run each schedule once."""
        import multiprocessing

        clock = SettableClock(T0)
        with bc.SQLiteStore(db_path) as store:
            setup = make_scheduler(store, clock=clock)
            for i in range(30):
                setup.set_schedule(f"c{i:02d}", f"C{i}", "hourly 30")
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        queue = ctx.Queue()
        now = (T0 + dt.timedelta(hours=1)).isoformat()
        procs = [
            ctx.Process(target=_process_worker, args=(db_path, now, 30, barrier, queue))
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        ran = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        together = sorted(c for part in ran for c in part)
        assert together == [f"c{i:02d}" for i in range(30)]


class CountingNotifier:
    """Has both notifier methods and counts the calls of each."""

    def __init__(self) -> None:
        self.plain: list[bc.ImportRun] = []
        self.targeted: list[tuple[bc.ImportRun, tuple[str, ...], str | None]] = []

    def notify(self, run: bc.ImportRun) -> None:
        self.plain.append(run)

    def notify_recipients(
        self, run: bc.ImportRun, recipients: Sequence[str], *, paused_reason: str | None = None
    ) -> None:
        self.targeted.append((run, tuple(recipients), paused_reason))


class TestCohortSyncSchedules:
    def test_scheduled_and_manual_runs_against_the_emulator(
        self, braze_emulator: Any, braze_client: bc.CohortClient, db_path: str
    ) -> None:
        """Through CohortSync: a due run is 'scheduled', a trigger 'manual', both in history."""
        braze_emulator.add_users(4, prefix="u")
        members = ["u0", "u1"]
        notifier = CountingNotifier()
        with bc.SQLiteStore(db_path) as store:
            sync = bc.CohortSync(braze_client, store, notifier=notifier)
            scheduler = bc.Scheduler(store, sync, notifier=notifier)
            scheduler.set_schedule(
                "c1", "One", "daily 09:00 UTC", source=lambda: list(members),
                recipients=["o@example.com"], now=T0,
            )  # fmt: skip
            assert scheduler.run_due(now=T0) == []
            (run,) = scheduler.run_due(now=T0 + dt.timedelta(hours=1))
            assert (run.trigger, run.result, run.added) == ("scheduled", "succeeded", 2)
            members.append("u2")
            manual = scheduler.trigger("c1")
            assert (manual.trigger, manual.added) == ("manual", 1)
            assert [r.trigger for r in sync.history("c1")] == ["manual", "scheduled"]
            assert scheduler.get_schedule("c1").last_run_id == manual.id
        assert {m[1] for m in braze_emulator.members("c1")} == {"u0", "u1", "u2"}
        assert notifier.plain == []  # no second, untargeted notification
        assert [(r.trigger, to) for r, to, _ in notifier.targeted] == [
            ("scheduled", ("o@example.com",)),
            ("manual", ("o@example.com",)),
        ]

    def test_revoked_key_pauses_the_schedule(
        self, braze_emulator: Any, braze_client: bc.CohortClient, db_path: str
    ) -> None:
        """A 401 from Braze pauses the schedule, tells the recipients why; resume re-activates."""
        braze_emulator.add_users(2, prefix="u")
        notifier = CountingNotifier()
        with bc.SQLiteStore(db_path) as store:
            sync = bc.CohortSync(braze_client, store, notifier=notifier)
            scheduler = bc.Scheduler(store, sync, notifier=notifier)
            members = ["u0"]
            scheduler.set_schedule("c1", "One", "hourly 30", source=lambda: list(members), now=T0)
            assert scheduler.run_due(now=T0 + dt.timedelta(hours=1))[0].result == "succeeded"
            braze_emulator.revoke_data_import_key(braze_emulator.data_import_key)
            members.append("u1")  # a change must be sent, so Braze sees the revoked key
            (failed,) = scheduler.run_due(now=T0 + dt.timedelta(hours=2))
            assert failed.result == "failed"
            entry = scheduler.get_schedule("c1")
            assert entry.state == "paused"
            assert (entry.paused_reason or "").startswith("authentication failed")
            assert notifier.targeted[-1][2] == entry.paused_reason
            assert scheduler.run_due(now=T0 + dt.timedelta(hours=5)) == []
            resumed = scheduler.resume("c1", now=T0 + dt.timedelta(hours=5))
            assert resumed.next_due == T0 + dt.timedelta(hours=5, minutes=30)

    def test_failing_file_source_is_recorded_in_history(
        self, braze_client: bc.CohortClient, db_path: str, tmp_path: Any
    ) -> None:
        """A member file that vanished gives a failed run in the history, mailed like any other."""
        path = tmp_path / "m.csv"
        path.write_text("external_id\nu0\n", encoding="utf-8")
        notifier = CountingNotifier()
        with bc.SQLiteStore(db_path) as store:
            sync = bc.CohortSync(braze_client, store, notifier=notifier)
            scheduler = bc.Scheduler(store, sync, notifier=notifier)
            scheduler.set_schedule("c1", "One", "hourly 30", source=path, now=T0)
            path.unlink()
            (run,) = scheduler.run_due(now=T0 + dt.timedelta(hours=1))
            assert run.result == "failed"
            assert run.id is not None
            assert "m.csv" in (run.error or "")
            assert sync.history("c1")[0].id == run.id
            assert scheduler.get_schedule("c1").last_run_id == run.id
            assert scheduler.get_schedule("c1").state == "active"
        assert notifier.targeted[0][0].id == run.id

    def test_sync_engine_knows_nothing_of_schedules(self) -> None:
        """CohortSync has no schedule methods: the scheduler is composed over it."""
        for name in ("set_schedule", "run_due", "trigger", "register_source", "scheduler"):
            assert not hasattr(bc.CohortSync, name)

    def test_something_without_a_sync_method_is_refused(self) -> None:
        """A scheduler needs a sync engine with a sync method, or none at all."""
        with pytest.raises(bc.ConfigurationError, match="sync method"):
            bc.Scheduler(MemoryStore(), object())  # type: ignore[arg-type]


class TestEmailThroughRealSmtp:
    def test_scheduled_run_mails_its_recipients(
        self, braze_emulator: Any, braze_client: bc.CohortClient, db_path: str
    ) -> None:
        """With SmtpNotifier and a loopback SMTP server, one email per run reaches recipients."""
        import email
        import email.policy
        import socket

        from aiosmtpd.controller import Controller

        received: list[tuple[list[str], Any]] = []

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                received.append((list(envelope.rcpt_tos), msg))
                return "250 OK"

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            braze_emulator.add_users(3, prefix="u")
            notifier = bc.SmtpNotifier("127.0.0.1", port, sender="bot@example.com")
            with bc.SQLiteStore(db_path) as store:
                sync = bc.CohortSync(
                    braze_client, store, notifier=notifier, max_reject_fraction=0.5
                )
                scheduler = bc.Scheduler(store, sync, notifier=notifier)
                scheduler.set_schedule(
                    "c1", "Power users", "hourly 30", source=lambda: ["u0", "u1", "u2", "  "],
                    recipients=["a@example.com", "b@example.com"], now=T0,
                )  # fmt: skip
                (run,) = scheduler.run_due(now=T0 + dt.timedelta(hours=1))
        finally:
            controller.stop()
        assert run.notification_error is None
        assert len(received) == 1
        rcpt, msg = received[0]
        assert rcpt == ["a@example.com", "b@example.com"]
        assert msg["Subject"] == "[braze-cohorts] Power users: succeeded"
        body = msg.get_content()
        assert "Power users (id c1)" in body
        assert "Trigger:   scheduled" in body
        assert "Users in the cohort: 3" in body
        assert "Added:     3" in body
        assert "Rejected:  1" in body


class TestDocs:
    def test_schedule_runner_examples_run(self) -> None:
        """The examples in the schedule-runner section of docs/schedules.md run as shown."""
        assert run_doc_examples("schedules.md", section="schedule-runner") > 10


class TestProtocols:
    def test_library_parts_satisfy_the_protocols(self) -> None:
        """SQLiteStore is a ScheduleStore and SmtpNotifier a RecipientNotifier (mypy checks too)."""
        import braze_cohorts.typing as bt

        with bc.SQLiteStore(":memory:") as sqlite_store:
            store: bt.ScheduleStore = sqlite_store
            assert store.list_schedules() == []
        smtp = bc.SmtpNotifier("smtp.example.com", sender="b@x.io")
        targeted: bt.RecipientNotifier = smtp
        plain: bt.Notifier = smtp
        assert isinstance(targeted, bt.RecipientNotifier)
        assert not isinstance(object(), bt.RecipientNotifier)
        assert callable(plain.notify)
