"""Tests for the Schedule spec: validation, DST-correct next runs, dict, text and cron forms."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import json
import re
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts
from braze_cohorts import Schedule, ScheduleError
from doc_examples import run_doc_examples

UTC = dt.timezone.utc
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
    "America/Santiago",
    "Asia/Tehran",
)
FAST = settings(max_examples=60, deadline=None)
SLOW = settings(max_examples=15, deadline=None)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def wall(instant: dt.datetime, zone: str) -> dt.datetime:
    """The naive local wall-clock reading of an instant in a zone."""
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def exists(local: dt.datetime, zone: str) -> bool:
    """Whether a naive wall time happens at all in the zone (it is not in a gap)."""
    aware = local.replace(tzinfo=ZoneInfo(zone))
    return wall(aware.astimezone(UTC), zone) == local


def oracle_instant(day: dt.date, at: dt.time, zone: str) -> dt.datetime:
    """The first instant whose local clock reads ``day at`` or later, by scanning minutes."""
    target = dt.datetime.combine(day, at)
    # 15 hours before ``target`` read as UTC, every zone's clock reads earlier than target.
    x = target.replace(tzinfo=UTC) - dt.timedelta(hours=15)
    while wall(x, zone) < target:
        x += dt.timedelta(minutes=1)
    return x


# Half the times fall in the hours where the zones below change their clocks.
times = st.one_of(
    st.builds(dt.time, st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 59)),
    st.times().map(lambda t: t.replace(second=0, microsecond=0, fold=0)),
)
zones = st.sampled_from(ZONES)
afters = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2037, 12, 31),
    timezones=st.sampled_from([UTC, *map(ZoneInfo, ZONES)]),
)
weekday_sets = st.sets(st.integers(0, 6), min_size=1)
month_days = st.one_of(st.integers(1, 31), st.just("last"))


def schedules() -> st.SearchStrategy[Schedule]:
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
    moments = st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.one_of(offsets, st.sampled_from([ZoneInfo(z) for z in ZONES])),
    )
    return st.one_of(
        moments.map(Schedule.once),
        st.integers(0, 59).map(Schedule.hourly),
        st.builds(Schedule.daily, times, zones),
        st.builds(Schedule.weekly, weekday_sets, times, zones),
        st.builds(Schedule.monthly, month_days, times, zones),
    )


class TestFactories:
    def test_daily_accepts_text_and_time(self) -> None:
        """``"HH:MM"`` and a ``datetime.time`` give the same schedule."""
        assert Schedule.daily("9:05", "Europe/Berlin") == Schedule.daily(
            dt.time(9, 5), "Europe/Berlin"
        )
        assert Schedule.daily("09:05").tz == "UTC"

    def test_daily_accepts_zoneinfo(self) -> None:
        """A ``ZoneInfo`` is stored as its IANA name."""
        assert Schedule.daily("09:00", ZoneInfo("Asia/Kolkata")).tz == "Asia/Kolkata"

    def test_weekdays_are_normalised(self) -> None:
        """Names in any case, full or short, and ints 0-6 are deduplicated, Monday first."""
        schedule = Schedule.weekly(["Thursday", "MON", 3, "sun", calendar.MONDAY], "07:30")
        assert schedule.weekdays == (0, 3, 6)
        assert all(type(d) is int for d in schedule.weekdays)
        assert Schedule.weekly("thu,mon", "07:30").weekdays == (0, 3)

    def test_monthly_day_forms(self) -> None:
        """A monthly day is 1-31 or ``"last"`` in any case."""
        assert Schedule.monthly(31, "06:00").day == 31
        assert Schedule.monthly("LAST", "06:00").day == "last"
        assert Schedule.monthly("15", "06:00").day == 15

    def test_once_freezes_the_offset(self) -> None:
        """A ``ZoneInfo`` datetime keeps its wall time and instant, with its offset fixed."""
        at = dt.datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
        schedule = Schedule.once(at)
        assert schedule.at == at
        assert str(schedule) == "once 2026-07-01T09:00+02:00"

    def test_once_in_a_gap_runs_at_the_first_valid_instant(self) -> None:
        """A nonexistent local ``at`` runs when the clock jumps; an ambiguous one keeps its fold."""
        berlin = ZoneInfo("Europe/Berlin")
        gap = Schedule.once(dt.datetime(2026, 3, 29, 2, 30, tzinfo=berlin))
        assert gap.at == utc(2026, 3, 29, 1, 0)
        assert str(gap) == "once 2026-03-29T03:00+02:00"
        second = Schedule.once(dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=berlin))
        assert second.at == utc(2026, 10, 25, 1, 30)
        assert str(second) == "once 2026-10-25T02:30+01:00"

    def test_values_are_frozen_and_hashable(self) -> None:
        """Schedules cannot be changed in place and can be set members."""
        schedule = Schedule.hourly(5)
        with pytest.raises(AttributeError):
            schedule.minute = 6  # type: ignore[misc]
        assert len({schedule, Schedule.hourly(5), Schedule.hourly(6)}) == 2

    def test_once_with_equal_instants_but_other_offsets_differ(self) -> None:
        """Two one-time schedules differ when their offsets (and so their text) differ."""
        a = Schedule.once(dt.datetime(2026, 12, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=1))))
        b = Schedule.once(utc(2026, 12, 1, 8))
        assert a != b
        assert a.next_run(utc(2026, 1, 1)) == b.next_run(utc(2026, 1, 1))

    def test_schedule_is_exported(self) -> None:
        """``Schedule`` is part of the package's public surface."""
        assert braze_cohorts.Schedule is Schedule
        assert "Schedule" in braze_cohorts.__all__


class TestValidation:
    @pytest.mark.parametrize(
        ("build", "needle"),
        [
            (lambda: Schedule.daily("25:00"), "hour must be 0-23"),
            (lambda: Schedule.daily("12:60"), "minute must be 0-59"),
            (lambda: Schedule.daily("noon"), "expected 'HH:MM'"),
            (lambda: Schedule.daily("12:00:00"), "expected 'HH:MM'"),
            (lambda: Schedule.daily(dt.time(9, 0, 30)), "whole minute"),
            (lambda: Schedule.daily(dt.time(9, 0, tzinfo=UTC)), "must not carry a time zone"),
            (lambda: Schedule.daily(900), "datetime.time or 'HH:MM'"),  # type: ignore[arg-type]
            (lambda: Schedule.hourly(60), "minute must be 0-59"),
            (lambda: Schedule.hourly(-1), "minute must be 0-59"),
            (lambda: Schedule.hourly(True), "not bool"),
            (lambda: Schedule.hourly(1.0), "must be an int"),  # type: ignore[arg-type]
            (lambda: Schedule.monthly(0, "06:00"), "1-31 or 'last'"),
            (lambda: Schedule.monthly(32, "06:00"), "1-31 or 'last'"),
            (lambda: Schedule.monthly("first", "06:00"), "1-31 or 'last'"),
            (lambda: Schedule.daily("06:00", "Mars/Olympus_Mons"), "unknown time zone"),
            (lambda: Schedule.daily("06:00", "Europe"), "unknown time zone"),
            (lambda: Schedule.daily("06:00", ""), "unknown time zone"),
            (lambda: Schedule.daily("06:00", "../../etc/passwd"), "unknown time zone"),
            (lambda: Schedule.weekly([], "06:00"), "at least one weekday"),
            (lambda: Schedule.weekly(["mon", "funday"], "06:00"), "unknown weekday 'funday'"),
            (lambda: Schedule.weekly([7], "06:00"), "weekday must be 0-6"),
            (lambda: Schedule.weekly(5, "06:00"), "iterable"),  # type: ignore[arg-type]
            (lambda: Schedule.once(dt.datetime(2026, 1, 1)), "naive"),
            (lambda: Schedule.once("2026-01-01"), "must be a datetime"),  # type: ignore[arg-type]
            (lambda: Schedule("hourly", minute=5, tz="Europe/Berlin"), "takes no time zone"),
            (lambda: Schedule("daily", time=dt.time(9, 0), minute=3), "takes no 'minute'"),
            (lambda: Schedule("weekly", time=dt.time(9, 0)), "needs 'weekdays'"),
            (lambda: Schedule("weekly", time=dt.time(9), weekdays=(3, 0)), "sorted unique"),
            (lambda: Schedule("yearly"), "unknown schedule kind"),  # type: ignore[arg-type]
            (lambda: Schedule("once", at=dt.datetime(2026, 1, 1)), "naive"),
            (lambda: Schedule("hourly", minute="5"), "int 0-59"),  # type: ignore[arg-type]
        ],
    )
    def test_invalid_specs_raise_schedule_error(self, build: object, needle: str) -> None:
        """An invalid spec raises ScheduleError (a ValueError) whose message names the problem."""
        assert callable(build)
        with pytest.raises(ScheduleError, match=re.escape(needle)) as info:
            build()
        assert isinstance(info.value, ValueError)

    def test_naive_after_is_refused(self) -> None:
        """``next_run`` refuses a naive ``after`` instead of guessing its zone."""
        with pytest.raises(ScheduleError, match="naive"):
            Schedule.daily("09:00").next_run(dt.datetime(2026, 1, 1))

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            "yearly 09:00",
            "daily",
            "daily 09:00 UTC extra",
            "hourly",
            "hourly 15 UTC",
            "hourly 61",
            "weekly 07:30",
            "weekly mon,,thu 07:30 UTC",
            "monthly 06:00",
            "monthly 0 06:00 UTC",
            "monthly 31 6h UTC",
            "once",
            "once tomorrow",
            "once 2026-12-01T09:00",
            "daily 09:00 Not/AZone",
        ],
    )
    def test_malformed_text_raises_schedule_error(self, text: str) -> None:
        """Malformed or invalid text raises ScheduleError."""
        with pytest.raises(ScheduleError):
            Schedule.parse(text)

    @pytest.mark.parametrize(
        "data",
        [
            {"kind": "yearly"},
            {"version": 2, "kind": "hourly", "minute": 5},
            {"kind": "hourly"},
            {"kind": "hourly", "minute": 5, "tz": "UTC"},
            {"kind": "daily", "at": "09:00", "tz": "UTC", "colour": "red"},
            {"kind": "weekly", "weekdays": "mon", "at": "09:00"},
            {"kind": "once", "at": 1_700_000_000},
            {"kind": "monthly", "day": 0, "at": "09:00"},
            ["kind", "daily"],
        ],
    )
    def test_invalid_dicts_raise_schedule_error(self, data: object) -> None:
        """A dict that is not a valid schedule raises ScheduleError."""
        with pytest.raises(ScheduleError):
            Schedule.from_dict(data)  # type: ignore[arg-type]


class TestNextRunExplicit:
    def test_berlin_spring_forward_nonexistent_time_runs_at_first_valid_instant(self) -> None:
        """02:30 on 2026-03-29 does not exist in Berlin: the run is at 03:00 CEST, then normal."""
        schedule = Schedule.daily("02:30", "Europe/Berlin")
        runs = list(itertools.islice(schedule.iter_runs(utc(2026, 3, 28, 12)), 2))
        assert runs == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
        assert wall(runs[0], "Europe/Berlin") == dt.datetime(2026, 3, 29, 3, 0)

    def test_berlin_fall_back_ambiguous_time_runs_once_at_first_occurrence(self) -> None:
        """02:30 happens twice on 2026-10-25 in Berlin: the run is at the CEST one only."""
        schedule = Schedule.daily("02:30", "Europe/Berlin")
        runs = list(itertools.islice(schedule.iter_runs(utc(2026, 10, 24, 12)), 2))
        assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
        # Between the two occurrences, the next run is the next day's.
        assert schedule.next_run(utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 26, 1, 30)

    def test_new_york_spring_forward(self) -> None:
        """02:30 on 2026-03-08 does not exist in New York: the run is at 03:00 EDT."""
        schedule = Schedule.daily("02:30", "America/New_York")
        assert schedule.next_run(utc(2026, 3, 8, 0)) == utc(2026, 3, 8, 7, 0)
        assert schedule.next_run(utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 9, 6, 30)

    def test_new_york_fall_back(self) -> None:
        """01:30 happens twice on 2026-11-01 in New York: the run is at the EDT one only."""
        schedule = Schedule.daily("01:30", "America/New_York")
        assert schedule.next_run(utc(2026, 11, 1, 0)) == utc(2026, 11, 1, 5, 30)
        assert schedule.next_run(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)

    def test_lord_howe_half_hour_gap(self) -> None:
        """Lord Howe moves 02:00 to 02:30 on 2026-10-04: 02:15 runs at 02:30 (+11:00)."""
        schedule = Schedule.daily("02:15", "Australia/Lord_Howe")
        assert schedule.next_run(utc(2026, 10, 3, 0)) == utc(2026, 10, 3, 15, 30)

    def test_weekly_across_spring_forward(self) -> None:
        """A weekly run keeps its local time on both sides of a transition."""
        schedule = Schedule.weekly(["sun"], "09:00", "Europe/Berlin")
        runs = list(itertools.islice(schedule.iter_runs(utc(2026, 3, 20)), 2))
        assert runs == [utc(2026, 3, 22, 8, 0), utc(2026, 3, 29, 7, 0)]

    @pytest.mark.parametrize(
        ("day", "year", "expected_day"),
        [
            (29, 2026, 28),
            (30, 2026, 28),
            (31, 2026, 28),
            ("last", 2026, 28),
            (28, 2026, 28),
            (29, 2028, 29),
            (30, 2028, 29),
            (31, 2028, 29),
            ("last", 2028, 29),
        ],
    )
    def test_february(self, day: int | str, year: int, expected_day: int) -> None:
        """A day February lacks runs on its last day: the 28th, or the 29th in a leap year."""
        schedule = Schedule.monthly(day, "06:00")
        assert schedule.next_run(utc(year, 2, 1)) == utc(year, 2, expected_day, 6)

    def test_day_31_returns_to_31_after_short_months(self) -> None:
        """Each month is judged on its own: 31 runs on Jan 31, Feb 28, Mar 31, Apr 30, May 31."""
        schedule = Schedule.monthly(31, "06:00", "UTC")
        runs = list(itertools.islice(schedule.iter_runs(utc(2026, 1, 1)), 5))
        assert [r.day for r in runs] == [31, 28, 31, 30, 31]

    def test_monthly_last_in_new_york(self) -> None:
        """``last`` at 06:00 New York runs on each month's last local day, in local time."""
        schedule = Schedule.parse("monthly last 06:00 America/New_York")
        runs = list(itertools.islice(schedule.iter_runs(utc(2027, 12, 1)), 3))
        assert runs == [utc(2027, 12, 31, 11), utc(2028, 1, 31, 11), utc(2028, 2, 29, 11)]

    def test_hourly_is_strictly_after_in_utc(self) -> None:
        """Hourly runs at the minute past each UTC hour, strictly after ``after``."""
        schedule = Schedule.hourly(15)
        assert schedule.next_run(utc(2026, 1, 1, 10, 15)) == utc(2026, 1, 1, 11, 15)
        assert schedule.next_run(utc(2026, 1, 1, 10, 14, 59)) == utc(2026, 1, 1, 10, 15)
        kolkata = dt.datetime(2026, 1, 1, 10, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
        assert wall(schedule.next_run(kolkata) or utc(1970, 1, 1), "Asia/Kolkata").minute == 45

    def test_once(self) -> None:
        """A one-time schedule runs at its instant (in UTC), then never again."""
        at = dt.datetime(2026, 12, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        schedule = Schedule.once(at)
        result = schedule.next_run(utc(2026, 1, 1))
        assert result == utc(2026, 12, 1, 8)
        assert result is not None
        assert result.tzinfo is UTC
        assert schedule.next_run(at) is None
        assert schedule.next_run(utc(2027, 1, 1)) is None
        assert list(schedule.iter_runs(utc(2026, 1, 1))) == [utc(2026, 12, 1, 8)]

    def test_after_in_another_zone(self) -> None:
        """``after`` may be in any zone; only its instant matters."""
        schedule = Schedule.daily("09:00", "Europe/Berlin")
        after = dt.datetime(2026, 6, 1, 3, 0, tzinfo=ZoneInfo("America/New_York"))  # 09:00 Berlin
        assert schedule.next_run(after) == utc(2026, 6, 2, 7, 0)

    def test_no_run_beyond_datetime_max(self) -> None:
        """Near the end of representable time there is no next run rather than a crash."""
        assert Schedule.daily("09:00").next_run(dt.datetime.max.replace(tzinfo=UTC)) is None


class TestNextRunProperties:
    @FAST
    @given(after=afters, at=times, zone=zones)
    def test_daily_matches_a_minute_scan(self, after: dt.datetime, at: dt.time, zone: str) -> None:
        """Daily next runs agree with an independent minute-by-minute scan of the local clock."""
        result = Schedule.daily(at, zone).next_run(after)
        assert result is not None
        assert result > after
        assert result.tzinfo is UTC
        start = after.astimezone(ZoneInfo(zone)).date() - dt.timedelta(days=1)
        candidates = (oracle_instant(start + dt.timedelta(days=i), at, zone) for i in range(4))
        assert result == next(c for c in candidates if c > after)

    @SLOW
    @given(start=afters, at=times, zone=zones)
    def test_daily_over_a_year_never_skips_or_doubles_a_day(
        self, start: dt.datetime, at: dt.time, zone: str
    ) -> None:
        """A year of daily runs has one run per local day, at the time (or the gap's end)."""
        schedule = Schedule.daily(at, zone)
        runs = list(itertools.islice(schedule.iter_runs(start), 366))
        assert runs[0] > start
        days = [wall(r, zone).date() for r in runs]
        assert all(b - a == dt.timedelta(days=1) for a, b in itertools.pairwise(days))
        # Asked from anywhere between two runs (overlaps included), the answer is the later one.
        for a, b in itertools.pairwise(runs):
            assert schedule.next_run(a + (b - a) / 3) == b
            assert schedule.next_run(a + dt.timedelta(hours=1)) == b  # a repeated hour's 2nd pass
            assert schedule.next_run(b - dt.timedelta(microseconds=1)) == b
        for run, day in zip(runs, days, strict=True):
            target = dt.datetime.combine(day, at)
            aware = target.replace(tzinfo=ZoneInfo(zone))
            if aware.utcoffset() != aware.replace(fold=1).utcoffset():
                # A gap or an overlap: check against the independent minute scan as well.
                assert run == oracle_instant(day, at, zone)
            if exists(target, zone):
                # An existing time runs then; an ambiguous one at its first occurrence (fold=0).
                assert run == target.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)
            else:
                assert wall(run, zone) > target
                assert wall(run - dt.timedelta(seconds=1), zone) < target

    @FAST
    @given(after=afters, at=times, zone=zones, weekdays=weekday_sets)
    def test_weekly_lands_only_on_chosen_weekdays_without_skipping(
        self, after: dt.datetime, at: dt.time, zone: str, weekdays: set[int]
    ) -> None:
        """Weekly runs fall on the chosen weekdays only, and each chosen day in turn."""
        runs = list(itertools.islice(Schedule.weekly(weekdays, at, zone).iter_runs(after), 10))
        assert runs[0] > after
        days = [wall(r, zone).date() for r in runs]
        assert all(d.weekday() in weekdays for d in days)
        for a, b in itertools.pairwise(days):
            between = (a + dt.timedelta(days=i) for i in range(1, (b - a).days))
            assert b > a
            assert all(d.weekday() not in weekdays for d in between)

    @FAST
    @given(after=afters, at=times, zone=zones, day=month_days)
    def test_monthly_lands_on_the_day_or_the_last_day(
        self, after: dt.datetime, at: dt.time, zone: str, day: int | str
    ) -> None:
        """Monthly runs fall on the chosen day (or the month's last), one per consecutive month."""
        runs = list(itertools.islice(Schedule.monthly(day, at, zone).iter_runs(after), 14))
        assert runs[0] > after
        days = [wall(r, zone).date() for r in runs]
        for d in days:
            last = calendar.monthrange(d.year, d.month)[1]
            assert d.day == (last if day == "last" else min(int(day), last))
        months = [d.year * 12 + d.month for d in days]
        assert all(b - a == 1 for a, b in itertools.pairwise(months))

    @FAST
    @given(schedule=schedules(), after=afters)
    def test_next_run_is_the_earliest_later_run(
        self, schedule: Schedule, after: dt.datetime
    ) -> None:
        """The result is strictly after ``after``, in UTC, and nothing is skipped before it."""
        result = schedule.next_run(after)
        if result is None:
            assert schedule.kind == "once"
            assert schedule.at is not None
            assert schedule.at <= after
            return
        assert result > after
        assert result.utcoffset() == dt.timedelta(0)
        # Asking again from just before the result, or from any time between, finds the same run.
        assert schedule.next_run(result - dt.timedelta(microseconds=1)) == result
        assert schedule.next_run(after + (result - after) / 2) == result


class TestSerialisation:
    @FAST
    @given(schedule=schedules())
    def test_dict_round_trip(self, schedule: Schedule) -> None:
        """``from_dict(to_dict())`` gives the same schedule, through JSON too."""
        data = schedule.to_dict()
        assert data["kind"] == schedule.kind
        again = Schedule.from_dict(json.loads(json.dumps(data)))
        assert again == schedule
        assert str(again) == str(schedule)

    @FAST
    @given(schedule=schedules())
    def test_text_round_trip(self, schedule: Schedule) -> None:
        """``parse(str())`` gives the same schedule and the same text."""
        again = Schedule.parse(str(schedule))
        assert again == schedule
        assert str(again) == str(schedule)
        assert eval(repr(schedule), {"Schedule": Schedule}) == schedule

    @pytest.mark.parametrize(
        "text",
        [
            "once 2026-12-01T09:00+01:00",
            "once 2026-12-01T09:00:30.250000-05:00",
            "hourly 15",
            "hourly 05",
            "daily 09:00 Europe/Berlin",
            "weekly mon,thu 07:30 UTC",
            "weekly mon,tue,wed,thu,fri,sat,sun 00:00 Asia/Kolkata",
            "monthly last 06:00 America/New_York",
            "monthly 31 06:00 UTC",
        ],
    )
    def test_canonical_text_is_kept_exactly(self, text: str) -> None:
        """The documented text forms read back to exactly the same text."""
        assert str(Schedule.parse(text)) == text

    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("DAILY 9:00", "daily 09:00 UTC"),
            ("  weekly   Thursday,MON  07:30  ", "weekly mon,thu 07:30 UTC"),
            ("monthly LAST 06:00 Europe/Berlin", "monthly last 06:00 Europe/Berlin"),
            ("once 2026-12-01T08:00Z", "once 2026-12-01T08:00+00:00"),
            ("once 2026-12-01 08:00+00:00", "once 2026-12-01T08:00+00:00"),
        ],
    )
    def test_lenient_text_is_normalised(self, text: str, canonical: str) -> None:
        """Case, spacing, full weekday names, ``Z`` and a space separator are accepted."""
        assert str(Schedule.parse(text)) == canonical

    def test_dict_shape(self) -> None:
        """The dict is versioned, names the kind and spells weekdays and times readably."""
        assert Schedule.weekly(["thu", "mon"], "07:30", "Europe/Berlin").to_dict() == {
            "version": 1,
            "kind": "weekly",
            "weekdays": ["mon", "thu"],
            "at": "07:30",
            "tz": "Europe/Berlin",
        }
        assert Schedule.from_dict({"kind": "daily", "at": "09:00"}) == Schedule.daily("09:00")


class TestToCron:
    @pytest.mark.parametrize(
        ("schedule", "cron"),
        [
            (Schedule.hourly(15), "15 * * * *"),
            (Schedule.daily("09:05"), "5 9 * * *"),
            (Schedule.weekly(["mon", "thu"], "07:30", "UTC"), "30 7 * * 1,4"),
            (Schedule.weekly(["sun"], "07:30", "Etc/UTC"), "30 7 * * 0"),
            (Schedule.monthly(28, "06:00", "UTC"), "0 6 28 * *"),
            (Schedule.daily("02:00", "Etc/GMT-3"), "0 23 * * *"),
            (Schedule.weekly(["sun"], "23:30", "Etc/GMT+5"), "30 4 * * 1"),
            (Schedule.monthly(1, "02:00", "Etc/GMT+5"), "0 7 1 * *"),
        ],
    )
    def test_expressible_schedules(self, schedule: Schedule, cron: str) -> None:
        """Hourly, and daily/weekly/monthly(1-28) in fixed-offset zones translate to UTC cron."""
        assert schedule.to_cron() == cron

    @pytest.mark.parametrize(
        "schedule",
        [
            Schedule.once(utc(2026, 12, 1, 8)),
            Schedule.daily("09:00", "Europe/Berlin"),
            Schedule.weekly(["mon"], "09:00", "America/New_York"),
            Schedule.monthly(29, "06:00", "UTC"),
            Schedule.monthly("last", "06:00", "UTC"),
            Schedule.monthly(1, "02:00", "Etc/GMT-3"),
            Schedule.monthly(28, "23:00", "Etc/GMT+5"),
        ],
    )
    def test_inexpressible_schedules(self, schedule: Schedule) -> None:
        """Schedules cron cannot express exactly (zones with DST, short months) give None."""
        assert schedule.to_cron() is None

    @FAST
    @given(
        at=times,
        offset=st.integers(-12, 14),
        weekdays=weekday_sets,
        after=afters,
    )
    def test_cron_agrees_with_next_run(
        self, at: dt.time, offset: int, weekdays: set[int], after: dt.datetime
    ) -> None:
        """Where a weekly schedule translates, the cron fields match its next run in UTC."""
        zone = "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"
        schedule = Schedule.weekly(weekdays, at, zone)
        cron = schedule.to_cron()
        assert cron is not None
        minute, hour, dom, month, dow = cron.split()
        result = schedule.next_run(after)
        assert result is not None
        assert (result.minute, result.hour) == (int(minute), int(hour))
        assert (dom, month) == ("*", "*")
        assert (result.weekday() + 1) % 7 in {int(d) for d in dow.split(",")}


class TestDocs:
    def test_schedule_model_examples_run(self) -> None:
        """The examples in the schedule-model section of docs/schedules.md run as shown."""
        assert run_doc_examples("schedules.md", section="schedule-model") > 10
