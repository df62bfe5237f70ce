"""Input file readers: CSV, TSV, JSON Lines and JSON, and how bad input is reported."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import json
import lzma
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
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
    read_records,
)

MATCHER = IdentifierMatcher()


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _match(path: Path, matcher: IdentifierMatcher = MATCHER) -> bc.MatchResult:
    return matcher.match(read_records(path))


class TestCsv:
    def test_reads_rows_with_extra_columns(self, tmp_path: Path) -> None:
        """Rows become dicts of every column; extra columns pass through unchanged."""
        path = _write(
            tmp_path,
            "m.csv",
            "external_id,alias_name,alias_label,device_id,plan\n"
            "U1,,,,pro\n,a@x.io,email,,free\n,,,d1,\n",
        )
        records = list(read_records(path))
        assert records == [
            {
                "external_id": "U1",
                "alias_name": "",
                "alias_label": "",
                "device_id": "",
                "plan": "pro",
            },
            {
                "external_id": "",
                "alias_name": "a@x.io",
                "alias_label": "email",
                "device_id": "",
                "plan": "free",
            },
            {"external_id": "", "alias_name": "", "alias_label": "", "device_id": "d1", "plan": ""},
        ]
        assert MATCHER.match(records).users == (
            ExternalId("U1"),
            UserAlias("a@x.io", "email"),
            DeviceId("d1"),
        )

    def test_bom_and_crlf_are_handled(self, tmp_path: Path) -> None:
        """A UTF-8 byte order mark and Windows line ends do not leak into names or values."""
        path = _write(tmp_path, "m.csv", b"\xef\xbb\xbfexternal_id\r\nu1\r\n\xc3\xa9t\xc3\xa9\r\n")
        assert _match(path).users == (ExternalId("u1"), ExternalId("été"))

    def test_values_are_not_stripped(self, tmp_path: Path) -> None:
        """Padded values reach the matcher unchanged and are rejected with a reason and line."""
        path = _write(tmp_path, "m.csv", "external_id\nu1\n u2\nu3\n")
        result = _match(path)
        assert result.users == (ExternalId("u1"), ExternalId("u3"))
        [rejection] = result.rejected
        assert (rejection.reason, rejection.line, rejection.index) == (
            RejectReason.INVALID_EXTERNAL_ID,
            3,
            1,
        )

    def test_tsv(self, tmp_path: Path) -> None:
        """A .tsv file is read with tabs as separators."""
        path = _write(tmp_path, "m.tsv", "device_id\tnote\nd,1\tx\n")
        assert _match(path).users == (DeviceId("d,1"),)

    def test_header_only_is_an_empty_membership(self, tmp_path: Path) -> None:
        """A header without rows yields no records (an empty cohort), not an error."""
        path = _write(tmp_path, "m.csv", "external_id,device_id\n")
        assert list(read_records(path)) == []

    def test_wrong_field_counts_are_rejected_by_line(self, tmp_path: Path) -> None:
        """Rows with too few or too many fields are malformed rows; the valid rows all survive."""
        path = _write(
            tmp_path,
            "m.csv",
            "external_id,device_id\nu1,\nu2\nu3,d3,extra\n\nu4,\n",
        )
        result = _match(path)
        assert result.users == (ExternalId("u1"), ExternalId("u4"))
        assert [(r.reason, r.line) for r in result.rejected] == [
            (RejectReason.MALFORMED_ROW, 3),
            (RejectReason.MALFORMED_ROW, 4),
        ]
        assert "expected 2 fields, found 1" in result.rejected[0].detail
        assert "found 3" in result.rejected[1].detail

    def test_unbalanced_quote_loses_no_later_row(self, tmp_path: Path) -> None:
        """An unbalanced quote rejects its own line only; the lines it swallowed are read again."""
        path = _write(
            tmp_path,
            "m.csv",
            'external_id,name\nu1,A\n"u2,B\nu3,C\nu4,D\nu5,"E"\nu6,F\n',
        )
        result = _match(path)
        assert result.users == tuple(ExternalId(f"u{i}") for i in (1, 3, 4, 5, 6))
        [rejection] = result.rejected
        assert rejection.reason is RejectReason.MALFORMED_ROW
        assert rejection.line == 3
        assert "unbalanced quote" in rejection.detail

    def test_unbalanced_quote_at_the_end(self, tmp_path: Path) -> None:
        """A quote left open until the end of the file still gives back the rows after it."""
        path = _write(tmp_path, "m.csv", 'external_id,n\nu1,"x\nu2,y\nu3,z\n')
        result = _match(path)
        assert result.users == (ExternalId("u2"), ExternalId("u3"))
        assert [r.line for r in result.rejected] == [2]

    def test_quoted_multiline_field_with_right_width_is_one_row(self, tmp_path: Path) -> None:
        """A properly quoted value spanning lines stays one record (extra columns may hold it)."""
        path = _write(tmp_path, "m.csv", 'external_id,note\nu1,"two\nlines"\nu2,x\n')
        records = list(read_records(path))
        assert records[0] == {"external_id": "u1", "note": "two\nlines"}
        assert _match(path).users == (ExternalId("u1"), ExternalId("u2"))

    def test_invalid_utf8_line_is_rejected_alone(self, tmp_path: Path) -> None:
        """A line that is not UTF-8 is a malformed row; its neighbours are read."""
        path = _write(tmp_path, "m.csv", b"external_id\nu1\nu\xff2\nu3\n")
        result = _match(path)
        assert result.users == (ExternalId("u1"), ExternalId("u3"))
        assert [(r.line, "UTF-8" in r.detail) for r in result.rejected] == [(3, True)]

    def test_invalid_ids_rejected_with_reasons(self, tmp_path: Path) -> None:
        """Invalid identifiers in a CSV are rejected per row with their reason and line."""
        path = _write(
            tmp_path,
            "m.csv",
            "external_id,alias_name,alias_label,device_id\nu1,,,\n,a,,\n,,,\n,,,d\x01\n,n,l,\n",
        )
        result = _match(path)
        assert result.users == (ExternalId("u1"), UserAlias("n", "l"))
        assert [(r.line, r.reason.value) for r in result.rejected] == [
            (3, "incomplete_alias"),
            (4, "missing_identifier"),
            (5, "invalid_device_id"),
        ]

    def test_identifier_columns_can_be_configured(self, tmp_path: Path) -> None:
        """A header without the default columns is accepted when ``id_columns`` names its column."""
        path = _write(tmp_path, "m.csv", "email\na@x.io\n")
        with pytest.raises(bc.InputError):
            read_records(path)
        matcher = IdentifierMatcher(alias_label="email", alias_name_field="email")
        result = matcher.match(read_records(path, id_columns=matcher.fields))
        assert result.users == (UserAlias("a@x.io", "email"),)

    def test_unknown_columns_name_found_and_expected(self, tmp_path: Path) -> None:
        """A header with none of the identifier columns fails at once, naming both sides."""
        path = _write(tmp_path, "m.csv", "user,mail\nu1,x\n")
        with pytest.raises(bc.InputError) as info:
            read_records(path)
        text = str(info.value)
        assert "'user', 'mail'" in text
        assert "external_id" in text
        assert "device_id" in text

    def test_repeated_column_is_refused(self, tmp_path: Path) -> None:
        """A header naming a column twice is ambiguous and refused."""
        path = _write(tmp_path, "m.csv", "external_id,external_id\nu1,u2\n")
        with pytest.raises(bc.InputError, match="repeats"):
            read_records(path)

    @pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
    def test_empty_file_is_an_input_error(self, tmp_path: Path, content: bytes) -> None:
        """An empty file is an error (most likely a failed export), not an empty cohort."""
        path = _write(tmp_path, "m.csv", content)
        with pytest.raises(bc.InputError, match="empty"):
            read_records(path)

    def test_reads_lazily(self, tmp_path: Path) -> None:
        """Records come one at a time: taking a few does not read the whole file into a list."""
        path = tmp_path / "big.csv"
        with path.open("w", encoding="utf-8") as fh:
            fh.write("external_id\n")
            fh.writelines(f"u{i}\n" for i in range(50_000))
        stream = read_records(path)
        assert iter(stream) is stream
        head = list(itertools.islice(stream, 3))
        assert head == [{"external_id": "u0"}, {"external_id": "u1"}, {"external_id": "u2"}]
        assert sum(1 for _ in stream) == 49_997


class TestJsonLines:
    @pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".JSONL"])
    def test_reads_objects_and_skips_blank_lines(self, tmp_path: Path, suffix: str) -> None:
        """Each non-blank line is one record; values keep their JSON types."""
        path = _write(
            tmp_path,
            "m" + suffix,
            '{"external_id": "U1"}\n\n  \n{"external_id": 42, "x": [1]}\r\n{"device_id": "d"}',
        )
        assert list(read_records(path)) == [
            {"external_id": "U1"},
            {"external_id": 42, "x": [1]},
            {"device_id": "d"},
        ]
        assert _match(path).users == (ExternalId("U1"), ExternalId("42"), DeviceId("d"))

    def test_bad_lines_are_rejected_and_never_stop_good_ones(self, tmp_path: Path) -> None:
        """Invalid JSON, non-objects and bad encoding become malformed rows with line numbers."""
        path = _write(
            tmp_path,
            "m.jsonl",
            b'\xef\xbb\xbf{"external_id": "u1"}\n'
            b'{"external_id": "u2"\n'
            b'["u3"]\n'
            b'"u4"\n'
            b'{"external_id": "u\xff"}\n'
            b'{"external_id": " u6"}\n'
            b'{"external_id": "u7"}\n',
        )
        result = _match(path)
        assert result.users == (ExternalId("u1"), ExternalId("u7"))
        assert [(r.line, r.reason.value) for r in result.rejected] == [
            (2, "malformed_row"),
            (3, "malformed_row"),
            (4, "malformed_row"),
            (5, "malformed_row"),
            (6, "invalid_external_id"),
        ]
        assert "not valid JSON" in result.rejected[0].detail
        assert "found an array" in result.rejected[1].detail
        assert "found a string" in result.rejected[2].detail

    def test_empty_file_is_an_input_error(self, tmp_path: Path) -> None:
        """A JSON Lines file with no content at all is refused as empty."""
        path = _write(tmp_path, "m.jsonl", "\n \n")
        with pytest.raises(bc.InputError, match="empty"):
            read_records(path)


class TestJson:
    def test_reads_an_array_of_objects(self, tmp_path: Path) -> None:
        """A .json array yields its objects; other items become malformed rows."""
        path = _write(
            tmp_path,
            "m.json",
            json.dumps([{"external_id": "u1"}, 7, {"alias_name": "a", "alias_label": "l"}]),
        )
        result = _match(path)
        assert result.users == (ExternalId("u1"), UserAlias("a", "l"))
        [rejection] = result.rejected
        assert (rejection.index, rejection.reason) == (1, RejectReason.MALFORMED_ROW)
        assert "item 1" in rejection.detail

    def test_empty_array_is_an_empty_membership(self, tmp_path: Path) -> None:
        """``[]`` yields no records."""
        assert list(read_records(_write(tmp_path, "m.json", "[]"))) == []

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("", "empty"),
            ('{"external_id": "u1"}', "expected a JSON array"),
            ("[{]", "not valid JSON"),
        ],
    )
    def test_unreadable_json_is_an_input_error(
        self, tmp_path: Path, content: str, message: str
    ) -> None:
        """A .json file that is empty, not an array, or not JSON fails at once."""
        path = _write(tmp_path, "m.json", content)
        with pytest.raises(bc.InputError, match=message):
            read_records(path)


class TestFiles:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is an InputError naming it, raised before anything is read."""
        with pytest.raises(bc.InputError, match="no such file") as info:
            read_records(tmp_path / "nope.csv")
        assert "nope.csv" in str(info.value)

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused with an InputError."""
        folder = tmp_path / "d.csv"
        folder.mkdir()
        with pytest.raises(bc.InputError):
            read_records(folder)

    @pytest.mark.parametrize("name", ["m.txt", "m.xlsx", "m", "m.csv.zip"])
    def test_unknown_suffix(self, tmp_path: Path, name: str) -> None:
        """An unknown file type is refused, listing the supported ones."""
        path = _write(tmp_path, name, "external_id\nu1\n")
        with pytest.raises(bc.InputError, match=r"\.csv"):
            read_records(path)

    def test_input_error_is_a_value_error(self, tmp_path: Path) -> None:
        """InputError is part of the library's tree and a ValueError."""
        with pytest.raises(ValueError, match="no such file"):
            read_records(tmp_path / "nope.jsonl")
        assert issubclass(bc.InputError, bc.BrazeCohortsError)

    def test_malformed_record_type(self, tmp_path: Path) -> None:
        """Malformed rows are MalformedRecord values carrying the raw line."""
        path = _write(tmp_path, "m.csv", "external_id,b\nu1\n")
        [item] = list(read_records(path))
        assert isinstance(item, MalformedRecord)
        assert (item.line, item.raw) == (2, "u1")
        rejection = MATCHER.match_one(item)
        assert isinstance(rejection, Rejection)
        assert rejection.line == 2


# -- hostile headers and line endings (issue 9, items 4 and 11) -----------------------------


class TestHeaders:
    @pytest.mark.timeout(60)  # a hang guard only: the quadratic check took hours on this header
    def test_a_giant_one_line_export_is_refused_at_once(self, tmp_path: Path) -> None:
        """A 200,000-column header (a one-line export of ids) is an InputError, read linearly."""
        path = _write(
            tmp_path, "m.csv", "external_id," + ",".join(f"u{i}" for i in range(200_000)) + "\n"
        )
        with pytest.raises(bc.InputError, match=r"200,001 columns \(at most 10,000") as info:
            read_records(path)
        assert len(str(info.value)) < 400

    def test_the_column_limit_is_exact(self, tmp_path: Path) -> None:
        """10,000 columns are read; 10,001 are refused."""
        names = [f"c{i}" for i in range(9_999)]
        ok = _write(tmp_path, "ok.csv", ",".join(["external_id", *names]) + "\n")
        assert list(read_records(ok)) == []
        bad = _write(tmp_path, "bad.csv", ",".join(["external_id", *names, "x"]) + "\n")
        with pytest.raises(bc.InputError, match="10,001 columns"):
            read_records(bad)

    def test_no_identifier_column_message_shows_a_few_names(self, tmp_path: Path) -> None:
        """The error names the first five columns and counts the rest, not the whole header."""
        path = _write(tmp_path, "m.csv", ",".join(f"col{i}" for i in range(5_000)) + "\n")
        with pytest.raises(bc.InputError) as info:
            read_records(path)
        text = str(info.value)
        assert "'col0', 'col1', 'col2', 'col3', 'col4' and 4,995 more" in text
        assert "col5'" not in text
        assert len(text) < 400

    def test_repeated_columns_message_is_short(self, tmp_path: Path) -> None:
        """Thousands of repeated names are summarised too."""
        path = _write(tmp_path, "m.csv", "external_id," + ",".join(["a", "b"] * 3_000) + "\n")
        with pytest.raises(bc.InputError, match=r"repeats the column names 'a', 'b'") as info:
            read_records(path)
        assert len(str(info.value)) < 400


class TestLineEndings:
    @pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
    def test_cr_lf_and_crlf_are_read(self, tmp_path: Path, ending: str) -> None:
        """Old-Mac CR-only files read like LF and CRLF ones, with the right line numbers."""
        path = _write(
            tmp_path, "m.csv", ending.join(["external_id,plan", "u1,a", "u2", "u3,c", ""])
        )
        result = _match(path)
        assert result.users == (ExternalId("u1"), ExternalId("u3"))
        assert [(r.line, r.reason.value) for r in result.rejected] == [(3, "malformed_row")]

    def test_cr_only_quoted_field_with_line_break(self, tmp_path: Path) -> None:
        """A quoted field may hold a CR line break in a CR-only file."""
        path = _write(tmp_path, "m.csv", 'external_id,note\r"u1","a\rb"\ru2,c\r')
        assert list(read_records(path)) == [
            {"external_id": "u1", "note": "a\rb"},
            {"external_id": "u2", "note": "c"},
        ]

    def test_zero_width_space_in_a_file_is_rejected_with_its_reason(self, tmp_path: Path) -> None:
        """An id with an invisible format character is rejected, naming the character."""
        path = _write(tmp_path, "m.csv", "external_id\nu\u200b1\nu2\n")
        result = _match(path)
        assert result.users == (ExternalId("u2"),)
        [rejection] = result.rejected
        assert rejection.reason is RejectReason.INVALID_EXTERNAL_ID
        assert "U+200B" in rejection.detail
        assert rejection.line == 2


# -- compression, dialects, encodings, streams ------------------------------------------------

_CONTENT = {
    ".csv": "external_id,plan\nu1,a\nu2,b\n",
    ".tsv": "external_id\tplan\nu1\ta\nu2\tb\n",
    ".jsonl": '{"external_id": "u1", "plan": "a"}\n{"external_id": "u2", "plan": "b"}\n',
    ".json": '[{"external_id": "u1", "plan": "a"}, {"external_id": "u2", "plan": "b"}]',
}
_COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


class TestCompressed:
    @pytest.mark.parametrize("suffix", list(_CONTENT))
    @pytest.mark.parametrize("compression", list(_COMPRESS))
    def test_every_text_format_reads_compressed(
        self, tmp_path: Path, suffix: str, compression: str
    ) -> None:
        """``members.csv.gz`` (and .bz2, .xz; every text format) reads like the plain file."""
        plain = _write(tmp_path, "m" + suffix, _CONTENT[suffix])
        packed = _write(
            tmp_path, "m" + suffix + compression.upper(), _COMPRESS[compression](plain.read_bytes())
        )
        expected = [{"external_id": "u1", "plan": "a"}, {"external_id": "u2", "plan": "b"}]
        assert list(read_records(plain)) == expected
        assert list(read_records(packed)) == expected

    def test_truncated_gzip_is_a_source_error_not_a_traceback(self, tmp_path: Path) -> None:
        """A .gz cut short reads its complete lines, then raises SourceError (an InputError)."""
        data = "external_id\n" + "".join(f"user-{i}\n" for i in range(100_000))
        packed = gzip.compress(data.encode())
        path = _write(tmp_path, "m.csv.gz", packed[: len(packed) // 2])
        got: list[object] = []
        with pytest.raises(bc.SourceError, match="ends early") as info:
            got.extend(read_records(path))
        assert 0 < len(got) < 100_000
        assert isinstance(info.value, bc.InputError)

    @pytest.mark.parametrize("compression", list(_COMPRESS))
    def test_not_compressed_data_is_an_input_error(self, tmp_path: Path, compression: str) -> None:
        """A plain file named .gz/.bz2/.xz fails with InputError (at once or when read)."""
        path = _write(tmp_path, "m.csv" + compression, "external_id\nu1\n" * 50)
        with pytest.raises(bc.InputError, match="compressed data"):
            list(read_records(path))

    def test_cut_inside_the_header(self, tmp_path: Path) -> None:
        """A .gz cut inside its first bytes fails at once."""
        path = _write(tmp_path, "m.csv.gz", gzip.compress(b"external_id\nu1\n")[:15])
        with pytest.raises(bc.InputError):
            list(read_records(path))


class TestDialects:
    @pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
    def test_delimiter_is_sniffed_from_the_header(self, tmp_path: Path, delimiter: str) -> None:
        """European (;), tab and pipe exports named .csv are read without being told."""
        text = delimiter.join(["external_id", "plan", "note"]) + "\r\n"
        text += delimiter.join(["u1", "a", "x,y;z"]) + "\r\n"
        path = _write(tmp_path, "m.csv", "\ufeff" + text.replace("x,y;z", '"x,y;z"'))
        assert list(read_records(path)) == [{"external_id": "u1", "plan": "a", "note": "x,y;z"}]

    def test_sniffing_prefers_the_split_that_finds_an_id_column(self, tmp_path: Path) -> None:
        """A ;-header whose names contain commas splits where the id column appears."""
        path = _write(tmp_path, "m.csv", "external_id;a,b,c\nu1;x\n")
        assert list(read_records(path)) == [{"external_id": "u1", "a,b,c": "x"}]

    def test_delimiter_can_be_given(self, tmp_path: Path) -> None:
        """``delimiter=`` overrides sniffing (and the .tsv default)."""
        path = _write(tmp_path, "m.tsv", "external_id;plan\nu1;a\n")
        assert list(read_records(path, delimiter=";")) == [{"external_id": "u1", "plan": "a"}]
        with pytest.raises(bc.ConfigurationError, match="one character"):
            read_records(path, delimiter=";;")

    @settings(max_examples=60, deadline=None)
    @given(
        delimiter=st.sampled_from([",", ";", "\t", "|"]),
        rows=st.lists(
            st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                             max_size=8), min_size=2, max_size=2),
            max_size=8,
        ),
        ending=st.sampled_from(["\n", "\r\n", "\r"]),
        quote_all=st.booleans(),
    )  # fmt: skip
    def test_any_written_csv_reads_back(
        self, delimiter: str, rows: list[list[str]], ending: str, quote_all: bool
    ) -> None:
        """Whatever csv.writer writes (any delimiter, quoting, line ending) reads back exactly."""
        if not quote_all:
            # csv.writer leaves a line break unquoted unless it is in its lineterminator.
            assume(not any("\r" in f or "\n" in f for row in rows for f in row))
        buffer = io.StringIO()
        quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator=ending, quoting=quoting)
        writer.writerow(["external_id", "note"])
        writer.writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        records = list(read_records(io.BytesIO(data), format="csv"))
        expected = [{"external_id": a, "note": b} for a, b in rows]
        assert records == expected


class TestEncodings:
    def test_latin1(self, tmp_path: Path) -> None:
        """``encoding="latin-1"`` reads a Latin-1 export; as UTF-8 its rows are malformed."""
        path = _write(tmp_path, "m.csv", "external_id\nJosé\nu2\n".encode("latin-1"))
        assert list(read_records(path, encoding="latin-1")) == [
            {"external_id": "José"},
            {"external_id": "u2"},
        ]
        result = _match(path)
        assert result.users == (ExternalId("u2"),)
        assert result.rejected[0].reason is RejectReason.MALFORMED_ROW
        assert result.rejected[0].record.raw == "Jos\ufffd"

    @pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig", "cp1252"])
    def test_utf16_and_others(self, tmp_path: Path, encoding: str) -> None:
        """UTF-16 (Excel's 'Unicode text'), with or without BOM, and Windows code pages."""
        path = _write(tmp_path, "m.tsv", "external_id\tplan\r\nZoë\tä\r\n".encode(encoding))
        assert list(read_records(path, encoding=encoding)) == [{"external_id": "Zoë", "plan": "ä"}]

    def test_undecodable_bytes_in_a_strict_encoding_are_a_source_error(
        self, tmp_path: Path
    ) -> None:
        """A UTF-16 file cut mid-character stops with SourceError, never a UnicodeDecodeError."""
        path = _write(tmp_path, "m.csv", "external_id\nu1\n".encode("utf-16") + b"\x00\xd8")
        with pytest.raises(bc.SourceError, match="not valid utf-16"):
            list(read_records(path, encoding="utf-16"))

    def test_unknown_encoding(self, tmp_path: Path) -> None:
        """An encoding Python does not know is a configuration error."""
        path = _write(tmp_path, "m.csv", "external_id\nu1\n")
        with pytest.raises(bc.ConfigurationError, match="unknown encoding"):
            read_records(path, encoding="klingon")


class TestStreams:
    def test_stdin_with_format(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``"-"`` reads standard input (bytes), which is left open."""
        stdin = io.TextIOWrapper(io.BytesIO(b"external_id\r\nu1\r\n"), encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", stdin)
        assert list(read_records("-", format="csv")) == [{"external_id": "u1"}]
        assert not stdin.closed
        assert not stdin.buffer.closed

    def test_stdin_without_format_says_how(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Standard input has no suffix: the error names format= and --format."""
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
        with pytest.raises(bc.InputError, match="--format"):
            read_records("-")

    def test_compressed_stdin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``format="jsonl.gz"`` decompresses a stream."""
        data = gzip.compress(b'{"external_id": "u1"}\n')
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert list(read_records("-", format="jsonl.gz")) == [{"external_id": "u1"}]

    def test_file_objects_binary_and_text(self, tmp_path: Path) -> None:
        """An open file's name tells its format; a text stream is read as text; none is closed."""
        path = _write(tmp_path, "m.csv", "external_id\nu1\n")
        with path.open("rb") as fh:
            assert list(read_records(fh)) == [{"external_id": "u1"}]
            assert not fh.closed
        text = io.StringIO("external_id\nu2\n")
        assert list(read_records(text, format="csv")) == [{"external_id": "u2"}]
        assert not text.closed

    def test_format_for_a_file_without_a_telling_suffix(self, tmp_path: Path) -> None:
        """``format=`` reads an export named .txt or .dat; an unknown format is refused."""
        path = _write(tmp_path, "export.dat", gzip.compress(b"external_id;x\nu1;2\n"))
        assert list(read_records(path, format="csv.gz")) == [{"external_id": "u1", "x": "2"}]
        with pytest.raises(bc.ConfigurationError, match="unknown format"):
            read_records(path, format="xlsx")

    def test_not_a_source(self) -> None:
        """A value that is neither a path nor a file is a configuration error."""
        with pytest.raises(bc.ConfigurationError, match="path"):
            read_records(42)  # type: ignore[arg-type]


class TestJsonArrayOfIds:
    def test_plain_strings_are_external_ids(self, tmp_path: Path) -> None:
        """``["u1", "u2"]`` is a list of external ids (each a plain str record)."""
        path = _write(tmp_path, "m.json", '["u1", "u2", {"device_id": "d1"}, 7, "u 3 "]')
        records = list(read_records(path))
        assert records[:2] == ["u1", "u2"]
        result = MATCHER.match(records)
        assert result.users == (ExternalId("u1"), ExternalId("u2"), DeviceId("d1"))
        assert [(r.index, r.reason.value) for r in result.rejected] == [
            (3, "malformed_row"),
            (4, "invalid_external_id"),
        ]


class TestColumnMapping:
    def test_external_id_column_with_other_case(self, tmp_path: Path) -> None:
        """``external_id_column="user_id"`` finds ``User_ID`` and renames it to external_id."""
        path = _write(tmp_path, "m.csv", "User_ID,Plan\nu1,a\n")
        assert list(read_records(path, external_id_column="user_id")) == [
            {"external_id": "u1", "Plan": "a"}
        ]

    def test_default_names_are_matched_ignoring_case(self, tmp_path: Path) -> None:
        """``External_ID`` and ``DEVICE_ID`` headers are the default identifier columns."""
        path = _write(tmp_path, "m.csv", "External_ID,DEVICE_ID\nu1,\n,d1\n")
        assert _match(path).users == (ExternalId("u1"), DeviceId("d1"))

    def test_alias_and_device_columns(self, tmp_path: Path) -> None:
        """Each identifier column can be named."""
        path = _write(tmp_path, "m.csv", "mail,kind,dev\na@x.io,email,\n,,d9\n")
        records = read_records(
            path, alias_name_column="MAIL", alias_label_column="kind", device_id_column="dev"
        )
        assert MATCHER.match(records).users == (UserAlias("a@x.io", "email"), DeviceId("d9"))

    def test_a_named_column_that_is_missing(self, tmp_path: Path) -> None:
        """A column the caller named must exist: the error names it and shows the header."""
        path = _write(tmp_path, "m.csv", "external_id,x\nu1,2\n")
        with pytest.raises(bc.InputError, match=r"no column 'uid' \(for external_id\)"):
            read_records(path, external_id_column="uid")

    def test_clash_and_ambiguity_are_refused(self, tmp_path: Path) -> None:
        """A mapped column beside one already named like the target, or two case-twins."""
        clash = _write(tmp_path, "a.csv", "user_id,external_id\nu1,u2\n")
        with pytest.raises(bc.InputError, match="clashes"):
            read_records(clash, external_id_column="user_id")
        twins = _write(tmp_path, "b.csv", "Email,email\na,b\n")
        with pytest.raises(bc.InputError, match="2 columns match"):
            read_records(twins, alias_name_column="EMAIL", alias_label_column="label")

    def test_json_keys_are_mapped_per_record(self, tmp_path: Path) -> None:
        """JSON Lines objects are renamed the same way, whatever their keys' order."""
        path = _write(
            tmp_path, "m.jsonl", '{"UserId": "u1", "x": 1}\n{"x": 2, "userid": "u2"}\n{"x": 3}\n'
        )
        records = list(read_records(path, external_id_column="userid"))
        assert records == [
            {"external_id": "u1", "x": 1},
            {"x": 2, "external_id": "u2"},
            {"x": 3},
        ]

    def test_a_json_record_with_both_the_mapped_key_and_the_field(self, tmp_path: Path) -> None:
        """As for a CSV header, a record holding both is ambiguous: that record is malformed."""
        path = _write(tmp_path, "m.jsonl", '{"uid": "u1", "external_id": "x"}\n{"uid": "u2"}\n')
        result = MATCHER.match(read_records(path, external_id_column="uid"))
        assert result.users == (ExternalId("u2"),)
        [rejection] = result.rejected
        assert (rejection.line, rejection.reason.value) == (1, "malformed_row")
        assert "'uid' (mapped to external_id)" in rejection.detail

    def test_bad_column_names(self) -> None:
        """An empty column name is a configuration error."""
        with pytest.raises(bc.ConfigurationError, match="external_id_column"):
            read_records("m.csv", external_id_column=" ")


class TestParquet:
    def test_external_id_only_yields_plain_strings(self, tmp_path: Path) -> None:
        """A Parquet file with only an id column (any case) yields str ids, ints in decimal."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "m.parquet"
        table = pa.table({"External_Id": ["u1", None, "u3"], "score": [1, 2, 3]})
        pq.write_table(table, path, row_group_size=2)
        records = list(read_records(path))
        assert records == ["u1", {"external_id": None}, "u3"]
        ints = tmp_path / "i.parquet"
        pq.write_table(pa.table({"external_id": pa.array([10, 20], pa.int64())}), ints)
        assert list(read_records(ints)) == ["10", "20"]

    def test_alias_columns_yield_dicts(self, tmp_path: Path) -> None:
        """With several identifier columns each row is a dict of every column."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "m.parquet"
        pq.write_table(
            pa.table({"email": ["a@x.io", None], "label": ["email", None], "id": [None, 7]}), path
        )
        records = list(
            read_records(
                path,
                external_id_column="ID",
                alias_name_column="email",
                alias_label_column="label",
            )
        )
        assert records == [
            {"alias_name": "a@x.io", "alias_label": "email", "external_id": None},
            {"alias_name": None, "alias_label": None, "external_id": 7},
        ]
        assert MATCHER.match(records).users == (UserAlias("a@x.io", "email"), ExternalId("7"))

    def test_not_parquet_and_no_id_column(self, tmp_path: Path) -> None:
        """A file that is not Parquet, or has no identifier column, fails at once."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pytest.raises(bc.InputError, match="not a readable Parquet file"):
            read_records(_write(tmp_path, "m.parquet", "external_id\nu1\n"))
        path = tmp_path / "n.parquet"
        pq.write_table(pa.table({"user": ["u1"]}), path)
        with pytest.raises(bc.InputError, match="none of the identifier columns"):
            read_records(path)

    def test_without_pyarrow_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without pyarrow the error says what to install."""
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        path = _write(tmp_path, "m.parquet", b"PAR1")
        with pytest.raises(bc.InputError, match=r"braze-cohorts\[parquet\]"):
            read_records(path)


class TestHostileBytes:
    @settings(max_examples=150, deadline=None)
    @given(
        content=st.one_of(
            st.binary(max_size=200),
            st.lists(
                st.sampled_from([b"external_id", b",", b";", b"\t", b'"', b"\r", b"\n", b"\xff",
                                 b"\xef\xbb\xbf", b"u1", b"{", b"}", b"[", b"]", b"\x00",
                                 b'"external_id"', b":", b"\xe2\x80\x8b"]),
                max_size=40,
            ).map(b"".join),
        ),
        suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".csv.gz", ".json.xz"]),
        cut=st.booleans(),
        encoding=st.sampled_from([None, "utf-16", "latin-1"]),
    )  # fmt: skip
    def test_any_bytes_read_or_fail_with_an_input_error(
        self, content: bytes, suffix: str, cut: bool, encoding: str | None
    ) -> None:
        """Whatever the bytes (and a compressed file cut short): records or InputError, never
        another exception; the matcher then rejects or accepts each record without raising."""
        if suffix.endswith(".gz"):
            content = gzip.compress(content)
        elif suffix.endswith(".xz"):
            content = lzma.compress(content)
        if cut:
            content = content[: len(content) // 2]
        source = io.BytesIO(content)
        try:
            records = list(read_records(source, format=suffix.lstrip("."), encoding=encoding))
        except bc.InputError:
            return
        for item in MATCHER.iter_match(records):
            assert isinstance(item, (Rejection, ExternalId, UserAlias, DeviceId))
