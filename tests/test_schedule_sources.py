"""Schedules whose members are a SQL query (re-run at each due time) or a file with read options."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import braze_cohorts as bc
from braze_cohorts._schedule import source_from_text, source_to_text
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator, SettableClock
from postgres_server import postgres_server

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _sa(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _table(pg_url: str, ids: list[str]) -> str:
    table = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (user_id TEXT)")
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} VALUES (%s)", [(u,) for u in ids])
    return table


class RecordingNotifier:
    """Keeps the runs it is told about."""

    def __init__(self) -> None:
        self.sent: list[bc.ImportRun] = []

    def notify_recipients(
        self, run: bc.ImportRun, recipients: Sequence[str], *, paused_reason: str | None = None
    ) -> None:
        self.sent.append(run)


_names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1).filter(
    lambda s: s.strip() != ""
)


class TestStoredSources:
    @given(
        sql=_names,
        env=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
        column=st.none() | _names,
        params=st.none() | st.dictionaries(st.text(min_size=1), st.integers() | st.text()),
    )
    def test_a_query_source_round_trips_through_its_text(
        self, sql: str, env: str, column: str | None, params: dict[str, object] | None
    ) -> None:
        """Any query source comes back equal from the stored text, which holds no URL."""
        source = bc.QuerySource(sql=sql, url_env=env, external_id_column=column, params=params)
        text = source_to_text(source)
        assert text is not None
        assert source_from_text(text) == source

    def test_every_kind_round_trips_through_the_sqlite_store(self, tmp_path: Path) -> None:
        """A path (as before), a FileSource and a QuerySource come back from the store as given;
        an old row holding a plain path still reads."""
        members = tmp_path / "m.txt"
        members.write_text("user_id\nu1\n")
        sources: list[object] = [
            str(tmp_path / "m.csv"),
            bc.FileSource(path=members, format="csv", external_id_column="user_id"),
            bc.QuerySource(sql="SELECT 1", url_env="WAREHOUSE_URL", device_id_column="dev"),
        ]
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            for n, source in enumerate(sources):
                entry = bc.ScheduledImport(
                    cohort_id=f"c{n}",
                    name="N",
                    schedule=bc.Schedule.parse("daily 09:00 UTC"),
                    source=source,  # type: ignore[arg-type]
                )
                store.put_schedule(entry)
                assert store.get_schedule(f"c{n}") == entry
        with sqlite3.connect(tmp_path / "state.db") as raw:
            stored = [row[0] for row in raw.execute("SELECT source FROM schedules ORDER BY 1")]
        assert str(tmp_path / "m.csv") in stored
        query = json.loads(next(s for s in stored if '"query"' in s))
        assert query == {
            "query": {"sql": "SELECT 1", "url_env": "WAREHOUSE_URL", "device_id_column": "dev"}
        }

    def test_a_bad_stored_source_is_a_clear_error(self) -> None:
        """Unknown JSON shapes are refused, naming what is expected."""
        for text in ['{"table": "x"}', "{not json", '{"query": {"sql": "x"}}']:
            with pytest.raises(bc.ConfigurationError):
                source_from_text(text)
        assert source_from_text("/data/{weird}.csv") == "/data/{weird}.csv"

    def test_set_schedule_checks_the_source(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A query whose variable is unset, or a file that cannot be read, is refused at once."""
        monkeypatch.delenv("NOWHERE_URL", raising=False)
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            scheduler = bc.Scheduler(store)
            with pytest.raises(bc.ConfigurationError, match="NOWHERE_URL"):
                scheduler.set_schedule(
                    "c",
                    "N",
                    "daily 09:00 UTC",
                    source=bc.QuerySource(sql="SELECT 1", url_env="NOWHERE_URL"),
                )
            with pytest.raises(bc.InputError):
                scheduler.set_schedule(
                    "c", "N", "daily 09:00 UTC", source=bc.FileSource(path=tmp_path / "no.csv")
                )
            assert scheduler.schedules() == []


class TestFileSource:
    def test_reads_with_its_options_and_round_trips(self, tmp_path: Path) -> None:
        """The options reach read_records; to_dict/from_dict keep only what is set."""
        src = tmp_path / "export.txt"
        src.write_bytes("User;x\ncaf\u00e9;1\n".encode("latin-1"))
        source = bc.FileSource(
            path=src, format="csv", encoding="latin-1", delimiter=";", external_id_column="user"
        )
        assert list(source.records()) == [{"external_id": "caf\u00e9", "x": "1"}]
        assert bc.FileSource.from_dict(source.to_dict()) == source
        assert bc.FileSource(path="rel.csv").path == str(Path("rel.csv").resolve())

    def test_bad_values_are_refused(self, tmp_path: Path) -> None:
        """Standard input, empty options and unknown stored fields are configuration errors."""
        for bad in [{"path": "-"}, {"path": ""}, {"path": "m.csv", "format": ""}]:
            with pytest.raises(bc.ConfigurationError):
                bc.FileSource(**bad)  # type: ignore[arg-type]
        with pytest.raises(bc.ConfigurationError, match="unknown"):
            bc.FileSource.from_dict({"path": "m.csv", "url": "x"})
        with pytest.raises(bc.ConfigurationError, match="needs a path"):
            bc.FileSource.from_dict({"format": "csv"})
        with pytest.raises(bc.InputError):
            bc.FileSource(path=tmp_path / "m.bin").check()


class TestScheduledQuery:
    def test_the_query_is_re_run_at_each_due_time_and_failures_keep_the_cohort(
        self,
        pg_url: str,
        braze_emulator: BrazeEmulator,
        braze_client: bc.CohortClient,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Each due time re-runs the query; an unset variable, a failing query and an empty
        result fail or refuse the run (recorded, announced) and Braze keeps its members."""
        ids = braze_emulator.add_users(40, prefix="u")
        table = _table(pg_url, ids[:30])
        monkeypatch.setenv("WAREHOUSE_URL", _sa(pg_url))
        clock = SettableClock(T0)
        notifier = RecordingNotifier()
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            sync = bc.CohortSync(braze_client, store, clock=clock)
            scheduler = bc.Scheduler(store, sync, notifier=notifier, clock=clock)
            source = bc.QuerySource(
                sql=f"SELECT user_id FROM {table}", url_env="WAREHOUSE_URL",
                external_id_column="user_id",
            )  # fmt: skip
            scheduler.set_schedule("q", "Query", "hourly 00", source=source, recipients=["a@x.io"])

            def due() -> bc.ImportRun:
                clock.advance(hours=1)
                [run] = scheduler.run_due()
                return run

            assert (due().result, _members(braze_emulator)) == ("succeeded", set(ids[:30]))
            with psycopg.connect(pg_url, autocommit=True) as connection:
                connection.execute(f"DELETE FROM {table} WHERE user_id IN ('u0', 'u1')")
                connection.execute(f"INSERT INTO {table} VALUES ('u35')")
            run = due()
            assert (run.result, run.added, run.removed) == ("succeeded", 1, 2)
            assert _members(braze_emulator) == (set(ids[2:30]) | {"u35"})

            braze_emulator.reset_log()
            monkeypatch.delenv("WAREHOUSE_URL")
            missing = due()
            assert missing.result == "failed"
            assert "WAREHOUSE_URL" in (missing.error or "")
            assert "not set" in (missing.error or "")
            monkeypatch.setenv("WAREHOUSE_URL", _sa(pg_url))
            with psycopg.connect(pg_url, autocommit=True) as connection:
                connection.execute(f"ALTER TABLE {table} RENAME COLUMN user_id TO uid")
            broken = due()
            assert (broken.result, broken.error_kind) == ("failed", "SourceError")
            assert "user_id" in (broken.error or "")
            with psycopg.connect(pg_url, autocommit=True) as connection:
                connection.execute(f"ALTER TABLE {table} RENAME COLUMN uid TO user_id")
                connection.execute(f"DELETE FROM {table}")
            empty = due()
            assert empty.result == "refused"
            assert not [r for r in braze_emulator.request_log if r.endpoint == "users"]
            assert _members(braze_emulator) == (set(ids[2:30]) | {"u35"})
            assert [r.result for r in notifier.sent] == [
                "succeeded",
                "succeeded",
                "failed",
                "failed",
                "refused",
            ]
            assert scheduler.get_schedule("q").source == source


def _members(emulator: BrazeEmulator, cohort: str = "q") -> set[str]:
    return {ident[1] for ident in emulator.members(cohort)}


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, braze_emulator: BrazeEmulator
) -> BrazeEmulator:
    """Braze settings and the state path in the environment, pointing at the emulator."""
    monkeypatch.delenv("BRAZE_COHORTS_SMTP_HOST", raising=False)
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze_emulator.url)
    monkeypatch.setenv("BRAZE_PARTNER", braze_emulator.partner)
    monkeypatch.setenv("BRAZE_PARTNER_API_KEY", braze_emulator.partner_api_key)
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", braze_emulator.data_import_key)
    monkeypatch.setenv("BRAZE_COHORTS_STATE", str(tmp_path / "state.db"))
    return braze_emulator


class TestScheduleSetCommand:
    def test_a_query_schedule_is_stored_without_the_url_and_triggered(
        self,
        pg_url: str,
        env: BrazeEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``schedule set --query-file … --db-url-env`` then ``trigger`` imports the rows."""
        ids = env.add_users(10, prefix="u")
        table = _table(pg_url, ids)
        sql = tmp_path / "cohort.sql"
        sql.write_text(f"SELECT user_id AS external_id FROM {table}")
        base = ["schedule", "set", "q", "--name", "Q", "--daily", "09:00"]
        monkeypatch.delenv("WAREHOUSE_URL", raising=False)
        assert main([*base, "--query-file", str(sql), "--db-url-env", "WAREHOUSE_URL"]) == 2
        assert "WAREHOUSE_URL" in capsys.readouterr().err
        monkeypatch.setenv("WAREHOUSE_URL", _sa(pg_url))
        assert main([*base, "--query-file", str(sql), "--db-url-env", "WAREHOUSE_URL"]) == 0
        capsys.readouterr()
        assert main(["schedule", "show", "q", "--json"]) == 0
        shown = capsys.readouterr().out
        assert json.loads(shown)["source"] == {
            "query": {"sql": sql.read_text(), "url_env": "WAREHOUSE_URL"}
        }
        assert "127.0.0.1" not in shown
        assert main(["schedule", "show", "q"]) == 0
        assert "on $WAREHOUSE_URL" in capsys.readouterr().out
        assert main(["trigger", "q"]) == 0
        assert _members(env) == set(ids)

        monkeypatch.delenv("WAREHOUSE_URL")
        capsys.readouterr()
        assert main(["trigger", "q"]) == 1
        captured = capsys.readouterr()
        assert "WAREHOUSE_URL" in captured.out + captured.err
        assert "Traceback" not in captured.err
        assert _members(env) == set(ids)

    def test_a_file_schedule_keeps_its_read_options(
        self, env: BrazeEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--format, --delimiter and a column flag are stored with the file and used at run."""
        env.add_users(3, prefix="u")
        src = tmp_path / "export.txt"
        src.write_text("User|x\nu0|1\nu2|1\n")
        base = ["schedule", "set", "f", "--name", "F", "--daily", "09:00", "--source", str(src)]
        assert main(base) == 2  # no suffix that tells the format
        capsys.readouterr()
        options = ["--format", "csv", "--delimiter", "|", "--external-id-column", "user"]
        assert main([*base, *options]) == 0
        capsys.readouterr()
        assert main(["schedule", "show", "f", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["source"] == {
            "file": {
                "path": str(src),
                "format": "csv",
                "delimiter": "|",
                "external_id_column": "user",
            }
        }
        assert main(["trigger", "f"]) == 0
        assert _members(env, "f") == {"u0", "u2"}

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "give the members"),
            (["--source", "m.csv", "--query", "SELECT 1", "--db-url-env", "X"], "not both"),
            (["--query", "SELECT 1"], "--db-url-env"),
        ],
    )
    def test_exactly_one_source(
        self,
        env: BrazeEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        args: list[str],
        message: str,
    ) -> None:
        """--source, --query or --query-file: exactly one."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("X", "sqlite://")
        (tmp_path / "m.csv").write_text("external_id\nu1\n")
        assert main(["schedule", "set", "c", "--name", "N", "--daily", "09:00", *args]) == 2
        assert message in capsys.readouterr().err
