"""Which column of a source holds which identifier: the column mapping every source shares.

Files, DataFrames and queries all name their columns; a :class:`Columns` says which of them hold
the external id, the alias name and label and the device id. Names are matched exactly first,
then case-insensitively (``User_ID`` finds ``user_id``); the matched columns are renamed to the
field names the :class:`~braze_cohorts.IdentifierMatcher` reads, every other column passes
through under its own name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence

import attrs

from braze_cohorts.exceptions import ConfigurationError, InputError

__all__ = ["EXTERNAL_ID", "MAX_COLUMNS", "Columns", "Resolved", "columns", "preview"]

#: The identifier fields of the default matcher, which the mapping renames columns to.
EXTERNAL_ID = "external_id"
_ROLES: tuple[str, ...] = (EXTERNAL_ID, "alias_name", "alias_label", "device_id")

#: The most columns a source may have: more is not a member list but, most often, a one-line
#: export of comma-separated ids (whose header would be millions of "columns").
MAX_COLUMNS = 10_000

#: How many names an error message shows before "and N more".
_PREVIEW = 5


def preview(names: Sequence[str]) -> str:
    """The first few names, quoted, and how many more there are (for error messages)."""
    shown = ", ".join(repr(name) for name in names[:_PREVIEW])
    rest = len(names) - _PREVIEW
    return f"{shown} and {rest:,} more" if rest > 0 else shown


@attrs.frozen
class Resolved:
    """A mapping applied to one source's column names.

    Attributes:
        names: The output field name of each column, in source order (renamed or unchanged).
        found: The identifier fields present, by output name.
        external_id_only: The position of the external id column when it is the only identifier
            column (the fast path: each record can be a plain ``str``), else ``None``.
    """

    names: tuple[str, ...]
    found: frozenset[str]
    external_id_only: int | None


@attrs.frozen
class Columns:
    """Where a source keeps its identifiers.

    Attributes:
        targets: Output field name -> the column to look for (matched exactly, then
            case-insensitively).
        explicit: The output fields whose column the caller named: missing is an error.
    """

    targets: dict[str, str]
    explicit: frozenset[str]

    def resolve(self, header: Sequence[str], what: str) -> Resolved:
        """Apply the mapping to ``header`` (in linear time, whatever its length).

        Raises:
            InputError: If there are more than :data:`MAX_COLUMNS` columns, a column is repeated,
                a named column is missing or two columns match one name, or no identifier column
                is present.
        """
        if len(header) > MAX_COLUMNS:
            raise InputError(
                f"{what}: {len(header):,} columns (at most {MAX_COLUMNS:,} are read); a member "
                "list has one row per member (is this a one-line list of comma-separated ids?)"
            )
        counts = Counter(header)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise InputError(f"{what}: the header repeats the column names {preview(repeated)}")
        exact = {name: position for position, name in enumerate(header)}
        folded: dict[str, list[int]] = {}
        for index, name in enumerate(header):
            folded.setdefault(name.casefold(), []).append(index)
        names = list(header)
        found: set[str] = set()
        claimed: dict[int, str] = {}
        for field, column in self.targets.items():
            position: int | None = exact.get(column)
            if position is None:
                matches = folded.get(column.casefold(), [])
                if len(matches) > 1:
                    raise InputError(
                        f"{what}: {len(matches)} columns match {column!r} when case is ignored "
                        f"({preview([header[m] for m in matches])}); name one exactly"
                    )
                position = matches[0] if matches else None
            if position is None:
                if field in self.explicit:
                    raise InputError(
                        f"{what}: no column {column!r} (for {field}); the columns are "
                        f"{preview(list(header))}"
                    )
                continue
            if position in claimed:
                raise InputError(
                    f"{what}: column {header[position]!r} is named for both "
                    f"{claimed[position]} and {field}"
                )
            claimed[position] = field
            names[position] = field
            found.add(field)
        # A column that already has an output name, but is not the one mapped to it, would
        # shadow (or be shadowed by) the mapped column in each record: refuse the ambiguity.
        for position, name in enumerate(header):
            if position not in claimed and name in found:
                raise InputError(
                    f"{what}: column {name!r} clashes with the column mapped to {name}; "
                    "rename or drop one of them"
                )
        if not found:
            raise InputError(
                f"{what}: none of the identifier columns {list(self.targets.values())} "
                f"(matched ignoring case); found {preview(list(header))}"
            )
        only = None
        if found == {EXTERNAL_ID} and EXTERNAL_ID in self.targets:
            only = names.index(EXTERNAL_ID)
        return Resolved(names=tuple(names), found=frozenset(found), external_id_only=only)

    def rename(self, keys: Iterable[str]) -> tuple[dict[str, str], str | None]:
        """The renames (``{source key: output field}``) for one record's keys, e.g. a JSON object.

        No error for a missing column: a record without identifiers is the matcher's to reject.

        Returns:
            The renames, and what is ambiguous about these keys (``None`` when nothing is): a
            key mapped to a field the record also has under the field's own name.
        """
        keys = list(keys)
        exact = set(keys)
        folded = {key.casefold(): key for key in keys}
        renames: dict[str, str] = {}
        for field, column in self.targets.items():
            key = column if column in exact else folded.get(column.casefold())
            if key is None or key == field:
                continue
            if field in exact:
                return {}, f"both {key!r} (mapped to {field}) and {field!r} are present"
            renames[key] = field
        return renames, None


def columns(
    *,
    external_id_column: str | None = None,
    alias_name_column: str | None = None,
    alias_label_column: str | None = None,
    device_id_column: str | None = None,
    id_columns: Collection[str] | None = None,
) -> Columns:
    """Build the mapping from the keyword arguments every source takes.

    Args:
        external_id_column: The column holding the external id (default ``external_id``).
        alias_name_column: The column holding the alias name (default ``alias_name``).
        alias_label_column: The column holding the alias label (default ``alias_label``).
        device_id_column: The column holding the device id (default ``device_id``).
        id_columns: Further identifier columns kept under their own names (for a matcher that
            reads other fields: pass ``matcher.fields``).

    Raises:
        ConfigurationError: If a column name is empty or not a ``str``.
    """
    given = {
        EXTERNAL_ID: external_id_column,
        "alias_name": alias_name_column,
        "alias_label": alias_label_column,
        "device_id": device_id_column,
    }
    targets: dict[str, str] = {}
    explicit: set[str] = set()
    for field, column in given.items():
        if column is None:
            if id_columns is None:
                targets[field] = field
            continue
        if not isinstance(column, str) or not column.strip():
            raise ConfigurationError(f"{field}_column must be a non-empty str")
        targets[field] = column
        explicit.add(field)
    if id_columns is not None:
        if isinstance(id_columns, str):
            raise ConfigurationError("id_columns must be a collection of column names, not a str")
        for column in id_columns:
            if not isinstance(column, str) or not column:
                raise ConfigurationError("id_columns must hold non-empty str column names")
            targets.setdefault(column, column)
    return Columns(targets=targets, explicit=frozenset(explicit))
