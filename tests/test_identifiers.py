"""Identifier types, canonical keys, and the IdentifierMatcher's rules."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts import (
    DeviceId,
    ExternalId,
    IdentifierMatcher,
    MalformedRecord,
    Rejection,
    RejectReason,
    UserAlias,
)
from doc_examples import run_doc_examples

# Valid identifier values: non-empty, no control, format (Cf) or surrogate characters, no
# surrounding space.
valid_values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Cf")), min_size=1, max_size=20
).filter(lambda s: s == s.strip())
refs = st.one_of(
    valid_values.map(ExternalId),
    valid_values.map(DeviceId),
    st.builds(UserAlias, alias_name=valid_values, alias_label=valid_values),
)
forbidden_chars = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.characters(whitelist_categories=("Cf",)),
)
spaces = st.sampled_from([" ", "\t", "\n", "\xa0", "\u2003", "\u3000"])


@st.composite
def invalid_values(draw: st.DrawFn) -> object:
    """Values no identifier may hold."""
    value = draw(valid_values)
    kind = draw(st.sampled_from(["empty", "padded_left", "padded_right", "forbidden", "type"]))
    if kind == "empty":
        return ""
    if kind == "padded_left":
        return draw(spaces) + value
    if kind == "padded_right":
        return value + draw(spaces)
    if kind == "forbidden":
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(forbidden_chars) + value[at:]
    return draw(st.one_of(st.none(), st.integers(), st.floats(), st.binary()))


FAST = settings(max_examples=200, deadline=None)


class TestIdentifierKeys:
    @FAST
    @given(refs)
    def test_key_round_trips(self, ref: bc.UserRef) -> None:
        """Any valid identifier, unicode included, is rebuilt exactly from its canonical key."""
        assert bc.ref_from_key(ref.key) == ref

    @FAST
    @given(refs, refs)
    def test_keys_are_equal_only_for_equal_identifiers(self, a: bc.UserRef, b: bc.UserRef) -> None:
        """Two identifiers share a key exactly when they are equal, so kinds never collide."""
        assert (a.key == b.key) == (a == b)

    @FAST
    @given(valid_values)
    def test_same_value_in_each_kind_has_distinct_keys(self, value: str) -> None:
        """The same text as external id, device id, alias name and alias label gives four keys."""
        keys = {
            ExternalId(value).key,
            DeviceId(value).key,
            UserAlias(alias_name=value, alias_label="l").key,
            UserAlias(alias_name="n", alias_label=value).key,
        }
        assert len(keys) == 4

    @FAST
    @given(valid_values)
    def test_external_id_case_is_preserved(self, value: str) -> None:
        """An external id keeps its exact text, and ids differing only in case stay distinct."""
        ref = ExternalId(value)
        assert ref.value == value
        assert str(ref) == value
        assert bc.ref_from_key(ref.key).value == value  # type: ignore[union-attr]
        if value.swapcase() != value:
            assert ExternalId(value.swapcase()) != ref

    @FAST
    @given(invalid_values())
    def test_invalid_values_always_raise(self, value: Any) -> None:
        """Every invalid value is refused by every kind with InvalidIdentifierError."""
        for build in (
            ExternalId,
            DeviceId,
            lambda v: UserAlias(alias_name=v, alias_label="email"),
            lambda v: UserAlias(alias_name="a", alias_label=v),
        ):
            with pytest.raises(bc.InvalidIdentifierError):
                build(value)

    def test_invalid_identifier_error_is_a_value_error(self) -> None:
        """Generic ``except ValueError`` handlers still catch invalid identifiers."""
        with pytest.raises(ValueError, match="surrounding whitespace"):
            ExternalId(" u1")

    @pytest.mark.parametrize("key", ["", "x:u1", "e:", "a:email", "a:\x1fname", "d: d1"])
    def test_ref_from_key_refuses_non_keys(self, key: str) -> None:
        """Strings that are not canonical keys raise InvalidIdentifierError."""
        with pytest.raises(bc.InvalidIdentifierError):
            bc.ref_from_key(key)

    def test_as_ref_reads_str_as_external_id(self) -> None:
        """``as_ref`` passes identifiers through and turns a plain str into an external id."""
        alias = UserAlias(alias_name="a@x.io", alias_label="email")
        assert bc.as_ref(alias) is alias
        assert bc.as_ref("U1") == ExternalId("U1")
        with pytest.raises(bc.InvalidIdentifierError):
            bc.as_ref(42)  # type: ignore[arg-type]


@dataclasses.dataclass
class _Row:
    external_id: object = None
    device_id: object = None


@attrs.define
class _AttrsRow:
    alias_name: object = None
    alias_label: object = None


_Tuple = collections.namedtuple("_Tuple", ["Index", "external_id", "device_id"])

DEFAULT = IdentifierMatcher()
IDENTIFIED = IdentifierMatcher(identified_field="identified")
EMAIL = IdentifierMatcher(alias_label="email", alias_name_field="email")
DEVICE_FIRST = IdentifierMatcher(precedence=("device_id", "external_id", "alias"))
EXTERNAL_ONLY = IdentifierMatcher(precedence=["external_id"])
R = RejectReason

# (matcher, record, expected identifier or reject reason)
CASES: list[tuple[str, IdentifierMatcher, object, object]] = [
    ("plain_str", DEFAULT, "User-1", ExternalId("User-1")),
    ("padded_str", DEFAULT, "u1 ", R.INVALID_EXTERNAL_ID),
    ("empty_str", DEFAULT, "", R.INVALID_EXTERNAL_ID),
    ("bare_external_id", DEFAULT, ExternalId("u1"), ExternalId("u1")),
    ("bare_alias", DEFAULT, UserAlias("a", "l"), UserAlias("a", "l")),
    ("bare_device_id", IDENTIFIED, DeviceId("d1"), DeviceId("d1")),
    ("external_id_case_kept", DEFAULT, {"external_id": "AbC"}, ExternalId("AbC")),
    (
        "external_id_beats_alias_and_device",
        DEFAULT,
        {"external_id": "u1", "alias_name": "a", "alias_label": "l", "device_id": "d"},
        ExternalId("u1"),
    ),
    (
        "alias_beats_device",
        DEFAULT,
        {"alias_name": "a", "alias_label": "l", "device_id": "d"},
        UserAlias("a", "l"),
    ),
    ("device_only_is_anonymous", DEFAULT, {"device_id": "d1"}, DeviceId("d1")),
    ("alias_name_only", DEFAULT, {"alias_name": "a"}, R.INCOMPLETE_ALIAS),
    ("alias_label_only", DEFAULT, {"alias_label": "l", "device_id": "d"}, R.INCOMPLETE_ALIAS),
    ("alias_padded", DEFAULT, {"alias_name": " a", "alias_label": "l"}, R.INVALID_ALIAS),
    ("alias_label_control", DEFAULT, {"alias_name": "a", "alias_label": "l\x00"}, R.INVALID_ALIAS),
    (
        "half_alias_ignored_when_external_id",
        DEFAULT,
        {"external_id": "u", "alias_name": "a"},
        ExternalId("u"),
    ),
    ("invalid_device_id", DEFAULT, {"device_id": "d\t1"}, R.INVALID_DEVICE_ID),
    ("int_external_id", DEFAULT, {"external_id": 12345}, ExternalId("12345")),
    ("negative_int_external_id", DEFAULT, {"external_id": -7}, ExternalId("-7")),
    ("bool_external_id", DEFAULT, {"external_id": True}, R.INVALID_EXTERNAL_ID),
    ("float_external_id", DEFAULT, {"external_id": 12.0}, R.INVALID_EXTERNAL_ID),
    ("bytes_device_id", DEFAULT, {"device_id": b"d1"}, R.INVALID_DEVICE_ID),
    ("float_alias_name", DEFAULT, {"alias_name": 1.5, "alias_label": "l"}, R.INVALID_ALIAS),
    ("nan_is_absent", DEFAULT, {"external_id": float("nan"), "device_id": "d"}, DeviceId("d")),
    ("none_is_absent", DEFAULT, {"external_id": None, "device_id": "d"}, DeviceId("d")),
    (
        "empty_is_absent",
        DEFAULT,
        {"external_id": "", "alias_name": "", "device_id": "d"},
        DeviceId("d"),
    ),
    ("nothing", DEFAULT, {}, R.MISSING_IDENTIFIER),
    (
        "all_empty",
        DEFAULT,
        {"external_id": "", "alias_name": None, "device_id": ""},
        R.MISSING_IDENTIFIER,
    ),
    (
        "padded_top_is_not_skipped",
        DEFAULT,
        {"external_id": " u", "device_id": "d"},
        R.INVALID_EXTERNAL_ID,
    ),
    (
        "invalid_lower_kind_ignored",
        DEFAULT,
        {"external_id": "u", "device_id": " d"},
        ExternalId("u"),
    ),
    (
        "identified_device_only",
        IDENTIFIED,
        {"device_id": "d", "identified": True},
        R.IDENTIFIED_DEVICE_ONLY,
    ),
    (
        "identified_str_true_device_only",
        IDENTIFIED,
        {"device_id": "d", "identified": "TRUE"},
        R.IDENTIFIED_DEVICE_ONLY,
    ),
    (
        "identified_with_external_id",
        IDENTIFIED,
        {"external_id": "u", "device_id": "d", "identified": 1},
        ExternalId("u"),
    ),
    ("anonymous_device", IDENTIFIED, {"device_id": "d", "identified": False}, DeviceId("d")),
    ("anonymous_str_false", IDENTIFIED, {"device_id": "d", "identified": "no"}, DeviceId("d")),
    ("identified_unknown", IDENTIFIED, {"device_id": "d", "identified": ""}, DeviceId("d")),
    ("identified_missing", IDENTIFIED, {"device_id": "d"}, DeviceId("d")),
    (
        "identified_garbage",
        IDENTIFIED,
        {"device_id": "d", "identified": "maybe"},
        R.INVALID_IDENTIFIED_FLAG,
    ),
    (
        "identified_float",
        IDENTIFIED,
        {"device_id": "d", "identified": 0.5},
        R.INVALID_IDENTIFIED_FLAG,
    ),
    ("identified_nothing", IDENTIFIED, {"identified": True}, R.MISSING_IDENTIFIER),
    (
        "constant_label",
        EMAIL,
        {"email": "a@x.io", "alias_label": "ignored"},
        UserAlias("a@x.io", "email"),
    ),
    ("constant_label_empty_name", EMAIL, {"email": "", "device_id": "d"}, DeviceId("d")),
    ("constant_label_padded_name", EMAIL, {"email": "a@x.io "}, R.INVALID_ALIAS),
    (
        "device_first_precedence",
        DEVICE_FIRST,
        {"external_id": "u", "device_id": "d"},
        DeviceId("d"),
    ),
    ("device_first_falls_to_external", DEVICE_FIRST, {"external_id": "u"}, ExternalId("u")),
    ("external_only_ignores_device", EXTERNAL_ONLY, {"device_id": "d"}, R.MISSING_IDENTIFIER),
    ("dataclass", DEFAULT, _Row(external_id="u1", device_id="d"), ExternalId("u1")),
    ("dataclass_device", DEFAULT, _Row(device_id="d"), DeviceId("d")),
    ("dataclass_empty", DEFAULT, _Row(), R.MISSING_IDENTIFIER),
    ("attrs_alias", DEFAULT, _AttrsRow("a", "l"), UserAlias("a", "l")),
    ("namedtuple_itertuples_row", DEFAULT, _Tuple(0, None, "d"), DeviceId("d")),
    ("object_without_fields", DEFAULT, object(), R.UNSUPPORTED_RECORD),
    ("none_record", DEFAULT, None, R.UNSUPPORTED_RECORD),
    ("int_record", DEFAULT, 12, R.UNSUPPORTED_RECORD),
    ("list_record", DEFAULT, ["u1"], R.UNSUPPORTED_RECORD),
    ("tuple_record", DEFAULT, ("u1",), R.UNSUPPORTED_RECORD),
    ("malformed_record", DEFAULT, MalformedRecord(7, "line 7: bad"), R.MALFORMED_ROW),
]


class TestIdentifierMatcher:
    @pytest.mark.parametrize(
        ("matcher", "record", "expected"),
        [c[1:] for c in CASES],
        ids=[c[0] for c in CASES],
    )
    def test_rules(self, matcher: IdentifierMatcher, record: object, expected: object) -> None:
        """Each kind of record becomes the identifier, or the rejection, that the rules say."""
        got = matcher.match_one(record, index=3)
        if isinstance(expected, RejectReason):
            assert isinstance(got, Rejection), got
            assert got.reason is expected
            assert got.index == 3
            assert got.record is record
            assert got.detail
        else:
            assert got == expected
            assert type(got) is type(expected)

    def test_identified_user_never_sent_by_device_id(self) -> None:
        """With device id first in precedence, an identified user still goes by external id."""
        matcher = IdentifierMatcher(
            identified_field="known", precedence=("device_id", "external_id")
        )
        record = {"external_id": "u", "device_id": "d", "known": "yes"}
        assert matcher.match_one(record) == ExternalId("u")
        assert matcher.match_one({**record, "known": "no"}) == DeviceId("d")

    def test_record_that_raises_when_read_is_rejected(self) -> None:
        """A record whose field access raises is rejected, and the records after it still match."""

        class Broken:
            @property
            def external_id(self) -> str:
                raise ValueError("boom SECRET")

        class BrokenMapping(dict[str, object]):
            def get(self, key: str, default: object = None) -> object:
                raise KeyError(key)

        items = list(DEFAULT.iter_match([Broken(), BrokenMapping(), "u1"]))
        assert [getattr(i, "reason", None) for i in items[:2]] == [R.UNSUPPORTED_RECORD] * 2
        assert items[2] == ExternalId("u1")
        assert isinstance(items[0], Rejection)
        assert "ValueError" in items[0].detail
        assert "SECRET" not in items[0].detail

    def test_malformed_record_keeps_its_line(self) -> None:
        """A malformed row's line number is carried into the rejection."""
        got = DEFAULT.match_one(MalformedRecord(12, "line 12: expected 3 fields"))
        assert isinstance(got, Rejection)
        assert (got.line, got.detail) == (12, "line 12: expected 3 fields")

    def test_detail_never_contains_the_value(self) -> None:
        """Rejection details name fields, never values, so they are safe to log."""
        records: list[object] = [
            {"external_id": " SECRET-ID"},
            {"alias_name": "SECRET-ID ", "alias_label": "email"},
            {"alias_name": "SECRET-ID"},
            {"device_id": "SECRET-ID\x00"},
            "SECRET-ID\n",
        ]
        for item in DEFAULT.iter_match(records):
            assert isinstance(item, Rejection)
            assert "SECRET" not in item.detail
            assert "SECRET" not in repr(item)

    def test_detail_names_the_configured_field(self) -> None:
        """The detail points at the field the user configured."""
        matcher = IdentifierMatcher(external_id_field="uid")
        got = matcher.match_one({"uid": "u "})
        assert isinstance(got, Rejection)
        assert "uid" in got.detail

    def test_fields_lists_identifier_fields(self) -> None:
        """``fields`` names what an input needs one of, following the configuration."""
        assert DEFAULT.fields == ("external_id", "alias_name", "alias_label", "device_id")
        assert EMAIL.fields == ("external_id", "email", "device_id")

    @pytest.mark.parametrize(
        "options",
        [
            {"precedence": "external_id"},
            {"precedence": ()},
            {"precedence": ("alias", "alias")},
            {"precedence": ("external_id", "phone")},
            {"precedence": 3},
            {"external_id_field": ""},
            {"device_id_field": None},
            {"alias_label": " email"},
            {"alias_label": ""},
        ],
    )
    def test_bad_configuration_is_refused(self, options: dict[str, Any]) -> None:
        """Invalid options raise ConfigurationError (a ValueError) at construction."""
        with pytest.raises(bc.ConfigurationError):
            IdentifierMatcher(**options)

    def test_options_are_keyword_only_and_frozen(self) -> None:
        """Options cannot be passed positionally, and a matcher cannot be changed."""
        with pytest.raises(TypeError):
            IdentifierMatcher("uid")  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            DEFAULT.device_id_field = "x"  # type: ignore[misc]
        assert attrs.evolve(DEFAULT, device_id_field="x").device_id_field == "x"


class TestMatch:
    def test_deduplicates_in_first_seen_order(self) -> None:
        """Users come out once each, in the order first seen, and repeats are counted."""
        records: list[object] = [
            "u2",
            {"external_id": "u1"},
            ExternalId("u2"),
            {"device_id": "u2"},
            {"alias_name": "u1", "alias_label": "l"},
            "u1",
            UserAlias("u1", "l"),
        ]
        result = DEFAULT.match(records)
        assert result.users == (
            ExternalId("u2"),
            ExternalId("u1"),
            DeviceId("u2"),
            UserAlias("u1", "l"),
        )
        assert result.duplicates == 3
        assert result.rejected == ()
        assert dict(result.counts) == {}

    def test_rejections_have_indexes_and_counts(self) -> None:
        """Rejected records keep their input position, and counts group them by reason code."""
        records: list[object] = ["ok", " bad", {}, {"alias_name": "a"}, "ok2", None, {}]
        result = DEFAULT.match(records)
        assert result.users == (ExternalId("ok"), ExternalId("ok2"))
        assert [(r.index, r.reason.value) for r in result.rejected] == [
            (1, "invalid_external_id"),
            (2, "missing_identifier"),
            (3, "incomplete_alias"),
            (5, "unsupported_record"),
            (6, "missing_identifier"),
        ]
        assert dict(result.counts) == {
            "invalid_external_id": 1,
            "missing_identifier": 2,
            "incomplete_alias": 1,
            "unsupported_record": 1,
        }
        assert result.rejected_total == 5

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.one_of(valid_values, invalid_values()), max_size=40))
    def test_bad_records_never_stop_good_ones(self, values: list[Any]) -> None:
        """Whatever the mix, every valid record yields its user and every other one a rejection."""
        records = [{"external_id": v} for v in values]
        result = DEFAULT.match(records)
        expected: dict[str, ExternalId] = {}
        valid = 0
        for v in values:
            try:
                ref = ExternalId(str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            except bc.InvalidIdentifierError:
                continue
            valid += 1
            expected.setdefault(ref.key, ref)
        assert result.users == tuple(expected.values())
        absent = sum(1 for v in values if v is None or v == "" or (isinstance(v, float) and v != v))
        assert len(result.rejected) == len(values) - valid
        assert result.counts.get("missing_identifier", 0) == absent
        assert result.duplicates == valid - len(expected)


class TestIterMatch:
    def test_consumes_input_lazily(self) -> None:
        """A generator of 100,000 records is read only as far as the output is taken."""
        pulled = 0

        def records() -> Iterator[dict[str, str]]:
            nonlocal pulled
            for i in range(100_000):
                pulled += 1
                yield {"external_id": f"u{i}"}

        stream = DEFAULT.iter_match(records())
        assert pulled == 0
        first = list(itertools.islice(stream, 10))
        assert first == [ExternalId(f"u{i}") for i in range(10)]
        assert pulled == 10
        rest = sum(1 for _ in stream)
        assert (pulled, rest) == (100_000, 99_990)

    def test_keeps_duplicates_and_order(self) -> None:
        """The streaming form yields one item per record, duplicates included, in input order."""
        items = list(DEFAULT.iter_match(["a", "a", " ", "b"]))
        assert items[:2] == [ExternalId("a"), ExternalId("a")]
        assert isinstance(items[2], Rejection)
        assert items[2].index == 2
        assert items[3] == ExternalId("b")


class TestRejectionToDict:
    @pytest.mark.parametrize(
        ("record", "expected"),
        [
            ({"external_id": " u", "n": float("nan")}, {"external_id": " u", "n": None}),
            (_Row(external_id=1.5), {"external_id": 1.5, "device_id": None}),
            (_AttrsRow("a", None), {"alias_name": "a", "alias_label": None}),
            (_Tuple(0, None, b"d\xff"), {"Index": 0, "external_id": None, "device_id": "d\\xff"}),
            (MalformedRecord(3, "bad", '"u2,B'), '"u2,B'),
            (MalformedRecord(4, "bad", [1, {"a": float("inf")}]), [1, {"a": None}]),
            (" u1", " u1"),
            (None, None),
            (["u1", 2], ["u1", 2]),
        ],
    )
    def test_record_becomes_strict_json(self, record: object, expected: object) -> None:
        """Whatever the record, ``to_dict`` gives data that strict ``json.dumps`` accepts."""
        rejection = DEFAULT.match_one(record, index=5)
        assert isinstance(rejection, Rejection)
        data = rejection.to_dict()
        json.dumps(data, allow_nan=False)
        assert data["record"] == expected
        assert (data["index"], data["reason"]) == (5, rejection.reason.value)
        assert data["detail"] == rejection.detail

    def test_unknown_objects_become_their_repr(self) -> None:
        """An object with no known shape is reported by its ``repr``."""
        rejection = DEFAULT.match_one(object())
        assert isinstance(rejection, Rejection)
        assert str(rejection.to_dict()["record"]).startswith("<object object")


class TestRejectReason:
    def test_codes_are_stable(self) -> None:
        """The reason codes are the documented strings (they are stored in history)."""
        assert {r.value for r in RejectReason} == {
            "missing_identifier",
            "invalid_external_id",
            "invalid_alias",
            "incomplete_alias",
            "invalid_device_id",
            "identified_device_only",
            "invalid_identified_flag",
            "unsupported_record",
            "malformed_row",
        }

    def test_each_reason_has_a_message(self) -> None:
        """Every reason explains itself, and its ``str`` is its code."""
        for reason in RejectReason:
            assert reason.message
            assert str(reason) == reason.value
            assert reason == reason.value
        assert "device id" in RejectReason.IDENTIFIED_DEVICE_ONLY.message


class TestDocs:
    def test_identifiers_page_examples_run(self) -> None:
        """Every example in docs/identifiers.md runs and prints what the page says."""
        assert run_doc_examples("identifiers.md") > 10


_VALUE_CHARS = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "-",
        "_",
        "@",
        ".",
        " ",
        "\t",
        "\n",
        "\x00",
        "\x7f",
        "\x85",
        "\xa0",
        "é",
        "\u3000",
        "\u2028",
        "\ud800",
        "日",
    ]
)


class TestBulkExternalIdCheck:
    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.text(_VALUE_CHARS, max_size=6) | st.text(max_size=6), max_size=8))
    def test_bulk_check_agrees_with_the_single_value_rule(self, values: list[str]) -> None:
        """The bulk check refuses a list exactly when ExternalId refuses one of its values."""
        from braze_cohorts._identifiers import check_external_ids

        def one_invalid() -> bool:
            for value in values:
                try:
                    bc.ExternalId(value)
                except bc.InvalidIdentifierError:
                    return True
            return False

        if one_invalid():
            with pytest.raises(bc.InvalidIdentifierError):
                check_external_ids(values)
        else:
            check_external_ids(values)
            # An identifier object is not a plain str: the bulk check refuses it.
            with pytest.raises(bc.InvalidIdentifierError):
                check_external_ids([*values, bc.ExternalId("u1")])

    def test_key_of_and_item_from_key_round_trip(self) -> None:
        """A plain str's key is its ExternalId's key, and item_from_key gives the str back."""
        from braze_cohorts._identifiers import item_from_key, key_of

        for item in ("u1", bc.ExternalId("u1"), bc.UserAlias("a@x.io", "email"), bc.DeviceId("d")):
            key = key_of(item)
            assert key == bc.as_ref(item).key
            back = item_from_key(key)
            assert bc.as_ref(back) == bc.as_ref(item)
        assert item_from_key("e:u1") == "u1"


class TestFormatCharacters:
    """Invisible format characters (Unicode category Cf) are refused anywhere in a value."""

    @pytest.mark.parametrize(
        "char", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\U000e0041"]
    )
    def test_refused_inside_a_value_with_a_clear_reason(self, char: str) -> None:
        """A zero-width space (or joiner, BOM, soft hyphen, bidi override ...) inside an id."""
        for build in (ExternalId, DeviceId, lambda v: UserAlias(alias_name=v, alias_label="l")):
            with pytest.raises(bc.InvalidIdentifierError, match="invisible format characters"):
                build(f"user{char}1")
        result = IdentifierMatcher().match_one({"external_id": f"u{char}1"})
        assert isinstance(result, Rejection)
        assert result.reason is RejectReason.INVALID_EXTERNAL_ID
        assert f"U+{ord(char):04X}" in result.detail

    def test_every_format_character_of_this_python_is_refused(self) -> None:
        """The hard-coded ranges cover every Cf character of the running Unicode database."""
        import sys
        import unicodedata

        missed = [
            f"U+{code:04X}"
            for code in range(sys.maxunicode + 1)
            if unicodedata.category(chr(code)) == "Cf" and not _refused(chr(code))
        ]
        assert missed == []

    def test_bulk_check_refuses_them(self) -> None:
        """The sync engine's bulk check (non-ASCII goes value by value) refuses them too."""
        from braze_cohorts._identifiers import check_external_ids

        with pytest.raises(bc.InvalidIdentifierError, match="format"):
            check_external_ids(["u1", "u\u200b2"])

    def test_other_invisible_looking_characters_stay_valid_inside(self) -> None:
        """Only Cf is refused: a no-break space inside (not around) an id is still a character."""
        assert ExternalId("a\xa0b").value == "a\xa0b"
        assert ExternalId("名前").value == "名前"


def _refused(char: str) -> bool:
    try:
        ExternalId(f"a{char}b")
    except bc.InvalidIdentifierError:
        return True
    return False
