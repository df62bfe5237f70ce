"""A Scheduler whose schedules, snapshot and history live in PostgreSQL (SQLStore), importing
into the Braze emulator over HTTP; two schedulers sharing the database run a due slot once."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import braze_cohorts as bc
from braze_cohorts.testing import BrazeEmulator, SettableClock

T0 = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.timezone.utc)
QUICK_RETRY = bc.RetryPolicy(attempts=2, initial_backoff=0.0, max_backoff=0.0, jitter="none")


@pytest.fixture
def schema_url(pg_url: str) -> str:
    return pg_url.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def schema() -> str:
    """A schema of its own in the session's PostgreSQL server."""
    return f"sched_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    braze_emulator.add_users(50, prefix="u")
    return braze_emulator


@pytest.fixture
def members_file(tmp_path: Path) -> Path:
    path = tmp_path / "members.csv"
    path.write_text("external_id\n" + "".join(f"u{i}\n" for i in range(20)), encoding="utf-8")
    return path


class Rig:
    """One scheduler process's view: its own SQLStore (engine), client and sync engine."""

    def __init__(self, url: str, schema: str, emulator: BrazeEmulator, clock: SettableClock):
        self.store = bc.SQLStore(url, schema=schema, clock=clock)
        self.client = bc.CohortClient(
            emulator.url,
            partner=emulator.partner,
            partner_api_key=emulator.partner_api_key,
            data_import_key=emulator.data_import_key,
        )
        uploader = bc.BatchUploader(
            self.client, concurrency=2, batch_size=7, retry=QUICK_RETRY, sleep=lambda _s: None
        )
        self.sync = bc.CohortSync(self.client, self.store, uploader=uploader, clock=clock)
        self.scheduler = bc.Scheduler(self.store, self.sync, clock=clock)

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture
def rigs(
    schema_url: str, schema: str, emulator: BrazeEmulator
) -> Iterator[tuple[SettableClock, list[Rig]]]:
    clock = SettableClock(T0)
    made = [Rig(schema_url, schema, emulator, clock) for _ in range(2)]
    yield clock, made
    for rig in made:
        rig.close()


def test_a_due_import_runs_through_the_database_store(
    rigs: tuple[SettableClock, list[Rig]], emulator: BrazeEmulator, members_file: Path
) -> None:
    """The schedule, the snapshot and the run are in PostgreSQL; the members reach Braze."""
    clock, (rig, other) = rigs
    rig.scheduler.set_schedule("c1", "Power users", "hourly 15", source=members_file)
    assert rig.scheduler.run_due() == []  # not due yet
    clock.advance(minutes=15)
    runs = rig.scheduler.run_due()
    assert [(r.cohort_id, r.trigger, r.result, r.added) for r in runs] == [
        ("c1", "scheduled", "succeeded", 20)
    ]
    assert {e[1] for e in emulator.members("c1")} == {f"u{i}" for i in range(20)}
    # Another store object on the same database sees what this one wrote.
    entry = other.store.get_schedule("c1")
    assert entry is not None
    assert entry.last_run_id == runs[0].id
    assert entry.next_due == T0 + dt.timedelta(hours=1, minutes=15)
    assert other.store.member_count("c1") == 20
    assert [r.id for r in other.store.history("c1")] == [runs[0].id]


def test_two_schedulers_claiming_one_slot_run_it_once(
    rigs: tuple[SettableClock, list[Rig]], emulator: BrazeEmulator, members_file: Path
) -> None:
    """Two scheduler threads, each on its own connection pool, run the due slot once."""
    clock, made = rigs
    made[0].scheduler.set_schedule("c1", "Power users", "hourly 15", source=members_file)
    clock.advance(minutes=15)
    barrier = threading.Barrier(len(made))
    both_saw_it = threading.Barrier(len(made))
    for rig in made:  # both read the slot as due before either claims it: a real race

        def due_then_wait(
            now: dt.datetime, read: Any = rig.store.due_schedules
        ) -> list[bc.ScheduledImport]:
            found: list[bc.ScheduledImport] = read(now)
            if found:
                both_saw_it.wait(10)
            return found

        def claim_and_record(
            cohort_id: str, *, claim: Any = rig.store.claim_schedule, **due: Any
        ) -> bool:
            won: bool = claim(cohort_id, **due)
            claims.append(won)
            return won

        rig.store.due_schedules = due_then_wait  # type: ignore[method-assign]
        rig.store.claim_schedule = claim_and_record  # type: ignore[method-assign]
    claims: list[bool] = []
    ran: list[bc.ImportRun] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(rig: Rig) -> None:
        try:
            barrier.wait(10)
            runs = rig.scheduler.run_due()
        except BaseException as exc:  # reported below
            errors.append(exc)
            return
        with lock:
            ran.extend(runs)

    threads = [threading.Thread(target=work, args=(rig,)) for rig in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(claims) == [False, True]  # the database let one claim the slot
    assert [(r.cohort_id, r.result) for r in ran] == [("c1", "succeeded")]
    assert len(made[0].store.history("c1")) == 1
    users = [r for r in emulator.request_log if r.endpoint == "users" and r.cohort_id == "c1"]
    assert len(users) == 3  # 20 members in batches of 7: one import's requests, not two
    assert {e[1] for e in emulator.members("c1")} == {f"u{i}" for i in range(20)}
