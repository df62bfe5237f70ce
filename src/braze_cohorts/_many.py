"""Many cohorts in one pass: a source with a cohort column feeds one import per cohort.

:func:`sync_many` reads the source once, sorts its records into one spill file per cohort in a
temporary directory (memory holds at most :data:`SPILL_RECORDS` records at a time, whatever the
source's size and order), then runs :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>` for
each cohort from its file. The source need not be ordered by cohort.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from braze_cohorts._frames import frame_kind, frame_records
from braze_cohorts._identifiers import IdentifierMatcher, MalformedRecord
from braze_cohorts._models import ImportRun, Trigger
from braze_cohorts._sync import CohortSync
from braze_cohorts.exceptions import ConfigurationError, InputError

__all__ = ["SPILL_RECORDS", "sync_many"]

log = logging.getLogger(__name__)

#: Records held in memory while the source is sorted by cohort (then written to disk).
SPILL_RECORDS = 50_000


def sync_many(
    sync: CohortSync,
    members: object,
    *,
    cohort_column: str = "cohort_id",
    name_column: str | None = "cohort_name",
    names: Mapping[str, str] | None = None,
    remove_missing: Collection[str] = (),
    matcher: IdentifierMatcher | None = None,
    dry_run: bool = False,
    trigger: Trigger = "manual",
    full_resync: bool = False,
    allow_mass_removal: bool = False,
    notify: bool = True,
    spill_dir: str | Path | None = None,
) -> list[ImportRun]:
    """Import every cohort a source holds, each as its own run, reading the source once.

    Each record names its cohort in ``cohort_column`` (a ``str``, or an ``int`` written in
    decimal) and, optionally, the cohort's name in ``name_column`` (the first non-empty one
    wins; else ``names[cohort_id]``; else the cohort id itself). Records are sorted into one
    file per cohort in a temporary directory first (bounded memory: the source may be in any
    order and of any size), so *all* of the source is read before the first cohort is
    imported: a source that fails part-way imports nothing.

    Cohorts that are not in the source are **not touched**: a cohort that merely vanished
    from a query keeps its members. List the ones to empty in ``remove_missing`` (each is
    then synced to an empty membership, with the mass-removal guard lifted for it).

    **Failure contract.** Before any import: invalid arguments raise
    :class:`~braze_cohorts.ConfigurationError`; a record without a cohort (a ``NULL`` or
    empty cohort value, a row that could not be parsed, a plain id string with no columns)
    raises :class:`~braze_cohorts.InputError`; a source that fails while read raises its
    error (:class:`~braze_cohorts.SourceError`, ``InputError``). Then each cohort's outcome
    is its recorded run, as :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>` returns
    it (one failing cohort does not stop the others);
    :class:`~braze_cohorts.ImportInProgressError` and :class:`~braze_cohorts.StoreError`
    raised by one cohort's ``sync`` propagate (the runs already done are in the history).

    Args:
        sync: The sync engine that runs each import.
        members: Records (``dict`` rows, as :func:`~braze_cohorts.read_records` and
            :func:`~braze_cohorts.query_records` yield them) or a pandas/polars DataFrame or
            pyarrow Table. A reader whose only identifier column is the external id yields
            plain ``str`` ids and drops the other columns: pass it
            ``id_columns=(*matcher.fields, "cohort_id")`` to keep the cohort column.
        cohort_column: The field naming each record's cohort.
        name_column: The field naming the cohort in Braze, or ``None``.
        names: Cohort names by cohort id, for cohorts whose records carry no name.
        remove_missing: Cohort ids to empty when the source holds no record of theirs.
        matcher: How records become identifiers.
        dry_run: Compute each cohort's change, send nothing (as ``sync``).
        trigger: ``"manual"`` or ``"scheduled"``, for the history.
        full_resync: Re-send every member of every cohort.
        allow_mass_removal: Let an import remove more than the guard's share of a cohort.
        notify: Whether to tell the notifier about each run.
        spill_dir: Where the temporary per-cohort files go (default: the system's temp dir).

    Returns:
        The recorded runs: the source's cohorts in the order they first appear, then the
        emptied ``remove_missing`` cohorts.

    Raises:
        ConfigurationError: If an argument is invalid.
        InputError: If a record has no cohort, or the source cannot be read.
        SourceError: If the source fails part-way.
    """
    if not isinstance(cohort_column, str) or not cohort_column:
        raise ConfigurationError("cohort_column must be a non-empty str")
    if name_column is not None and (not isinstance(name_column, str) or not name_column):
        raise ConfigurationError("name_column must be a non-empty str or None")
    if isinstance(remove_missing, str):
        raise ConfigurationError("remove_missing must be a collection of cohort ids, not a str")
    missing_ids = [_cohort_id(value, "remove_missing") for value in remove_missing]
    matcher = IdentifierMatcher() if matcher is None else matcher
    records: Iterable[object]
    if frame_kind(members) is not None:
        keep = (*matcher.fields, cohort_column) + ((name_column,) if name_column else ())
        records = frame_records(members, id_columns=keep)
    elif isinstance(members, Iterable) and not isinstance(members, (str, bytes, Mapping)):
        records = members
    else:
        raise ConfigurationError(
            f"members must be an iterable of records or a DataFrame, not {type(members).__name__}"
        )
    with tempfile.TemporaryDirectory(prefix="braze-cohorts-many-", dir=spill_dir) as tmp:
        # Rows holding only an external id (and the cohort columns) are spilled as plain str
        # ids, which the sync engine matches on its fast path.
        bare = (
            {"external_id", cohort_column, name_column}
            if (matcher.external_id_field == "external_id")
            else None
        )
        spill = _Spill(Path(tmp), bare)
        spill.read(records, cohort_column, name_column)
        log.info("sorted %d records into %d cohorts", spill.total, len(spill.counts))  # counts only
        runs: list[ImportRun] = []
        for cohort_id in list(spill.counts):
            name = spill.names.get(cohort_id) or (names or {}).get(cohort_id) or cohort_id
            runs.append(
                sync.sync(
                    cohort_id,
                    name,
                    spill.records(cohort_id),
                    matcher=matcher,
                    dry_run=dry_run,
                    trigger=trigger,
                    full_resync=full_resync,
                    allow_mass_removal=allow_mass_removal,
                    notify=notify,
                )
            )
    for cohort_id in dict.fromkeys(missing_ids):
        if cohort_id in spill.counts:
            continue
        name = (names or {}).get(cohort_id) or cohort_id
        runs.append(
            sync.sync(
                cohort_id,
                name,
                [],
                matcher=matcher,
                dry_run=dry_run,
                trigger=trigger,
                full_resync=full_resync,
                allow_mass_removal=True,
                notify=notify,
            )
        )
    return runs


def _cohort_id(value: object, where: str) -> str:
    if isinstance(value, bool):
        raise InputError(f"{where}: a cohort id must be a str or an int, not a bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    if value is None or isinstance(value, str):
        raise InputError(f"{where}: the cohort id is empty")
    raise InputError(f"{where}: a cohort id must be a str or an int, not {type(value).__name__}")


def _no_cohort(record: object, index: int, cohort_column: str) -> InputError:
    if isinstance(record, MalformedRecord):
        return InputError(
            f"line {record.line}: a row that could not be parsed has no cohort ({record.detail})"
        )
    return InputError(
        f"record {index + 1}: a {type(record).__name__} has no {cohort_column!r} column (a "
        "reader whose only identifier is the external id yields plain ids: pass it "
        f"id_columns=(*matcher.fields, {cohort_column!r}))"
    )


class _Spill:
    """Records sorted into one file per cohort; at most SPILL_RECORDS held in memory."""

    def __init__(self, directory: Path, bare: set[str | None] | None) -> None:
        self._dir = directory
        self._bare = bare
        self._files: dict[str, Path] = {}
        self._buffers: dict[str, list[object]] = {}
        self.counts: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.total = 0

    def read(self, records: Iterable[object], cohort_column: str, name_column: str | None) -> None:
        # Per row: one lookup of the cohort value (str and int values are cached with their
        # buffer), one append. Names are looked at until each cohort has one.
        seen: dict[object, tuple[str, list[object]]] = {}
        names, bare = self.names, self._bare
        pending = 0
        for index, record in enumerate(records):
            if type(record) is not dict and not isinstance(record, Mapping):
                raise _no_cohort(record, index, cohort_column)
            value = record.get(cohort_column)
            kind = type(value)
            entry = seen.get(value) if kind is str or kind is int else None
            if entry is None:
                line = getattr(record, "source_line", None)
                where = f"line {line}" if line is not None else f"record {index + 1}"
                cohort = _cohort_id(value, f"{where}, column {cohort_column!r}")
                entry = (cohort, self._buffer(cohort))
                if kind is str or kind is int:
                    seen[value] = entry
            cohort, buffer = entry
            if name_column is not None and cohort not in names:
                name = record.get(name_column)
                if isinstance(name, str) and name.strip():
                    names[cohort] = name
            if type(record) is not dict:
                buffer.append(_Lined(record))
            elif bare is not None and record.keys() <= bare:
                external_id = record.get("external_id")
                buffer.append(external_id if type(external_id) is str else record)
            else:
                buffer.append(record)
            pending += 1
            if pending >= SPILL_RECORDS:
                self._flush()
                pending = 0
        self._flush()
        self.total = sum(self.counts.values())

    def _buffer(self, cohort: str) -> list[object]:
        buffer = self._buffers.get(cohort)
        if buffer is None:
            buffer = self._buffers[cohort] = []
            self.counts[cohort] = 0
            self._files[cohort] = self._dir / f"{len(self._files)}.pickle"
        return buffer

    def _flush(self) -> None:
        for cohort, buffer in self._buffers.items():
            if buffer:
                self.counts[cohort] += len(buffer)
                with self._files[cohort].open("ab") as f:
                    pickle.dump(buffer, f, protocol=pickle.HIGHEST_PROTOCOL)
                buffer.clear()

    def records(self, cohort: str) -> Iterator[object]:
        # Our own file, written above in a private temporary directory.
        with self._files[cohort].open("rb") as f:
            while True:
                try:
                    chunk: list[object] = pickle.load(f)  # noqa: S301
                except EOFError:
                    return
                yield from chunk


class _Lined(dict[str, object]):
    """A dict that keeps the ``source_line`` of a file's record through pickling."""

    def __init__(self, record: Mapping[str, object]) -> None:
        super().__init__(record)
        self.source_line: int | None = getattr(record, "source_line", None)
