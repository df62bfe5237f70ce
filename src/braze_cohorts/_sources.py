"""Member sources: files, DataFrames and queries, as iterables of records.

Every source yields records that :class:`~braze_cohorts.IdentifierMatcher` (and so
:meth:`~braze_cohorts.CohortSync.sync`) reads: ``dict`` rows, plain ``str`` external ids, and
:class:`~braze_cohorts.MalformedRecord` for rows that could not be parsed. They share one column
mapping (``external_id_column=`` ...; names matched exactly, then ignoring case).

* :func:`read_records`: CSV, TSV, JSON Lines, JSON (optionally ``.gz`` / ``.bz2`` / ``.xz``),
  Parquet; a path, ``"-"`` for standard input, or a file object.
* :func:`frame_records`: pandas / polars DataFrames, pyarrow tables and record batch readers.
* :func:`query_records` and :class:`QuerySource`: the rows of a SQL query.
* :class:`FileSource`: a file and its read options, stored by a schedule.
* :func:`as_records`: what the sync engine calls on ``members`` (frames are read by column,
  anything else is returned unchanged).
"""

from __future__ import annotations

from braze_cohorts._files import FORMATS, SUFFIXES, FileSource, Record, read_records
from braze_cohorts._frames import as_records, frame_kind, frame_records
from braze_cohorts._query import QuerySource, query_records

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "FileSource",
    "QuerySource",
    "Record",
    "as_records",
    "frame_kind",
    "frame_records",
    "query_records",
    "read_records",
]
