"""BatchUploader with a real CohortClient against the Braze emulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from braze_cohorts import (
    AuthenticationError,
    BatchUploader,
    CircuitOpenError,
    CohortClient,
    CohortSync,
    DeadlineExceededError,
    DeviceId,
    ExternalId,
    InvalidRequestError,
    RetryPolicy,
    ServerError,
    SQLiteStore,
    TransportError,
    UnexpectedResponseError,
    UploadProgress,
    UserAlias,
)
from braze_cohorts.testing import BrazeEmulator, RequestRecord
from helpers import emulator_client

#: Retries that wait (almost) nothing of their own, so the server's waits are what shows.
QUICK_RETRY = RetryPolicy(attempts=4, initial_backoff=0.001, max_backoff=0.001, jitter="none")
#: A limit so high that pacing never waits noticeably.
NO_LIMIT = 1e9


def timed_uploader(
    client: CohortClient, fake_time: Any, retry: RetryPolicy = QUICK_RETRY, **options: Any
) -> BatchUploader:
    """One request at a time, no rate limit, ``retry`` waits on ``fake_time`` (no real sleep).

    ``options`` override any of those settings or add others (e.g. ``breaker=None``).
    """
    settings: dict[str, Any] = {
        "concurrency": 1,
        "requests_per_hour": NO_LIMIT,
        "retry": retry,
        "clock": fake_time,
        "sleep": fake_time.sleep,
        "wall_clock": fake_time,
    }
    return BatchUploader(client, **{**settings, **options})


@contextmanager
def served(
    fake_time: Any = None, *, timeout: Any = None, **emulator_options: Any
) -> Iterator[tuple[BrazeEmulator, CohortClient]]:
    """A running emulator and a client of it, both on ``fake_time`` when it is given."""
    clocked = {} if fake_time is None else {"clock": fake_time}
    client_options = {**clocked, **({} if timeout is None else {"timeout": timeout})}
    with (
        BrazeEmulator(**clocked, **emulator_options) as emulator,
        emulator_client(emulator, **client_options) as client,
    ):
        yield emulator, client


def user_requests(emulator: BrazeEmulator) -> list[RequestRecord]:
    return [r for r in emulator.request_log if r.endpoint == "users"]


def max_in_window(times: list[float], window: float) -> int:
    """The most requests whose times fall in any half-open window ``(t - window, t]``."""
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class TestUpload:
    def test_large_upload_converges_in_capped_requests(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """5,500 adds then 2,000 removes from generators: exact membership, <= 1,000 ids each."""
        emulator.add_users(5_500, prefix="u")
        uploader = BatchUploader(client, concurrency=4, requests_per_hour=NO_LIMIT)
        report = uploader.upload("c1", add=(f"u{i}" for i in range(5_500)))
        assert (report.ok, report.added, report.requests) == (True, 5_500, 6)
        report = uploader.upload("c1", remove=(ExternalId(f"u{i}") for i in range(0, 4_000, 2)))
        assert (report.ok, report.removed, report.requests) == (True, 2_000, 2)
        expected = {("external_id", f"u{i}") for i in range(5_500) if i >= 4_000 or i % 2}
        assert emulator.members("c1") == expected
        records = user_requests(emulator)
        assert all(r.status == 200 and r.ids <= 1_000 for r in records)
        assert sum(r.ids for r in records) == 7_500

    def test_mixed_adds_and_removes_share_requests(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """Adds and removes together stay under the cap and apply correctly."""
        emulator.add_users(1_500, prefix="u")
        uploader = BatchUploader(client, concurrency=2, requests_per_hour=NO_LIMIT)
        uploader.upload("c1", add=[f"u{i}" for i in range(1_000, 1_500)])
        report = uploader.upload(
            "c1", add=[f"u{i}" for i in range(1_000)], remove=[f"u{i}" for i in range(1_000, 1_300)]
        )
        assert report.ok
        assert emulator.members("c1") == {
            ("external_id", f"u{i}") for i in [*range(1_000), *range(1_300, 1_500)]
        }
        assert all(r.ids <= 1_000 for r in user_requests(emulator))

    def test_identity_rules(self, client: CohortClient, emulator: BrazeEmulator) -> None:
        """Anonymous device ids and aliases join; identified users' device ids, unknowns do not."""
        emulator.add_user("u1", device_ids=["dev-of-u1"])
        emulator.add_user(device_ids=["anon-1"])
        emulator.add_user(aliases=[("a@x.io", "email")])
        uploader = BatchUploader(client, concurrency=1, requests_per_hour=NO_LIMIT)
        report = uploader.upload(
            "c1",
            add=[DeviceId("dev-of-u1"), DeviceId("anon-1"), UserAlias("a@x.io", "email"), "ghost"],
        )
        assert report.added == 4  # what was sent and acknowledged, not what Braze matched
        assert emulator.members("c1") == {("device_id", "anon-1"), ("alias", "a@x.io", "email")}

    def test_warnings_from_successful_answers(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """``errors`` on a 200 end up in the report's warnings."""
        emulator.succeed_with_errors_next(1, errors=["odd"])
        report = BatchUploader(client, requests_per_hour=NO_LIMIT).upload("c1", add=["u1"])
        assert report.ok
        assert report.warnings == ("odd",)

    def test_keys_only_in_bodies_during_a_concurrent_upload(self) -> None:
        """Across a concurrent upload no key shows in any request line or header."""
        with served(record_raw=True) as (emulator, client):
            BatchUploader(client, concurrency=4, requests_per_hour=NO_LIMIT).upload(
                "c1", add=(f"u{i}" for i in range(3_500))
            )
            raw = emulator.raw_requests
        assert len(raw) == 4
        for line, headers in raw:
            for key in (emulator.partner_api_key, emulator.data_import_key):
                assert key.encode() not in line + headers
        assert not any(r.key_outside_body for r in emulator.request_log)


class TestRetries:
    def test_429_waits_what_the_server_says(self, fake_time: Any) -> None:
        """Two 429s with Retry-After: 3 mean two waits of 3 s, then success."""
        with served(fake_time) as (emulator, client):
            emulator.add_user("u1")
            emulator.fail_next(2, 429, retry_after=3)
            uploader = timed_uploader(client, fake_time)
            report = uploader.upload("c1", add=["u1"])
            assert emulator.members("c1") == {("external_id", "u1")}
        assert (report.ok, report.requests, report.retries) == (True, 3, 2)
        assert [w for w in fake_time.sleeps if w >= 0.5] == [3, 3]

    def test_429_with_only_a_reset_header(self, fake_time: Any) -> None:
        """Without Retry-After the wait comes from X-RateLimit-Reset."""
        with served(fake_time) as (emulator, client):
            emulator.fail_next(1, 429, retry_after=5, headers={"Retry-After": None})
            uploader = timed_uploader(client, fake_time)
            report = uploader.upload("c1", add=["u1"])
        assert report.ok
        long_waits = [w for w in fake_time.sleeps if w >= 0.5]
        assert len(long_waits) >= 1
        assert all(5 <= w <= 6 for w in long_waits)

    def test_5xx_and_423_are_retried_with_capped_backoff(self, fake_time: Any) -> None:
        """Server errors and locks are retried with exponential backoff capped by the policy."""
        policy = RetryPolicy(attempts=5, initial_backoff=1, max_backoff=2, jitter="none")
        with served() as (emulator, client):
            emulator.add_user("u1")
            emulator.fail_next(1, 503)
            emulator.fail_next(1, 423)
            emulator.fail_next(1, 500)
            uploader = timed_uploader(client, fake_time, policy)
            report = uploader.upload("c1", add=["u1"])
            assert emulator.members("c1") == {("external_id", "u1")}
            statuses = [r.status for r in emulator.request_log]
        assert statuses == [503, 423, 500, 200]
        assert (report.requests, report.retries) == (4, 3)
        assert [w for w in fake_time.sleeps if w >= 0.5] == [1, 2, 2]

    def test_400_is_never_retried(
        self, client: CohortClient, emulator: BrazeEmulator, fake_time: Any
    ) -> None:
        """A 400 fails its batch at once and the other batches still go."""
        emulator.add_users(1_500, prefix="u")
        emulator.fail_next(1, 400, body={"message": "cohort_changes has the wrong shape"})
        uploader = timed_uploader(client, fake_time)
        report = uploader.upload("c1", add=[f"u{i}" for i in range(1_500)])
        assert (report.requests, report.retries) == (2, 0)
        [failed] = report.failed_batches
        assert isinstance(failed.error, InvalidRequestError)
        assert not failed.outcome_unknown
        assert len(failed.batch) == 1_000
        assert len(emulator.members("c1")) == 500

    def test_401_stops_the_upload(self, client: CohortClient, emulator: BrazeEmulator) -> None:
        """A revoked key stops everything: no retries, no new requests, the error is raised."""
        emulator.revoke_data_import_key(emulator.data_import_key)
        uploader = BatchUploader(
            client, concurrency=2, requests_per_hour=NO_LIMIT, retry=QUICK_RETRY
        )
        with pytest.raises(AuthenticationError) as info:
            uploader.upload("c1", add=(f"u{i}" for i in range(20_000)))
        assert info.value.cause == "data_import_key"
        records = emulator.request_log
        assert 1 <= len(records) <= 2
        assert all(r.status == 401 for r in records)

    def test_dropped_connection_after_apply_is_retried(
        self, client: CohortClient, emulator: BrazeEmulator, fake_time: Any
    ) -> None:
        """A change applied but never acknowledged is sent again and acknowledged."""
        emulator.add_user("u1")
        emulator.drop_next(1, when="after_apply")
        uploader = timed_uploader(client, fake_time)
        report = uploader.upload("c1", add=["u1"])
        assert (report.ok, report.retries) == (True, 1)
        assert [r.fault for r in emulator.request_log] == ["drop_after_apply", None]
        assert emulator.members("c1") == {("external_id", "u1")}

    @pytest.mark.parametrize("when", ["before_apply", "after_apply"])
    def test_exhausted_retries_report_outcome_unknown(
        self, client: CohortClient, emulator: BrazeEmulator, fake_time: Any, when: str
    ) -> None:
        """When every attempt is dropped the batch fails as outcome-unknown, whatever happened."""
        emulator.add_user("u1")
        emulator.drop_next(2, when=when)  # type: ignore[arg-type]
        policy = RetryPolicy(attempts=2, initial_backoff=0.001, max_backoff=0.001, jitter="none")
        uploader = timed_uploader(client, fake_time, policy)
        report = uploader.upload("c1", add=["u1"])
        [failed] = report.failed_batches
        assert isinstance(failed.error, TransportError)
        assert failed.outcome_unknown
        applied = when == "after_apply"
        assert ("c1" in emulator.cohorts()) is applied
        if applied:
            assert emulator.members("c1") == {("external_id", "u1")}

    def test_redirect_is_refused_not_followed_nor_retried(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A 307 fails the batch without retry, and the target never hears of it."""
        with BrazeEmulator(record_raw=True) as target:
            emulator.redirect_next(1, target.url + "/partners/kubit/cohorts/users")
            report = BatchUploader(client, requests_per_hour=NO_LIMIT, retry=QUICK_RETRY).upload(
                "c1", add=["u1"]
            )
            assert target.raw_requests == []
        [failed] = report.failed_batches
        assert isinstance(failed.error, UnexpectedResponseError)
        assert report.requests == 1


class TestRateLimitPacing:
    def make_uploader(
        self, client: CohortClient, fake_time: Any, requests_per_hour: float
    ) -> BatchUploader:
        return timed_uploader(client, fake_time, requests_per_hour=requests_per_hour, batch_size=10)

    def test_zero_429s_when_the_limits_match(self, fake_time: Any) -> None:
        """Client and server both at 20 requests/hour: 60 requests over 3 hours, never a 429."""
        with served(fake_time, requests_per_hour=20) as (emulator, client):
            report = self.make_uploader(client, fake_time, 20).upload(
                "c1", add=(f"u{i}" for i in range(600))
            )
            records = emulator.request_log
        assert (report.ok, report.requests, report.retries) == (True, 60, 0)
        assert all(r.status == 200 for r in records)
        times = [r.received_at for r in records]
        assert max_in_window(times, 3600) <= 20
        achieved = (len(times) - 1) * 3600 / (times[-1] - times[0])
        assert 0.95 * 20 <= achieved <= 20

    def test_server_headers_pause_a_client_set_too_high(self, fake_time: Any) -> None:
        """A client allowed twice the server's rate gets no 429: X-RateLimit-Remaining pauses it."""
        with served(fake_time, requests_per_hour=20, rate_limit_window=60) as (emulator, client):
            report = self.make_uploader(client, fake_time, 2 * 20 * 60).upload(
                "c1", add=(f"u{i}" for i in range(600))
            )
            records = emulator.request_log
        assert report.ok
        assert [r.status for r in records] == [200] * 60
        assert max_in_window([r.received_at for r in records], 60) <= 20

    def test_a_client_without_pacing_would_be_refused(self, fake_time: Any) -> None:
        """Control: the same server refuses a burst, so the tests above can fail."""
        with served(fake_time, requests_per_hour=20) as (emulator, client):
            for i in range(21):
                try:
                    client.update_members("c1", add=[f"u{i}"])
                except Exception:
                    continue
            statuses = [r.status for r in emulator.request_log]
        assert statuses == [200] * 20 + [429]


#: A Braze that never answers: every request waits for the client's read timeout.
HANG = 3_600.0
#: The client's timeouts against a hanging Braze: connect 2 s, read 0.2 s.
SHORT_TIMEOUT = (2.0, 0.2)


class TestStoppingEarly:
    def test_a_braze_answering_503_is_given_up_on_after_a_few_requests(
        self, client: CohortClient, emulator: BrazeEmulator, fake_time: Any
    ) -> None:
        """All-503 over HTTP: the breaker stops after three failed batches; the rest is reported."""
        emulator.fail_next(10**6, 503, path="/cohorts/users")
        uploader = timed_uploader(client, fake_time, concurrency=4)
        report = uploader.upload("c1", add=(f"u{i}" for i in range(20_000)))
        assert report.stopped_reason == "circuit_open"
        records = user_requests(emulator)
        assert len(records) == report.requests
        assert all(r.status == 503 for r in records)
        # Three failed batches, and at most the batches in flight or queued beside them.
        assert report.requests <= (3 + 2 * 4) * QUICK_RETRY.attempts
        assert sum(len(f.batch) for f in report.failed_batches) == 20_000
        unsent = [f for f in report.failed_batches if isinstance(f.error, CircuitOpenError)]
        sent = [f for f in report.failed_batches if isinstance(f.error, ServerError)]
        assert len(unsent) + len(sent) == 20
        assert len(unsent) >= 20 - 3 - 2 * 4
        assert all(f.outcome_unknown for f in sent)
        assert "c1" not in emulator.cohorts()

        # Control: without the breaker the same upload tries every batch to the end.
        emulator.reset_log()
        unbroken = timed_uploader(client, fake_time, concurrency=4, breaker=None).upload(
            "c1", add=(f"u{i}" for i in range(20_000))
        )
        assert unbroken.stopped_reason is None
        assert len(user_requests(emulator)) == 20 * QUICK_RETRY.attempts

    def test_a_hanging_braze_is_left_at_the_deadline(self, fake_time: Any) -> None:
        """Against a Braze that never answers, nothing starts after the deadline."""
        with served(timeout=SHORT_TIMEOUT, latency=HANG, record_raw=True) as (emulator, client):
            uploader = BatchUploader(
                client,
                concurrency=2,
                requests_per_hour=NO_LIMIT,
                retry=QUICK_RETRY,
                sleep=fake_time.sleep,  # backoffs cost nothing; the deadline is real time
                deadline=1.0,
                breaker=None,
            )
            report = uploader.upload("c1", add=(f"u{i}" for i in range(50_000)))
            received = emulator.raw_requests  # logged on arrival: none is ever answered
            assert emulator.cohorts() == {}
        assert report.stopped_reason == "deadline"
        assert len(received) == report.requests
        # Every attempt waits at least its 0.2 s read timeout, two at a time, for 1 s.
        assert report.requests <= 2 * (1.0 / 0.2 + 1)
        assert len(report.failed_batches) == 50
        timed_out = [f for f in report.failed_batches if isinstance(f.error, TransportError)]
        assert all(f.outcome_unknown for f in timed_out)
        unsent = [f for f in report.failed_batches if isinstance(f.error, DeadlineExceededError)]
        assert len(timed_out) + len(unsent) == 50
        assert all(not f.outcome_unknown for f in unsent)

    def test_a_hanging_braze_trips_the_default_breaker(self, fake_time: Any) -> None:
        """With no deadline, timeouts count as an outage and the default breaker stops it."""
        with served(timeout=SHORT_TIMEOUT, latency=HANG, record_raw=True) as (emulator, client):
            uploader = timed_uploader(client, fake_time, concurrency=2)
            report = uploader.upload("c1", add=(f"u{i}" for i in range(50_000)))
            assert len(emulator.raw_requests) == report.requests
        assert report.stopped_reason == "circuit_open"
        assert report.requests <= (3 + 2 * 2) * QUICK_RETRY.attempts
        assert len(report.failed_batches) == 50
        error = report.failed_batches[-1].error
        assert isinstance(error, CircuitOpenError)
        assert error.rule == "consecutive_failures"
        assert isinstance(error.last_error, TransportError)

    def test_a_sync_stopped_by_the_breaker_converges_at_the_next_run(
        self, tmp_path: Path, fake_time: Any
    ) -> None:
        """A sync cut short by an outage leaves its ids uncertain; the next run is exact."""
        with served() as (emulator, client), SQLiteStore(tmp_path / "state.db") as store:
            emulator.add_users(10_000, prefix="u")
            uploader = timed_uploader(client, fake_time)
            sync = CohortSync(client, store, uploader=uploader)
            first = [f"u{i}" for i in range(6_000)]
            assert sync.sync("c1", "Power users", first).result == "succeeded"

            # 4,000 enter and 3,000 leave: seven requests. Braze acknowledges the first, applies
            # the second but its answer is lost, then answers 503 to everything.
            emulator.reset_log()
            emulator.succeed_with_errors_next(1, errors=(), path="/cohorts/users")
            emulator.drop_next(1, when="after_apply", path="/cohorts/users")
            emulator.fail_next(10**6, 503, path="/cohorts/users")
            second = [f"u{i}" for i in range(3_000, 10_000)]
            progress: list[UploadProgress] = []
            run = sync.sync("c1", "Power users", second, progress=progress.append)
            assert run.result == "failed"
            # The run names what stopped it, not the first 503, and says which batches went unsent.
            assert run.error_kind == "CircuitOpenError"
            assert (run.error or "").startswith("the upload stopped early (circuit_open: ")
            assert "3 batch(es) were not sent" in (run.error or "")
            # 1 + 4 + 4 + 4 requests: batches 2 to 4 failed in a row, 5 to 7 were never sent.
            assert len(user_requests(emulator)) == run.requests == 13
            assert progress[-1].batches_failed == 6
            records = user_requests(emulator)
            assert [r.fault for r in records[:3]] == ["errors", "drop_after_apply", "fail"]
            # Braze holds the first membership plus both applied requests' adds: the second one's
            # outcome is unknown to the library, and no removal was ever sent.
            held = emulator.members("c1")
            before = {("external_id", x) for x in first}
            entering = {("external_id", f"u{i}") for i in range(6_000, 10_000)}
            assert before <= held
            assert len(held - before) == 2_000
            assert held - before <= entering

            # Braze recovers; membership changed again meanwhile.
            emulator.clear_faults()
            third = [f"u{i}" for i in [*range(1_000, 4_000), *range(9_500, 10_000)]]
            # (More than half of what Braze may hold leaves: the removal guard must be told.)
            run = sync.sync("c1", "Power users", third, allow_mass_removal=True)
            assert run.result == "succeeded"
            assert emulator.members("c1") == {("external_id", x) for x in third}
