"""The CLI on a corpus of hostile member files: a documented exit code and one line, never harm.

Each case writes a bad (or merely unusual) file, runs ``braze-cohorts sync`` on it against the
emulator, whose cohort already holds ten members from an earlier good import, and checks:

- the exit code is the documented one (0 success, 1 the import failed or was refused, 2 the input
  or a setting is unusable; docs/cli.md);
- nothing on stderr looks like a traceback, and a failure is explained in one line;
- Braze (the emulator) is unchanged unless the run succeeded, and then holds exactly the
  members the file's valid rows name.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator

COHORT = "hostile"
BASE = [f"u{i}" for i in range(10)]  # what Braze holds before each case
NEW = [f"u{i}" for i in range(5, 25)]  # the membership the well-formed cases ask for


@attrs.frozen
class Case:
    """A hostile file, the flags it needs, and the documented outcome."""

    name: str
    make: Callable[[Path], Path]
    code: int
    #: Members Braze must hold afterwards when the run succeeds (``None``: unchanged).
    members: frozenset[str] | None = None
    flags: tuple[str, ...] = ()
    #: Words the one-line reason must contain (case-insensitive).
    reason: tuple[str, ...] = ()


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _csv(rows: list[str], *, newline: str = "\n", encoding: str = "utf-8") -> bytes:
    return newline.join(rows).encode(encoding) + newline.encode(encoding)


def _directory(folder: Path) -> Path:
    path = folder / "members.csv"
    path.mkdir()
    return path


def _missing(folder: Path) -> Path:
    return folder / "no-such-file.csv"


def _truncated_gzip(folder: Path) -> Path:
    data = gzip.compress(_csv(["external_id", *NEW]))
    path = folder / "members.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_gzip_as_csv(folder: Path) -> Path:
    data = gzip.compress(_csv(["external_id", *NEW]))
    path = folder / "members.csv"
    path.write_bytes(data[: len(data) // 2])
    return path


_IDS = ["external_id", *NEW]
_WIDE = ",".join(f"column_{i}" for i in range(5_000))

CASES = [
    # -- encodings ---------------------------------------------------------------------------
    Case(
        "latin1_every_row",
        _write(
            "members.csv",
            _csv(["external_id", *(f"jos\u00e9{i}" for i in range(20))], encoding="latin-1"),
        ),
        1,
        reason=("20 of 20", "malformed_row"),
    ),
    Case(
        "latin1_one_row_in_twenty_five",
        _write("members.csv", _csv(_IDS).replace(b"u24\n", b"u24\njos\xe9\n")),
        0,
        frozenset(NEW),
    ),
    Case(
        "utf16_with_bom",
        _write("members.csv", codecs.BOM_UTF16_LE + "\n".join(_IDS).encode("utf-16-le")),
        2,
        reason=("header",),
    ),
    Case("utf8_bom", _write("members.csv", codecs.BOM_UTF8 + _csv(_IDS)), 0, frozenset(NEW)),
    Case(
        "binary_garbage",
        _write("members.csv", bytes(range(256)) * 40),
        2,
    ),
    # -- delimiters and line endings ---------------------------------------------------------
    # The sources branch sniffs a .csv file's delimiter from its header (issue 11).
    Case(
        "semicolons",
        _write("members.csv", _csv(["external_id;plan", *(f"{u};pro" for u in NEW)])),
        0,
        frozenset(NEW),
    ),
    Case(
        "tabs_in_a_csv",
        _write("members.csv", _csv(["external_id\tplan", *(f"{u}\tpro" for u in NEW)])),
        0,
        frozenset(NEW),
    ),
    Case(
        "tsv",
        _write("members.tsv", _csv(["plan\texternal_id", *(f"pro\t{u}" for u in NEW)])),
        0,
        frozenset(NEW),
    ),
    Case("crlf", _write("members.csv", _csv(_IDS, newline="\r\n")), 0, frozenset(NEW)),
    # Needs the sources branch (issue 9, item 11): CR-only line endings are read.
    Case("cr_only", _write("members.csv", _csv(_IDS, newline="\r")), 0, frozenset(NEW)),
    Case(
        "nul_bytes",
        _write("members.csv", _csv(_IDS).replace(b"u24\n", b"u24\nu9\x00\n")),
        0,
        frozenset(NEW),
    ),
    # -- sizes -------------------------------------------------------------------------------
    # The message names a few columns, not the whole header (sources branch, item 4).
    Case(
        "giant_header_without_ids",
        _write("members.csv", _csv([_WIDE, "x"])),
        2,
        reason=("external_id",),
    ),
    Case(
        "giant_header_ids_last",
        _write("members.csv", _csv([_WIDE + ",external_id", *("," * 5_000 + u for u in NEW)])),
        0,
        frozenset(NEW),
    ),
    Case(
        "giant_field",
        _write("members.csv", _csv([*_IDS, "x" * 2_000_000])),
        0,
        frozenset(NEW),
    ),
    Case(
        "giant_id_every_row",
        _write("members.csv", _csv(["external_id", *("y" * 600_000 + str(i) for i in range(3))])),
        1,
    ),
    # -- nothing usable ----------------------------------------------------------------------
    Case("empty", _write("members.csv", b""), 2, reason=("empty",)),
    Case("whitespace_only", _write("members.csv", b"\n \n\t\n"), 2),
    Case("empty_jsonl", _write("members.jsonl", b"\n\n"), 2, reason=("empty",)),
    Case(
        "header_only_would_remove_everyone",
        _write("members.csv", b"external_id\n"),
        1,
        reason=("remove",),
    ),
    # A JSON array of plain strings is a list of external ids (issue 11).
    Case(
        "json_array_of_strings",
        _write("members.json", json.dumps(NEW).encode()),
        0,
        frozenset(NEW),
    ),
    Case(
        "json_object_not_array",
        _write("members.json", json.dumps({"external_id": "u1"}).encode()),
        2,
        reason=("array",),
    ),
    Case(
        "jsonl_all_broken",
        _write("members.jsonl", b"".join(b"{external_id: %d\n" % i for i in range(20))),
        1,
        reason=("malformed_row",),
    ),
    Case(
        "alias_field_without_label",
        _write("members.csv", _csv(["email", *(f"{u}@example.com" for u in NEW)])),
        1,
        flags=("--alias-field", "email"),
        reason=("incomplete_alias",),
    ),
    Case(
        "quarter_rejected_over_threshold",
        _write("members.csv", _csv([*_IDS, *(f" pad{i} " for i in range(7))])),
        1,
        reason=("7 of 27",),
    ),
    # -- not a file --------------------------------------------------------------------------
    Case("directory", _directory, 2, reason=("directory",)),
    Case("missing", _missing, 2, reason=("no such file",)),
    Case("truncated_gzip", _truncated_gzip, 2, reason=(".gz",)),
    Case("truncated_gzip_named_csv", _truncated_gzip_as_csv, 2),
    Case("unknown_suffix", _write("members.xlsx", b"PK\x03\x04"), 2, reason=(".xlsx",)),
]


@pytest.fixture
def braze(
    braze_emulator: BrazeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> BrazeEmulator:
    """The emulator, its settings in the environment, and a cohort already holding BASE."""
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze_emulator.url)
    monkeypatch.setenv("BRAZE_PARTNER", braze_emulator.partner)
    monkeypatch.setenv("BRAZE_PARTNER_API_KEY", braze_emulator.partner_api_key)
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", braze_emulator.data_import_key)
    monkeypatch.setenv("BRAZE_COHORTS_STATE", str(tmp_path / "state.db"))
    braze_emulator.add_users(30, prefix="u")
    for i in range(20):
        braze_emulator.add_user(external_id=f"jos\u00e9{i}")
    base = tmp_path / "base.csv"
    base.write_text("\n".join(["external_id", *BASE]) + "\n", encoding="utf-8")
    assert main(["sync", str(base), "--cohort-id", COHORT, "--name", "Hostile"]) == 0
    assert _held(braze_emulator) == set(BASE)
    braze_emulator.reset_log()
    return braze_emulator


def _held(emulator: BrazeEmulator) -> set[str]:
    return {ident[1] for ident in emulator.members(COHORT)}


def _check(case: Case, code: int, out: str, err: str, emulator: BrazeEmulator) -> None:
    assert code == case.code, f"{case.name}: exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err
    assert "Traceback" not in out
    if code == 0:
        assert case.members is not None
        assert _held(emulator) == set(case.members), case.name
        assert "succeeded" in out
        return
    assert _held(emulator) == set(BASE), f"{case.name}: Braze changed by a failed run"
    assert not [r for r in emulator.request_log if r.endpoint == "users"]
    if code == 2:
        reasons = [line for line in err.splitlines() if line.startswith("braze-cohorts: error: ")]
        assert out == ""
    else:  # a run that was recorded: its summary line says refused or failed, and why
        reasons = [line for line in out.splitlines() if "error:" in line]
    assert len(reasons) == 1, f"{case.name}: expected one reason line\n{out}\n{err}"
    if code == 1:
        assert ": refused" in reasons[0] or ": failed" in reasons[0]
    assert len(reasons[0]) < 600, f"{case.name}: reason line of {len(reasons[0])} characters"
    for word in case.reason:
        assert word.lower() in reasons[0].lower(), f"{case.name}: {word!r} not in {reasons[0]!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_in_process(
    case: Case, braze: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each hostile file ends with its documented exit code, one reason, and Braze intact."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.make(folder)
    capsys.readouterr()
    code = main(["sync", str(path), "--cohort-id", COHORT, "--name", "Hostile", *case.flags])
    captured = capsys.readouterr()
    _check(case, code, captured.out, captured.err, braze)


_BY_NAME = {c.name: c for c in CASES}
_SUBPROCESS = ["missing", "directory", "json_array_of_strings", "latin1_every_row", "crlf"]


@pytest.mark.parametrize("name", _SUBPROCESS)
def test_hostile_file_as_a_process(name: str, braze: BrazeEmulator, tmp_path: Path) -> None:
    """The same outcome from a real `python -m braze_cohorts.cli` process (real stderr)."""
    case = _BY_NAME[name]
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.make(folder)
    result = subprocess.run(
        [sys.executable, "-m", "braze_cohorts.cli", "sync", str(path), "--cohort-id", COHORT,
         "--name", "Hostile", "--no-progress", *case.flags],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    _check(case, result.returncode, result.stdout, result.stderr, braze)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["history", COHORT, "--limit", "-1"], "at least 1"),
        (["sync", "{folder}/m.csv", "--cohort-id", COHORT, "--name", "N", "--max-rejected", "2"],
         "from 0 to 1"),
        (["sync", "{folder}/m.csv", "--cohort-id", COHORT, "--name", "N", "--dry-run",
          "--state", "{folder}/m.csv/state.db"], "not a directory"),
        (["sync", "{folder}/m.csv", "--cohort-id", COHORT, "--name", "N", "--dry-run",
          "--state", "{folder}/nowhere/state.db"], "--create-state-dir"),
        (["history", COHORT, "--state", "{folder}"], "directory"),
        (["schedule", "list", "--state", "{folder}/none.db"], "no state database"),
    ],
)  # fmt: skip
def test_hostile_arguments_exit_2_with_one_line(
    argv: list[str], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad numbers and unusable state paths are usage errors: exit 2, one line, no traceback."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "m.csv").write_text("external_id\nu1\n", encoding="utf-8")
    args = [a.replace("{folder}", str(folder)) for a in argv]
    assert main(args) == 2  # argument errors too: main() returns the code, it does not exit
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert reason in lines[0]
