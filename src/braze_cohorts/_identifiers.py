"""Identifier types Braze can match, and their canonical keys.

A user is sent to Braze as exactly one of :class:`ExternalId`, :class:`UserAlias` or
:class:`DeviceId`. Each has a canonical *key* (a ``str``) that is unique across kinds, stable, and
reversible with :func:`ref_from_key`; sets, the state store and plans use keys.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, Union

import attrs

from braze_cohorts.exceptions import ConfigurationError, InvalidIdentifierError

__all__ = [
    "KINDS",
    "DeviceId",
    "ExternalId",
    "IdentifierMatcher",
    "MalformedRecord",
    "MatchResult",
    "RejectReason",
    "Rejection",
    "UserAlias",
    "UserRef",
    "as_ref",
    "ref_from_key",
]

log = logging.getLogger(__name__)

# Key prefixes. The separator inside an alias key is the ASCII unit separator: values may not
# contain control characters, so it can never be part of a value and keys stay unambiguous.
_EXTERNAL = "e:"
_ALIAS = "a:"
_DEVICE = "d:"
_SEP = "\x1f"


# Invisible format characters: Unicode general category Cf (zero-width space and joiners,
# bidirectional marks and embeddings, the soft hyphen, the byte order mark, tag characters ...).
# An id holding one looks identical to the id without it, yet never matches it in Braze.
# The ranges are those of Unicode 15.1 (a test checks them against the running Python).
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_FORMAT_CHAR = re.compile(f"[{_FORMAT}]")

# C0 and C1 control characters, DEL, lone surrogates (which cannot be encoded as UTF-8, so
# they could never reach Braze) and format characters. One C-level regex search keeps
# validation cheap at 10M ids.
_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")


def _check_value(kind: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{kind} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{kind} must not be empty")
    if value != value.strip():
        raise InvalidIdentifierError(f"{kind} must not have surrounding whitespace")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        if "\ud800" <= bad.group() <= "\udfff":
            raise InvalidIdentifierError(f"{kind} must be valid Unicode (it has a lone surrogate)")
        if _FORMAT_CHAR.match(bad.group()):
            raise InvalidIdentifierError(
                f"{kind} must not contain invisible format characters (Unicode category Cf, "
                f"here U+{ord(bad.group()):04X})"
            )
        raise InvalidIdentifierError(f"{kind} must not contain control characters")


def _validate(kind: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    search = _FORBIDDEN.search

    def validator(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        # The common valid case is checked inline (this runs for every id of a big cohort);
        # anything else goes to _check_value for the precise error.
        if value.__class__ is not str or not value or value != value.strip() or search(value):
            _check_value(kind, value)

    return validator


class _OneValue:
    """What the identifiers that are one string share: their key is that string, prefixed."""

    __slots__ = ()
    _PREFIX: ClassVar[str]
    value: str

    @property
    def key(self) -> str:
        """The canonical key: unique across identifier kinds."""
        return self._PREFIX + self.value

    def __str__(self) -> str:
        return self.value


@attrs.frozen(slots=True)
class ExternalId(_OneValue):
    """A Braze ``external_id`` (case-sensitive, sent unchanged): the id of an identified user.

    Args:
        value: The external id: not empty, not padded with whitespace, no control or invisible
            format characters.

    Raises:
        InvalidIdentifierError: If ``value`` is not such a string.
    """

    _PREFIX: ClassVar[str] = _EXTERNAL
    value: str = attrs.field(validator=_validate("external id"))


@attrs.frozen(slots=True)
class UserAlias:
    """A Braze user alias: a name within a label (e.g. name ``a@x.io``, label ``email``).

    Args:
        alias_name: The alias name.
        alias_label: The alias label.

    Raises:
        InvalidIdentifierError: If either part is missing or invalid.
    """

    alias_name: str = attrs.field(validator=_validate("alias_name"))
    alias_label: str = attrs.field(validator=_validate("alias_label"))

    @property
    def key(self) -> str:
        """The canonical key: unique across identifier kinds."""
        return f"{_ALIAS}{self.alias_label}{_SEP}{self.alias_name}"

    def __str__(self) -> str:
        return f"{self.alias_label}:{self.alias_name}"


@attrs.frozen(slots=True)
class DeviceId(_OneValue):
    """A device id: how Braze matches anonymous users.

    Braze ignores the device id of a user who has since been identified: send such a user by
    :class:`ExternalId` or :class:`UserAlias`.

    Args:
        value: The device id, held to the same rules as an :class:`ExternalId`'s value.

    Raises:
        InvalidIdentifierError: If ``value`` breaks them.
    """

    _PREFIX: ClassVar[str] = _DEVICE
    value: str = attrs.field(validator=_validate("device id"))


#: One user as Braze can match them.
UserRef = Union[ExternalId, UserAlias, DeviceId]  # noqa: UP007 - a runtime alias on Python 3.10


def as_ref(value: UserRef | str) -> UserRef:
    """Return ``value`` as an identifier; a plain ``str`` means an external id.

    Raises:
        InvalidIdentifierError: If ``value`` is neither an identifier nor a valid ``str``.
    """
    if isinstance(value, (ExternalId, UserAlias, DeviceId)):
        return value
    if isinstance(value, str):
        return ExternalId(value)
    raise InvalidIdentifierError(
        f"expected ExternalId, UserAlias, DeviceId or str, not {type(value).__name__}"
    )


# Printable ASCII: what a bulk check of ASCII-only external ids lets through.
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def check_external_ids(values: Sequence[object]) -> None:
    """Check that ``values`` are all valid plain-``str`` external ids, in bulk (hot paths).

    No object is built per id. For the common case (ASCII strings) the values are joined
    with newlines and checked with a few C-level scans: nothing but printable ASCII and the
    separators, no empty value, no space next to a separator. Anything else is checked value
    by value, for the precise error.

    Raises:
        InvalidIdentifierError: For the first value that is not a valid ``str`` external id
            (an identifier object counts as invalid here).
    """
    if not values:
        return
    try:
        joined = "\n".join(values)  # type: ignore[arg-type]  # a TypeError says "not all str"
    except TypeError:
        joined = ""
    if (
        joined
        and joined.isascii()
        and len(joined.encode("ascii").translate(None, _PRINTABLE_ASCII)) == len(values) - 1
        and joined[0] not in " \n"
        and joined[-1] not in " \n"
        and "\n\n" not in joined
        and " \n" not in joined
        and "\n " not in joined
    ):
        return
    for value in values:
        _check_value("external id", value)


class CheckedIds(tuple):  # type: ignore[type-arg]
    """A tuple of plain-``str`` external ids that :func:`check_external_ids` has passed.

    Internal: the uploader hands such tuples to the client, which then does not check them
    again. Nothing outside the package builds one.
    """

    __slots__ = ()


def key_of(item: UserRef | str) -> str:
    """The canonical key of an identifier or of a plain ``str`` (an external id), unchecked."""
    if isinstance(item, str):
        return _EXTERNAL + item
    return item.key


def item_from_key(key: str) -> UserRef | str:
    """Like :func:`ref_from_key`, but an external id comes back as a plain ``str`` (hot paths)."""
    if key.startswith(_EXTERNAL):
        return key[2:]
    return ref_from_key(key)


def ref_from_key(key: str) -> UserRef:
    """Rebuild the identifier whose canonical key is ``key``.

    Raises:
        InvalidIdentifierError: If ``key`` is not a canonical key.
    """
    if key.startswith(_EXTERNAL):
        return ExternalId(key[2:])
    if key.startswith(_DEVICE):
        return DeviceId(key[2:])
    if key.startswith(_ALIAS):
        label, sep, name = key[2:].partition(_SEP)
        if sep:
            return UserAlias(alias_name=name, alias_label=label)
    raise InvalidIdentifierError("not a canonical identifier key")


# --------------------------------------------------------------------------------------------
# Matching records to identifiers
# --------------------------------------------------------------------------------------------


class RejectReason(str, enum.Enum):
    """Why a record could not be turned into an identifier: a stable code, and a message.

    The value (e.g. ``"missing_identifier"``) is the code: it is what counts, history and reject
    files use, and it never changes. :attr:`message` says it in words.
    """

    #: The record has none of the identifier fields filled.
    MISSING_IDENTIFIER = "missing_identifier"
    #: The external id is not valid (padded, control characters, wrong type ...).
    INVALID_EXTERNAL_ID = "invalid_external_id"
    #: The alias name or label is not valid.
    INVALID_ALIAS = "invalid_alias"
    #: Only one of alias name and alias label is filled.
    INCOMPLETE_ALIAS = "incomplete_alias"
    #: The device id is not valid.
    INVALID_DEVICE_ID = "invalid_device_id"
    #: The record is marked identified but has only a device id, which Braze cannot match.
    IDENTIFIED_DEVICE_ONLY = "identified_device_only"
    #: The "identified" field holds something that is neither true nor false.
    INVALID_IDENTIFIED_FLAG = "invalid_identified_flag"
    #: The record is of a type the matcher cannot read (``None``, a number, a list ...).
    UNSUPPORTED_RECORD = "unsupported_record"
    #: An input reader could not parse the row (wrong field count, bad JSON, bad encoding).
    MALFORMED_ROW = "malformed_row"

    @property
    def message(self) -> str:
        """The reason in words."""
        return _REASON_MESSAGES[self]

    def __str__(self) -> str:
        return self.value


_REASON_MESSAGES: dict[RejectReason, str] = {
    RejectReason.MISSING_IDENTIFIER: "the record has no external id, alias or device id",
    RejectReason.INVALID_EXTERNAL_ID: "the external id is not valid",
    RejectReason.INVALID_ALIAS: "the alias name or label is not valid",
    RejectReason.INCOMPLETE_ALIAS: "an alias needs both a name and a label",
    RejectReason.INVALID_DEVICE_ID: "the device id is not valid",
    RejectReason.IDENTIFIED_DEVICE_ONLY: (
        "the user is identified but has only a device id; Braze matches identified users by "
        "external id or alias only"
    ),
    RejectReason.INVALID_IDENTIFIED_FLAG: "the identified field is neither true nor false",
    RejectReason.UNSUPPORTED_RECORD: "the record is not a mapping, an object or an identifier",
    RejectReason.MALFORMED_ROW: "the input row could not be parsed",
}


@attrs.frozen(slots=True)
class MalformedRecord:
    """A row that an input reader could not parse; the matcher rejects it as ``malformed_row``.

    Input readers (such as :func:`braze_cohorts.read_records`) yield it in place of the row so
    that one bad line is reported with its line number and never stops the rows after it.

    Attributes:
        line: The (1-based) line the row starts on, if known.
        detail: What is wrong, in words (never the row's content).
        raw: The unparsed content (a line of text, a list of CSV fields, a JSON value).
    """

    line: int | None
    detail: str
    raw: object = None


@attrs.frozen(slots=True)
class Rejection:
    """A record that could not be turned into an identifier, and why.

    Attributes:
        index: The record's 0-based position in the input.
        record: The record itself, unchanged.
        reason: The stable reason code.
        detail: What exactly is wrong, naming the field; it never contains the field's value, so
            it is safe to log.
        line: The line the record starts on in its input file, when it came from an input reader
            (:func:`braze_cohorts.read_records`); ``None`` otherwise.
    """

    index: int
    record: object = attrs.field(repr=False)
    reason: RejectReason
    detail: str
    line: int | None = None

    def to_dict(self) -> dict[str, object]:
        """The rejection as plain JSON-ready values, e.g. for a rejects file.

        Returns:
            ``index``, ``line``, ``reason`` (the code), ``detail`` and ``record``: the record as
            JSON-ready data (a mapping or object becomes a ``dict``, a malformed row its raw
            text, an identifier its canonical key, anything else its ``repr``; NaN becomes
            ``None``). ``json.dumps`` accepts the result whatever the record was.
        """
        return {
            "index": self.index,
            "line": self.line,
            "reason": self.reason.value,
            "detail": self.detail,
            "record": _jsonable(self.record, depth=0),
        }


@attrs.frozen(slots=True)
class MatchResult:
    """What :meth:`IdentifierMatcher.match` found.

    Attributes:
        users: One identifier per distinct user, in the order first seen.
        rejected: The records that could not be matched, in input order.
        counts: Rejected records per reason code (only reasons that occurred).
        duplicates: Records that named a user already in ``users``.
    """

    users: tuple[UserRef, ...]
    rejected: tuple[Rejection, ...] = ()
    counts: Mapping[str, int] = attrs.field(factory=dict)
    duplicates: int = 0

    @property
    def rejected_total(self) -> int:
        """All rejected records, whatever the reason."""
        return len(self.rejected)


#: The identifier kinds a :class:`IdentifierMatcher` can pick, as named in ``precedence``.
KINDS: tuple[str, ...] = ("external_id", "alias", "device_id")

_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n", ""})


class _InvalidFieldError(Exception):
    """Internal: one field of a record is invalid (carries the reason and a value-free detail)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _check_field_name(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attr.name in ("alias_label_field", "identified_field"):
        return
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{attr.name} must be a non-empty str")


def _check_constant_label(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    try:
        _check_value("alias_label", value)
    except InvalidIdentifierError as exc:
        raise ConfigurationError(f"invalid constant alias_label: {exc}") from exc


def _to_precedence(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"precedence must be a sequence of kinds from {KINDS}, not {type(value).__name__}"
        )
    return tuple(value)


def _check_precedence(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    assert isinstance(value, tuple)
    if not value:
        raise ConfigurationError("precedence must name at least one identifier kind")
    unknown = [kind for kind in value if kind not in KINDS]
    if unknown:
        raise ConfigurationError(f"unknown kinds in precedence: {unknown!r}; known: {KINDS}")
    if len(set(value)) != len(value):
        raise ConfigurationError("precedence names a kind twice")


@attrs.frozen(slots=True, kw_only=True)
class IdentifierMatcher:
    """Turns records into one Braze identifier each, following Braze's matching rules.

    A record is a mapping (``dict``, CSV row), an object with attributes (dataclass, attrs class,
    named tuple, ``DataFrame.itertuples()`` row), a bare :class:`ExternalId` / :class:`UserAlias`
    / :class:`DeviceId`, or a plain ``str`` (an external id). Missing fields, ``None``, ``""`` and
    float NaN (how pandas spells "missing") all count as absent.

    Field values must be ``str``; an ``int`` (not a ``bool``) is accepted and written in decimal,
    because warehouses often store external ids as integers. Floats, bools and anything else are
    rejected (a float id is almost always an integer column that picked up a missing value).
    Values are never changed: external ids keep their case, and values padded with whitespace are
    rejected, not stripped.

    The rules:

    * The first kind in ``precedence`` that the record has decides (by default external id, then
      alias, then device id). If that kind's value is invalid, the record is rejected: it is not
      sent by a lower kind, because that might silently match nobody.
    * An identified user is never sent by device id (Braze ignores the device ids of identified
      users): when ``identified_field`` is set and true, ``device_id`` is skipped, and a record
      that has only a device id is rejected as ``identified_device_only``.
    * A record with only a device id is sent by :class:`DeviceId` (an anonymous user).
    * An alias needs both a name and a label; half of one is rejected as ``incomplete_alias``.

    Args:
        external_id_field: The field holding the external id.
        alias_name_field: The field holding the alias name.
        alias_label_field: The field holding the alias label (ignored when ``alias_label`` is
            given; ``None`` for no label field).
        alias_label: A constant alias label (e.g. ``"email"``); the alias name then comes from
            ``alias_name_field`` (e.g. set it to ``"email"`` too).
        device_id_field: The field holding the device id.
        identified_field: An optional field saying whether the user is identified (``True`` /
            ``False``, ``1`` / ``0``, or the strings ``true``/``false``, ``yes``/``no``,
            ``1``/``0``, ``t``/``f``, ``y``/``n`` in any case; empty means unknown).
        precedence: The identifier kinds to use, best first: any ordering of a non-empty subset
            of ``("external_id", "alias", "device_id")``. Kinds left out are never used.

    Raises:
        ConfigurationError: If a field name is empty, the constant label is invalid, or
            ``precedence`` is empty, repeats a kind or names an unknown one.
    """

    external_id_field: str = attrs.field(default="external_id", validator=_check_field_name)
    alias_name_field: str = attrs.field(default="alias_name", validator=_check_field_name)
    alias_label_field: str | None = attrs.field(default="alias_label", validator=_check_field_name)
    alias_label: str | None = attrs.field(default=None, validator=_check_constant_label)
    device_id_field: str = attrs.field(default="device_id", validator=_check_field_name)
    identified_field: str | None = attrs.field(default=None, validator=_check_field_name)
    precedence: tuple[str, ...] = attrs.field(
        default=KINDS, converter=_to_precedence, validator=_check_precedence
    )

    @property
    def fields(self) -> tuple[str, ...]:
        """The record fields that can hold an identifier (what an input file needs one of)."""
        names = [self.external_id_field, self.alias_name_field]
        if self.alias_label is None and self.alias_label_field is not None:
            names.append(self.alias_label_field)
        names.append(self.device_id_field)
        return tuple(dict.fromkeys(names))

    def match_one(self, record: object, *, index: int = 0) -> UserRef | Rejection:
        """Match one record.

        Args:
            record: The record (see the class docstring for what it may be).
            index: The record's position, copied into a :class:`Rejection`.

        Returns:
            The identifier, or a :class:`Rejection` saying why there is none. Never raises for a
            bad record.
        """
        if isinstance(record, str):
            try:
                return ExternalId(record)
            except InvalidIdentifierError as exc:
                return Rejection(index, record, RejectReason.INVALID_EXTERNAL_ID, str(exc))
        if isinstance(record, (ExternalId, UserAlias, DeviceId)):
            return record
        try:
            return self._match_fields(record)
        except _InvalidFieldError as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:  # a record that breaks when read is a bad record, not a crash
            reason = RejectReason.UNSUPPORTED_RECORD
            detail = f"reading the {type(record).__name__} record failed ({type(exc).__name__})"
        if isinstance(record, MalformedRecord):
            line = record.line
        else:
            # Records from read_records are dicts that know their line.
            found = getattr(record, "source_line", None) if isinstance(record, dict) else None
            line = found if isinstance(found, int) else None
        return Rejection(index, record, reason, detail, line)

    def iter_match(self, records: Iterable[object]) -> Iterator[UserRef | Rejection]:
        """Match records one by one, lazily: a streaming form of :meth:`match`.

        Memory stays constant however long the input is, so this form does **not** remove
        duplicates: the same user may come out more than once (the sync engine removes them on
        disk). Every record yields exactly one item, in input order.

        Args:
            records: Any iterable of records; it is consumed lazily, one record per item.

        Yields:
            For each record, its identifier or a :class:`Rejection`.
        """
        match_one = self.match_one
        for index, record in enumerate(records):
            yield match_one(record, index=index)

    def match(self, records: Iterable[object]) -> MatchResult:
        """Match all records, removing duplicate users.

        A bad record never stops the good ones: it is reported in ``rejected`` with its index
        and reason. For inputs too large for memory, use :meth:`iter_match`.

        Args:
            records: Any iterable of records.

        Returns:
            The distinct users in first-seen order, the rejections, counts per reason, and how
            many records repeated a user already seen.
        """
        users: dict[str, UserRef] = {}
        rejected: list[Rejection] = []
        counts: dict[str, int] = {}
        duplicates = 0
        for item in self.iter_match(records):
            if isinstance(item, Rejection):
                rejected.append(item)
                code = item.reason.value
                counts[code] = counts.get(code, 0) + 1
                continue
            key = item.key
            if key in users:
                duplicates += 1
            else:
                users[key] = item
        log.debug(
            "matched %d users, %d rejected, %d duplicates", len(users), len(rejected), duplicates
        )
        return MatchResult(
            users=tuple(users.values()),
            rejected=tuple(rejected),
            counts=counts,
            duplicates=duplicates,
        )

    # -- internals ---------------------------------------------------------------------------

    def _match_fields(self, record: object) -> UserRef:
        if isinstance(record, MalformedRecord):
            raise _InvalidFieldError(RejectReason.MALFORMED_ROW, record.detail)
        if isinstance(record, (dict, Mapping)):
            get: Callable[[str], object] = record.get
        else:
            get = self._attribute_getter(record)
        identified = self._identified(get) if self.identified_field is not None else None
        skipped_device = False
        for kind in self.precedence:
            if kind == "external_id":
                field = self.external_id_field
                value = get(field)
                if value.__class__ is not str:
                    value = _text(value, RejectReason.INVALID_EXTERNAL_ID, field)
                if value:
                    return _build(ExternalId, RejectReason.INVALID_EXTERNAL_ID, field, value)
            elif kind == "alias":
                alias = self._alias(get)
                if alias is not None:
                    return alias
            else:
                field = self.device_id_field
                value = _text(get(field), RejectReason.INVALID_DEVICE_ID, field)
                if value is not None:
                    if identified:
                        skipped_device = True
                        continue
                    return _build(DeviceId, RejectReason.INVALID_DEVICE_ID, field, value)
        if skipped_device:
            raise _InvalidFieldError(
                RejectReason.IDENTIFIED_DEVICE_ONLY,
                f"{self.identified_field} is true and only {self.device_id_field} is filled",
            )
        raise _InvalidFieldError(
            RejectReason.MISSING_IDENTIFIER,
            f"none of {self._precedence_fields()} is filled",
        )

    def _attribute_getter(self, record: object) -> Callable[[str], object]:
        """Read fields as attributes; refuse records that are plainly not records."""
        if (
            record is None
            or isinstance(
                record, (bool, int, float, complex, bytes, bytearray, list, set, frozenset)
            )
            or (isinstance(record, tuple) and not hasattr(record, "_fields"))
        ):
            raise _InvalidFieldError(
                RejectReason.UNSUPPORTED_RECORD,
                f"a {type(record).__name__} is not a mapping, an object or an identifier",
            )
        if not any(hasattr(record, name) for name in self.fields):
            raise _InvalidFieldError(
                RejectReason.UNSUPPORTED_RECORD,
                f"a {type(record).__name__} has none of the fields {list(self.fields)}",
            )
        return lambda name: getattr(record, name, None)

    def _precedence_fields(self) -> list[str]:
        names: list[str] = []
        for kind in self.precedence:
            if kind == "external_id":
                names.append(self.external_id_field)
            elif kind == "alias":
                names.append(self.alias_name_field)
            else:
                names.append(self.device_id_field)
        return names

    def _alias(self, get: Callable[[str], object]) -> UserAlias | None:
        name_field = self.alias_name_field
        name = _text(get(name_field), RejectReason.INVALID_ALIAS, name_field)
        if self.alias_label is not None:
            label: str | None = self.alias_label
            label_field = "alias_label"
        elif self.alias_label_field is not None:
            label_field = self.alias_label_field
            label = _text(get(label_field), RejectReason.INVALID_ALIAS, label_field)
        else:
            label_field = "alias_label"
            label = None
        if name is None and (label is None or self.alias_label is not None):
            return None
        if name is None or label is None:
            missing = name_field if name is None else label_field
            raise _InvalidFieldError(RejectReason.INCOMPLETE_ALIAS, f"{missing} is empty")
        try:
            return UserAlias(alias_name=name, alias_label=label)
        except InvalidIdentifierError as exc:
            raise _InvalidFieldError(RejectReason.INVALID_ALIAS, str(exc)) from None

    def _identified(self, get: Callable[[str], object]) -> bool | None:
        assert self.identified_field is not None
        value = get(self.identified_field)
        if value is None or _is_nan(value):
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral):
            return bool(value)
        if isinstance(value, str):
            folded = value.strip().lower()
            if folded in _TRUE:
                return True
            if folded in _FALSE:
                return None if not folded else False
        raise _InvalidFieldError(
            RejectReason.INVALID_IDENTIFIED_FLAG,
            f"{self.identified_field} must be true or false, not a {type(value).__name__} "
            "that reads as neither",
        )


def _jsonable(value: object, *, depth: int) -> object:
    """``value`` as data ``json.dumps`` accepts (strictly: no NaN), for reports of bad records."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if value != value or value in (float("inf"), float("-inf")) else value
    if depth > 8:
        return repr(value)
    if isinstance(value, MalformedRecord):
        return _jsonable(value.raw, depth=depth + 1)
    if isinstance(value, (ExternalId, UserAlias, DeviceId)):
        return value.key
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _jsonable(value._asdict(), depth=depth)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth=depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    if attrs.has(type(value)):
        return _jsonable(attrs.asdict(value, recurse=False), depth=depth)  # type: ignore[arg-type]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _jsonable(fields, depth=depth)
    if _is_nan(value):
        return None
    return repr(value)


def _is_nan(value: object) -> bool:
    if isinstance(value, float):
        return value != value
    # pandas.NA / NaT without importing pandas.
    return type(value).__name__ in ("NAType", "NaTType")


def _text(value: object, reason: RejectReason, field: str) -> str | None:
    """The value as ``str``, ``None`` when absent; a wrong type raises ``_InvalidFieldError``."""
    if isinstance(value, str):
        return value or None
    if value is None or _is_nan(value):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise _InvalidFieldError(
        reason, f"{field} is a {type(value).__name__}; identifiers must be str (or int)"
    )


_R = TypeVar("_R", ExternalId, DeviceId)


def _build(cls: type[_R], reason: RejectReason, field: str, value: str) -> _R:
    try:
        return cls(value)
    except InvalidIdentifierError as exc:
        raise _InvalidFieldError(reason, f"{field}: {exc}") from None
