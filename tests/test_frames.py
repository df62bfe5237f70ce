"""DataFrames and Arrow tables as member sources: read by column, plain str ids on the fast path."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts._sources import as_records, frame_kind

MATCHER = bc.IdentifierMatcher()


def _pandas(data: dict[str, list[Any]]) -> Any:
    return pd.DataFrame(data)


def _pandas_object(data: dict[str, list[Any]]) -> Any:
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in data.items()})


def _polars(data: dict[str, list[Any]]) -> Any:
    return pl.DataFrame(data, strict=False)


def _polars_lazy(data: dict[str, list[Any]]) -> Any:
    return pl.DataFrame(data, strict=False).lazy()


def _table(data: dict[str, list[Any]]) -> Any:
    return pa.table(data)


def _batch(data: dict[str, list[Any]]) -> Any:
    return pa.RecordBatch.from_pydict(data)


def _reader(data: dict[str, list[Any]]) -> Any:
    table = pa.table(data)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))


BUILDERS: dict[str, Callable[[dict[str, list[Any]]], Any]] = {
    "pandas": _pandas,
    "pandas-object": _pandas_object,
    "polars": _polars,
    "polars-lazy": _polars_lazy,
    "arrow-table": _table,
    "arrow-batch": _batch,
    "arrow-reader": _reader,
}
KINDS = list(BUILDERS)


@pytest.mark.parametrize("kind", KINDS)
class TestEveryFrame:
    def test_external_id_column_yields_plain_strings(self, kind: str) -> None:
        """The fast path: an id-only frame yields str, missing ids come out to be rejected."""
        frame = BUILDERS[kind]({"External_ID": ["u1", None, "u3", "u4", "u5"]})
        records = list(bc.frame_records(frame, chunk_rows=2))
        assert records[0] == "u1"
        assert records[2:] == ["u3", "u4", "u5"]
        result = MATCHER.match(records)
        assert result.users == tuple(bc.ExternalId(u) for u in ("u1", "u3", "u4", "u5"))
        assert [(r.index, r.reason.value) for r in result.rejected] == [(1, "missing_identifier")]

    def test_integer_ids_are_written_in_decimal(self, kind: str) -> None:
        """Warehouse integer ids become their decimal text, as the matcher would write them."""
        frame = BUILDERS[kind]({"user_id": [10, 2**40, 3], "x": [1.5, 2.5, 3.5]})
        records = list(bc.frame_records(frame, external_id_column="USER_ID"))
        assert records == ["10", str(2**40), "3"]

    def test_several_identifier_columns_yield_row_dicts(self, kind: str) -> None:
        """With alias and device columns each row is a dict of every column."""
        frame = BUILDERS[kind](
            {
                "external_id": ["u1", None, None],
                "email": [None, "a@x.io", None],
                "device": [None, None, "d1"],
                "plan": ["p", "q", "r"],
            }
        )
        records = list(
            bc.frame_records(frame, alias_name_column="email", device_id_column="Device")
        )
        assert [r["plan"] for r in records] == ["p", "q", "r"]  # type: ignore[index]
        matcher = bc.IdentifierMatcher(alias_label="email")
        assert matcher.match(records).users == (
            bc.ExternalId("u1"),
            bc.UserAlias("a@x.io", "email"),
            bc.DeviceId("d1"),
        )

    def test_no_identifier_column_fails_at_once(self, kind: str) -> None:
        """A frame without an identifier column is an InputError before anything is read."""
        frame = BUILDERS[kind]({"user": ["u1"]})
        with pytest.raises(bc.InputError, match="none of the identifier columns"):
            bc.frame_records(frame)

    def test_as_records_reads_frames_by_column(self, kind: str) -> None:
        """The dispatcher the sync engine calls: frames become records."""
        frame = BUILDERS[kind]({"external_id": ["u1", "u2"]})
        assert frame_kind(frame) is not None
        assert list(as_records(frame)) == ["u1", "u2"]


class TestDetection:
    def test_plain_iterables_pass_through_unchanged(self) -> None:
        """Lists, generators and dicts are returned as they are (same object)."""
        members: list[object] = ["u1", {"external_id": "u2"}]
        assert as_records(members) is members
        gen = (x for x in ["u1"])
        assert as_records(gen) is gen
        assert frame_kind("u1") is None
        assert frame_kind(pd.Series(["u1"])) is None

    def test_subclasses_are_frames(self) -> None:
        """A subclass of a pandas DataFrame is recognised through its bases."""

        class MyFrame(pd.DataFrame):
            pass

        assert frame_kind(MyFrame({"external_id": ["u1"]})) == "pandas"

    def test_detection_imports_nothing(self) -> None:
        """Checking a plain list for frames imports none of pandas, polars or pyarrow."""
        import subprocess

        code = (
            "import sys, braze_cohorts as bc\n"
            "from braze_cohorts._sources import as_records\n"
            "as_records(['u1']); bc.read_records\n"
            "print(sorted(m for m in ('pandas', 'polars', 'pyarrow') if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "[]"

    def test_not_a_frame(self) -> None:
        """frame_records refuses what is not a frame, saying what it takes."""
        with pytest.raises(bc.InputError, match="not a DataFrame"):
            bc.frame_records(["u1"])

    def test_pandas_index_is_not_read(self) -> None:
        """Ids in a pandas index are not found (reset_index first), so nothing is guessed."""
        frame = pd.DataFrame({"x": [1]}, index=pd.Index(["u1"], name="external_id"))
        with pytest.raises(bc.InputError):
            bc.frame_records(frame)
        assert list(bc.frame_records(frame.reset_index())) == ["u1"]

    def test_a_failing_reader_is_a_source_error(self) -> None:
        """A RecordBatchReader whose producer fails mid-stream raises SourceError."""
        schema = pa.schema([("external_id", pa.string())])

        def batches() -> Any:
            yield pa.RecordBatch.from_pydict({"external_id": ["u1", "u2"]}, schema=schema)
            raise RuntimeError("upstream went away")

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        got: list[object] = []
        with pytest.raises(bc.SourceError, match="after 2 rows"):
            got.extend(bc.frame_records(reader))
        assert got == ["u1", "u2"]


# Values an id column may hold: valid ids, empty, padded, ints, missing.
_values = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.none(),
)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(_values, max_size=30), kind=st.sampled_from(["pandas-object", "polars",
                                                                    "arrow-table"]))  # fmt: skip
def test_fast_path_matches_like_row_dicts(values: list[Any], kind: str) -> None:
    """The plain-str fast path gives exactly what the matcher makes of row dicts."""
    # Typed columns: keep one type per column (strings, or ints with nulls).
    if kind != "pandas-object" and any(isinstance(v, int) for v in values):
        values = [v if isinstance(v, int) or v is None else None for v in values]
    frame = BUILDERS[kind]({"external_id": values})
    fast = MATCHER.match(bc.frame_records(frame, chunk_rows=7))
    slow = MATCHER.match([{"external_id": v} for v in values])
    assert fast.users == slow.users
    assert [(r.index, r.reason) for r in fast.rejected] == [
        (r.index, r.reason) for r in slow.rejected
    ]


def test_pandas_nan_and_na_are_missing() -> None:
    """NaN, None and pd.NA in an id column are rejected as missing, not as a float id."""
    frame = pd.DataFrame({"external_id": pd.Series(["u1", math.nan, pd.NA, None], dtype=object)})
    result = MATCHER.match(bc.frame_records(frame))
    assert result.users == (bc.ExternalId("u1"),)
    assert [r.reason.value for r in result.rejected] == ["missing_identifier"] * 3


def test_sync_a_dataframe_against_the_emulator(
    braze_emulator: Any, braze_client: bc.CohortClient, tmp_path: Path
) -> None:
    """A polars frame read by column syncs a cohort end to end; a second frame sends the change."""
    braze_emulator.add_users(5, prefix="u")
    with bc.SQLiteStore(tmp_path / "state.db") as store:
        sync = bc.CohortSync(braze_client, store)
        frame = pl.DataFrame({"external_id": ["u0", "u1", "u2"]})
        first = sync.sync("c1", "Frame", bc.frame_records(frame))
        assert (first.result, first.added) == ("succeeded", 3)
        second = sync.sync(
            "c1", "Frame", bc.frame_records(pd.DataFrame({"EXTERNAL_ID": ["u1", "u2", "u3"]}))
        )
        assert (second.added, second.removed) == (1, 1)
    assert {m[1] for m in braze_emulator.members("c1")} == {"u1", "u2", "u3"}


@pytest.mark.parametrize(
    "make",
    [
        lambda ids: pd.DataFrame({"external_id": ids}),
        lambda ids: pl.DataFrame({"external_id": ids}),
        lambda ids: pa.table({"external_id": ids}),
    ],
    ids=["pandas", "polars", "arrow"],
)
def test_a_frame_given_as_members_is_read_by_column(make: Callable[[list[str]], object]) -> None:
    """sync() and sync_delta() take a frame as members directly (not its column names)."""
    from braze_cohorts.testing import FakeClient, MemoryStore

    client = FakeClient()
    sync = bc.CohortSync(client, MemoryStore(), resend_window=None)
    run = sync.sync("c1", "Frame", make(["u1", "u2", "u3"]))  # type: ignore[arg-type]
    assert (run.result, run.added, run.rejected_total) == ("succeeded", 3, 0)
    delta = sync.sync_delta("c1", "Frame", entered=make(["u4"]), left=make(["u1"]))  # type: ignore[arg-type]
    assert (delta.added, delta.removed) == (1, 1)
    assert client.members("c1") == {"e:u2", "e:u3", "e:u4"}
