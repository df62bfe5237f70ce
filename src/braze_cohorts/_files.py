"""Streaming readers for member files: CSV, TSV, JSON Lines, JSON (optionally compressed), Parquet.

A row that cannot be parsed is not an exception: it comes out as a
:class:`~braze_cohorts.MalformedRecord` with its line number, which the matcher rejects with the
reason ``malformed_row``, so one bad line never stops (or swallows) the rows after it. A file
that cannot be read at all (missing, unknown type, empty, no identifier column) raises
:class:`~braze_cohorts.InputError` when :func:`read_records` is called, before any record is
read; a file that breaks part-way (a truncated ``.gz``, bytes the encoding cannot decode) raises
:class:`~braze_cohorts.SourceError` from the iterator.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import json
import logging
import lzma
import os
import re
import sys
import zlib
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Union

import attrs

from braze_cohorts._columns import Columns, columns
from braze_cohorts._identifiers import MalformedRecord
from braze_cohorts.exceptions import ConfigurationError, InputError, SourceError

__all__ = ["FORMATS", "SUFFIXES", "FileSource", "Record", "read_records"]

log = logging.getLogger(__name__)

#: A record as :func:`read_records` yields it.
Record = Union[dict[str, object], MalformedRecord, str]  # noqa: UP007 - a runtime alias on 3.10

#: The formats :func:`read_records` reads (``format=``); a text format may end in ``.gz``,
#: ``.bz2`` or ``.xz`` (e.g. ``"csv.gz"``).
FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "json", "parquet")

_FORMAT_OF_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
_FORMAT_ALIASES = {"ndjson": "jsonl", "txt": "csv"}
_COMPRESSIONS: dict[str, Callable[[IO[bytes]], Any]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # noqa: SIM115 - closed by the caller
}
# What a compressed stream raises when it is corrupt or ends early.
_COMPRESSION_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)

#: The file types :func:`read_records` reads, by suffix (case-insensitive).
SUFFIXES: tuple[str, ...] = (
    *(s for s in _FORMAT_OF_SUFFIX if s != ".parquet"),
    *(s + c for s in _FORMAT_OF_SUFFIX if s != ".parquet" for c in _COMPRESSIONS),
    ".parquet",
)

# The delimiters a CSV header is sniffed for, in order of preference.
_DELIMITERS = (",", ";", "\t", "|")
# Bytes that were not valid in the file's encoding, as the surrogateescape handler keeps them.
_ESCAPED = re.compile("[\udc80-\udcff]")

_PARQUET_BATCH = 65_536


def read_records(
    source: str | os.PathLike[str] | IO[Any],
    *,
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    external_id_column: str | None = None,
    alias_name_column: str | None = None,
    alias_label_column: str | None = None,
    device_id_column: str | None = None,
    id_columns: Collection[str] | None = None,
) -> Iterator[Record]:
    """Read member records from a file, lazily.

    The format comes from ``format`` or the file's suffix (case-insensitive):

    * ``.csv`` / ``.tsv``: a header row, then one record per row, as a ``dict`` of every column
      (extra columns pass through). A ``.csv`` file's delimiter is sniffed from its header
      (``,``, ``;``, tab or ``|``) unless ``delimiter`` is given. Lines may end in LF, CRLF or
      CR alone. A row with the wrong number of fields, broken quoting, or bytes the encoding
      cannot decode becomes a :class:`~braze_cohorts.MalformedRecord`; when broken quoting made
      a row run over several lines, only its first line is rejected and the following lines
      are read again as rows of their own, so no valid row is lost. Blank lines are skipped. A
      header without rows is an empty membership.
    * ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are skipped; a line that is
      not valid JSON, or not an object, becomes a :class:`~braze_cohorts.MalformedRecord`.
    * ``.json``: one array (read whole; use JSON Lines for large files) of objects or of plain
      strings (each string is an external id); any other item becomes a
      :class:`~braze_cohorts.MalformedRecord`. ``[]`` is an empty membership.
    * ``.parquet``: read by record batch and column with pyarrow (``pip install
      'braze-cohorts[parquet]'``); a file whose only identifier column is the external id
      yields plain ``str`` ids (the sync engine's fast path).
    * ``.gz``, ``.bz2`` or ``.xz`` after a text suffix (``members.csv.gz``): decompressed while
      read.

    Text files are UTF-8 unless ``encoding`` says otherwise (a byte order mark is allowed). CSV
    and JSON Lines files are streamed: memory does not grow with the file. Values are passed on
    unchanged (never stripped), so the matcher can reject padded ids with a reason.

    Identifier columns (CSV headers, JSON keys, Parquet columns) are found by name, exactly or
    else ignoring case, and renamed to the matcher's field names (``external_id``,
    ``alias_name``, ``alias_label``, ``device_id``): ``external_id_column="User_ID"`` reads the
    external id from the column ``User_ID``.

    Args:
        source: A path, ``"-"`` for standard input, or an open file object (binary or text;
            it is read, not closed).
        format: One of :data:`FORMATS`, optionally with a compression suffix (``"csv.gz"``):
            for standard input, and for files whose name does not tell.
        encoding: The text encoding (e.g. ``"latin-1"``, ``"utf-16"``); default UTF-8.
        delimiter: The CSV delimiter (one character); default: sniffed for ``.csv``, tab for
            ``.tsv``.
        external_id_column: The column holding the external id.
        alias_name_column: The column holding the alias name.
        alias_label_column: The column holding the alias label.
        device_id_column: The column holding the device id.
        id_columns: For a matcher that reads other fields: the identifier columns, kept under
            their own names (pass ``matcher.fields``); the ``*_column`` arguments still apply.

    Returns:
        An iterator of records: ``dict`` for each parsed row (with its line number kept for
        rejections), ``str`` for each plain external id (JSON arrays of strings, Parquet),
        :class:`~braze_cohorts.MalformedRecord` for each row that could not be parsed.

    Raises:
        InputError: At once (before the first record) if the file is missing or unreadable, of
            an unknown type, empty, not in its compression format, its header names none of the
            identifier columns, names a mapped column twice or has more than 10,000 columns, or
            a ``.json`` file is not a JSON array.
        ConfigurationError: For invalid arguments (an unknown ``format``, a delimiter that is
            not one character, an unknown encoding).
        SourceError: From the iterator, if the file breaks part-way (a truncated compressed
            file, bytes that the given non-UTF-8 encoding cannot decode).
    """
    cols = columns(
        external_id_column=external_id_column,
        alias_name_column=alias_name_column,
        alias_label_column=alias_label_column,
        device_id_column=device_id_column,
        id_columns=id_columns,
    )
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ConfigurationError("delimiter must be one character")
    if encoding is not None:
        try:
            encoding = codecs.lookup(encoding).name
        except (LookupError, TypeError) as exc:
            raise ConfigurationError(f"unknown encoding {encoding!r}") from exc
    opened = _Input.of(source)
    kind, compression = _format(opened, format)
    if kind == "parquet":
        from braze_cohorts._frames import parquet_records

        if compression is not None:
            raise InputError(f"{opened.name}: Parquet compresses itself; do not compress it again")
        return parquet_records(opened.parquet_source(), opened.name, cols)  # type: ignore[return-value]
    opened.check()
    text = _Text(opened, compression, encoding)
    if kind in ("csv", "tsv"):
        if delimiter is None and kind == "tsv":
            delimiter = "\t"
        return _csv_records(text, delimiter, cols)
    if kind == "json":
        return _json_records(text, cols)
    return _jsonl_records(text, cols)


# -- inputs --------------------------------------------------------------------------------


class _Input:
    """A path, standard input or a caller's file object: named, opened (again) on demand."""

    def __init__(self, name: str, path: Path | None, stream: IO[Any] | None) -> None:
        self.name = name
        self.path = path
        self.stream = stream

    @classmethod
    def of(cls, source: object) -> _Input:
        if isinstance(source, str) and source == "-":
            return cls("<stdin>", None, sys.stdin)
        if isinstance(source, (str, os.PathLike)):
            path = Path(os.fspath(source))
            return cls(str(path), path, None)
        if hasattr(source, "read"):
            name = getattr(source, "name", None)
            return cls(name if isinstance(name, str) else "<stream>", None, source)  # type: ignore[arg-type]
        raise ConfigurationError(
            f"expected a path, '-' or a file object, not {type(source).__name__}"
        )

    def check(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as fh:
                fh.read(1)
        except FileNotFoundError as exc:
            raise InputError(f"{self.path}: no such file") from exc
        except IsADirectoryError as exc:
            raise InputError(f"{self.path}: is a directory, not a file") from exc
        except OSError as exc:
            raise InputError(f"{self.path}: cannot be read ({_why(exc)})") from exc

    def binary(self, stack: ExitStack) -> IO[bytes] | None:
        """The bytes (closed with ``stack`` when opened here); ``None`` for a text-only stream."""
        if self.path is not None:
            try:
                return stack.enter_context(self.path.open("rb"))
            except OSError as exc:
                raise InputError(f"{self.path}: cannot be read ({_why(exc)})") from exc
        stream = self.stream
        assert stream is not None
        if isinstance(stream, io.TextIOBase) or hasattr(stream, "encoding"):
            buffer = getattr(stream, "buffer", None)
            return buffer  # None: a text stream without bytes underneath (io.StringIO)
        return stream

    def parquet_source(self) -> Path | IO[bytes]:
        if self.path is not None:
            self.check()
            return self.path
        with ExitStack() as stack:
            binary = self.binary(stack)
        if binary is None or not getattr(binary, "seekable", lambda: False)():
            raise InputError(f"{self.name}: Parquet is read from a file or a seekable stream")
        return binary


def _format(source: _Input, given: str | None) -> tuple[str, str | None]:
    """``(format, compression suffix or None)`` from ``format=`` or the file's name."""
    if given is not None:
        if not isinstance(given, str):
            raise ConfigurationError("format must be a str such as 'csv' or 'jsonl.gz'")
        text = given.lower().lstrip(".")
        base, dot, last = text.rpartition(".")
        compression = None
        if dot and "." + last in _COMPRESSIONS:
            text, compression = base, "." + last
        text = _FORMAT_ALIASES.get(text, text)
        if text not in FORMATS:
            raise ConfigurationError(
                f"unknown format {given!r}; expected one of {', '.join(FORMATS)}, a text format "
                "optionally followed by .gz, .bz2 or .xz"
            )
        return text, compression
    if source.path is None and source.name.startswith("<"):
        raise InputError(
            f"{source.name}: no file name to tell the format; say which with format= "
            f"(--format): {', '.join(FORMATS)}"
        )
    suffixes = [s.lower() for s in Path(source.name).suffixes]
    compression = None
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        compression = suffixes.pop()
    kind = _FORMAT_OF_SUFFIX.get(suffixes[-1]) if suffixes else None
    if kind is None:
        found = "".join(Path(source.name).suffixes[-2:]) or "(no suffix)"
        raise InputError(
            f"{source.name}: unknown file type {found!r}; expected one of "
            f"{', '.join(SUFFIXES)} (or say which with format=, --format)"
        )
    return kind, compression


def _why(exc: BaseException) -> str:
    """A short, one-line reason for an OS or decompression error."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Text:
    """The decoded text of an input, opened on demand (for a path, once per pass).

    UTF-8 is decoded with ``surrogateescape``, so a bad byte makes one line malformed instead of
    ending the file; lines end at LF, CRLF or a lone CR (``newline=""`` keeps them for the CSV
    parser).
    """

    def __init__(self, source: _Input, compression: str | None, encoding: str | None) -> None:
        self.source = source
        self.compression = compression
        self.encoding = encoding or "utf-8"
        self.utf8 = self.encoding in ("utf-8", "utf-8-sig")
        self.name = source.name

    def open(self, stack: ExitStack) -> IO[str]:
        binary = self.source.binary(stack)
        if binary is None:  # a text stream the caller opened: its encoding is its own
            assert self.source.stream is not None
            return self.source.stream
        if self.compression is not None:
            binary = stack.enter_context(_COMPRESSIONS[self.compression](binary))
        wrapper = io.TextIOWrapper(
            binary,
            encoding="utf-8-sig" if self.utf8 else self.encoding,
            errors="surrogateescape" if self.utf8 else "strict",
            newline="",
        )
        # Detach rather than close: a caller's stream (stdin) stays open; our files are closed
        # by the stack (registered before, so closed after).
        stack.callback(_detach, wrapper)
        return wrapper

    def lines(self) -> Generator[str, None, None]:
        """The lines of the text, each with its line ending; read errors become SourceError."""
        number = 0
        with ExitStack() as stack:
            try:
                text = self.open(stack)
            except (*_COMPRESSION_ERRORS, OSError) as exc:
                raise InputError(f"{self.name}: {self._what(exc)}") from exc
            iterator = iter(text)
            while True:
                try:
                    line = next(iterator)
                except StopIteration:
                    return
                except UnicodeError as exc:  # UnicodeDecodeError, or UTF-16 without a BOM
                    reason = getattr(exc, "reason", None) or _why(exc)
                    raise SourceError(
                        f"{self.name}: line {number + 1} is not valid {self.encoding} "
                        f"({reason}); nothing after line {number} was read"
                    ) from exc
                except (*_COMPRESSION_ERRORS, OSError) as exc:
                    raise SourceError(
                        f"{self.name}: {self._what(exc)} after line {number}; the file is "
                        "incomplete and was not used"
                    ) from exc
                number += 1
                yield line

    def _what(self, exc: BaseException) -> str:
        if isinstance(exc, EOFError):
            return "the compressed data ends early (a truncated file?)"
        if isinstance(exc, _COMPRESSION_ERRORS) or self.compression is not None:
            return f"not valid {self.compression or ''} compressed data ({_why(exc)})".replace(
                "  ", " "
            )
        return f"cannot be read ({_why(exc)})"


def _detach(wrapper: io.TextIOWrapper) -> None:
    with contextlib.suppress(ValueError):  # already detached or closed
        wrapper.detach()


def _is_bad(text: str) -> bool:
    return not text.isascii() and _ESCAPED.search(text) is not None


def _repair(text: str) -> str:
    """``text`` with bytes that were not valid UTF-8 shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- CSV -----------------------------------------------------------------------------------


class _LineSource:
    """Numbered lines of a text, with push-back.

    ``taken`` collects the lines the CSV reader consumed for the current row, so a row that ran
    over several lines because of broken quoting can be split: its first line is rejected and
    the rest pushed back to be read again. ``bad`` holds the numbers of lines that had bytes
    the encoding could not decode and have not been reported yet.
    """

    def __init__(self, lines: Iterator[str]) -> None:
        self.source = lines
        self.count = 0
        self.pushed: list[tuple[int, str]] = []  # a stack: the next line to read is last
        self.taken: list[tuple[int, str]] = []
        self.bad: set[int] = set()

    def lines(self) -> Iterator[str]:
        """A fresh iterator over the lines: pushed-back lines first, then the next ones."""
        pushed, taken, bad = self.pushed, self.taken, self.bad
        while pushed:
            item = pushed.pop()
            taken.append(item)
            yield item[1]
        for text in self.source:
            self.count = number = self.count + 1
            if _is_bad(text):
                bad.add(number)
                text = _repair(text)
            taken.append((number, text))
            yield text
            while pushed:
                item = pushed.pop()
                taken.append(item)
                yield item[1]

    def peek(self) -> str | None:
        """The first non-blank line, pushed back with the lines before it (for sniffing)."""
        seen: list[tuple[int, str]] = []
        first = None
        for text in self.lines():
            seen.append(self.taken[-1])
            if text.strip():
                first = text
                break
        self.taken.clear()
        self.pushed.extend(reversed(seen))
        return first


def _csv_rows(
    lines: Iterator[str], delimiter: str | None, cols: Columns
) -> Generator[tuple[int, list[str], str | None], None, None]:
    """Yield ``(line, fields, problem)`` per non-blank row; the header comes first.

    When the row is malformed, ``problem`` says why and ``fields`` holds the text of its first
    line as the only item. After the header, a row with another number of fields than the
    header is malformed. A malformed row that spans several lines is reported for its first
    line only; the other lines are read again.
    """
    source = _LineSource(lines)
    if delimiter is None:
        delimiter = _sniff(source.peek(), cols)
    taken, bad = source.taken, source.bad
    width: int | None = None
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
                    if width is None:
                        width = len(fields)
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


def _sniff(line: str | None, cols: Columns) -> str:
    """The delimiter of a CSV header line: the one that splits it into identifier columns.

    Preferred: a delimiter whose fields include an identifier column; then the one giving the
    most fields; a header of one column is comma-separated.
    """
    if line is None:
        return ","
    wanted = {column.casefold() for column in cols.targets.values()}
    best, best_score = ",", (False, 1)
    for candidate in _DELIMITERS:
        if candidate not in line:
            continue
        try:
            fields = next(csv.reader([line], delimiter=candidate))
        except (csv.Error, StopIteration):
            continue
        has_id = any(field.strip().casefold() in wanted for field in fields)
        score = (has_id, len(fields))
        if score > best_score:
            best, best_score = candidate, score
    return best


def _csv_records(text: _Text, delimiter: str | None, cols: Columns) -> Iterator[Record]:
    """Read and check the header now; return the rows as a lazy iterator."""
    rows = _csv_rows(text.lines(), delimiter, cols)
    try:
        first = next(rows, None)
    except BaseException:
        rows.close()
        raise
    if first is None:
        raise InputError(f"{text.name}: the file is empty (expected a header row)")
    line, fields, problem = first
    if problem is not None:
        rows.close()
        raise InputError(f"{text.name}: cannot read the header on line {line}: {problem}")
    try:
        resolved = cols.resolve([name.strip() for name in fields], text.name)
    except InputError:
        rows.close()
        raise
    return _csv_body(rows, resolved.names, text.name)


def _csv_body(
    rows: Generator[tuple[int, list[str], str | None], None, None],
    header: tuple[str, ...],
    name: str,
) -> Iterator[Record]:
    count = malformed = 0
    with contextlib.closing(rows):
        for line, fields, problem in rows:
            if problem is None:
                count += 1
                record = _SourceRecord(zip(header, fields, strict=False))
                record.source_line = line
                yield record
            else:
                malformed += 1
                yield MalformedRecord(line, f"line {line}: {problem}", fields[0])
    log.debug("read %d rows and %d malformed rows from a CSV file", count, malformed)


class _SourceRecord(dict[str, object]):
    """A record read from a file: a plain ``dict`` that also knows the line it starts on.

    :class:`~braze_cohorts.IdentifierMatcher` copies ``source_line`` into a rejection.
    """

    __slots__ = ("source_line",)

    source_line: int | None


# -- JSON Lines and JSON -------------------------------------------------------------------


class _Renamer:
    """Applies a column mapping to JSON objects, one lookup per distinct set of keys."""

    def __init__(self, cols: Columns) -> None:
        self.cols = cols
        self.cache: dict[tuple[str, ...], tuple[dict[str, str], str | None]] = {}

    def record(self, value: dict[str, object], line: int | None, where: str) -> Record:
        keys = tuple(value)
        found = self.cache.get(keys)
        if found is None:
            found = self.cols.rename(keys)
            if len(self.cache) < 1024:
                self.cache[keys] = found
        renames, problem = found
        if problem is not None:
            return MalformedRecord(line, f"{where}: {problem}", value)
        if renames:
            record = _SourceRecord((renames.get(key, key), item) for key, item in value.items())
        else:
            record = _SourceRecord(value)
        record.source_line = line
        return record


def _jsonl_records(text: _Text, cols: Columns) -> Iterator[Record]:
    lines = text.lines()
    pending: list[tuple[int, str]] = []
    try:
        for number, line in enumerate(lines, 1):
            pending.append((number, line))
            if line.strip():
                break
        else:
            raise InputError(f"{text.name}: the file is empty (expected one JSON object per line)")
    except BaseException:
        lines.close()
        raise
    return _jsonl_body(pending, lines, cols)


def _jsonl_body(
    pending: list[tuple[int, str]], lines: Generator[str, None, None], cols: Columns
) -> Iterator[Record]:
    rows = malformed = 0
    renamer = _Renamer(cols)
    start = len(pending) + 1
    with contextlib.closing(lines):
        for line, raw in _chain(pending, enumerate(lines, start)):
            if not raw.strip():
                continue
            if _is_bad(raw):
                malformed += 1
                yield MalformedRecord(
                    line, f"line {line}: the line is not valid UTF-8", _repair(raw)
                )
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                malformed += 1
                yield MalformedRecord(
                    line, f"line {line}: not valid JSON: {exc.msg} (column {exc.colno})", raw
                )
                continue
            except RecursionError:
                malformed += 1
                yield MalformedRecord(line, f"line {line}: the JSON is nested too deeply", raw)
                continue
            if not isinstance(value, dict):
                malformed += 1
                yield MalformedRecord(
                    line, f"line {line}: expected a JSON object, found {_json_type(value)}", value
                )
                continue
            rows += 1
            yield renamer.record(value, line, f"line {line}")
    log.debug("read %d rows and %d malformed rows from a JSON Lines file", rows, malformed)


def _chain(
    first: list[tuple[int, str]], rest: Iterator[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    yield from first
    yield from rest


def _json_records(text: _Text, cols: Columns) -> Iterator[Record]:
    lines = text.lines()
    with contextlib.closing(lines):
        data = "".join(lines)
    if not data.strip():
        raise InputError(f"{text.name}: the file is empty (expected a JSON array)")
    if _is_bad(data):
        raise InputError(
            f"{text.name}: not valid UTF-8 (say the file's encoding with encoding=, --encoding)"
        )
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{text.name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise InputError(f"{text.name}: not valid JSON (nested too deeply)") from exc
    if not isinstance(value, list):
        raise InputError(
            f"{text.name}: expected a JSON array of objects or id strings, "
            f"found {_json_type(value)}"
        )
    return _json_items(value, cols)


def _json_items(items: list[object], cols: Columns) -> Iterator[Record]:
    renamer = _Renamer(cols)
    for position, item in enumerate(items):
        if isinstance(item, str):
            yield item  # a plain string is an external id
        elif isinstance(item, dict):
            yield renamer.record(item, None, f"item {position}")
        else:
            yield MalformedRecord(
                None,
                f"item {position}: expected a JSON object or an id string, "
                f"found {_json_type(item)}",
                item,
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


# -- a stored file source, for schedules ---------------------------------------------------


def _optional_text(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigurationError(f"{attr.name} must be a non-empty str")


def _absolute(value: str | os.PathLike[str]) -> str:
    text: object = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(text, str) or not text.strip() or text == "-":
        raise ConfigurationError("FileSource needs the path of a file (not standard input)")
    return os.path.abspath(text)


_FILE_FIELDS = (
    "format",
    "encoding",
    "delimiter",
    "external_id_column",
    "alias_name_column",
    "alias_label_column",
    "device_id_column",
)


@attrs.frozen(kw_only=True)
class FileSource:
    """A member file and how to read it: what a schedule stores for a file source.

    The file is read again at each run with :func:`read_records` and these options; the path
    is made absolute. (A schedule given a plain path stores just the path and reads it with
    the defaults.)

    Args:
        path: The file.
        format: As :func:`read_records`: for a file whose name does not tell.
        encoding: The text encoding (default UTF-8).
        delimiter: The CSV delimiter (default: sniffed).
        external_id_column: The column holding the external id.
        alias_name_column: The column holding the alias name.
        alias_label_column: The column holding the alias label.
        device_id_column: The column holding the device id.

    Raises:
        ConfigurationError: If the path or an option is empty or not a ``str``.
    """

    path: str = attrs.field(converter=_absolute)
    format: str | None = attrs.field(default=None, validator=_optional_text)
    encoding: str | None = attrs.field(default=None, validator=_optional_text)
    delimiter: str | None = attrs.field(default=None, validator=_optional_text)
    external_id_column: str | None = attrs.field(default=None, validator=_optional_text)
    alias_name_column: str | None = attrs.field(default=None, validator=_optional_text)
    alias_label_column: str | None = attrs.field(default=None, validator=_optional_text)
    device_id_column: str | None = attrs.field(default=None, validator=_optional_text)

    def records(self, *, id_columns: Collection[str] | None = None) -> Iterator[Record]:
        """Read the file (see :func:`read_records`, whose errors it raises)."""
        options = {name: getattr(self, name) for name in _FILE_FIELDS}
        return read_records(self.path, id_columns=id_columns, **options)

    def check(self) -> None:
        """Check the file now: it exists, its type is known, its header names an identifier.

        Raises:
            InputError: If it cannot be read (as :func:`read_records`).
            ConfigurationError: If an option is invalid.
        """
        records = self.records()
        close = getattr(records, "close", None)
        if close is not None:
            close()

    def to_dict(self) -> dict[str, Any]:
        """The source as JSON-ready data (the options that are set)."""
        data: dict[str, Any] = {"path": self.path}
        for name in _FILE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileSource:
        """Rebuild a source from :meth:`to_dict`'s data.

        Raises:
            ConfigurationError: If the data is not a valid file source.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("a file source must be a mapping")
        unknown = sorted(set(data) - {"path", *_FILE_FIELDS})
        if unknown:
            raise ConfigurationError(f"unknown file source fields: {unknown}")
        if "path" not in data:
            raise ConfigurationError("a file source needs a path")
        return cls(**dict(data))
