"""What CohortSync tells the outside while it runs: the on_phase hook, log extras and metrics."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from braze_cohorts import (
    BatchUploader,
    CohortSync,
    ImportRun,
    MeteredLimiter,
    PhaseProgress,
    RateLimiter,
    RetryPolicy,
    SQLiteStore,
    _metrics,
)
from braze_cohorts.testing import FakeClient, SettableClock
from doc_examples import run_doc_examples

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def braze() -> FakeClient:
    return FakeClient()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def sync(braze: FakeClient, store: SQLiteStore) -> CohortSync:
    uploader = BatchUploader(
        braze,  # type: ignore[arg-type]
        concurrency=2,
        batch_size=500,
        retry=RetryPolicy(attempts=1),
        sleep=lambda _s: None,
    )
    clock = SettableClock(T0, tick=dt.timedelta(seconds=1))
    return CohortSync(braze, store, uploader=uploader, clock=clock)  # type: ignore[arg-type]


class TestOnPhase:
    def test_read_then_diff_then_send_with_the_counts(self, sync: CohortSync) -> None:
        """Reading reports growing record counts, then diff once, then send with the delta."""
        events: list[PhaseProgress] = []
        ids = [f"u{i}" for i in range(5000)]
        run = sync.sync("c1", "C", [*ids, " bad"], on_phase=events.append)
        assert run.result == "succeeded"
        phases = [e.phase for e in events]
        assert phases[-2:] == ["diff", "send"]
        assert set(phases[:-2]) == {"read"}
        reads = [e.records for e in events if e.phase == "read"]
        assert reads[0] == 0  # the first chunk is announced before it is read
        assert reads == sorted(reads)
        assert reads[-1] == 5001  # every record, the rejected one too
        assert events[-2].records == 5001
        assert (events[-1].adds, events[-1].removes) == (5000, 0)

    def test_second_import_sends_the_delta_size(self, sync: CohortSync) -> None:
        """The send event carries the change only, not the membership."""
        sync.sync("c1", "C", [f"u{i}" for i in range(100)])
        events: list[PhaseProgress] = []
        sync.sync("c1", "C", [f"u{i}" for i in range(10, 105)], on_phase=events.append)
        send = [e for e in events if e.phase == "send"]
        assert [(e.adds, e.removes) for e in send] == [(5, 10)]

    def test_dry_run_and_unchanged_membership_have_no_send(self, sync: CohortSync) -> None:
        """Nothing is sent by a dry run or an empty change, so no send event comes."""
        events: list[PhaseProgress] = []
        sync.sync("c1", "C", ["u1", "u2"], dry_run=True, on_phase=events.append)
        assert [e.phase for e in events] == ["read", "read", "diff"]
        sync.sync("c1", "C", ["u1", "u2"])
        events.clear()
        sync.sync("c1", "C", ["u1", "u2"], on_phase=events.append)
        assert "send" not in [e.phase for e in events]

    def test_sync_delta_reads_both_inputs(self, sync: CohortSync) -> None:
        """sync_delta reports reading and the end of reading for entered and for left."""
        sync.sync("c1", "C", ["a", "b"])
        events: list[PhaseProgress] = []
        sync.sync_delta("c1", "C", entered=["x", "y"], left=["a"], on_phase=events.append)
        assert [e.phase for e in events].count("diff") == 2
        assert max(e.records for e in events) == 3
        assert [(e.adds, e.removes) for e in events if e.phase == "send"] == [(2, 1)]

    def test_a_failing_hook_fails_the_run_not_the_caller(self, sync: CohortSync) -> None:
        """The hook runs inside the import: its error is the run's, recorded, like progress."""

        def broken(event: PhaseProgress) -> None:
            raise RuntimeError("display gone")

        run = sync.sync("c1", "C", ["u1"], on_phase=broken)
        assert run.result == "failed"
        assert sync.history("c1")[0].result == "failed"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[_Capture]:
    handler = _Capture()
    logger = logging.getLogger("braze_cohorts._sync")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


class TestLogExtras:
    def test_every_record_of_a_run_carries_cohort_and_run_id(
        self, sync: CohortSync, captured: _Capture
    ) -> None:
        """A JSON formatter finds cohort_id and run_id on each record the engine logs."""
        first = sync.sync("c1", "C", ["u1", "u2"])
        second = sync.sync("c1", "C", ["u2"], allow_mass_removal=True)
        assert len(captured.records) >= 6
        by_run: dict[object, set[str]] = {}
        for record in captured.records:
            fields: dict[str, Any] = record.__dict__
            assert fields["cohort_id"] == "c1", record.getMessage()
            by_run.setdefault(fields["run_id"], set()).add(record.levelname)
        assert set(by_run) == {first.id, second.id}
        assert "WARNING" in by_run[first.id]  # the first-import warning has them too

    def test_refusals_carry_them_too(self, sync: CohortSync, captured: _Capture) -> None:
        """The warning of a refused import is attributed to its run."""
        sync.sync("c1", "C", ["u1", "u2", "u3"])
        run = sync.sync("c1", "C", [])
        assert run.result == "refused"
        refused = [r for r in captured.records if "refused: MassRemovalError" in r.getMessage()]
        assert [(r.levelname, r.__dict__["run_id"]) for r in refused] == [("WARNING", run.id)]


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every metric's data points as (attributes, value or histogram) by instrument name."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == _metrics.METER_NAME
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    found.setdefault(metric.name, []).append((dict(point.attributes), value))
    return found


def _value(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **attrs: Any) -> Any:
    matching = [v for a, v in points.get(name, []) if all(a.get(k) == x for k, x in attrs.items())]
    assert len(matching) == 1, (name, attrs, points.get(name))
    return matching[0]


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> InMemoryMetricReader:
    """An SDK meter provider with an in-memory reader, as the global provider of this test."""
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: provider)
    return memory


class TestMetrics:
    def test_a_run_adds_its_counts_and_duration(
        self, sync: CohortSync, braze: FakeClient, reader: InMemoryMetricReader
    ) -> None:
        """Requests, retries, ids sent by direction, rejections by reason, one run, its time."""
        run = sync.sync("c1", "C", [*(f"u{i}" for i in range(1200)), " bad", ""])
        assert run.result == "succeeded"
        points = _points(reader)
        assert _value(points, "braze_cohorts.runs", cohort_id="c1", result="succeeded") == 1
        assert _value(points, "braze_cohorts.requests", cohort_id="c1") == run.requests
        assert run.requests == len(braze.calls) == 4  # naming and three batches of 500
        assert _value(points, "braze_cohorts.retries", cohort_id="c1") == 0
        assert _value(points, "braze_cohorts.ids_sent", direction="add") == 1200
        assert _value(points, "braze_cohorts.ids_sent", direction="remove") == 0
        rejected = {a["reason"]: v for a, v in points["braze_cohorts.rejected"]}
        assert rejected == dict(run.rejected)
        assert sum(rejected.values()) == 2
        duration = _value(points, "braze_cohorts.run.duration", result="succeeded")
        assert run.finished_at is not None
        assert duration.count == 1
        assert duration.sum == (run.finished_at - run.started_at).total_seconds()

    def test_runs_add_up_and_dry_runs_send_nothing(
        self, sync: CohortSync, reader: InMemoryMetricReader
    ) -> None:
        """Counters are cumulative over runs; a dry run counts as a run but sends no ids."""
        sync.sync("c1", "C", ["u1", "u2"])
        sync.sync("c1", "C", ["u1", "u3"])
        sync.sync("c1", "C", ["u4"], dry_run=True)
        points = _points(reader)
        assert _value(points, "braze_cohorts.runs", result="succeeded", full_resync=True) == 1
        assert _value(points, "braze_cohorts.runs", result="succeeded", full_resync=False) == 1
        assert _value(points, "braze_cohorts.runs", result="dry_run") == 1
        assert _value(points, "braze_cohorts.ids_sent", direction="add") == 3
        assert _value(points, "braze_cohorts.ids_sent", direction="remove") == 1

    def test_a_failed_run_is_counted_with_its_result(
        self, braze: FakeClient, sync: CohortSync, reader: InMemoryMetricReader
    ) -> None:
        """A run that failed is a run with result failed."""
        from braze_cohorts import ServerError

        braze.fail_next(ServerError("down", status_code=503))
        run = sync.sync("c1", "C", ["u1"])
        assert run.result == "failed"
        assert _value(_points(reader), "braze_cohorts.runs", result="failed") == 1

    def test_a_broken_provider_never_fails_an_import(
        self, sync: CohortSync, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exporter that raises is logged as a warning; the run is unaffected."""

        def broken() -> Any:
            raise RuntimeError("exporter down")

        monkeypatch.setattr(otel_metrics, "get_meter_provider", broken)
        with caplog.at_level(logging.WARNING, logger="braze_cohorts._metrics"):
            run = sync.sync("c1", "C", ["u1"])
        assert run.result == "succeeded"
        assert "could not record the metrics" in caplog.text

    def test_without_opentelemetry_nothing_is_recorded(self) -> None:
        """Without opentelemetry-api the facade imports and every call is a no-op."""
        code = (
            "import sys; sys.modules['opentelemetry'] = None\n"
            "import datetime as dt\n"
            "from braze_cohorts import _metrics, ImportRun\n"
            "assert _metrics._otel_metrics is None\n"
            "t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)\n"
            "_metrics.record_run(ImportRun('c', 'C', 'manual', t, result='succeeded',"
            " finished_at=t, requests=3))\n"
            "print('ok')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")

    def test_record_run_takes_an_explicit_provider(self) -> None:
        """record_run(meter_provider=…) records there, not on the global provider."""
        memory = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[memory])
        run = ImportRun(
            "c9", "C", "scheduled", T0, result="refused", finished_at=T0, error_kind="X"
        )
        _metrics.record_run(run, meter_provider=provider)
        points = _points(memory)
        assert _value(points, "braze_cohorts.runs", cohort_id="c9", trigger="scheduled") == 1
        assert _value(points, "braze_cohorts.run.duration", result="refused").sum == 0


class _FakeTime:
    """A clock that moves only when slept on; keeps every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TestMeteredLimiter:
    def test_records_every_wait_the_limiter_asks_for(self) -> None:
        """Paced starts and a 429 hold are summed in braze_cohorts.rate_limit.wait."""
        memory = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[memory])
        time = _FakeTime()
        inner = RateLimiter(3600, clock=time.clock, wall_clock=time.clock)  # ~1 start a second
        limiter = MeteredLimiter(inner, meter_provider=provider)
        for _ in range(3):
            limiter.acquire(time.sleep)
            limiter.finish()
        limiter.hold(30)
        limiter.acquire(time.sleep)
        limiter.finish()
        assert sum(time.sleeps) >= 33  # three paced starts of about a second, then the hold
        waited = _value(_points(memory), "braze_cohorts.rate_limit.wait")
        assert waited == pytest.approx(sum(time.sleeps))
        assert limiter.limiter is inner

    def test_an_upload_through_it_records_its_waits(
        self, braze: FakeClient, reader: InMemoryMetricReader
    ) -> None:
        """Given to a BatchUploader, it records the upload's waits on the global provider."""
        time = _FakeTime()
        limiter = MeteredLimiter(RateLimiter(3600, clock=time.clock, wall_clock=time.clock))
        uploader = BatchUploader(
            braze,  # type: ignore[arg-type]
            concurrency=1,
            batch_size=10,
            limiter=limiter,
            clock=time.clock,
            sleep=time.sleep,
        )
        report = uploader.upload("c1", add=[f"u{i}" for i in range(50)])
        assert report.requests == 5
        assert sum(time.sleeps) > 4  # five starts about a second apart
        assert _value(_points(reader), "braze_cohorts.rate_limit.wait") == pytest.approx(
            sum(time.sleeps)
        )

    def test_without_opentelemetry_it_only_delegates(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With the API absent the wrapped limiter still paces; nothing else happens."""
        monkeypatch.setattr(_metrics, "_otel_metrics", None)
        time = _FakeTime()
        limiter = MeteredLimiter(RateLimiter(3600, clock=time.clock, wall_clock=time.clock))
        limiter.acquire(time.sleep)
        limiter.finish()
        assert time.sleeps  # the first start waits one interval


class TestDocs:
    def test_examples_in_the_metrics_page_run(self) -> None:
        """The log-extras example in docs/metrics.md runs as shown."""
        assert run_doc_examples("metrics.md") >= 8
