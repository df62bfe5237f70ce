"""``braze-cohorts sync`` fed by standard input, SQL queries and mapped columns, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from postgres_server import postgres_server

COHORT = "warehouse"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def env(braze_env: BrazeEmulator, tmp_path: Path) -> Path:
    """The CLI pointed at the emulator through the environment (conftest's braze_env); the
    state path."""
    return tmp_path / "state.db"


def _table(pg_url: str, ids: list[str], *, cohorts: int = 1) -> str:
    """A table ``(user_id, segment)`` of ``ids`` in the throwaway server; its name."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (user_id TEXT, segment INTEGER)")
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)",
                [(uid, n % cohorts) for n, uid in enumerate(ids)],
            )
    return table


def _members(emulator: BrazeEmulator, cohort: str = COHORT) -> set[str]:
    return {ident[1] for ident in emulator.members(cohort)}


def _history(capsys: pytest.CaptureFixture[str], cohort: str = COHORT) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["history", cohort, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _sync(*args: str) -> int:
    return main(["sync", *args, "--no-progress"])


class TestStandardInput:
    def test_a_piped_export_with_a_mapped_column(
        self, braze_emulator: BrazeEmulator, env: Path
    ) -> None:
        """``producer | braze-cohorts sync - --format csv``: two real processes and a pipe."""
        ids = braze_emulator.add_users(1500, prefix="u")
        script = (
            "import sys\n"
            "print('User_ID;plan')\n"
            f"for n in range({len(ids)}):\n"
            "    print(f'u{n};pro')\n"
        )
        producer = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, env=os.environ.copy()
        )
        assert producer.stdout is not None
        result = subprocess.run(
            [sys.executable, "-m", "braze_cohorts.cli", "sync", "-", "--format", "csv",
             "--external-id-column", "user_id", "--cohort-id", COHORT, "--name", "Piped",
             "--no-progress", "--json"],
            stdin=producer.stdout, capture_output=True, text=True, env=os.environ.copy(),
            timeout=120, check=False,
        )  # fmt: skip
        producer.stdout.close()
        assert producer.wait(timeout=60) == 0
        assert result.returncode == 0, result.stderr
        run = json.loads(result.stdout)
        assert (run["result"], run["added"]) == ("succeeded", 1500)
        assert _members(braze_emulator) == set(ids)

    def test_a_latin1_tsv_from_stdin(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path
    ) -> None:
        """--encoding and --format tsv read a Latin-1 export given on standard input."""
        braze_emulator.add_users(2, prefix="caf\u00e9")
        data = "external_id\tnote\ncaf\u00e90\tx\ncaf\u00e91\ty\n".encode("latin-1")
        result = subprocess.run(
            [sys.executable, "-m", "braze_cohorts.cli", "sync", "-", "--format", "tsv",
             "--encoding", "latin-1", "--cohort-id", COHORT, "--name", "N", "--no-progress"],
            input=data, capture_output=True, env=os.environ.copy(), timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert _members(braze_emulator) == {"caf\u00e90", "caf\u00e91"}

    def test_a_file_with_an_unknown_suffix_needs_format(
        self, braze_emulator: BrazeEmulator, env: Path, tmp_path: Path
    ) -> None:
        """--format reads a file whose name does not tell; --delimiter overrides sniffing."""
        braze_emulator.add_users(3, prefix="u")
        src = tmp_path / "export.txt"
        src.write_text("external_id|x\nu0|1\nu1|2\nu2|3\n")
        assert _sync(str(src), "--cohort-id", COHORT, "--name", "N") == 2
        assert _sync(str(src), "--format", "csv", "--delimiter", "|",
                     "--cohort-id", COHORT, "--name", "N") == 0  # fmt: skip
        assert _members(braze_emulator) == {"u0", "u1", "u2"}


class TestQuery:
    def test_a_postgres_query_then_failures_never_empty_the_cohort(
        self,
        pg_url: str,
        braze_emulator: BrazeEmulator,
        env: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """--query against PostgreSQL fills the cohort; a missing variable (exit 2, nothing
        recorded), a failing query (exit 1, recorded as failed) and an empty result (refused)
        leave it as it was."""
        ids = braze_emulator.add_users(120, prefix="u")
        table = _table(pg_url, ids)
        monkeypatch.setenv(
            "WAREHOUSE_URL", pg_url.replace("postgresql://", "postgresql+psycopg://")
        )
        query = f"SELECT user_id FROM {table}"
        base = ["--cohort-id", COHORT, "--name", "From SQL", "--db-url-env", "WAREHOUSE_URL"]
        assert _sync("--query", query, "--external-id-column", "USER_ID", *base) == 0
        assert _members(braze_emulator) == set(ids)
        assert "+120 added" in capsys.readouterr().out

        braze_emulator.reset_log()
        monkeypatch.delenv("WAREHOUSE_URL")
        assert _sync("--query", query, "--external-id-column", "user_id", *base) == 2
        err = capsys.readouterr().err
        assert "WAREHOUSE_URL" in err
        assert "not set" in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert len(_history(capsys)) == 1  # nothing recorded

        monkeypatch.setenv(
            "WAREHOUSE_URL", pg_url.replace("postgresql://", "postgresql+psycopg://")
        )
        failing = f"SELECT user_id FROM {table} WHERE 1 / (length(user_id) - length(user_id)) = 0"
        assert _sync("--query", failing, "--external-id-column", "user_id", *base) == 1
        captured = capsys.readouterr()
        assert "division by zero" in captured.out
        assert "Traceback" not in captured.err
        empty = f"SELECT user_id FROM {table} WHERE false"
        assert _sync("--query", empty, "--external-id-column", "user_id", *base) == 1
        assert "refused" in capsys.readouterr().out
        runs = _history(capsys)
        assert [r["result"] for r in runs] == ["refused", "failed", "succeeded"]
        assert runs[1]["error_kind"] == "SourceError"
        assert not [r for r in braze_emulator.request_log if r.endpoint == "users"]
        assert _members(braze_emulator) == set(ids)

    def test_duckdb_through_a_sqlalchemy_url_and_a_query_file(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """--query-file and a duckdb:/// URL (duckdb-engine) as a separate process."""
        ids = braze_emulator.add_users(50, prefix="d")
        path = tmp_path / "w.duckdb"
        with duckdb.connect(str(path)) as connection:
            connection.execute(
                "CREATE TABLE users AS SELECT 'd' || i AS external_id, i AS n FROM range(50) t(i)"
            )
        sql = tmp_path / "cohort.sql"
        sql.write_text("SELECT external_id FROM users WHERE n % 2 = 0\n")
        environ = {**os.environ, "DUCK_URL": f"duckdb:///{path}"}
        result = subprocess.run(
            [sys.executable, "-m", "braze_cohorts.cli", "sync", "--query-file", str(sql),
             "--db-url-env", "DUCK_URL", "--cohort-id", COHORT, "--name", "Duck",
             "--no-progress"],
            capture_output=True, text=True, env=environ, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert _members(braze_emulator) == set(ids[::2])

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["m.csv", "--query", "SELECT 1", "--db-url-env", "X"], "not both"),
            ([], "give the members"),
            (["--query", "SELECT 1"], "--db-url-env"),
            (["--query", "SELECT 1", "--query-file", "q.sql", "--db-url-env", "X"], "not both"),
            (["--query", "SELECT 1", "--db-url-env", "X", "--format", "csv"], "apply to files"),
            (["m.csv", "--db-url-env", "X"], "goes with --query"),
            (["--query", "SELECT 1", "--db-url-env", "postgresql://u:pw@h/db"], "NAME"),
            (["--query-file", "missing.sql", "--db-url-env", "X"], "cannot read"),
        ],
    )
    def test_source_arguments_are_checked(
        self,
        env: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        args: list[str],
        message: str,
    ) -> None:
        """Exactly one of FILE, --query, --query-file; a query needs a variable's name."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "m.csv").write_text("external_id\nu1\n")
        assert _sync(*args, "--cohort-id", COHORT, "--name", "N") == 2
        err = capsys.readouterr().err
        assert message in err
        assert "pw@" not in err


class TestManyCohorts:
    def test_one_query_feeds_three_cohorts(
        self,
        pg_url: str,
        braze_emulator: BrazeEmulator,
        env: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """--cohort-column: one run per cohort; a vanished cohort is kept unless listed in
        --remove-missing."""
        ids = braze_emulator.add_users(90, prefix="u")
        table = _table(pg_url, ids, cohorts=3)
        monkeypatch.setenv(
            "WAREHOUSE_URL", pg_url.replace("postgresql://", "postgresql+psycopg://")
        )
        sql = (
            f"SELECT user_id AS external_id, 'seg-' || segment AS cohort_id, "
            f"'Segment ' || segment AS cohort_name FROM {table}"
        )
        base = ["--db-url-env", "WAREHOUSE_URL", "--cohort-column", "cohort_id"]
        assert _sync("--query", sql, *base, "--name-column", "cohort_name", "--json") == 0
        runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted((r["cohort_id"], r["name"], r["added"]) for r in runs) == [
            ("seg-0", "Segment 0", 30),
            ("seg-1", "Segment 1", 30),
            ("seg-2", "Segment 2", 30),
        ]
        assert _members(braze_emulator, "seg-1") == set(ids[1::3])

        assert _sync("--query", sql + " WHERE segment <> 2", *base) == 0
        out = capsys.readouterr().out
        assert "2 cohorts imported" in out
        assert _members(braze_emulator, "seg-2") == set(ids[2::3])
        assert (
            _sync("--query", sql + " WHERE segment <> 2", *base, "--remove-missing", "seg-2") == 0
        )
        assert _members(braze_emulator, "seg-2") == set()
        assert _members(braze_emulator, "seg-0") == set(ids[0::3])

    def test_a_csv_file_with_a_cohort_column(
        self,
        braze_emulator: BrazeEmulator,
        env: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A file works too; --cohort-id with --cohort-column is refused."""
        braze_emulator.add_users(4, prefix="u")
        src = tmp_path / "m.csv"
        src.write_text("external_id,cohort\nu0,a\nu1,b\nu2,a\nu3,b\n")
        assert _sync(str(src), "--cohort-column", "cohort", "--cohort-id", "x") == 2
        assert "cannot go with --cohort-column" in capsys.readouterr().err
        assert _sync(str(src), "--cohort") == 2  # an ambiguous abbreviation is refused
        capsys.readouterr()
        assert _sync(str(src), "--cohort-column", "cohort") == 0
        assert _members(braze_emulator, "a") == {"u0", "u2"}
        assert braze_emulator.cohort_name("b") == "b"
