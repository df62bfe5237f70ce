"""Plan and rejects files: what an import would send, and which records it could not match.

Two small CSV writers for :meth:`CohortSync.sync <braze_cohorts.CohortSync.sync>`'s
``plan_out`` and ``rejects_out``. Nothing here knows how an import works.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, Protocol, Union

from braze_cohorts._identifiers import ExternalId, Rejection, UserAlias, ref_from_key
from braze_cohorts.exceptions import ConfigurationError

__all__ = [
    "PLAN_HEADER",
    "REJECTS_HEADER",
    "OutFile",
    "RowWriter",
    "csv_out",
    "plan_row",
    "reject_row",
]

#: Columns of a plan file: one row per id to send; ``action`` is ``add`` or ``remove``, ``kind``
#: is ``external_id``, ``alias`` or ``device_id``, and the identifier's fields follow under the
#: column names an input file uses.
PLAN_HEADER = ("action", "kind", "external_id", "alias_name", "alias_label", "device_id")

#: Columns of a rejects file: the record's position in the input, its line in the input file (if
#: it came from one), the reason code, what is wrong, and the record itself as JSON.
REJECTS_HEADER = ("index", "line", "reason", "detail", "record")

#: Where a plan or rejects file goes: a path, or a text file opened by the caller.
OutFile = Union[str, "os.PathLike[str]", IO[str]]


class RowWriter(Protocol):
    """A ``csv.writer``."""

    def writerow(self, row: Iterable[object], /) -> object:
        """Write one row."""
        ...


@contextlib.contextmanager
def csv_out(target: OutFile | None, header: Iterable[str]) -> Iterator[RowWriter | None]:
    """A CSV writer on ``target`` with ``header`` written, or ``None`` when there is no target.

    Raises:
        ConfigurationError: If the file cannot be opened for writing.
    """
    if target is None:
        yield None
        return
    if isinstance(target, (str, os.PathLike)):
        try:
            f = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ConfigurationError(f"cannot write {os.fspath(target)!r}: {exc}") from exc
        with f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            yield writer
    else:
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(header)
        yield writer


def plan_row(action: str, key: str) -> tuple[str, ...]:
    """The plan file's row for sending ``key`` with ``action`` (``add`` or ``remove``)."""
    ref = ref_from_key(key)
    if isinstance(ref, ExternalId):
        return (action, "external_id", ref.value, "", "", "")
    if isinstance(ref, UserAlias):
        return (action, "alias", "", ref.alias_name, ref.alias_label, "")
    return (action, "device_id", "", "", "", ref.value)


def reject_row(rejection: Rejection) -> tuple[object, ...]:
    """The rejects file's row for ``rejection``."""
    data = rejection.to_dict()
    return (
        data["index"],
        "" if data["line"] is None else data["line"],
        data["reason"],
        data["detail"],
        json.dumps(data["record"], ensure_ascii=False, sort_keys=True),
    )
