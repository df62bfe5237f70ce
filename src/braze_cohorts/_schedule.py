"""When an import runs: the :class:`Schedule` spec, its next-run computation and its text forms.

A schedule is a frozen value. It knows nothing of storage or HTTP: the runner asks it
:meth:`Schedule.next_run` and stores it through :meth:`Schedule.to_dict` or ``str(schedule)``.

Wall-clock schedules (daily, weekly, monthly) are kept in an IANA time zone and follow its
daylight-saving rules. On a given day the run happens at *the first instant whose local clock
reads the requested time or later*:

* a time that exists once runs at that time;
* a time that happens twice (clocks go back) runs once, at its first occurrence;
* a time that does not exist (clocks go forward) runs at the first valid instant after it,
  e.g. 02:30 on spring-forward day in Europe/Berlin runs at 03:00 CEST.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, SupportsIndex, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from braze_cohorts._files import FileSource
from braze_cohorts._notify import (
    WEBHOOK_FORMATS,
    WebhookFormat,
    check_env_name,
    validate_recipients,
)
from braze_cohorts._query import QuerySource
from braze_cohorts.exceptions import ConfigurationError, ScheduleError

__all__ = [
    "FAILURE_RESULTS",
    "NOTIFY_ALWAYS",
    "PAUSED_BY_USER",
    "RESYNC_OFF",
    "NotifyOn",
    "NotifyRule",
    "Schedule",
    "ScheduleKind",
    "ScheduleState",
    "ScheduledImport",
    "StoredSource",
    "WebhookFormat",
    "format_period",
    "parse_period",
    "source_from_text",
    "source_to_text",
]

#: The kinds of schedule, as they appear in ``to_dict()["kind"]`` and the text form.
ScheduleKind = Literal["once", "hourly", "daily", "weekly", "monthly"]

_KINDS: tuple[str, ...] = get_args(ScheduleKind)
_UTC = dt.timezone.utc
_DICT_VERSION = 1
_WEEKDAY_ABBR = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES: dict[str, int] = {
    **{name: i for i, name in enumerate(_WEEKDAY_ABBR)},
    **{name.lower(): i for i, name in enumerate(calendar.day_name)},
}
_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})")
# Zones that never change offset (tzdb's Etc area and the UTC aliases): cron can express them.
_FIXED_ZONE = re.compile(
    r"(?:Etc/)?(?:UTC|UCT|GMT|GMT[+-]?0|Greenwich|Universal|Zulu)|Etc/GMT[+-][0-9]{1,2}"
)
_TEXT_FORMS = (
    "'once 2026-12-01T09:00+01:00', 'hourly 15', 'daily 09:00 Europe/Berlin', "
    "'weekly mon,thu 07:30 UTC', 'monthly last 06:00 America/New_York'"
)


def _zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name, or a :class:`ScheduleError` naming it."""
    if not isinstance(name, str):
        raise ScheduleError(f"time zone must be an IANA name (str), not {type(name).__name__}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')"
        ) from exc


def _zone_name(tz: str | ZoneInfo) -> str:
    name = tz.key if isinstance(tz, ZoneInfo) else tz
    _zone(name)
    return name


def _parse_time(at: dt.time | str) -> dt.time:
    """A wall-clock time from a ``datetime.time`` or an ``"HH:MM"`` string."""
    if isinstance(at, dt.time):
        if at.tzinfo is not None:
            raise ScheduleError(
                f"time {at.isoformat()!r} must not carry a time zone; pass the zone as tz"
            )
        if at.second or at.microsecond:
            raise ScheduleError(f"time {at.isoformat()!r} must be a whole minute (HH:MM)")
        return at.replace(fold=0)
    if not isinstance(at, str):
        raise ScheduleError(f"time must be a datetime.time or 'HH:MM', not {type(at).__name__}")
    match = _HHMM.fullmatch(at.strip())
    if match is None:
        raise ScheduleError(f"invalid time {at!r}: expected 'HH:MM'")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23:
        raise ScheduleError(f"invalid time {at!r}: hour must be 0-23")
    if minute > 59:
        raise ScheduleError(f"invalid time {at!r}: minute must be 0-59")
    return dt.time(hour, minute)


def _parse_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ScheduleError(f"{what} must be an int, not bool")
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    elif isinstance(value, SupportsIndex):  # int, IntEnum (calendar.MONDAY), numpy integers
        return operator.index(value)
    raise ScheduleError(f"{what} must be an int, got {value!r}")


def _parse_minute(minute: int | str) -> int:
    value = _parse_int(minute, "minute")
    if not 0 <= value <= 59:
        raise ScheduleError(f"minute must be 0-59, got {value}")
    return value


def _parse_weekday(day: int | str) -> int:
    if isinstance(day, str) and not day.strip().isdigit():
        try:
            return _WEEKDAY_NAMES[day.strip().lower()]
        except KeyError:
            raise ScheduleError(
                f"unknown weekday {day!r} (expected e.g. 'mon' or 'Monday', or 0-6 with Monday=0)"
            ) from None
    value = _parse_int(day, "weekday")
    if not 0 <= value <= 6:
        raise ScheduleError(f"weekday must be 0-6 (Monday=0), got {value}")
    return value


def _parse_weekdays(weekdays: Iterable[int | str] | str) -> tuple[int, ...]:
    items: Iterable[int | str]
    items = weekdays.split(",") if isinstance(weekdays, str) else weekdays
    try:
        days = tuple(sorted({_parse_weekday(d) for d in items}))
    except TypeError as exc:
        raise ScheduleError(f"weekdays must be an iterable of names or ints: {exc}") from exc
    if not days:
        raise ScheduleError("a weekly schedule needs at least one weekday")
    return days


def _parse_day(day: int | str) -> int | Literal["last"]:
    if isinstance(day, str) and day.strip().lower() == "last":
        return "last"
    try:
        value = _parse_int(day, "day of month")
    except ScheduleError:
        raise ScheduleError(f"day of month must be 1-31 or 'last', got {day!r}") from None
    if not 1 <= value <= 31:
        raise ScheduleError(f"day of month must be 1-31 or 'last', got {value}")
    return value


def _check_aware(value: object, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ScheduleError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(
            f"{what} is a naive datetime; give it a time zone (e.g. tzinfo=datetime.timezone.utc)"
        )
    return value


def _parse_datetime(text: str) -> dt.datetime:
    raw = text.strip()
    if raw[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not know "Z".
        raw = raw[:-1] + "+00:00"
    try:
        return dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ScheduleError(
            f"invalid date-time {text!r}: expected ISO 8601 with an offset"
        ) from exc


def _format_datetime(value: dt.datetime) -> str:
    timespec = "minutes" if not (value.second or value.microsecond) else "auto"
    return value.isoformat(timespec=timespec)


def _fixed(value: dt.datetime) -> dt.datetime:
    """The same instant and wall time, with its offset frozen (so text and dict round-trip).

    A wall time that does not exist in its zone (in a spring-forward gap) becomes the first
    valid instant after it, as for recurring schedules.
    """
    zone = value.tzinfo
    if zone is not None and not isinstance(zone, dt.timezone):
        wall = value.replace(tzinfo=None)
        if value.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != wall:
            value = _first_instant_at_or_after(wall.date(), wall.time(), zone).astimezone(zone)
    offset = value.utcoffset()
    assert offset is not None
    return value.replace(tzinfo=dt.timezone(offset), fold=0)


def _first_instant_at_or_after(day: dt.date, wall: dt.time, zone: dt.tzinfo) -> dt.datetime:
    """The first instant (UTC) whose local clock in ``zone`` reads ``day`` + ``wall`` or later."""
    target = dt.datetime.combine(day, wall)
    utc = dt.datetime.combine(day, wall, tzinfo=zone).astimezone(_UTC)  # fold=0: first occurrence
    if utc.astimezone(zone).replace(tzinfo=None) == target:
        return utc
    # The time falls in a gap. fold=0 and fold=1 map it with the offsets before and after the
    # transition; the transition instant lies between them. Search it to the second
    # (tzdb transitions are on whole seconds).
    other = dt.datetime.combine(day, wall, tzinfo=zone).replace(fold=1).astimezone(_UTC)
    lo, hi = sorted((math.floor(utc.timestamp()), math.floor(other.timestamp())))
    # Invariant: the local clock at lo reads before target, at hi at or after it.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        local = dt.datetime.fromtimestamp(mid, _UTC).astimezone(zone).replace(tzinfo=None)
        if local >= target:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, _UTC)


def _instant_and_offset(value: dt.datetime | None) -> object:
    return None if value is None else (value, value.utcoffset())


def _month_day(year: int, month: int, day: int | Literal["last"]) -> dt.date:
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, last if day == "last" else min(day, last))


@attrs.frozen(slots=True, repr=False)
class Schedule:
    """When a cohort's import runs: once, hourly, daily, weekly or monthly.

    Build one with a factory (:meth:`once`, :meth:`hourly`, :meth:`daily`, :meth:`weekly`,
    :meth:`monthly`), from its text form (:meth:`parse`) or from :meth:`to_dict` output
    (:meth:`from_dict`). Values are frozen, hashable and compare by value.

    Attributes:
        kind: ``"once"``, ``"hourly"``, ``"daily"``, ``"weekly"`` or ``"monthly"``.
        at: The instant of a one-time schedule (aware, with a fixed UTC offset), else ``None``.
        minute: The minute past each UTC hour of an hourly schedule, else ``None``.
        time: The local wall-clock time of a daily, weekly or monthly schedule, else ``None``.
        tz: The IANA time zone of ``time`` (``"UTC"`` for one-time and hourly schedules).
        weekdays: The days of a weekly schedule, Monday=0 … Sunday=6, sorted; else empty.
        day: The day of month (1-31) or ``"last"`` of a monthly schedule, else ``None``.

    Raises:
        ScheduleError: If the fields do not make a valid schedule.
    """

    kind: ScheduleKind
    # Equal instants with different offsets print differently, so the offset is compared too.
    at: dt.datetime | None = attrs.field(default=None, eq=_instant_and_offset)
    minute: int | None = None
    time: dt.time | None = None
    tz: str = "UTC"
    weekdays: tuple[int, ...] = ()
    day: int | Literal["last"] | None = None

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        if kind not in _KINDS:
            raise ScheduleError(f"unknown schedule kind {kind!r} (expected one of {_KINDS})")
        wall = kind in ("daily", "weekly", "monthly")
        expected = {
            "at": kind == "once",
            "minute": kind == "hourly",
            "time": wall,
            "weekdays": kind == "weekly",
            "day": kind == "monthly",
        }
        for name, wanted in expected.items():
            present = getattr(self, name) not in (None, ())
            if present != wanted:
                verb = "needs" if wanted else "takes no"
                raise ScheduleError(f"a {kind} schedule {verb} {name!r}")
        if not wall and self.tz != "UTC":
            raise ScheduleError(f"a {kind} schedule takes no time zone (it runs in UTC)")
        _zone(self.tz)
        if self.at is not None and (
            not isinstance(_check_aware(self.at, "at").tzinfo, dt.timezone) or self.at.fold
        ):
            raise ScheduleError("at must have a fixed UTC offset; use Schedule.once(at)")
        if self.minute is not None and _parse_minute(self.minute) != self.minute:
            raise ScheduleError(f"minute must be an int 0-59, got {self.minute!r}")
        if self.time is not None and _parse_time(self.time) != self.time:
            raise ScheduleError(
                f"time must be a naive datetime.time on a whole minute: {self.time!r}"
            )
        if self.weekdays and _parse_weekdays(self.weekdays) != self.weekdays:
            raise ScheduleError(f"weekdays must be sorted unique ints 0-6, got {self.weekdays!r}")
        if self.day is not None and _parse_day(self.day) != self.day:
            raise ScheduleError(f"day must be 1-31 or 'last', got {self.day!r}")

    # -- factories ------------------------------------------------------------------------

    @classmethod
    def once(cls, at: dt.datetime) -> Schedule:
        """A schedule that runs one time, at ``at``.

        Args:
            at: An aware datetime. Its UTC offset is kept (a ``ZoneInfo`` zone becomes the
                fixed offset it has at that instant), so the text form shows the same wall time.
                A wall time that does not exist in its zone (clocks went forward) becomes the
                first valid instant after it; an ambiguous one keeps the occurrence its ``fold``
                picks.

        Raises:
            ScheduleError: If ``at`` is not a datetime or is naive.
        """
        return cls("once", at=_fixed(_check_aware(at, "at")))

    @classmethod
    def hourly(cls, minute: int | str = 0) -> Schedule:
        """A schedule that runs every hour at ``minute`` past the hour, in UTC.

        The minute counts in UTC, so in a zone whose offset is not whole hours (Asia/Kolkata,
        +05:30) ``hourly(15)`` runs at :45 local time. Hourly runs ignore daylight saving.

        Args:
            minute: 0-59 (an int, or a string of digits).

        Raises:
            ScheduleError: If ``minute`` is not 0-59.
        """
        return cls("hourly", minute=_parse_minute(minute))

    @classmethod
    def daily(cls, at: dt.time | str, tz: str | ZoneInfo = "UTC") -> Schedule:
        """A schedule that runs every day at local time ``at`` in ``tz``.

        Args:
            at: A naive ``datetime.time`` on a whole minute, or ``"HH:MM"``.
            tz: An IANA time zone name (or a ``ZoneInfo``); default ``"UTC"``.

        Raises:
            ScheduleError: If the time or the zone is invalid.
        """
        return cls("daily", time=_parse_time(at), tz=_zone_name(tz))

    @classmethod
    def weekly(
        cls,
        weekdays: Iterable[int | str] | str,
        at: dt.time | str,
        tz: str | ZoneInfo = "UTC",
    ) -> Schedule:
        """A schedule that runs on the given weekdays at local time ``at`` in ``tz``.

        Args:
            weekdays: Days as names (``"mon"``, ``"Monday"``, any case), ints 0-6 with
                Monday=0 (``calendar.MONDAY`` works), or one comma-separated string
                (``"mon,thu"``). Duplicates are dropped; order does not matter.
            at: A naive ``datetime.time`` on a whole minute, or ``"HH:MM"``.
            tz: An IANA time zone name (or a ``ZoneInfo``); default ``"UTC"``.

        Raises:
            ScheduleError: If no weekday is given, a weekday is unknown, or the time or zone is
                invalid.
        """
        return cls(
            "weekly", time=_parse_time(at), tz=_zone_name(tz), weekdays=_parse_weekdays(weekdays)
        )

    @classmethod
    def monthly(cls, day: int | str, at: dt.time | str, tz: str | ZoneInfo = "UTC") -> Schedule:
        """A schedule that runs each month on ``day`` at local time ``at`` in ``tz``.

        Args:
            day: 1-31, or ``"last"``. A month without that day (``31`` in April, ``29`` in
                February of a common year) runs on its last day.
            at: A naive ``datetime.time`` on a whole minute, or ``"HH:MM"``.
            tz: An IANA time zone name (or a ``ZoneInfo``); default ``"UTC"``.

        Raises:
            ScheduleError: If the day, time or zone is invalid.
        """
        return cls("monthly", time=_parse_time(at), tz=_zone_name(tz), day=_parse_day(day))

    # -- next run -------------------------------------------------------------------------

    def next_run(self, after: dt.datetime) -> dt.datetime | None:
        """The first run strictly after ``after``.

        Args:
            after: An aware datetime (any zone).

        Returns:
            An aware UTC datetime, or ``None`` when there is no later run (a one-time schedule
            whose time is not after ``after``, or a run beyond ``datetime.max``).

        Raises:
            ScheduleError: If ``after`` is naive or not a datetime.
        """
        after = _check_aware(after, "after")
        try:
            return self._next_run(after)
        except OverflowError:
            return None

    def iter_runs(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Every run strictly after ``after``, in order (endless unless the schedule is one-time).

        Args:
            after: An aware datetime (any zone).

        Yields:
            Aware UTC datetimes.

        Raises:
            ScheduleError: If ``after`` is naive or not a datetime.
        """
        current = self.next_run(after)
        while current is not None:
            yield current
            current = self.next_run(current)

    def _next_run(self, after: dt.datetime) -> dt.datetime | None:
        if self.kind == "once":
            assert self.at is not None
            return self.at.astimezone(_UTC) if self.at > after else None
        if self.kind == "hourly":
            assert self.minute is not None
            start = after.astimezone(_UTC)
            candidate = start.replace(minute=self.minute, second=0, microsecond=0)
            return candidate if candidate > start else candidate + dt.timedelta(hours=1)
        assert self.time is not None
        zone = _zone(self.tz)
        # Look at the days around ``after`` (a run may be resolved a little off its day by a
        # transition) and take the earliest that is strictly later.
        first = after.astimezone(zone).date() - dt.timedelta(days=2)
        candidates = (
            _first_instant_at_or_after(day, self.time, zone) for day in self._days_from(first)
        )
        return next(c for c in candidates if c > after)

    def _days_from(self, first: dt.date) -> Iterator[dt.date]:
        """The schedule's local days on or after ``first``, in order."""
        if self.kind == "monthly":
            assert self.day is not None
            year, month = first.year, first.month
            while True:
                day = _month_day(year, month, self.day)
                if day >= first:
                    yield day
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        day = first
        while True:
            if self.kind == "daily" or day.weekday() in self.weekdays:
                yield day
            day += dt.timedelta(days=1)

    # -- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict with ``"kind"`` and ``"version"`` keys that :meth:`from_dict` reads."""
        data: dict[str, Any] = {"version": _DICT_VERSION, "kind": self.kind}
        if self.at is not None:
            data["at"] = _format_datetime(self.at)
        if self.minute is not None:
            data["minute"] = self.minute
        if self.time is not None:
            data["at"] = self.time.strftime("%H:%M")
            data["tz"] = self.tz
        if self.weekdays:
            data["weekdays"] = [_WEEKDAY_ABBR[d] for d in self.weekdays]
        if self.day is not None:
            data["day"] = self.day
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """Rebuild a schedule from :meth:`to_dict` output.

        Args:
            data: A mapping with ``"kind"`` and the kind's keys; ``"version"`` may be omitted.

        Raises:
            ScheduleError: If the mapping is not a valid schedule (unknown kind or version,
                missing or unexpected keys, invalid values).
        """
        if not isinstance(data, Mapping):
            raise ScheduleError(f"schedule data must be a mapping, not {type(data).__name__}")
        version = data.get("version", _DICT_VERSION)
        if version != _DICT_VERSION:
            raise ScheduleError(f"unsupported schedule version {version!r}")
        kind = data.get("kind")
        keys = (
            {
                "once": {"at"},
                "hourly": {"minute"},
                "daily": {"at", "tz"},
                "weekly": {"weekdays", "at", "tz"},
                "monthly": {"day", "at", "tz"},
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        if keys is None:
            raise ScheduleError(f"unknown schedule kind {kind!r} (expected one of {_KINDS})")
        given = set(data) - {"version", "kind"}
        if given - keys:
            raise ScheduleError(f"unexpected keys for a {kind} schedule: {sorted(given - keys)}")
        missing = keys - given - {"tz"}
        if missing:
            raise ScheduleError(f"missing keys for a {kind} schedule: {sorted(missing)}")
        tz = data.get("tz", "UTC")
        if kind == "once":
            at = data["at"]
            if not isinstance(at, str):
                raise ScheduleError(f"'at' must be an ISO 8601 string, got {at!r}")
            return cls.once(_parse_datetime(at))
        if kind == "hourly":
            return cls.hourly(data["minute"])
        if kind == "daily":
            return cls.daily(data["at"], tz)
        if kind == "weekly":
            weekdays = data["weekdays"]
            if not isinstance(weekdays, (list, tuple)):
                raise ScheduleError(f"'weekdays' must be a list, got {weekdays!r}")
            return cls.weekly(weekdays, data["at"], tz)
        return cls.monthly(data["day"], data["at"], tz)

    def __str__(self) -> str:
        if self.kind == "once":
            assert self.at is not None
            return f"once {_format_datetime(self.at)}"
        if self.kind == "hourly":
            return f"hourly {self.minute:02d}"
        assert self.time is not None
        when = f"{self.time.strftime('%H:%M')} {self.tz}"
        if self.kind == "daily":
            return f"daily {when}"
        if self.kind == "weekly":
            return f"weekly {','.join(_WEEKDAY_ABBR[d] for d in self.weekdays)} {when}"
        return f"monthly {self.day} {when}"

    def __repr__(self) -> str:
        return f"Schedule.parse({str(self)!r})"

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read a schedule from its text form, as ``str(schedule)`` writes it.

        Forms: ``"once 2026-12-01T09:00+01:00"``, ``"hourly 15"``, ``"daily 09:00 Europe/Berlin"``,
        ``"weekly mon,thu 07:30 UTC"``, ``"monthly last 06:00 America/New_York"``,
        ``"monthly 31 06:00 UTC"``. The kind and weekday names are case-insensitive; the zone
        may be left out (UTC).

        Args:
            text: The text form.

        Raises:
            ScheduleError: If the text is not a valid schedule.
        """
        if not isinstance(text, str):
            raise ScheduleError(f"schedule text must be a str, not {type(text).__name__}")
        words = text.split()
        if not words:
            raise ScheduleError(f"empty schedule text; expected one of {_TEXT_FORMS}")
        kind, args = words[0].lower(), words[1:]
        arity = {"once": (1, 2), "hourly": (1, 1), "daily": (1, 2), "weekly": (2, 3)}
        low, high = arity.get(kind, (2, 3) if kind == "monthly" else (-1, -1))
        if low < 0 or not low <= len(args) <= high:
            raise ScheduleError(f"malformed schedule text {text!r}; expected one of {_TEXT_FORMS}")
        if kind == "once":
            return cls.once(_parse_datetime(" ".join(args)))
        if kind == "hourly":
            return cls.hourly(args[0])
        if kind == "daily":
            return cls.daily(*args)
        if kind == "weekly":
            return cls.weekly(args[0], *args[1:])
        return cls.monthly(args[0], *args[1:])

    def to_cron(self) -> str | None:
        """The equivalent 5-field cron expression (in UTC), where cron can say exactly the same.

        Cron has no time zones and no "last day of the month", so only these translate: hourly
        schedules; daily and weekly schedules in UTC or a fixed-offset zone (``Etc/GMT-1``);
        monthly schedules on a day every month has (1-28, also after shifting to UTC) in such
        a zone. Everything else, including one-time schedules (cron has no year), gives ``None``.

        Returns:
            A cron expression such as ``"30 7 * * 1,4"``, or ``None``.
        """
        if self.kind == "hourly":
            return f"{self.minute} * * * *"
        if self.time is None or _FIXED_ZONE.fullmatch(self.tz) is None:
            return None
        offset = _zone(self.tz).utcoffset(dt.datetime(2000, 1, 1))
        assert offset is not None
        seconds = int(offset.total_seconds())
        if seconds % 60:
            return None
        total = self.time.hour * 60 + self.time.minute - seconds // 60
        shift, total = divmod(total, 24 * 60)
        hour, minute = divmod(total, 60)
        if self.kind == "daily":
            return f"{minute} {hour} * * *"
        if self.kind == "weekly":
            # cron counts Sunday=0; ours counts Monday=0.
            days = sorted({(d + shift + 1) % 7 for d in self.weekdays})
            return f"{minute} {hour} * * {','.join(map(str, days))}"
        if isinstance(self.day, int) and 1 <= self.day <= 28 and 1 <= self.day + shift <= 28:
            return f"{minute} {hour} {self.day + shift} * *"
        return None


# --------------------------------------------------------------------------------------------
# When a schedule's import is announced
# --------------------------------------------------------------------------------------------

#: When a schedule's notifications go out: after every import, or only after a failed, refused
#: or interrupted one (a rejection threshold may add to either).
NotifyOn = Literal["always", "on_failure", "never"]
_NOTIFY_ON: tuple[str, ...] = get_args(NotifyOn)

#: The results ``"on_failure"`` announces.
FAILURE_RESULTS: frozenset[str] = frozenset({"failed", "refused", "interrupted"})

_RULE_PART = re.compile(r"rejected\s*>\s*([0-9]+(?:\.[0-9]+)?)\s*(%?)")


def _share(_inst: object, _attr: attrs.Attribute[float | None], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigurationError(f"rejected_share must be a number in [0, 1), not {value!r}")


def _count(_inst: object, _attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"rejected_count must be an int >= 0, not {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class NotifyRule:
    """When a schedule's import is announced (email and webhook alike).

    A run is announced when ``on`` says so (``"always"``; ``"on_failure"``: the run
    failed, was refused or was interrupted; ``"never"``), **or** when its rejected records exceed
    ``rejected_count``, **or** when they exceed ``rejected_share`` of the records read (rejected
    records plus the members the cohort holds after the run). An import that pauses its schedule
    is always announced.

    The text form (:meth:`parse`, ``str()``) joins the parts with commas:
    ``"always"``, ``"on_failure"``, ``"on_failure,rejected>5%"``, ``"rejected>1000"``.

    Example:
        >>> rule = NotifyRule.parse("on_failure, rejected>5%")
        >>> rule
        NotifyRule.parse('on_failure,rejected>5%')
        >>> rule.rejected_share
        0.05

    Raises:
        ConfigurationError: If a field is invalid.
    """

    on: NotifyOn = "always"
    rejected_share: float | None = attrs.field(default=None, validator=_share)
    rejected_count: int | None = attrs.field(default=None, validator=_count)

    def __attrs_post_init__(self) -> None:
        if self.on not in _NOTIFY_ON:
            raise ConfigurationError(f"on must be one of {_NOTIFY_ON}, not {self.on!r}")

    @classmethod
    def parse(cls, text: str) -> NotifyRule:
        """Read a rule from its text form (see the class).

        Raises:
            ConfigurationError: If the text is not a rule.
        """
        if not isinstance(text, str):
            raise ConfigurationError(f"a notify rule must be a str, not {type(text).__name__}")
        on: str = "never"
        share: float | None = None
        count: int | None = None
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ConfigurationError("empty notify rule; expected e.g. 'on_failure,rejected>5%'")
        for part in parts:
            low = part.lower().replace("-", "_")
            if low in _NOTIFY_ON:
                if on != "never":
                    raise ConfigurationError(f"notify rule {text!r} names two conditions")
                on = low
                continue
            match = _RULE_PART.fullmatch(low)
            if match is None:
                raise ConfigurationError(
                    f"invalid notify rule part {part!r}; expected always, on_failure, never, "
                    "rejected>N or rejected>P%"
                )
            if match[2]:
                share = float(match[1]) / 100
            elif "." in match[1]:
                raise ConfigurationError(f"a rejected count must be whole: {part!r}")
            else:
                count = int(match[1])
        return cls(on=on, rejected_share=share, rejected_count=count)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts: list[str] = [self.on] if self.on != "never" or self._no_threshold() else []
        if self.rejected_share is not None:
            parts.append(f"rejected>{self.rejected_share * 100:g}%")
        if self.rejected_count is not None:
            parts.append(f"rejected>{self.rejected_count}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"NotifyRule.parse({str(self)!r})"

    def _no_threshold(self) -> bool:
        return self.rejected_share is None and self.rejected_count is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` reads."""
        return {
            "on": self.on,
            "rejected_share": self.rejected_share,
            "rejected_count": self.rejected_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotifyRule:
        """Rebuild a rule from :meth:`to_dict` output.

        Raises:
            ConfigurationError: If the mapping is not a rule.
        """
        if not isinstance(data, Mapping) or set(data) - {"on", "rejected_share", "rejected_count"}:
            raise ConfigurationError(f"not a notify rule: {data!r}")
        return cls(
            on=data.get("on", "always"),
            rejected_share=data.get("rejected_share"),
            rejected_count=data.get("rejected_count"),
        )

    def wants(self, result: str, *, rejected: int, users: int) -> bool:
        """Whether a run with this ``result``, ``rejected`` records and ``users`` is announced."""
        if self.on == "always" or (self.on == "on_failure" and result in FAILURE_RESULTS):
            return True
        if self.rejected_count is not None and rejected > self.rejected_count:
            return True
        read = rejected + users
        return (
            self.rejected_share is not None and read > 0 and rejected / read > self.rejected_share
        )


#: Announce every import (the default, as before rules existed).
NOTIFY_ALWAYS = NotifyRule()


def _notify_rule(value: NotifyRule | str) -> NotifyRule:
    if isinstance(value, NotifyRule):
        return value
    return NotifyRule.parse(value)


def _webhook_env(value: str | None) -> str | None:
    return None if value is None else check_env_name(value)


def _webhook_format(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in WEBHOOK_FORMATS:
        raise ConfigurationError(f"webhook_format must be one of {WEBHOOK_FORMATS}, not {value!r}")


# --------------------------------------------------------------------------------------------
# A cohort's schedule as the store keeps it
# --------------------------------------------------------------------------------------------

#: The state of a stored schedule.
ScheduleState = Literal["active", "paused", "done"]
_STATES: tuple[str, ...] = get_args(ScheduleState)

#: Reason recorded when a person pauses a schedule without giving one.
PAUSED_BY_USER = "paused by user"


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ConfigurationError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be timezone-aware (naive datetimes are refused)")
    return value.astimezone(_UTC)


def _check_text(what: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    def validator(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{what} must be a non-empty str, not {value!r}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ConfigurationError(f"{what} must not contain control characters")

    return validator


def _check_id(cohort_id: object) -> None:
    if not isinstance(cohort_id, str) or not cohort_id.strip():
        raise ConfigurationError(f"cohort_id must be a non-empty str, not {cohort_id!r}")


def _optional_utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value, "next_due")


#: What a schedule reads its members from: a file path, a file with read options, a query.
StoredSource = str | FileSource | QuerySource


def _source_value(
    value: str | os.PathLike[str] | FileSource | QuerySource | None,
) -> StoredSource | None:
    if value is None or isinstance(value, (FileSource, QuerySource)):
        return value
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"a file source must be a non-empty path, not {value!r}")
    return os.path.abspath(text)


#: A schedule's ``resync_every`` that turns periodic full resyncs off for its cohort.
RESYNC_OFF: Literal["off"] = "off"

_PERIOD = re.compile(r"([0-9]+)\s*([mhdw])")
_PERIOD_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_period(text: str) -> dt.timedelta | Literal["off"]:
    """Read a full-resync period: ``"12h"``, ``"7d"``, ``"2w"``, ``"90m"`` or ``"off"``.

    Example:
        >>> parse_period("7d")
        datetime.timedelta(days=7)
        >>> parse_period("off")
        'off'

    Raises:
        ConfigurationError: If the text is not a positive period or ``"off"``.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"a period must be a str such as '7d', not {type(text).__name__}")
    low = text.strip().lower()
    if low in ("off", "never", "none"):
        return RESYNC_OFF
    match = _PERIOD.fullmatch(low)
    if match is None or int(match[1]) == 0:
        raise ConfigurationError(
            f"invalid period {text!r}: expected a positive number and a unit (m, h, d, w), "
            "e.g. '12h' or '7d', or 'off'"
        )
    return dt.timedelta(**{_PERIOD_UNITS[match[2]]: int(match[1])})


def format_period(value: dt.timedelta | Literal["off"] | None) -> str:
    """The text :func:`parse_period` reads: ``"7d"``, ``"12h"``, ``"off"`` (``None``: ``"-"``)."""
    if value is None:
        return "-"
    if value == RESYNC_OFF:
        return RESYNC_OFF
    assert isinstance(value, dt.timedelta)
    minutes = int(value.total_seconds() // 60)
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _resync_every(
    value: dt.timedelta | str | None,
) -> dt.timedelta | Literal["off"] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_period(value)
    if (
        not isinstance(value, dt.timedelta)
        or value <= dt.timedelta(0)
        or value % dt.timedelta(minutes=1)
    ):
        raise ConfigurationError(
            f"resync_every must be a positive whole number of minutes (timedelta), 'off' or "
            f"None, not {value!r}"
        )
    return value


def _profile_name(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ConfigurationError(f"profile must be a profile's name, not {value!r}")
    return value


def source_to_text(source: StoredSource | None) -> str | None:
    """A schedule's source as the store keeps it in one text column.

    A plain path stays the path (as schedules have always stored it); a
    :class:`~braze_cohorts.FileSource` becomes ``{"file": {...}}`` and a
    :class:`~braze_cohorts.QuerySource` ``{"query": {...}}`` (JSON; a query's database URL is
    never in it, only the name of its environment variable).
    """
    if source is None or isinstance(source, str):
        return source
    kind = "query" if isinstance(source, QuerySource) else "file"
    return json.dumps({kind: source.to_dict()}, sort_keys=True)


def source_from_text(text: str | None) -> StoredSource | None:
    """The inverse of :func:`source_to_text` (a text that is not a JSON object is a path).

    Raises:
        ConfigurationError: If a JSON source is not a valid file or query source.
    """
    if text is None or not text.startswith("{"):
        return text
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError("a stored member source is not valid JSON") from exc
    if isinstance(data, dict) and len(data) == 1:
        if "query" in data:
            return QuerySource.from_dict(data["query"])
        if "file" in data:
            return FileSource.from_dict(data["file"])
    raise ConfigurationError('a stored member source must be {"file": ...} or {"query": ...}')


@attrs.frozen(slots=True, kw_only=True)
class ScheduledImport:
    """A cohort's live schedule as the store keeps it.

    Attributes:
        cohort_id: The cohort (one live schedule per cohort).
        name: The cohort's name, sent to Braze with each import.
        schedule: When it runs.
        source: Where the members are read at each run: a file path (made absolute), a
            :class:`~braze_cohorts.FileSource` (a file with read options), a
            :class:`~braze_cohorts.QuerySource` (a query re-run at each run), or ``None`` for
            the function registered for the cohort with :meth:`Scheduler.register_source`.
        recipients: Who gets the email after each import (validated addresses).
        state: ``"active"``, ``"paused"`` (see ``paused_reason``) or ``"done"`` (a one-time
            schedule that ran).
        paused_reason: Why it is paused (``None`` unless paused).
        next_due: When it runs next (UTC); ``None`` when paused or done.
        last_run_id: The history id of its last import, if any.
        notify_when: When its imports are announced (:class:`NotifyRule`; default: always).
        webhook_env: The *name* of the environment variable that holds the URL of a webhook
            told after each announced import (never the URL itself), or ``None``.
        webhook_format: ``"json"`` (the run) or ``"slack"`` (a ``{"text": ...}`` message).
        profile: The name of the :class:`~braze_cohorts.ConnectionProfile` whose workspace the
            import goes to, or ``None`` for the scheduler's own sync engine.
        resync_every: This cohort's full-resync period: a ``timedelta``, :data:`RESYNC_OFF`
            (``"off"``: only on request or when the workspace changed), or ``None`` for the
            sync engine's setting. A text form (``"7d"``, ``"12h"``, ``"off"``) is parsed.

    Raises:
        ConfigurationError: If a field is invalid (empty id or name, bad address, naive time,
            paused without a reason, a webhook variable that is not a variable's name).
    """

    cohort_id: str = attrs.field(validator=_check_text("cohort_id"))
    name: str = attrs.field(validator=_check_text("name"))
    schedule: Schedule = attrs.field(validator=attrs.validators.instance_of(Schedule))
    source: StoredSource | None = attrs.field(default=None, converter=_source_value)
    recipients: tuple[str, ...] = attrs.field(default=(), converter=validate_recipients)
    state: ScheduleState = "active"
    paused_reason: str | None = None
    next_due: dt.datetime | None = attrs.field(default=None, converter=_optional_utc)
    last_run_id: int | None = None
    notify_when: NotifyRule = attrs.field(default=NOTIFY_ALWAYS, converter=_notify_rule)
    webhook_env: str | None = attrs.field(default=None, converter=_webhook_env)
    webhook_format: WebhookFormat = attrs.field(default="json", validator=_webhook_format)
    profile: str | None = attrs.field(default=None, converter=_profile_name)
    resync_every: dt.timedelta | Literal["off"] | None = attrs.field(
        default=None, converter=_resync_every
    )

    def __attrs_post_init__(self) -> None:
        if self.state not in _STATES:
            raise ConfigurationError(f"state must be one of {_STATES}, not {self.state!r}")
        if (self.state == "paused") != (self.paused_reason is not None):
            raise ConfigurationError("a paused schedule needs a reason, and only a paused one")
