"""SparkDelta: PySpark in local mode computes entered/left against a Parquet snapshot that is
advanced only after Braze acknowledged the import."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from braze_cohorts import BatchUploader, CohortSync, RetryPolicy, ServerError, SparkDelta
from braze_cohorts.testing import FakeClient, MemoryStore, SettableClock

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One small local session for the module: no UI, loopback only."""
    session = (
        SparkSession.builder.master("local[1]")
        .appName("braze-cohorts-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def _frame(spark: SparkSession, ids: Iterable[str]) -> Any:
    return spark.createDataFrame([(i, 1) for i in ids], "external_id string, plan int")


def _sync(braze: FakeClient, **options: Any) -> CohortSync:
    uploader = BatchUploader(
        braze, concurrency=1, batch_size=3, retry=RetryPolicy(attempts=1), sleep=lambda _s: None
    )
    clock = SettableClock(T0, tick=dt.timedelta(seconds=1))
    return CohortSync(braze, MemoryStore(), uploader=uploader, clock=clock, **options)


def _keys(ids: Iterable[str]) -> set[str]:
    return {f"e:{i}" for i in ids}


def test_only_the_delta_travels_and_the_snapshot_follows_success(
    spark: SparkSession, tmp_path: Path
) -> None:
    """First import in full; then only entered/left; the snapshot advances per success."""
    braze = FakeClient()
    sync = _sync(braze)
    delta = SparkDelta(tmp_path / "snap")
    run = delta.sync(sync, "c1", "C", _frame(spark, [f"u{n}" for n in range(10)] + ["u1"]))
    assert (run.result, run.added) == ("succeeded", 10)
    assert (delta.current_version(), delta.dirty) == ("v000000", False)
    braze.clear_calls()

    run = delta.sync(sync, "c1", "C", _frame(spark, [f"u{n}" for n in range(2, 12)]))
    assert braze.sent() == (_keys(["u10", "u11"]), _keys(["u0", "u1"]))
    assert (run.result, run.added, run.removed, run.users) == ("succeeded", 2, 2, 10)
    assert delta.current_version() == "v000001"
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["CURRENT", "v000001"]

    braze.clear_calls()
    run = delta.sync(sync, "c1", "C", _frame(spark, ["u2", "u3"]), dry_run=True)
    assert (run.result, run.removed) == ("dry_run", 8)
    assert braze.calls == []
    assert (delta.current_version(), delta.dirty) == ("v000001", False)


def test_a_failed_run_is_healed_exactly_by_the_next(spark: SparkSession, tmp_path: Path) -> None:
    """After a failure the snapshot stays; the next run compares in full, then deltas resume.

    The case a naive delta gets wrong: a user added (and acknowledged) by the failed run who
    left before the next one must still be removed.
    """
    braze = FakeClient()
    sync = _sync(braze)
    delta = SparkDelta(tmp_path / "snap")
    delta.sync(sync, "c1", "C", _frame(spark, ["a", "b", "c"]))
    braze.pass_next(1)
    braze.fail_next(ServerError("down", status_code=503))
    failed = delta.sync(sync, "c1", "C", _frame(spark, ["a", "b", "c", "n1", "n2", "n3", "x"]))
    assert failed.result == "failed"
    assert (delta.current_version(), delta.dirty) == ("v000000", True)
    assert braze.members("c1") & _keys(["n1", "n2", "n3"])  # the first batch was acknowledged

    run = delta.sync(sync, "c1", "C", _frame(spark, ["a", "b", "x"]))
    assert run.result == "succeeded", run.error
    assert braze.members("c1") == _keys(["a", "b", "x"])
    assert (delta.current_version(), delta.dirty) == ("v000001", False)
    braze.clear_calls()
    delta.sync(sync, "c1", "C", _frame(spark, ["a", "b", "x", "y"]))
    assert braze.sent() == (_keys(["y"]), set())


def test_a_missing_column_is_refused(spark: SparkSession, tmp_path: Path) -> None:
    from braze_cohorts import ConfigurationError

    with pytest.raises(ConfigurationError, match="no column"):
        SparkDelta(tmp_path, column="user_id").sync(
            _sync(FakeClient()), "c1", "C", _frame(spark, ["a"])
        )
