"""sync_many: one source with a cohort column feeds one import per cohort."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import braze_cohorts as bc
import braze_cohorts._many as many
from braze_cohorts.testing import BrazeEmulator, FakeClient, MemoryStore
from postgres_server import postgres_server


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _engine() -> tuple[FakeClient, bc.CohortSync]:
    client = FakeClient()
    return client, bc.CohortSync(client, MemoryStore())


def _emulated(emulator: BrazeEmulator, cohort: str) -> set[str]:
    return {ident[1] for ident in emulator.members(cohort)}


class TestSyncMany:
    def test_each_cohort_gets_its_own_run_in_first_seen_order(self) -> None:
        """Interleaved rows of three cohorts become three runs holding their own members."""
        client, sync = _engine()
        rows = [
            {"external_id": f"u{n}", "cohort_id": f"c{n % 3}", "cohort_name": f"Cohort {n % 3}"}
            for n in range(30)
        ]
        runs = bc.sync_many(sync, rows)
        assert [(r.cohort_id, r.name, r.result, r.added) for r in runs] == [
            ("c0", "Cohort 0", "succeeded", 10),
            ("c1", "Cohort 1", "succeeded", 10),
            ("c2", "Cohort 2", "succeeded", 10),
        ]
        assert client.members("c1") == {f"e:u{n}" for n in range(1, 30, 3)}
        assert client.name("c2") == "Cohort 2"

    def test_a_vanished_cohort_is_left_alone_unless_listed(self) -> None:
        """A cohort missing from the next pass keeps its members; remove_missing empties it."""
        client, sync = _engine()
        first = [{"external_id": "a", "cohort_id": "c1"}, {"external_id": "b", "cohort_id": "c2"}]
        bc.sync_many(sync, first)
        runs = bc.sync_many(sync, [{"external_id": "a", "cohort_id": "c1"}])
        assert [r.cohort_id for r in runs] == ["c1"]
        assert client.members("c2") == {"e:b"}
        runs = bc.sync_many(
            sync, [{"external_id": "a", "cohort_id": "c1"}], remove_missing=["c2", "c1"]
        )
        assert [(r.cohort_id, r.result, r.removed) for r in runs] == [
            ("c1", "succeeded", 0),
            ("c2", "succeeded", 1),
        ]
        assert client.members("c2") == frozenset()
        assert client.members("c1") == {"e:a"}

    def test_a_record_without_a_cohort_stops_everything_before_sending(self) -> None:
        """A NULL cohort, a plain id or an unparsable row: InputError, nothing imported."""
        for bad, match in [
            ({"external_id": "x", "cohort_id": None}, "empty"),
            ({"external_id": "x", "cohort_id": 1.5}, "float"),
            ("x", "id_columns"),
            (bc.MalformedRecord(line=3, detail="broken quoting"), "line 3"),
        ]:
            client, sync = _engine()
            rows: list[object] = [{"external_id": "a", "cohort_id": "c1"}, bad]
            with pytest.raises(bc.InputError, match=match):
                bc.sync_many(sync, rows)
            assert client.calls == []

    def test_int_cohort_ids_and_names_by_mapping(self) -> None:
        """An int cohort id is written in decimal; ``names`` names cohorts without a name."""
        client, sync = _engine()
        runs = bc.sync_many(
            sync, [{"external_id": "a", "cohort_id": 7}], name_column=None, names={"7": "Seven"}
        )
        assert (runs[0].cohort_id, runs[0].name) == ("7", "Seven")
        assert client.name("7") == "Seven"

    def test_bad_arguments(self) -> None:
        """A str remove_missing, an empty column name, a non-iterable source are refused."""
        _, sync = _engine()
        with pytest.raises(bc.ConfigurationError):
            bc.sync_many(sync, [], remove_missing="c1")
        with pytest.raises(bc.ConfigurationError):
            bc.sync_many(sync, [], cohort_column="")
        with pytest.raises(bc.ConfigurationError):
            bc.sync_many(sync, 42)

    def test_spills_in_chunks_and_keeps_line_numbers(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """With a tiny spill size the groups are still exact, and a file's line numbers reach
        the rejections."""
        monkeypatch.setattr(many, "SPILL_RECORDS", 3)
        src = tmp_path / "m.csv"
        lines = ["external_id,cohort_id"] + [f"u{n},c{n % 4}" for n in range(40)] + [" pad,c1"]
        src.write_text("\n".join(lines) + "\n")
        client, sync = _engine()
        runs = bc.sync_many(sync, bc.read_records(src), spill_dir=tmp_path)
        by_id = {r.cohort_id: r for r in runs}
        assert {c: by_id[c].added for c in by_id} == {"c0": 10, "c1": 10, "c2": 10, "c3": 10}
        assert by_id["c1"].rejected == {"invalid_external_id": 1}
        assert client.members("c3") == {f"e:u{n}" for n in range(3, 40, 4)}
        assert list(tmp_path.glob("braze-cohorts-many-*")) == []  # the spill files are gone

    @settings(max_examples=40, deadline=None)
    @given(
        rows=st.lists(
            st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 30)), max_size=80
        ),
        spill=st.integers(1, 10),
    )
    def test_every_cohort_holds_exactly_its_rows(
        self, rows: list[tuple[str, int]], spill: int
    ) -> None:
        """For any rows in any order and any spill size, each cohort holds exactly its ids."""
        original = many.SPILL_RECORDS
        many.SPILL_RECORDS = spill
        try:
            client, sync = _engine()
            records = [{"external_id": f"u{n}", "cohort_id": c} for c, n in rows]
            runs = bc.sync_many(sync, records, allow_mass_removal=True)
        finally:
            many.SPILL_RECORDS = original
        expected: dict[str, set[str]] = {}
        for cohort, n in rows:
            expected.setdefault(cohort, set()).add(f"e:u{n}")
        assert [r.cohort_id for r in runs] == list(dict.fromkeys(c for c, _ in rows))
        for cohort, keys in expected.items():
            assert client.members(cohort) == keys


class TestSyncManyEndToEnd:
    def test_a_dataframe_of_three_cohorts(
        self, braze_emulator: BrazeEmulator, braze_client: bc.CohortClient, tmp_path: Path
    ) -> None:
        """A pandas DataFrame with a cohort column feeds three cohorts on the emulator."""
        ids = braze_emulator.add_users(90, prefix="u")
        frame = pd.DataFrame(
            {
                "external_id": ids,
                "cohort_id": [f"c{n % 3}" for n in range(90)],
                "cohort_name": [f"Cohort {n % 3}" for n in range(90)],
            }
        )
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            runs = bc.sync_many(bc.CohortSync(braze_client, store), frame)
        assert [(r.cohort_id, r.result, r.added) for r in runs] == [
            ("c0", "succeeded", 30),
            ("c1", "succeeded", 30),
            ("c2", "succeeded", 30),
        ]
        assert _emulated(braze_emulator, "c2") == set(ids[2::3])
        assert braze_emulator.cohort_name("c1") == "Cohort 1"

    def test_one_postgres_query_feeds_three_cohorts(
        self,
        pg_url: str,
        braze_emulator: BrazeEmulator,
        braze_client: bc.CohortClient,
        tmp_path: Path,
    ) -> None:
        """One warehouse query, three cohorts; the next pass without one cohort leaves it be."""
        ids = braze_emulator.add_users(60, prefix="u")
        table = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_url, autocommit=True) as connection:
            connection.execute(f"CREATE TABLE {table} (user_id TEXT, segment INTEGER)")
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} VALUES (%s, %s)",
                    [(uid, n % 3) for n, uid in enumerate(ids)],
                )
        url = pg_url.replace("postgresql://", "postgresql+psycopg://")
        sql = f"SELECT user_id AS external_id, 'seg-' || segment AS cohort_id FROM {table}"
        keep: tuple[str, ...] = (*bc.IdentifierMatcher().fields, "cohort_id")
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            sync = bc.CohortSync(braze_client, store)
            runs = bc.sync_many(sync, bc.query_records(url, sql, id_columns=keep))
            assert sorted((r.cohort_id, r.added) for r in runs) == [
                ("seg-0", 20),
                ("seg-1", 20),
                ("seg-2", 20),
            ]
            assert _emulated(braze_emulator, "seg-1") == set(ids[1::3])
            braze_emulator.reset_log()
            again = bc.sync_many(
                sync, bc.query_records(url, sql + " WHERE segment < 2", id_columns=keep)
            )
        assert sorted(r.cohort_id for r in again) == ["seg-0", "seg-1"]
        assert all(r.added == r.removed == 0 for r in again)
        assert _emulated(braze_emulator, "seg-2") == set(ids[2::3])  # vanished: untouched
        assert not [r for r in braze_emulator.request_log if r.endpoint == "users"]

    def test_a_query_failing_part_way_imports_no_cohort(
        self,
        pg_url: str,
        braze_emulator: BrazeEmulator,
        braze_client: bc.CohortClient,
        tmp_path: Path,
    ) -> None:
        """The whole source is read before the first import: a late failure sends nothing."""
        braze_emulator.add_users(10, prefix="u")
        sql = (
            "SELECT 'u' || n AS external_id, CASE WHEN n < 8 THEN 'c' || (n % 2) "
            "ELSE (1 / (n - n))::text END AS cohort_id FROM generate_series(0, 9) AS n"
        )
        keep: tuple[str, ...] = (*bc.IdentifierMatcher().fields, "cohort_id")
        url = pg_url.replace("postgresql://", "postgresql+psycopg://")
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            sync = bc.CohortSync(braze_client, store)
            with pytest.raises(bc.SourceError, match="division by zero"):
                bc.sync_many(sync, bc.query_records(url, sql, id_columns=keep, chunk_rows=3))
            assert store.history("c0") == []
        assert not [r for r in braze_emulator.request_log if r.endpoint == "users"]
