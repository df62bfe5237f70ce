"""Columnar member sources: pandas and polars DataFrames, pyarrow tables and Parquet files.

They are read by column, a chunk of rows at a time, never by building a row object per row
from the library's own data structures. When the only identifier column is the external id,
each member comes out as a plain ``str``: the sync engine keys a chunk of those in bulk, without
an object per member. None of these libraries is imported unless the caller's object (or a
``.parquet`` file) needs it: a frame is recognised by its class's module name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from braze_cohorts._columns import EXTERNAL_ID, Columns, Resolved, columns
from braze_cohorts._identifiers import _is_nan
from braze_cohorts.exceptions import ConfigurationError, InputError, SourceError

__all__ = ["as_records", "external_ids", "frame_kind", "frame_records", "parquet_records"]

log = logging.getLogger(__name__)

#: Rows per chunk read from a frame.
CHUNK_ROWS = 65_536

_FRAMES = {
    ("pandas", "DataFrame"): "pandas",
    ("polars", "DataFrame"): "polars",
    ("polars", "LazyFrame"): "polars-lazy",
    ("pyarrow", "Table"): "arrow-table",
    ("pyarrow", "RecordBatch"): "arrow-batch",
    ("pyarrow", "RecordBatchReader"): "arrow-reader",
}

# One chunk of a columnar source: the values of each requested column, as Python lists.
_Chunks = Callable[[Sequence[int]], Iterator[list[list[object]]]]


def frame_kind(obj: object) -> str | None:
    """Which kind of frame ``obj`` is (``"pandas"``, ``"polars"``, ``"arrow-table"`` ...), if any.

    Decided from the class's module and name (subclasses included): nothing is imported.
    """
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        kind = _FRAMES.get((module.partition(".")[0], cls.__name__))
        if kind is not None:
            return kind
    return None


def as_records(members: object) -> Iterable[object]:
    """``members`` as records for the sync engine: frames are read by column, the rest as is.

    A pandas or polars DataFrame or a pyarrow Table / RecordBatch / RecordBatchReader goes
    through :func:`frame_records` (its default column mapping); any other object is returned
    unchanged (the engine checks it is an iterable of records).
    """
    if frame_kind(members) is not None:
        return frame_records(members)
    return members  # type: ignore[return-value]


def frame_records(
    frame: object,
    *,
    external_id_column: str | None = None,
    alias_name_column: str | None = None,
    alias_label_column: str | None = None,
    device_id_column: str | None = None,
    id_columns: Collection[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[object]:
    """Read member records from a DataFrame or Arrow table, by column, lazily.

    Accepts a pandas ``DataFrame``, a polars ``DataFrame`` or ``LazyFrame`` (collected), or a
    pyarrow ``Table``, ``RecordBatch`` or ``RecordBatchReader``. The index of a pandas frame is
    not read (``df.reset_index()`` first if the ids are in it).

    When the external id is the only identifier column, each row comes out as a plain ``str``
    (integers written in decimal), which the sync engine keys in bulk; a row whose id is
    missing or of another type comes out as ``{"external_id": value}`` so that the matcher
    rejects it with a reason. Otherwise each row comes out as a ``dict`` of every column.

    Args:
        frame: The DataFrame or table.
        external_id_column: The column holding the external id (default ``external_id``;
            matched exactly, then ignoring case).
        alias_name_column: The column holding the alias name.
        alias_label_column: The column holding the alias label.
        device_id_column: The column holding the device id.
        id_columns: For a matcher that reads other fields: identifier columns kept under their
            own names (pass ``matcher.fields``).
        chunk_rows: Rows converted to Python values at a time.

    Returns:
        An iterator of records.

    Raises:
        InputError: At once, if ``frame`` is not a supported frame, or has no identifier column,
            repeated column names or more than 10,000 columns.
    """
    kind = frame_kind(frame)
    if kind is None:
        raise InputError(
            f"a {type(frame).__name__} is not a DataFrame or Arrow table (pandas, polars, "
            "pyarrow); pass records as an iterable instead"
        )
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigurationError("chunk_rows must be a positive int")
    cols = columns(
        external_id_column=external_id_column,
        alias_name_column=alias_name_column,
        alias_label_column=alias_label_column,
        device_id_column=device_id_column,
        id_columns=id_columns,
    )
    if kind == "polars-lazy":
        frame, kind = frame.collect(), "polars"  # type: ignore[attr-defined]
    what = f"the {type(frame).__name__}"
    if kind == "pandas":
        names = [str(name) for name in frame.columns]  # type: ignore[attr-defined]
        chunks: _Chunks = _pandas_chunks(frame, chunk_rows)
    elif kind == "polars":
        names = list(frame.columns)  # type: ignore[attr-defined]
        chunks = _polars_chunks(frame, chunk_rows)
    else:
        names = list(frame.schema.names)  # type: ignore[attr-defined]
        chunks = _arrow_chunks(_batches(frame, kind, chunk_rows), chunk_rows, what)
    resolved = cols.resolve(names, what)
    return columnar_records(resolved, chunks)


def _batches(frame: Any, kind: str, size: int) -> Callable[[], Iterable[Any]]:
    """The record batches of an Arrow object, as a function (read when the records are)."""

    def batches() -> Iterable[Any]:
        if kind == "arrow-table":
            return frame.to_batches(max_chunksize=size)  # type: ignore[no-any-return]
        if kind == "arrow-batch":
            return [frame]
        return frame  # type: ignore[no-any-return]

    return batches


def parquet_records(source: Path | IO[bytes], name: str, cols: Columns) -> Iterator[object]:
    """Read a Parquet file by record batch (see :func:`~braze_cohorts.read_records`).

    Raises:
        InputError: At once, if pyarrow is missing, the file is not Parquet, or it has no
            identifier column.
    """
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise InputError(
            f"{name}: reading Parquet needs pyarrow: pip install 'braze-cohorts[parquet]'"
        ) from exc
    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ...
        raise InputError(f"{name}: not a readable Parquet file ({_first_line(exc)})") from exc
    names = list(parquet.schema_arrow.names)
    try:
        resolved = cols.resolve(names, name)
    except InputError:
        parquet.close()
        raise
    wanted = None if resolved.external_id_only is None else [names[resolved.external_id_only]]

    def batches() -> Iterator[Any]:
        with parquet:
            yield from parquet.iter_batches(batch_size=CHUNK_ROWS, columns=wanted)

    if wanted is not None:
        # Only the one column is read from disk: its position in each batch is 0.
        resolved = Resolved(names=(EXTERNAL_ID,), found=resolved.found, external_id_only=0)
    return columnar_records(resolved, _arrow_chunks(batches, CHUNK_ROWS, name, narrowed=True))


def columnar_records(resolved: Resolved, chunks: _Chunks) -> Iterator[object]:
    """Records from column chunks: plain ``str`` ids on the fast path, else row dicts."""
    if resolved.external_id_only is not None:
        position = resolved.external_id_only
        for (ids,) in chunks([position]):
            yield from external_ids(ids)
        return
    names = resolved.names
    for values in chunks(range(len(names))):
        for row in zip(*values, strict=True):
            yield dict(zip(names, row, strict=True))


def external_ids(values: list[object]) -> Iterable[object]:
    """One chunk of external id values as records: ``str`` where possible.

    ``int`` values (not ``bool``) are written in decimal, as the matcher would; a missing value
    (``None``, NaN, ``pd.NA``) becomes ``{"external_id": None}``, and an empty string or a value
    of another type ``{"external_id": value}``, so that the matcher rejects it with the same
    reason as from a file.
    """
    if set(map(type, values)) == {str} and "" not in values:
        return values
    out: list[object] = []
    append = out.append
    for value in values:
        kind = type(value)
        if kind is str and value:
            append(value)
        elif kind is int:
            append(str(value))
        elif value is None or _is_nan(value):
            append({EXTERNAL_ID: None})  # NaN, pd.NA, NaT: one spelling of "missing"
        else:
            append({EXTERNAL_ID: value})
    return out


def _pandas_chunks(frame: Any, size: int) -> _Chunks:
    def chunks(positions: Sequence[int]) -> Iterator[list[list[object]]]:
        series = [frame.iloc[:, position] for position in positions]
        for start in range(0, len(frame), size):
            yield [column.iloc[start : start + size].tolist() for column in series]

    return chunks


def _polars_chunks(frame: Any, size: int) -> _Chunks:
    def chunks(positions: Sequence[int]) -> Iterator[list[list[object]]]:
        series = [frame.to_series(position) for position in positions]
        for start in range(0, frame.height, size):
            yield [column.slice(start, size).to_list() for column in series]

    return chunks


def _arrow_chunks(
    batches: Callable[[], Iterable[Any]], size: int, what: str, *, narrowed: bool = False
) -> _Chunks:
    """Chunks of Arrow record batches; a batch that fails to load raises SourceError.

    ``narrowed``: the batches already hold only the requested columns, in order.
    """

    def chunks(positions: Sequence[int]) -> Iterator[list[list[object]]]:
        read = 0
        iterator = iter(batches())
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # a corrupt page, a reader's upstream failing
                raise SourceError(
                    f"{what}: reading failed after {read:,} rows ({_first_line(exc)})"
                ) from exc
            wanted = range(len(positions)) if narrowed else positions
            for start in range(0, batch.num_rows, size):
                part = batch.slice(start, size)
                yield [part.column(position).to_pylist() for position in wanted]
            read += batch.num_rows

    return chunks


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > 200:
        line = line[:200] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
