"""BatchUploader: packing, retries, rate limiting, stopping and hooks, against a fake client."""

from __future__ import annotations

import itertools
import logging
import threading
import tracemalloc
from collections.abc import Callable, Iterable, Iterator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from braze_cohorts._identifiers import DeviceId, ExternalId, UserAlias, UserRef, as_ref, key_of
from braze_cohorts._models import Batch, CohortResponse, FailedBatch, RateLimitInfo
from braze_cohorts._uploader import (
    DEFAULT_BREAKER,
    DEFAULT_RETRY,
    BatchUploader,
    BreakerPolicy,
    RateLimiter,
    RetryPolicy,
    UploadProgress,
)
from braze_cohorts.exceptions import (
    AuthenticationError,
    BrazeCohortsError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    InputError,
    InvalidIdentifierError,
    InvalidRequestError,
    RateLimitedError,
    ResourceLockedError,
    ServerError,
    TransportError,
)
from doc_examples import run_doc_examples

# A rate so high that pacing never matters, for tests about something else.
UNLIMITED = 1e12
# Retries without jitter, so the waits are exact.
EXACT = RetryPolicy(attempts=6, initial_backoff=0.5, max_backoff=30.0, jitter="none")

Call = tuple[str, tuple[UserRef, ...], tuple[UserRef, ...]]
Behaviour = Callable[[int, Call], "CohortResponse | BaseException | None"]


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep (thread-safe)."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self.now = start
        self.wall_offset = wall - start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        with self._lock:
            return self.now

    def wall_clock(self) -> float:
        with self._lock:
            return self.now + self.wall_offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(seconds, 0.0)

    def waits(self) -> list[float]:
        """Sleeps longer than the pacing of an UNLIMITED rate limiter."""
        return [s for s in self.sleeps if s > 1e-6]


class FakeClient:
    """Records every call; ``behaviour(n, call)`` may return a response or an error to raise."""

    def __init__(self, behaviour: Behaviour | None = None, time: FakeTime | None = None) -> None:
        self._lock = threading.Lock()
        self.behaviour = behaviour
        self.time = time
        self.calls: list[Call] = []
        self.call_times: list[float] = []
        self.acknowledged: list[Call] = []

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        call = (cohort_id, tuple(map(as_ref, add)), tuple(map(as_ref, remove)))
        if len(call[1]) + len(call[2]) > 1000:
            raise ValueError("more than 1,000 ids")
        with self._lock:
            n = len(self.calls)
            self.calls.append(call)
            if self.time is not None:
                self.call_times.append(self.time.clock())
        result = self.behaviour(n, call) if self.behaviour else None
        if isinstance(result, BaseException):
            raise result
        response = result or CohortResponse(status_code=201, message="success")
        with self._lock:
            self.acknowledged.append(call)
        return response


class NullClient:
    """Acknowledges everything and keeps nothing."""

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        return CohortResponse(status_code=201, message="success")


def script(*results: CohortResponse | BaseException | None) -> Behaviour:
    """Answer the n-th call with ``results[n]`` (success once they run out)."""

    def behaviour(n: int, _call: Call) -> CohortResponse | BaseException | None:
        return results[n] if n < len(results) else None

    return behaviour


def make(
    client: FakeClient,
    time: FakeTime,
    *,
    retry: RetryPolicy = EXACT,
    concurrency: int = 1,
    requests_per_hour: float = UNLIMITED,
    batch_size: int = 1000,
    deadline: float | None = None,
    breaker: BreakerPolicy | None = DEFAULT_BREAKER,
) -> BatchUploader:
    return BatchUploader(
        client,
        concurrency=concurrency,
        requests_per_hour=requests_per_hour,
        retry=retry,
        batch_size=batch_size,
        clock=time.clock,
        sleep=time.sleep,
        wall_clock=time.wall_clock,
        deadline=deadline,
        breaker=breaker,
    )


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


class Recorder:
    """Collects hook calls and the threads they came from."""

    def __init__(self) -> None:
        self.done: list[tuple[Batch, CohortResponse | None]] = []
        self.failed: list[FailedBatch] = []
        self.progress: list[UploadProgress] = []
        self.threads: set[int] = set()

    def on_batch_done(self, batch: Batch, response: CohortResponse | None) -> None:
        self.threads.add(threading.get_ident())
        self.done.append((batch, response))

    def on_batch_failed(self, failed: FailedBatch) -> None:
        self.threads.add(threading.get_ident())
        self.failed.append(failed)

    def on_progress(self, info: UploadProgress) -> None:
        self.threads.add(threading.get_ident())
        self.progress.append(info)

    def hooks(self) -> dict[str, object]:
        return {
            "on_batch_done": self.on_batch_done,
            "on_batch_failed": self.on_batch_failed,
            "progress": self.on_progress,
        }


class TestRetryPolicy:
    def test_defaults(self) -> None:
        """The default policy retries six times in all, from 0.5 s up to 30 s, for 300 s at most."""
        assert RetryPolicy() == DEFAULT_RETRY
        assert (DEFAULT_RETRY.attempts, DEFAULT_RETRY.initial_backoff) == (6, 0.5)
        assert (DEFAULT_RETRY.max_backoff, DEFAULT_RETRY.max_elapsed) == (30.0, 300.0)
        assert DEFAULT_RETRY.jitter == "full"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"attempts": 0},
            {"attempts": 1.5},
            {"initial_backoff": -1},
            {"max_backoff": float("inf")},
            {"initial_backoff": 5, "max_backoff": 1},
            {"jitter": "some"},
            {"max_elapsed": -0.1},
            {"max_server_wait": "10"},
        ],
    )
    def test_invalid_values_are_refused(self, kwargs: dict[str, object]) -> None:
        """Out-of-range values raise ConfigurationError, which is also a ValueError."""
        with pytest.raises(ConfigurationError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]
        assert issubclass(ConfigurationError, ValueError)

    def test_backoff_doubles_up_to_the_cap(self) -> None:
        """Without jitter the backoff doubles per attempt and stops at max_backoff."""
        policy = RetryPolicy(initial_backoff=0.5, max_backoff=3.0, jitter="none")
        assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]

    @settings(max_examples=200, deadline=None)
    @given(
        attempt=st.integers(min_value=1, max_value=200),
        jitter=st.sampled_from(["full", "equal"]),
        initial=st.floats(min_value=0, max_value=10),
        extra=st.floats(min_value=0, max_value=100),
    )
    def test_jittered_backoff_stays_within_bounds(
        self, attempt: int, jitter: str, initial: float, extra: float
    ) -> None:
        """Jittered backoff never exceeds the cap, and equal jitter keeps at least half of it."""
        policy = RetryPolicy(initial_backoff=initial, max_backoff=initial + extra, jitter=jitter)  # type: ignore[arg-type]
        ceiling = min(policy.max_backoff, initial * 2.0 ** min(attempt - 1, 64))
        value = policy.backoff(attempt)
        assert 0 <= value <= policy.max_backoff
        if jitter == "equal":
            assert ceiling / 2 <= value <= ceiling
        else:
            assert value <= ceiling

    def test_jitter_uses_the_given_random_source(self) -> None:
        """Full jitter draws from [0, backoff] with the injected source."""
        policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, jitter="full")
        assert policy.backoff(3, uniform=lambda lo, hi: hi) == 4.0
        assert policy.backoff(3, uniform=lambda lo, hi: lo) == 0.0


class TestUploaderOptions:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"concurrency": 0},
            {"concurrency": True},
            {"requests_per_hour": 0},
            {"requests_per_hour": float("inf")},
            {"batch_size": 1001},
            {"batch_size": 0},
            {"retry": 3},
            {"deadline": 0},
            {"deadline": -5},
            {"deadline": float("inf")},
            {"deadline": True},
            {"deadline": "60"},
            {"breaker": 3},
        ],
    )
    def test_invalid_options_are_refused(self, kwargs: dict[str, object]) -> None:
        """Bad options fail at construction with ConfigurationError."""
        with pytest.raises(ConfigurationError):
            BatchUploader(FakeClient(), **kwargs)  # type: ignore[arg-type]

    def test_repr_shows_the_options(self) -> None:
        """The repr names concurrency and the rate, and nothing of the client."""
        text = repr(BatchUploader(FakeClient(), concurrency=3, requests_per_hour=100))
        assert "concurrency=3" in text
        assert "requests_per_hour=100" in text


mixed_ref = st.one_of(
    st.builds(ExternalId, st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)),
    st.builds(
        UserAlias,
        alias_name=st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
        alias_label=st.sampled_from(["email", "phone"]),
    ),
    st.builds(DeviceId, st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)),
    st.from_regex(r"[A-Z0-9]{1,6}", fullmatch=True),
)


class TestPacking:
    @settings(max_examples=60, deadline=None)
    @given(
        users=st.lists(mixed_ref, max_size=120, unique_by=lambda r: as_ref(r).key),
        split=st.data(),
        batch_size=st.integers(min_value=1, max_value=40),
        concurrency=st.integers(min_value=1, max_value=4),
    )
    def test_every_id_goes_out_exactly_once(
        self,
        users: list[UserRef | str],
        split: st.DataObject,
        batch_size: int,
        concurrency: int,
    ) -> None:
        """Disjoint adds and removes go out once each, in the right direction, in small requests."""
        flags = split.draw(st.lists(st.booleans(), min_size=len(users), max_size=len(users)))
        add = [u for u, f in zip(users, flags, strict=True) if f]
        remove = [u for u, f in zip(users, flags, strict=True) if not f]
        time = FakeTime()
        client = FakeClient(time=time)
        rec = Recorder()
        uploader = make(client, time, concurrency=concurrency, batch_size=batch_size)
        report = uploader.upload("c1", add=iter(add), remove=iter(remove), **rec.hooks())  # type: ignore[arg-type]

        sent_add = [key_of(r) for _, a, _ in client.calls for r in a]
        sent_remove = [key_of(r) for _, _, r_ in client.calls for r in r_]
        assert sorted(sent_add) == sorted(as_ref(u).key for u in add)
        assert sorted(sent_remove) == sorted(as_ref(u).key for u in remove)
        for _, a, r in client.calls:
            assert 0 < len(a) + len(r) <= batch_size
            assert not set(map(key_of, a)) & set(map(key_of, r))
        # The hooks saw exactly the acknowledged batches.
        hooked = sorted(key_of(ref) for batch, _ in rec.done for ref in (*batch.add, *batch.remove))
        assert hooked == sorted(as_ref(u).key for u in users)
        assert (report.added, report.removed) == (len(add), len(remove))
        assert report.requests == len(client.calls) == len(rec.done)
        assert report.retries == 0
        assert report.ok

    def test_full_size_requests_hold_a_thousand_ids(self) -> None:
        """2,500 adds and 600 removes make four requests, the third carrying both kinds."""
        time = FakeTime()
        client = FakeClient(time=time)
        report = make(client, time).upload("c1", add=ids("a", 2500), remove=ids("r", 600))
        sizes = [(len(a), len(r)) for _, a, r in client.calls]
        assert sizes == [(1000, 0), (1000, 0), (500, 500), (0, 100)]
        assert report.requests == 4

    def test_strings_are_sent_as_external_ids(self) -> None:
        """A plain str means an external id; identifiers pass through unchanged."""
        time = FakeTime()
        client = FakeClient(time=time)
        alias = UserAlias(alias_name="a@x.io", alias_label="email")
        make(client, time).upload("c1", add=["u1", alias], remove=[DeviceId("d1")])
        assert client.calls == [("c1", (ExternalId("u1"), alias), (DeviceId("d1"),))]

    def test_nothing_to_send_sends_nothing(self) -> None:
        """Empty inputs make no request and an empty, successful report."""
        time = FakeTime()
        client = FakeClient(time=time)
        report = make(client, time).upload("c1")
        assert client.calls == []
        assert report.requests == 0
        assert report.ok

    def test_same_user_added_and_removed_in_one_request_is_refused(self) -> None:
        """A user both added and removed in one request stops the upload before it is sent."""
        time = FakeTime()
        client = FakeClient(time=time)
        uploader = make(client, time, batch_size=10)
        with pytest.raises(InputError, match="both added and removed"):
            uploader.upload("c1", add=[*ids("a", 15), "x"], remove=["y", "x"])
        # The first full batch of adds went out; the mixed batch with "x" in both did not.
        assert [len(a) + len(r) for _, a, r in client.calls] == [10]

    def test_invalid_identifier_stops_before_its_batch(self) -> None:
        """An invalid item raises InvalidIdentifierError; its batch is not sent, earlier ones go."""
        time = FakeTime()
        client = FakeClient(time=time)
        rec = Recorder()
        uploader = make(client, time, batch_size=10)
        with pytest.raises(InvalidIdentifierError, match="in add, among items 21 to 30"):
            uploader.upload("c1", add=[*ids("a", 25), " padded ", "z"], **rec.hooks())  # type: ignore[arg-type]
        assert len(client.calls) == 2
        assert len(rec.done) == 2

    def test_unauthorized_wins_over_a_later_bad_item(self) -> None:
        """When a 401 and an invalid item both end an upload, the 401 is what is raised."""
        time = FakeTime()
        gate = threading.Event()

        def behaviour(n: int, call: Call) -> BaseException | None:
            assert gate.wait(timeout=10)  # answer only once the bad item has been read
            return AuthenticationError("invalid client secret")

        def source() -> Iterator[str]:
            yield from ids("a", 10)
            gate.set()
            yield ""

        client = FakeClient(behaviour, time)
        with pytest.raises(AuthenticationError):
            make(client, time, batch_size=10).upload("c1", add=source())
        assert len(client.calls) == 1

    def test_input_is_read_lazily(self) -> None:
        """A huge generator is read only a bounded number of batches ahead of the requests."""
        consumed = 0

        def source() -> Iterator[str]:
            nonlocal consumed
            for i in range(5000):
                consumed += 1
                yield f"u{i}"

        time = FakeTime()
        client = FakeClient(time=time)
        ahead: list[int] = []

        def on_done(batch: Batch, _response: CohortResponse | None) -> None:
            ahead.append(consumed - len(rec_done) * 10)
            rec_done.append(batch)

        rec_done: list[Batch] = []
        make(client, time, concurrency=2, batch_size=10).upload(
            "c1", add=source(), on_batch_done=on_done
        )
        assert len(rec_done) == 500
        # At most 2 x concurrency batches in flight, plus the one being packed.
        assert max(ahead) <= (2 * 2 + 1) * 10

    def test_memory_does_not_grow_with_the_input(self) -> None:
        """Peak memory for six times more ids stays about the same: nothing holds all the input."""

        def peak(n: int) -> int:
            time = FakeTime()
            uploader = BatchUploader(
                NullClient(),
                concurrency=2,
                requests_per_hour=UNLIMITED,
                clock=time.clock,
                sleep=time.sleep,
            )
            tracemalloc.start()
            try:
                uploader.upload(
                    "c1",
                    add=(f"u{i}" for i in range(n)),
                    remove=(f"r{i}" for i in range(n // 2)),
                )
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        small, big = peak(20_000), peak(120_000)
        assert big < 1.5 * small


class TestRetries:
    def test_retry_after_is_honoured(self) -> None:
        """A 429 with Retry-After waits exactly that long, then the batch succeeds."""
        time = FakeTime()
        client = FakeClient(script(RateLimitedError("slow down", retry_after=7.0)), time)
        report = make(client, time).upload("c1", add=["u1"])
        assert time.waits() == [7.0]
        assert (report.requests, report.retries, report.added) == (2, 1, 1)
        assert report.ok

    def test_backoff_wins_over_a_shorter_server_wait(self) -> None:
        """The wait is the larger of the server's wait and the backoff."""
        time = FakeTime()
        policy = attrs.evolve(EXACT, initial_backoff=2.0)
        client = FakeClient(script(RateLimitedError("slow down", retry_after=0.5)), time)
        make(client, time, retry=policy).upload("c1", add=["u1"])
        assert time.waits() == [2.0]

    def test_server_wait_beyond_the_cap_fails_the_batch(self) -> None:
        """A 429 asking for longer than max_server_wait is not retried; the batch fails."""
        time = FakeTime()
        err = RateLimitedError("slow down", retry_after=500.0)
        client = FakeClient(script(err), time)
        report = make(client, time).upload("c1", add=["u1"])
        assert len(client.calls) == 1
        assert [f.error for f in report.failed_batches] == [err]

    @pytest.mark.parametrize(
        "error",
        [
            ResourceLockedError("locked", status_code=423),
            ServerError("oops", status_code=503),
            TransportError("reset", outcome_unknown=True),
            RateLimitedError("slow down"),
        ],
    )
    def test_transient_errors_back_off_exponentially_up_to_the_cap(
        self, error: BrazeCohortsError
    ) -> None:
        """429, 423, 5XX and transport errors are retried with capped exponential waits."""
        time = FakeTime()
        client = FakeClient(lambda n, call: error, time)
        policy = attrs.evolve(EXACT, attempts=6, max_backoff=3.0)
        report = make(client, time, retry=policy).upload("c1", add=["u1"])
        assert time.waits() == [0.5, 1.0, 2.0, 3.0, 3.0]
        assert len(client.calls) == 6
        assert (report.requests, report.retries) == (6, 5)
        assert [f.error for f in report.failed_batches] == [error]

    def test_retrying_stops_at_max_elapsed(self) -> None:
        """No retry starts later than max_elapsed after the first attempt."""
        time = FakeTime()
        client = FakeClient(lambda n, call: ServerError("oops", status_code=500), time)
        policy = attrs.evolve(EXACT, attempts=100, max_elapsed=4.0)
        make(client, time, retry=policy).upload("c1", add=["u1"])
        # 0.5 + 1 + 2 = 3.5 s; one more (4 s) would end past 4 s.
        assert time.waits() == [0.5, 1.0, 2.0]
        assert len(client.calls) == 4

    @pytest.mark.parametrize(
        "error",
        [
            InvalidRequestError("cohort_id must be a valid string", status_code=400),
            TransportError("refused", outcome_unknown=False),
        ],
    )
    def test_failures_are_reported_not_raised(self, error: BrazeCohortsError) -> None:
        """A batch that fails for good is listed with its ids and error; the others still go."""
        time = FakeTime()
        client = FakeClient(script(None, error), time)
        rec = Recorder()
        policy = attrs.evolve(EXACT, attempts=1)
        report = make(client, time, retry=policy, batch_size=2).upload(
            "c1",
            add=ids("a", 6),
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert len(client.calls) == 3
        assert report.added == 4
        [failed] = report.failed_batches
        assert failed.batch == Batch(add=("a2", "a3"))
        assert failed.error is error
        assert failed.outcome_unknown is False
        assert rec.failed == [failed]
        assert not report.ok

    def test_bad_request_is_never_retried(self) -> None:
        """A 400 is sent once, with no wait, whatever the policy."""
        time = FakeTime()
        client = FakeClient(lambda n, call: InvalidRequestError("bad", status_code=400), time)
        report = make(client, time).upload("c1", add=["u1"])
        assert len(client.calls) == 1
        assert time.waits() == []
        assert report.retries == 0

    def test_outcome_unknown_is_carried(self) -> None:
        """A timeout in any attempt makes the outcome unknown, even if the last was refused."""
        time = FakeTime()
        client = FakeClient(
            script(
                TransportError("read timeout", outcome_unknown=True),
                TransportError("refused", outcome_unknown=False),
            ),
            time,
        )
        report = make(client, time, retry=attrs.evolve(EXACT, attempts=2)).upload("c1", add=["u1"])
        [failed] = report.failed_batches
        assert failed.outcome_unknown is True
        assert isinstance(failed.error, TransportError)
        assert failed.error.outcome_unknown is False

    def test_server_error_makes_the_outcome_unknown(self) -> None:
        """A 5XX may have been applied, so the failed batch says its outcome is unknown."""
        time = FakeTime()
        client = FakeClient(lambda n, call: ServerError("bad gateway", status_code=502), time)
        report = make(client, time, retry=attrs.evolve(EXACT, attempts=1)).upload("c1", add=["u1"])
        assert report.failed_batches[0].outcome_unknown is True

    def test_each_retry_is_logged_at_debug_without_ids(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One DEBUG line per retry names the attempt, the wait and the error class, never an id."""
        time = FakeTime()
        client = FakeClient(script(ServerError("x", status_code=500)), time)
        with caplog.at_level(logging.DEBUG, logger="braze_cohorts"):
            make(client, time).upload("c1", add=["secret-user-17"])
        retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
        assert retries == [
            "retrying a batch of 1 ids after attempt 1 failed with ServerError; waiting 0.500s"
        ]
        assert all("secret-user-17" not in r.getMessage() for r in caplog.records)


class TestStopping:
    def test_unauthorized_stops_the_upload(self) -> None:
        """A 401 is raised from upload(), never retried, and no later batch is sent."""
        time = FakeTime()
        err = AuthenticationError("invalid client secret", cause="data_import_key")
        client = FakeClient(script(None, None, err), time)
        rec = Recorder()
        with pytest.raises(AuthenticationError) as info:
            make(client, time, batch_size=1).upload("c1", add=ids("a", 50), **rec.hooks())  # type: ignore[arg-type]
        assert info.value is err
        assert len(client.calls) == 3
        assert len(rec.done) == 2
        assert [f.error for f in rec.failed] == [err]

    def test_unauthorized_with_concurrency_reports_everything_acknowledged(self) -> None:
        """Every batch acknowledged while the 401 came back reaches the hook before the raise."""
        time = FakeTime()
        started = threading.Barrier(4, timeout=10)

        def behaviour(n: int, call: Call) -> BaseException | None:
            if n < 4:
                started.wait()  # four requests in flight together
            if n == 1:
                return AuthenticationError("invalid partner api key")
            return None

        client = FakeClient(behaviour, time)
        rec = Recorder()
        with pytest.raises(AuthenticationError):
            make(client, time, concurrency=4, batch_size=5).upload(
                "c1",
                add=ids("a", 1000),
                **rec.hooks(),  # type: ignore[arg-type]
            )
        hooked = {tuple(map(key_of, batch.add)) for batch, _ in rec.done}
        assert hooked == {tuple(map(key_of, a)) for _, a, _ in client.acknowledged}
        assert len(client.calls) < 200

    def test_unauthorized_cuts_pending_retries_short(self) -> None:
        """A batch waiting to retry when the 401 arrives is not resent and is reported as failed."""
        time = FakeTime()
        auth_reported = threading.Event()

        def behaviour(n: int, call: Call) -> BaseException | None:
            if call[1] == (ExternalId("a"),):
                assert auth_reported.wait(timeout=10)
                return ServerError("bad gateway", status_code=502)
            return AuthenticationError("invalid partner api key")

        client = FakeClient(behaviour, time)
        rec = Recorder()

        def on_failed(failed: FailedBatch) -> None:
            rec.on_batch_failed(failed)
            auth_reported.set()

        with pytest.raises(AuthenticationError):
            make(client, time, concurrency=2, batch_size=1).upload(
                "c1", add=["a", "b"], on_batch_failed=on_failed
            )
        assert len(client.calls) == 2
        by_id = {key_of(f.batch.add[0]): f for f in rec.failed}
        assert isinstance(by_id["e:a"].error, ServerError)
        assert by_id["e:a"].outcome_unknown is True
        assert isinstance(by_id["e:b"].error, AuthenticationError)

    def test_real_waits_end_when_the_upload_stops(self) -> None:
        """With the default sleep, waits use the upload's stop event, so a stop ends them."""
        from braze_cohorts._uploader import _Run

        run = _Run(BatchUploader(FakeClient()), "c1")
        assert run.wait == run.stopped.wait
        faked = _Run(BatchUploader(FakeClient(), sleep=FakeTime().sleep), "c1")
        assert faked.wait != faked.stopped.wait

    def test_failing_hook_stops_the_upload_and_propagates(self) -> None:
        """An exception in a hook stops the upload and is raised, with no thread left hanging."""
        time = FakeTime()
        client = FakeClient(time=time)
        calls = 0

        def on_done(batch: Batch, response: CohortResponse | None) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("disk full")

        with pytest.raises(RuntimeError, match="disk full"):
            make(client, time, concurrency=3, batch_size=10).upload(
                "c1", add=ids("a", 10_000), on_batch_done=on_done
            )
        assert len(client.calls) < 100
        assert not [t for t in threading.enumerate() if t.name.startswith("braze-cohorts-upload")]

    def test_client_configuration_error_stops_the_upload(self) -> None:
        """A client refusing before sending (ConfigurationError) would refuse all: it is raised."""
        time = FakeTime()
        err = ConfigurationError("the client is closed")
        client = FakeClient(lambda n, call: err, time)
        with pytest.raises(ConfigurationError) as info:
            make(client, time, concurrency=2, batch_size=10).upload("c1", add=ids("a", 10_000))
        assert info.value is err
        assert len(client.calls) < 100

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"cohort_id": ""},
            {"cohort_id": "c1", "add": "u1"},
            {"cohort_id": "c1", "remove": ExternalId("u1")},
        ],
    )
    def test_misused_arguments_are_refused_before_sending(self, kwargs: dict[str, object]) -> None:
        """An empty cohort id, or one identifier where an iterable belongs, is refused up front."""
        time = FakeTime()
        client = FakeClient(time=time)
        with pytest.raises(ConfigurationError):
            make(client, time).upload(**kwargs)  # type: ignore[arg-type]
        assert client.calls == []

    def test_unexpected_client_error_propagates(self) -> None:
        """A bug in the client (an exception outside the library's tree) stops the upload."""
        time = FakeTime()
        client = FakeClient(lambda n, call: KeyError("bug") if n == 5 else None, time)
        with pytest.raises(KeyError):
            make(client, time, concurrency=2, batch_size=10).upload("c1", add=ids("a", 10_000))
        assert len(client.calls) < 100


class TestHooks:
    def test_hooks_run_on_the_calling_thread(self) -> None:
        """Hooks are called one at a time from the thread that called upload()."""
        time = FakeTime()
        client = FakeClient(
            lambda n, call: ServerError("x", status_code=500) if n % 7 == 0 else None, time
        )
        rec = Recorder()
        make(
            client, time, concurrency=4, batch_size=10, retry=attrs.evolve(EXACT, attempts=1)
        ).upload(
            "c1",
            add=ids("a", 500),
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert rec.threads == {threading.get_ident()}
        assert len(rec.done) + len(rec.failed) == 50

    def test_progress_counts_up_to_the_report(self) -> None:
        """Progress follows every batch, counts only grow, and the last one matches the report."""
        time = FakeTime()
        client = FakeClient(script(None, ServerError("x", status_code=500)), time)
        rec = Recorder()
        report = make(client, time, concurrency=1, batch_size=10).upload(
            "c1",
            add=ids("a", 45),
            remove=ids("r", 20),
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert len(rec.progress) == 7
        done = [p.batches_done for p in rec.progress]
        assert done == sorted(done)
        last = rec.progress[-1]
        assert (last.added, last.removed, last.requests, last.retries) == (
            report.added,
            report.removed,
            report.requests,
            report.retries,
        )
        assert last.ids_done == 65
        assert report.retries == 1

    def test_errors_in_successful_responses_become_warnings(self) -> None:
        """The ``errors`` of a 2XX answer are kept in the report; the response reaches the hook."""
        time = FakeTime()
        response = CohortResponse(status_code=201, message="success", errors=("bad alias",))
        client = FakeClient(script(response), time)
        rec = Recorder()
        report = make(client, time).upload("c1", add=["u1"], **rec.hooks())  # type: ignore[arg-type]
        assert report.warnings == ("bad alias",)
        assert rec.done[0][1] is response


class SteppedTime:
    """A clock that a driver moves in coarse steps; sleepers wake together at the next step.

    This is what late wake-ups look like: threads whose slots fell inside one step all start at
    its end, bunched. The driver only moves the clock when every worker is asleep and none is
    due, so the outcome does not depend on how the machine schedules the threads.
    """

    def __init__(self, workers: int) -> None:
        self.now = 0.0
        self.cond = threading.Condition()
        self.active = workers
        self.targets: list[float] = []

    def clock(self) -> float:
        with self.cond:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.cond:
            target = self.now + seconds
            self.targets.append(target)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.now >= target, timeout=10)
            self.targets.remove(target)
            self.cond.notify_all()

    def retire(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def step(self, seconds: float) -> bool:
        """Move the clock once every worker sleeps and none is due; False when all are done."""
        with self.cond:
            self.cond.wait_for(
                lambda: (
                    self.active == 0
                    or (len(self.targets) >= self.active and min(self.targets) > self.now)
                ),
                timeout=10,
            )
            if self.active == 0:
                return False
            self.now += seconds
            self.cond.notify_all()
            return True


class TestRateLimiter:
    def test_late_wake_ups_never_crowd_a_one_second_window(self) -> None:
        """Threads that wake late together still start at most 99 % of the limit per second."""
        workers = 8
        time = SteppedTime(workers)
        limiter = RateLimiter(360_000, clock=time.clock, wall_clock=time.clock)  # 100/s
        starts: list[float] = []
        lock = threading.Lock()
        wanted = 400

        def worker() -> None:
            try:
                while True:
                    with lock:
                        if len(starts) >= wanted:
                            return
                    limiter.acquire(time.sleep)
                    with lock:
                        starts.append(time.clock())
                    limiter.finish()
            finally:
                time.retire()

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        while time.step(0.05):  # every sleeper whose slot fell in these 50 ms wakes at once
            pass
        for thread in threads:
            thread.join()
        starts.sort()
        most = max(sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts))
        assert most <= 99
        assert len(starts) >= wanted
        # Pacing still reaches the limit over the run: 400 starts in about 4 s of fake time.
        assert starts[-1] - starts[0] < 4.0 / 0.95

    def test_first_hour_never_exceeds_the_limit(self) -> None:
        """Paced starts stay at or under the hourly limit and reach at least 95 % of it."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(3600, clock=time.clock, wall_clock=time.wall_clock)
        starts = []
        while time.now <= 3600:
            limiter.acquire(time.sleep)
            starts.append(time.now)
            limiter.finish()
        in_first_hour = sum(1 for t in starts if t <= 3600)
        assert 0.95 * 3600 <= in_first_hour <= 3600

    def test_no_burst_after_idle(self) -> None:
        """Time spent idle is not saved up: starts after a pause are still spaced."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(360, clock=time.clock, wall_clock=time.wall_clock)
        limiter.acquire(time.sleep)
        limiter.finish()
        time.sleep(10_000)
        starts = []
        for _ in range(3):
            limiter.acquire(time.sleep)
            starts.append(time.now)
            limiter.finish()
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(gap >= limiter.interval for gap in gaps)

    def test_pauses_until_reset_when_remaining_is_low(self) -> None:
        """When no more than the in-flight requests remain, the next start waits for the reset."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(UNLIMITED, clock=time.clock, wall_clock=time.wall_clock)
        limiter.acquire(time.sleep)
        limiter.acquire(time.sleep)
        reset = time.wall_clock() + 30
        limiter.finish(RateLimitInfo(limit=100, remaining=1, reset=reset))
        before = time.now
        limiter.acquire(time.sleep)
        assert time.now - before == pytest.approx(30)

    def test_no_pause_while_plenty_remains(self) -> None:
        """Remaining above the requests in flight does not slow anything down."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(UNLIMITED, clock=time.clock, wall_clock=time.wall_clock)
        limiter.acquire(time.sleep)
        limiter.acquire(time.sleep)
        limiter.finish(RateLimitInfo(limit=100, remaining=5, reset=time.wall_clock() + 30))
        before = time.now
        limiter.acquire(time.sleep)
        assert time.now - before < 1e-6

    def test_pause_imposed_while_waiting_for_a_slot_is_obeyed(self) -> None:
        """A caller already waiting for its slot also waits out a pause that began meanwhile."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(3600, clock=time.clock, wall_clock=time.wall_clock)

        def sleep(seconds: float) -> None:
            if not time.sleeps:
                limiter.hold(50)  # another thread's 429 arrives while this one waits
            time.sleep(seconds)

        limiter.acquire(sleep)
        assert time.now >= 50

    def test_hold_is_capped(self) -> None:
        """A pause longer than max_hold is shortened to max_hold."""
        time = FakeTime(start=0.0)
        limiter = RateLimiter(UNLIMITED, clock=time.clock, wall_clock=time.wall_clock, max_hold=60)
        limiter.hold(3600)
        limiter.acquire(time.sleep)
        assert time.now == pytest.approx(60)

    def test_rate_limited_answer_pauses_every_thread(self) -> None:
        """After a 429 with Retry-After no request starts before that wait is over."""
        time = FakeTime(start=0.0)
        client = FakeClient(script(None, RateLimitedError("slow", retry_after=20.0)), time)
        make(client, time, batch_size=1).upload("c1", add=ids("a", 5))
        assert client.call_times[2] - client.call_times[1] >= 20.0

    @settings(max_examples=10, deadline=None)
    @given(
        concurrency=st.integers(min_value=1, max_value=6),
        per_hour=st.integers(min_value=100, max_value=400),
    )
    def test_uploads_never_exceed_the_limit(self, concurrency: int, per_hour: int) -> None:
        """With threads and retries, no hour-long window holds more requests than the limit."""
        time = FakeTime(start=0.0)
        client = FakeClient(
            lambda n, call: ServerError("x", status_code=500) if n % 5 == 0 else None, time
        )
        make(
            client,
            time,
            concurrency=concurrency,
            requests_per_hour=per_hour,
            batch_size=1,
            retry=attrs.evolve(EXACT, initial_backoff=0.0, max_backoff=0.0),
        ).upload("c1", add=ids("a", 2 * per_hour))
        starts = sorted(client.call_times)
        assert len(starts) > per_hour
        for i in range(len(starts) - per_hour):
            assert starts[i + per_hour] - starts[i] > 3600
        # Over the whole run (from the upload's start) the rate is under the limit, and close to it.
        rate = len(starts) / (starts[-1] - 0.0) * 3600
        assert 0.95 * per_hour <= rate <= per_hour


class TestSingleCall:
    def test_call_retries_transient_errors_with_the_server_wait(self) -> None:
        """``call`` retries a 503 and a 429 (honouring Retry-After) and returns the answer."""
        time = FakeTime()
        uploader = make(FakeClient(), time)
        answers: list[BaseException | str] = [
            ServerError("down", status_code=503),
            RateLimitedError("slow down", retry_after=7.0),
            "named",
        ]

        def request() -> str:
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        assert uploader.call(request) == "named"
        assert answers == []
        assert time.waits() == [0.5, 7.0]

    @pytest.mark.parametrize(
        "error",
        [
            AuthenticationError("Invalid client secret", cause="data_import_key"),
            InvalidRequestError("name must be a non-empty string", status_code=400),
        ],
    )
    def test_call_never_retries_400_or_401(self, error: BrazeCohortsError) -> None:
        """A 400 or 401 from ``call`` is raised after one attempt."""
        time = FakeTime()
        uploader = make(FakeClient(), time)
        attempts: list[int] = []

        def request() -> None:
            attempts.append(1)
            raise error

        with pytest.raises(type(error)):
            uploader.call(request)
        assert attempts == [1]
        assert time.waits() == []

    def test_call_gives_up_after_the_policy_attempts(self) -> None:
        """``call`` raises the last error once the policy's attempts are used up."""
        time = FakeTime()
        uploader = make(FakeClient(), time, retry=attrs.evolve(EXACT, attempts=3))
        attempts: list[int] = []

        def request() -> None:
            attempts.append(1)
            raise TransportError("reset", outcome_unknown=True)

        with pytest.raises(TransportError):
            uploader.call(request)
        assert len(attempts) == 3


def accounted(given: Iterable[str], rec: Recorder) -> None:
    """Every id given is in exactly one acknowledged or failed batch: nothing is lost."""
    seen = [key_of(r) for batch, _ in rec.done for r in (*batch.add, *batch.remove)]
    seen += [key_of(r) for f in rec.failed for r in (*f.batch.add, *f.batch.remove)]
    assert sorted(seen) == sorted(key_of(g) for g in given)


def unavailable(n: int, call: Call) -> BaseException:
    return ServerError("service unavailable", status_code=503)


class TestDeadline:
    def test_no_request_starts_after_the_deadline_and_the_rest_is_reported(self) -> None:
        """Past the deadline nothing starts; every batch not sent comes back failed, not lost."""
        time = FakeTime(start=0.0)

        def one_second(n: int, call: Call) -> None:
            time.sleep(1.0)  # each request takes a second

        client = FakeClient(one_second, time)
        rec = Recorder()
        given = ids("a", 500)
        report = make(client, time, batch_size=10, deadline=10.5).upload(
            "c1",
            add=given,
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert len(client.calls) == 11  # started at 0 s, 1 s ... 10 s
        assert max(client.call_times) < 10.5
        assert (report.added, report.requests, report.stopped_reason) == (110, 11, "deadline")
        assert len(report.failed_batches) == 39
        for failed in report.failed_batches:
            assert isinstance(failed.error, DeadlineExceededError)
            assert failed.error.deadline == 10.5
            assert failed.error.retryable
            assert failed.outcome_unknown is False
        assert rec.failed == list(report.failed_batches)
        assert rec.progress[-1].failed_ids == 390
        accounted(given, rec)

    def test_a_retry_whose_wait_would_pass_the_deadline_is_not_started(self) -> None:
        """Retrying stops when the next attempt would start after the deadline, without waiting."""
        time = FakeTime(start=0.0)
        client = FakeClient(unavailable, time)
        report = make(client, time, deadline=5.0, breaker=None).upload("c1", add=["u1"])
        # Attempts at 0, 0.5, 1.5 and 3.5 s; the next would start at 7.5 s.
        assert time.waits() == [0.5, 1.0, 2.0]
        assert len(client.calls) == 4
        [failed] = report.failed_batches
        assert isinstance(failed.error, ServerError)
        assert failed.outcome_unknown is True

    def test_a_rate_limit_pause_ends_at_the_deadline(self) -> None:
        """A 429 pause longer than the time left is cut at the deadline; what waited is reported."""
        time = FakeTime(start=0.0)
        client = FakeClient(script(RateLimitedError("slow down", retry_after=100.0)), time)
        rec = Recorder()
        report = make(client, time, batch_size=1, deadline=30.0, breaker=None).upload(
            "c1",
            add=["a", "b", "c"],
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert len(client.calls) == 1
        assert time.now == pytest.approx(30.0)  # not the 100 s the server asked for
        assert [type(f.error) for f in report.failed_batches] == [
            RateLimitedError,
            DeadlineExceededError,
            DeadlineExceededError,
        ]
        assert report.stopped_reason == "deadline"
        accounted(["a", "b", "c"], rec)

    def test_the_deadline_counts_from_the_start_of_each_upload(self) -> None:
        """One uploader's second upload gets its own full deadline."""
        time = FakeTime(start=0.0)
        client = FakeClient(time=time)
        uploader = make(client, time, deadline=10.0)
        uploader.upload("c1", add=["a"])
        time.sleep(60.0)
        report = uploader.upload("c1", add=["b"])
        assert (report.ok, report.stopped_reason, len(client.calls)) == (True, None, 2)

    def test_the_stop_is_logged_once_without_ids(self, caplog: pytest.LogCaptureFixture) -> None:
        """A deadline stop is one WARNING line, naming the deadline, never an id."""
        time = FakeTime(start=0.0)
        client = FakeClient(lambda n, call: time.sleep(1.0), time)
        with caplog.at_level(logging.WARNING, logger="braze_cohorts"):
            make(client, time, batch_size=1, deadline=2.5).upload(
                "c1", add=["secret-7", "x", "y", "z"]
            )
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "upload to cohort c1 stopped: the upload's deadline of 2.5 s passed before this "
            "batch was sent"
        ]
        assert all("secret-7" not in r.getMessage() for r in caplog.records)


class TestBreaker:
    def test_defaults(self) -> None:
        """By default three failed batches in a row, or 90 % of the last 100 requests, stop."""
        assert BreakerPolicy() == DEFAULT_BREAKER
        assert (DEFAULT_BREAKER.consecutive_failures, DEFAULT_BREAKER.window) == (3, 100)
        assert DEFAULT_BREAKER.failure_ratio == 0.9
        assert BatchUploader(FakeClient()).breaker == DEFAULT_BREAKER
        assert BatchUploader(FakeClient()).deadline is None

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"consecutive_failures": 0},
            {"window": 0},
            {"window": 2.0},
            {"failure_ratio": 0},
            {"failure_ratio": 1.5},
            {"failure_ratio": True},
        ],
    )
    def test_invalid_values_are_refused(self, kwargs: dict[str, object]) -> None:
        """Out-of-range values raise ConfigurationError."""
        with pytest.raises(ConfigurationError):
            BreakerPolicy(**kwargs)  # type: ignore[arg-type]

    def test_a_braze_answering_503_to_everything_stops_the_upload(self) -> None:
        """All-503: three batches use their retries, then nothing more is sent, all is reported."""
        time = FakeTime()
        client = FakeClient(unavailable, time)
        rec = Recorder()
        given = ids("a", 1000)
        report = make(client, time, batch_size=10).upload(
            "c1",
            add=given,
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert len(client.calls) == 3 * 6  # not 100 batches x 6 attempts
        assert report.stopped_reason == "circuit_open"
        assert len(report.failed_batches) == 100
        sent, unsent = report.failed_batches[:3], report.failed_batches[3:]
        assert all(isinstance(f.error, ServerError) and f.outcome_unknown for f in sent)
        assert all(isinstance(f.error, CircuitOpenError) for f in unsent)
        assert not any(f.outcome_unknown for f in unsent)
        error = unsent[0].error
        assert isinstance(error, CircuitOpenError)
        assert error.rule == "consecutive_failures"
        assert isinstance(error.last_error, ServerError)
        assert "3 batches in a row failed" in str(error)
        accounted(given, rec)

    def test_without_a_breaker_every_batch_is_tried(self) -> None:
        """``breaker=None`` keeps today's behaviour: every batch uses all its retries."""
        time = FakeTime()
        client = FakeClient(unavailable, time)
        report = make(client, time, batch_size=10, breaker=None).upload("c1", add=ids("a", 100))
        assert len(client.calls) == 10 * 6
        assert report.stopped_reason is None

    def test_a_success_between_failures_resets_the_count(self) -> None:
        """Two failed batches, a good one, two failed ... never trip three-in-a-row."""
        time = FakeTime()
        client = FakeClient(lambda n, call: None if n % 3 == 2 else unavailable(n, call), time)
        report = make(client, time, batch_size=10, retry=attrs.evolve(EXACT, attempts=1)).upload(
            "c1", add=ids("a", 300)
        )
        assert len(client.calls) == 30
        assert (report.stopped_reason, len(report.failed_batches)) == (None, 20)

    def test_refused_requests_in_a_row_also_stop(self) -> None:
        """Three 400s in a row (say, a cohort id Braze refuses) stop the upload too."""
        time = FakeTime()
        client = FakeClient(lambda n, call: InvalidRequestError("bad", status_code=400), time)
        report = make(client, time, batch_size=10).upload("c1", add=ids("a", 200))
        assert len(client.calls) == 3
        assert report.stopped_reason == "circuit_open"

    def test_mostly_failing_requests_trip_the_ratio(self) -> None:
        """19 of every 20 requests failing trip the ratio though some batches still succeed."""
        time = FakeTime()
        client = FakeClient(lambda n, call: None if n % 20 == 19 else unavailable(n, call), time)
        breaker = BreakerPolicy(consecutive_failures=1000, window=20, failure_ratio=0.9)
        report = make(client, time, batch_size=10, breaker=breaker).upload("c1", add=ids("a", 1000))
        # Batches 1-3 fail (18 requests), batch 4 succeeds at its second attempt, and the
        # first failure of batch 5 fills the window with 19 failures of 20.
        assert len(client.calls) == 21
        assert (report.added, report.stopped_reason) == (10, "circuit_open")
        error = report.failed_batches[-1].error
        assert isinstance(error, CircuitOpenError)
        assert error.rule == "failure_ratio"
        assert "19 of the last 20 requests failed with ServerError (HTTP 503)" in str(error)

    def test_rate_limited_answers_are_not_an_outage(self) -> None:
        """429s are Braze pacing the caller: they never count towards the failure ratio."""
        time = FakeTime()
        slow = RateLimitedError("slow down", retry_after=0.01)
        client = FakeClient(lambda n, call: slow if n < 12 else None, time)
        breaker = BreakerPolicy(consecutive_failures=1000, window=5, failure_ratio=0.5)
        report = make(client, time, batch_size=10, breaker=breaker).upload("c1", add=ids("a", 100))
        assert report.stopped_reason is None
        assert [type(f.error) for f in report.failed_batches] == [RateLimitedError] * 2
        assert report.added == 80

    def test_retries_waiting_when_it_trips_are_cut_short(self) -> None:
        """With several batches in flight, those waiting to retry are not resent after a trip."""
        time = FakeTime()
        client = FakeClient(unavailable, time)
        rec = Recorder()
        given = ids("a", 2000)
        report = make(client, time, concurrency=4, batch_size=10).upload(
            "c1",
            add=given,
            **rec.hooks(),  # type: ignore[arg-type]
        )
        assert report.stopped_reason == "circuit_open"
        # At most the four batches in flight (plus the ones queued behind them) ever started.
        assert len(client.calls) <= (3 + 2 * 4) * 6
        assert len(report.failed_batches) == 200
        accounted(given, rec)

    @settings(max_examples=40, deadline=None)
    @given(
        outcomes=st.lists(st.sampled_from(["ok", "503", "400", "reset", "429"]), min_size=1),
        concurrency=st.integers(min_value=1, max_value=4),
        batches=st.integers(min_value=1, max_value=40),
        deadline=st.one_of(st.none(), st.floats(min_value=0.5, max_value=30)),
        breaker=st.one_of(
            st.none(),
            st.builds(
                BreakerPolicy,
                consecutive_failures=st.integers(1, 5),
                window=st.integers(1, 30),
                failure_ratio=st.floats(0.1, 1.0),
            ),
        ),
    )
    def test_nothing_given_is_ever_lost(
        self,
        outcomes: list[str],
        concurrency: int,
        batches: int,
        deadline: float | None,
        breaker: BreakerPolicy | None,
    ) -> None:
        """Whatever stops an upload, each id is acknowledged or in exactly one failed batch."""
        time = FakeTime(start=0.0)
        errors: dict[str, BaseException | None] = {
            "ok": None,
            "503": ServerError("down", status_code=503),
            "400": InvalidRequestError("bad", status_code=400),
            "reset": TransportError("reset", outcome_unknown=True),
            "429": RateLimitedError("slow down", retry_after=0.2),
        }

        def behaviour(n: int, call: Call) -> BaseException | None:
            time.sleep(0.3)
            return errors[outcomes[n % len(outcomes)]]

        client = FakeClient(behaviour, time)
        rec = Recorder()
        given = ids("a", 5 * batches)
        report = make(
            client, time, concurrency=concurrency, batch_size=5, deadline=deadline, breaker=breaker
        ).upload("c1", add=given, **rec.hooks())  # type: ignore[arg-type]
        accounted(given, rec)
        assert rec.failed == list(report.failed_batches)
        assert report.requests == len(client.calls)
        stop_errors = (DeadlineExceededError, CircuitOpenError)
        unsent = [f for f in report.failed_batches if isinstance(f.error, stop_errors)]
        assert all(not f.outcome_unknown for f in unsent)
        if report.stopped_reason is None:
            assert unsent == []
        else:
            expected = (
                DeadlineExceededError if report.stopped_reason == "deadline" else CircuitOpenError
            )
            assert all(isinstance(f.error, expected) for f in unsent)
        if breaker is None:
            assert report.stopped_reason != "circuit_open"
        if deadline is None:
            assert report.stopped_reason != "deadline"


class CountingLimiter:
    """A RequestLimiter that lets everything through and counts what it is asked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquired = 0
        self.finished: list[RateLimitInfo | None] = []
        self.holds: list[float] = []

    def acquire(self, sleep: Callable[[float], object]) -> None:
        sleep(0.25)
        with self._lock:
            self.acquired += 1

    def finish(self, rate_limit: RateLimitInfo | None = None) -> None:
        with self._lock:
            self.finished.append(rate_limit)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self.holds.append(seconds)


class TestRequestLimiter:
    def test_an_injected_limiter_brackets_every_request(self) -> None:
        """Each request, retries and ``call`` included, is acquired and finished exactly once."""
        time = FakeTime()
        limits = RateLimitInfo(limit=100, remaining=50, reset=1.0)
        answers = script(
            RateLimitedError("slow down", retry_after=3.0),
            ServerError("down", status_code=503),
            CohortResponse(status_code=201, message="success", rate_limit=limits),
        )
        client = FakeClient(answers, time)
        limiter = CountingLimiter()
        uploader = BatchUploader(
            client,
            concurrency=2,
            retry=EXACT,
            clock=time.clock,
            sleep=time.sleep,
            limiter=limiter,
        )
        assert uploader.limiter is limiter
        report = uploader.upload("c1", add=ids("a", 3000))
        assert uploader.call(lambda: "named") == "named"
        assert limiter.acquired == len(limiter.finished) == len(client.calls) + 1 == 6
        assert limiter.holds == [3.0]
        assert limits in limiter.finished
        assert time.sleeps.count(0.25) == 6  # the limiter waits with the uploader's sleep
        assert report.ok

    def test_a_limiter_wait_past_the_deadline_sends_nothing(self) -> None:
        """A limiter whose wait passes the deadline is interrupted; the batch is reported unsent."""
        time = FakeTime(start=0.0)

        class Slow(CountingLimiter):
            def acquire(self, sleep: Callable[[float], object]) -> None:
                sleep(100.0)
                super().acquire(sleep)

        limiter = Slow()
        client = FakeClient(time=time)
        report = BatchUploader(
            client, clock=time.clock, sleep=time.sleep, deadline=50.0, limiter=limiter
        ).upload("c1", add=["a"])
        assert client.calls == []
        assert limiter.acquired == 0
        assert limiter.finished == []
        assert time.now == pytest.approx(50.0)
        assert [type(f.error) for f in report.failed_batches] == [DeadlineExceededError]

    def test_the_default_limiter_paces_at_requests_per_hour(self) -> None:
        """Without ``limiter=`` the uploader builds a RateLimiter of ``requests_per_hour``."""
        limiter = BatchUploader(FakeClient(), requests_per_hour=3600).limiter
        assert isinstance(limiter, RateLimiter)
        assert limiter.interval == pytest.approx(1 / 0.99)


class TestDocs:
    def test_examples_in_the_uploader_page_run(self) -> None:
        """The examples in docs/uploader.md run as shown."""
        assert run_doc_examples("uploader.md") > 5
