"""The in-memory doubles of braze_cohorts.testing: FakeClient, MemoryStore, SettableClock.

MemoryStore's contract is tested with SQLiteStore's in test_store.py; here are the client's
and the clock's own behaviours, their docs and their examples.
"""

from __future__ import annotations

import datetime as dt
import doctest
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import braze_cohorts.testing as testing
from braze_cohorts import (
    BatchTooLargeError,
    BatchUploader,
    ConfigurationError,
    DeviceId,
    InvalidIdentifierError,
    ServerError,
    TransportError,
    UserAlias,
)
from braze_cohorts.testing import FakeClient, MemoryStore, SettableClock, _doubles
from braze_cohorts.typing import ScheduleStore, StateStore, SyncClient

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parent.parent / "docs"


class TestFakeClient:
    def test_keeps_members_and_records_each_request(self) -> None:
        """Members are kept as canonical keys; each request is one FakeCall, in order."""
        braze = FakeClient()
        braze.name_cohort("c1", "One", created_at=T0)
        braze.update_members("c1", add=["u1", UserAlias("a@x.io", "email"), DeviceId("d")])
        braze.update_members("c1", add=["u2", "u2"], remove=["u1"])
        assert braze.members("c1") == {"e:u2", UserAlias("a@x.io", "email").key, "d:d"}
        assert (braze.name("c1"), braze.created_at("c1")) == ("One", T0)
        assert [c.kind for c in braze.calls] == ["name", "update", "update"]
        assert braze.updates()[1].add == ("e:u2",)
        assert braze.sent() == ({"e:u1", "e:u2", "a:email\x1fa@x.io", "d:d"}, {"e:u1"})
        braze.clear_calls()
        assert braze.calls == []

    def test_refuses_what_the_real_client_refuses_and_records_nothing(self) -> None:
        """More than 1,000 ids, a user both added and removed, a bad id: nothing recorded."""
        braze = FakeClient()
        with pytest.raises(BatchTooLargeError) as info:
            braze.update_members(
                "c1", add=[f"u{n}" for n in range(600)], remove=[f"r{n}" for n in range(401)]
            )
        assert info.value.limit == 1000
        assert braze.update_members("c1", add=[f"u{n}" for n in range(1000)]) is not None
        with pytest.raises(ConfigurationError, match="both in add and in remove"):
            braze.update_members("c1", add=["u1"], remove=["u1"])
        with pytest.raises(InvalidIdentifierError):
            braze.update_members("c1", add=[" padded"])
        with pytest.raises(ConfigurationError):
            braze.name_cohort("c1", " ")
        assert braze.update_members("c1") is None  # nothing to send: no request
        assert len(braze.calls) == 1

    def test_faults_are_queued_per_endpoint_and_used_in_order(self) -> None:
        """fail_next applies nothing; lose_answer_next applies, then raises outcome unknown;
        answer_with_errors_next applies and answers 2XX with the errors."""
        braze = FakeClient()
        braze.fail_next(ServerError("down", status_code=503), on="name")
        braze.pass_next()
        braze.lose_answer_next()
        braze.answer_with_errors_next(["x"])
        with pytest.raises(ServerError):
            braze.name_cohort("c1", "One")
        assert braze.name("c1") is None
        assert braze.name_cohort("c1", "One").status_code == 201
        assert braze.update_members("c1", add=["u1"]) is not None
        with pytest.raises(TransportError) as info:
            braze.update_members("c1", add=["u2"])
        assert info.value.outcome_unknown
        response = braze.update_members("c1", add=["u3"])
        assert response is not None
        assert response.errors == ("x",)
        assert braze.members("c1") == {"e:u1", "e:u2", "e:u3"}
        braze.fail_next(ValueError("never raised"))
        braze.clear_faults()
        assert braze.update_members("c1", remove=["u3"]) is not None
        with pytest.raises(ConfigurationError):
            braze.fail_next(ValueError(), on="users")  # type: ignore[arg-type]

    def test_unknown_users_are_ignored_until_they_exist(self) -> None:
        """With existing_users, others are silently ignored; add_existing creates them."""
        braze = FakeClient(existing_users=["u1"])
        response = braze.update_members("c1", add=["u1", "u2"])
        assert response is not None
        assert response.message == "success"
        assert braze.members("c1") == {"e:u1"}
        braze.add_existing("u2")
        braze.update_members("c1", add=["u2"])
        assert braze.members("c1") == {"e:u1", "e:u2"}
        with pytest.raises(ConfigurationError, match="existing_users"):
            FakeClient().add_existing("u1")

    def test_workspaces_and_out_of_band_edits(self) -> None:
        """Each workspace has its own cohorts; dashboard edits change members, not calls."""
        braze = FakeClient(workspace="ws-a")
        braze.update_members("c1", add=["u1", "u2"])
        braze.edit_out_of_band("c1", remove=["u1"], add=["u9"])
        braze.workspace = "ws-b"
        assert braze.members("c1") == set()
        braze.update_members("c1", add=["u5"])
        assert braze.members("c1", workspace="ws-a") == {"e:u2", "e:u9"}
        assert braze.members("c1") == {"e:u5"}
        assert [c.workspace for c in braze.calls] == ["ws-a", "ws-b"]

    def test_is_thread_safe_under_the_uploader(self) -> None:
        """Many concurrent requests from the uploader's threads lose nothing."""
        braze = FakeClient()
        keys = [f"u{n}" for n in range(5_000)]
        report = BatchUploader(braze, concurrency=8, batch_size=50).upload("c1", add=keys)
        assert report.ok
        assert braze.members("c1") == {f"e:{k}" for k in keys}
        assert len(braze.calls) == 100

    def test_name_without_created_at_uses_the_clock(self) -> None:
        """created_at defaults to the client's clock, as the real client's does."""
        braze = FakeClient(clock=SettableClock(T0))
        braze.name_cohort("c1", "One")
        assert braze.created_at("c1") == T0
        assert braze.namings()[0].created_at is None


class TestSettableClock:
    def test_set_advance_and_tick(self) -> None:
        """The time moves only when told, or by tick after each reading."""
        clock = SettableClock(T0)
        assert clock() == clock() == T0
        assert clock.advance(dt.timedelta(hours=1), minutes=30) == T0 + dt.timedelta(hours=1.5)
        assert clock.set(T0) == T0
        ticking = SettableClock(T0, tick=dt.timedelta(seconds=1))
        assert [ticking(), ticking()] == [T0, T0 + dt.timedelta(seconds=1)]
        assert ticking.now == T0 + dt.timedelta(seconds=2)

    def test_times_are_aware_utc(self) -> None:
        """Naive times are refused; others are kept in UTC."""
        with pytest.raises(ConfigurationError):
            SettableClock(dt.datetime(2026, 1, 1))
        with pytest.raises(ConfigurationError):
            SettableClock().set(dt.datetime(2026, 1, 1))
        with pytest.raises(ConfigurationError):
            SettableClock(tick=dt.timedelta(seconds=-1))
        paris = dt.timezone(dt.timedelta(hours=1))
        assert SettableClock(dt.datetime(2026, 1, 1, 10, tzinfo=paris))().tzinfo == UTC

    def test_concurrent_readers_each_get_their_own_tick(self) -> None:
        """With a tick, concurrent readings are all distinct."""
        clock = SettableClock(T0, tick=dt.timedelta(microseconds=1))
        with ThreadPoolExecutor(4) as pool:
            readings = pool.map(lambda _n: [clock() for _ in range(500)], range(4))
            seen = [now for batch in readings for now in batch]
        assert len(set(seen)) == 2_000


class TestPublicApi:
    def test_the_doubles_satisfy_the_protocols(self) -> None:
        """Typed as the protocols they stand in for (mypy checks the module's own assertions)."""
        client: SyncClient = FakeClient()
        state: StateStore = MemoryStore()
        schedules: ScheduleStore = MemoryStore()
        assert client.update_members("c1") is None
        assert state.member_count("c1") == 0
        assert schedules.list_schedules() == []

    def test_exported_and_sorted(self) -> None:
        """The doubles are public in braze_cohorts.testing."""
        assert {"FakeCall", "FakeClient", "MemoryStore", "SettableClock"} <= set(testing.__all__)
        for name in testing.__all__:
            assert getattr(testing, name) is not None

    def test_docstring_examples_run(self) -> None:
        """The examples in the doubles' docstrings run as shown."""
        result = doctest.testmod(_doubles, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0
        assert result.attempted >= 10

    def test_examples_in_the_testing_page_run(self) -> None:
        """Each test in docs/testing.md's "In-memory doubles" section passes."""
        text = (DOCS / "testing.md").read_text(encoding="utf-8")
        section = text.split("<!-- doubles: begin")[1].split("<!-- doubles: end")[0]
        blocks = re.findall(r"```python\n(.*?)```", section, re.S)
        ran = []
        for block in blocks:
            namespace: dict[str, object] = {}
            exec(compile(block, "docs/testing.md", "exec"), namespace)
            for name, test in namespace.items():
                if name.startswith("test_") and callable(test):
                    test()
                    ran.append(name)
        assert len(ran) >= 3
