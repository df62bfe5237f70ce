"""Streaming readers for member files: CSV, TSV, JSON Lines and JSON.

:func:`read_records` turns a file into records for :class:`~braze_cohorts.IdentifierMatcher`.
A row that cannot be parsed is not an exception: it comes out as a
:class:`~braze_cohorts.MalformedRecord` with its line number, which the matcher rejects with the
reason ``malformed_row``, so one bad line never stops (or swallows) the rows after it. Only a file
that cannot be read at all (missing, unknown type, empty, no identifier column) raises
:class:`~braze_cohorts.InputError`, and it does so when :func:`read_records` is called, before any
record is read.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
from collections.abc import Collection, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Union

from braze_cohorts._identifiers import IdentifierMatcher, MalformedRecord
from braze_cohorts.exceptions import InputError

__all__ = ["SUFFIXES", "Record", "read_records"]

log = logging.getLogger(__name__)

#: A record as :func:`read_records` yields it.
Record = Union[dict[str, object], MalformedRecord]  # noqa: UP007 - a runtime alias on Python 3.10

#: The file types :func:`read_records` reads, by suffix (case-insensitive).
SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")

_DEFAULT_COLUMNS: tuple[str, ...] = IdentifierMatcher().fields


class _SourceRecord(dict[str, object]):
    """A record read from a file: a plain ``dict`` that also knows the line it starts on.

    :class:`~braze_cohorts.IdentifierMatcher` copies ``source_line`` into a rejection.
    """

    __slots__ = ("source_line",)

    source_line: int | None


def _located(items: Iterable[tuple[str, object]], line: int | None) -> _SourceRecord:
    record = _SourceRecord(items)
    record.source_line = line
    return record


def read_records(
    path: str | os.PathLike[str], *, id_columns: Collection[str] | None = None
) -> Iterator[Record]:
    """Read member records from a file, lazily, choosing the format by the file's suffix.

    * ``.csv`` / ``.tsv``: a header row, then one record per row, as a ``dict`` of every column
      (extra columns pass through). The header must name at least one of ``id_columns``. A row
      with the wrong number of fields, broken quoting, or bytes that are not UTF-8 becomes a
      :class:`~braze_cohorts.MalformedRecord`; when broken quoting made a row run over several
      lines, only its first line is rejected and the following lines are read again as rows of
      their own, so no valid row is lost. Blank lines are skipped. A header without rows is an
      empty membership.
    * ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are skipped; a line that is
      not valid JSON, or not an object, becomes a :class:`~braze_cohorts.MalformedRecord`.
    * ``.json``: one array of objects (read whole; use JSON Lines for large files); an item that
      is not an object becomes a :class:`~braze_cohorts.MalformedRecord`. ``[]`` is an empty
      membership.

    Files are UTF-8 (a byte order mark is allowed). CSV and JSON Lines files are streamed: memory
    does not grow with the file. Values are passed on unchanged (never stripped), so the matcher
    can reject padded ids with a reason.

    Args:
        path: The file.
        id_columns: For CSV/TSV: the columns of which the header must name at least one (default
            ``external_id``, ``alias_name``, ``alias_label``, ``device_id``; pass
            ``matcher.fields`` when the matcher reads other fields).

    Returns:
        An iterator of records: ``dict`` for each parsed row (with its line number kept for
        rejections), :class:`~braze_cohorts.MalformedRecord` for each row that could not be parsed.

    Raises:
        InputError: At once (before the first record) if the file is missing or unreadable, has
            an unknown suffix, is empty, its CSV header names none of ``id_columns`` or repeats a
            column, or a ``.json`` file is not a JSON array.
    """
    file = Path(os.fspath(path))
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{file}: unknown file type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(SUFFIXES)}"
        )
    _check_readable(file)
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        columns = tuple(_DEFAULT_COLUMNS if id_columns is None else id_columns)
        header = _read_header(file, delimiter, columns)
        return _csv_records(file, delimiter, header)
    if suffix == ".json":
        return _json_records(file)
    _check_not_empty_jsonl(file)
    return _jsonl_records(file)


# -- files ---------------------------------------------------------------------------------


def _check_readable(file: Path) -> None:
    try:
        with file.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{file}: is a directory, not a file") from exc
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or type(exc).__name__})") from exc


def _open(file: Path) -> IO[bytes]:
    try:
        return file.open("rb")
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or type(exc).__name__})") from exc


# -- CSV -----------------------------------------------------------------------------------


class _LineSource:
    """Numbered, decoded lines of a binary file, with push-back.

    ``taken`` collects the lines the CSV reader consumed for the current row, so a row that ran
    over several lines because of broken quoting can be split: its first line is rejected and
    the rest pushed back to be read again. ``bad`` holds the numbers of lines that were not
    valid UTF-8 and have not been reported yet.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.count = 0
        self.pushed: list[tuple[int, str]] = []  # a stack: the next line to read is last
        self.taken: list[tuple[int, str]] = []
        self.bad: set[int] = set()

    def lines(self) -> Iterator[str]:
        """A fresh iterator over the lines: pushed-back lines first, then the file's next ones."""
        pushed, taken, bad = self.pushed, self.taken, self.bad
        while pushed:
            item = pushed.pop()
            taken.append(item)
            yield item[1]
        for raw in self.fh:
            self.count = number = self.count + 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
                bad.add(number)
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            taken.append((number, text))
            yield text
            while pushed:
                item = pushed.pop()
                taken.append(item)
                yield item[1]


def _csv_rows(
    fh: IO[bytes], delimiter: str, width: int | None
) -> Generator[tuple[int, list[str], str | None], None, None]:
    """Yield ``(line, fields, problem)`` per non-blank row.

    When the row is malformed, ``problem`` says why and ``fields`` holds the raw text of its
    first line as the only item.

    ``width`` is the expected number of fields (``None`` for the header). A malformed row that
    spans several lines is reported for its first line only; the other lines are read again.
    """
    source = _LineSource(fh)
    taken, bad = source.taken, source.bad
    while True:
        reader = csv.reader(source.lines(), delimiter=delimiter, strict=True)
        while True:
            taken.clear()
            fields: list[str] | None
            try:
                fields = next(reader)
                error = ""
            except StopIteration:
                return
            except csv.Error as exc:
                fields, error = None, f"cannot parse the row: {exc}"
            if fields is not None:
                if not fields:
                    continue  # a blank line
                if bad and any(number in bad for number, _ in taken):
                    error = "the row is not valid UTF-8"
                elif width is not None and len(fields) != width:
                    error = f"expected {width} fields, found {len(fields)}"
                else:
                    yield taken[0][0], fields, None
                    continue
            if not taken:  # pragma: no cover - the csv module always reads before failing
                return
            first, text = taken[0]
            bad.discard(first)
            raw = [text.rstrip("\r\n")]
            if len(taken) == 1:
                yield first, raw, error
                continue
            error += (
                f" (it ran over lines {first}-{taken[-1][0]}, probably an unbalanced quote;"
                f" only line {first} is rejected, the lines after it are read again)"
            )
            source.pushed.extend(reversed(taken[1:]))
            yield first, raw, error
            break  # a fresh reader: no state carried over from the broken row


def _read_header(file: Path, delimiter: str, columns: tuple[str, ...]) -> list[str]:
    with _open(file) as fh:
        rows = _csv_rows(fh, delimiter, None)
        try:
            first = next(rows, None)
        finally:
            rows.close()
    if first is None:
        raise InputError(f"{file}: the file is empty (expected a header row)")
    line, fields, problem = first
    if problem is not None:
        raise InputError(f"{file}: cannot read the header on line {line}: {problem}")
    header = [name.strip() for name in fields]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{file}: the header repeats the columns {repeated}")
    if not set(header) & set(columns):
        raise InputError(
            f"{file}: the header has none of the identifier columns {list(columns)}; found {header}"
        )
    return header


def _csv_records(file: Path, delimiter: str, header: list[str]) -> Iterator[Record]:
    width = len(header)
    rows = malformed = 0
    with _open(file) as fh:
        parsed = _csv_rows(fh, delimiter, width)
        next(parsed, None)  # the header, checked by _read_header
        for line, fields, problem in parsed:
            if problem is None:
                rows += 1
                record = _SourceRecord(zip(header, fields, strict=False))
                record.source_line = line
                yield record
            else:
                malformed += 1
                yield MalformedRecord(line, f"line {line}: {problem}", fields[0])
    log.debug("read %d rows and %d malformed rows from a CSV file", rows, malformed)


# -- JSON Lines and JSON -------------------------------------------------------------------


def _check_not_empty_jsonl(file: Path) -> None:
    with _open(file) as fh:
        for raw in fh:
            if raw.strip().strip(codecs.BOM_UTF8).strip():
                return
    raise InputError(f"{file}: the file is empty (expected one JSON object per line)")


def _jsonl_records(file: Path) -> Iterator[Record]:
    rows = malformed = 0
    with _open(file) as fh:
        for line, raw in enumerate(fh, 1):
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                malformed += 1
                yield MalformedRecord(line, f"line {line}: the line is not valid UTF-8", raw)
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                malformed += 1
                yield MalformedRecord(
                    line, f"line {line}: not valid JSON: {exc.msg} (column {exc.colno})", text
                )
                continue
            except RecursionError:
                malformed += 1
                yield MalformedRecord(line, f"line {line}: the JSON is nested too deeply", text)
                continue
            if not isinstance(value, dict):
                malformed += 1
                yield MalformedRecord(
                    line, f"line {line}: expected a JSON object, found {_json_type(value)}", value
                )
                continue
            rows += 1
            yield _located(value.items(), line)
    log.debug("read %d rows and %d malformed rows from a JSON Lines file", rows, malformed)


def _json_records(file: Path) -> Iterator[Record]:
    with _open(file) as fh:
        try:
            data = fh.read()
        except OSError as exc:
            raise InputError(f"{file}: cannot be read ({exc.strerror})") from exc
    if not data.strip().strip(codecs.BOM_UTF8).strip():
        raise InputError(f"{file}: the file is empty (expected a JSON array of objects)")
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{file}: not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(value, list):
        raise InputError(f"{file}: expected a JSON array of objects, found {_json_type(value)}")
    return _json_items(value)


def _json_items(items: list[object]) -> Iterator[Record]:
    for position, item in enumerate(items):
        if isinstance(item, dict):
            yield _located(item.items(), None)
        else:
            yield MalformedRecord(
                None, f"item {position}: expected a JSON object, found {_json_type(item)}", item
            )


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
