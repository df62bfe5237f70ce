"""BatchUploader: packs membership changes into requests and sends them fast, politely and safely.

Three parts work together:

* **packing** (:func:`_pack`) streams the ``add`` and ``remove`` iterables into :class:`Batch`
  objects of at most ``batch_size`` (1,000) ids, counted over all identifier kinds together;
* a **rate limiter** (:class:`RateLimiter`) shared by every worker thread paces request starts
  evenly below ``requests_per_hour`` and pauses when Braze says the window is nearly used up;
* **retries** (:class:`RetryPolicy`, run by tenacity) resend a batch after 429, 423, 5XX and
  transport errors with capped, jittered exponential backoff that honours the server's wait.

The coordinating thread (the caller of :meth:`BatchUploader.upload`) reads the input, keeps a
bounded number of batches in flight on a thread pool, and calls every hook itself, so hooks are
never called concurrently.
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from itertools import islice
from typing import Literal, TypeVar

import attrs
from tenacity import RetryCallState, Retrying, retry_if_exception

from braze_cohorts._identifiers import (
    CheckedIds,
    DeviceId,
    ExternalId,
    UserAlias,
    UserRef,
    as_ref,
    check_external_ids,
    key_of,
)
from braze_cohorts._models import (
    Batch,
    CohortResponse,
    FailedBatch,
    RateLimitInfo,
    StopReason,
    UploadReport,
)
from braze_cohorts.exceptions import (
    APIError,
    AuthenticationError,
    BrazeCohortsError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    InputError,
    InvalidIdentifierError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from braze_cohorts.typing import MembersClient, RequestLimiter

__all__ = [
    "DEFAULT_BREAKER",
    "DEFAULT_RETRY",
    "MAX_IDS_PER_REQUEST",
    "BatchUploader",
    "BreakerPolicy",
    "RateLimiter",
    "RetryPolicy",
    "UploadProgress",
]

log = logging.getLogger(__name__)

#: Braze's cap on identifiers per request, counted over user ids, aliases and device ids together.
MAX_IDS_PER_REQUEST = 1_000

#: The rate limiter plans for this share of ``requests_per_hour``, so that however a window is
#: measured (sliding, fixed, first to last request) the limit is never exceeded.
_PACING_SHARE = 0.99

Jitter = Literal["full", "equal", "none"]

Clock = Callable[[], float]
Sleep = Callable[[float], object]
_T = TypeVar("_T")
BatchDoneHook = Callable[[Batch, "CohortResponse | None"], object]
BatchFailedHook = Callable[[FailedBatch], object]
ProgressHook = Callable[["UploadProgress"], object]


def _positive_number(name: str) -> Callable[[object, attrs.Attribute[float], float], None]:
    def validator(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigurationError(f"{name} must be a number >= 0, not {value!r}")
        if math.isinf(value):
            raise ConfigurationError(f"{name} must be finite")

    return validator


def _check_attempts(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"attempts must be an int >= 1, not {value!r}")


def _check_jitter(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in ("full", "equal", "none"):
        raise ConfigurationError(f"jitter must be 'full', 'equal' or 'none', not {value!r}")


@attrs.frozen(slots=True)
class RetryPolicy:
    """How a failed request is retried: a value object, changed with :func:`attrs.evolve`.

    Only errors whose ``retryable`` is true are retried: 429, 423, 5XX and transport errors.
    400 and 401 never are. The wait before retry *n* (1-based) is the larger of the server's
    ``Retry-After`` (429 only) and ``min(max_backoff, initial_backoff * 2 ** (n - 1))`` with
    jitter applied. Retrying stops after ``attempts`` requests in total, or when the next
    attempt would start more than ``max_elapsed`` seconds after the first, or when the server
    asks for a longer wait than ``max_server_wait`` (waiting less than asked would only earn
    another 429); the batch then fails with the last error.

    Args:
        attempts: Requests per batch at most, the first one included (``1`` disables retries).
        initial_backoff: Seconds before the first retry, before jitter.
        max_backoff: Cap on the exponential backoff, before jitter.
        jitter: ``"full"`` (uniform in ``[0, backoff]``), ``"equal"`` (uniform in
            ``[backoff / 2, backoff]``) or ``"none"``.
        max_elapsed: Seconds from a batch's first attempt after which no retry starts.
        max_server_wait: The longest wait asked by the server that is still honoured.

    Raises:
        ConfigurationError: If a value is out of range.
    """

    attempts: int = attrs.field(default=6, validator=_check_attempts)
    initial_backoff: float = attrs.field(default=0.5, validator=_positive_number("initial_backoff"))
    max_backoff: float = attrs.field(default=30.0, validator=_positive_number("max_backoff"))
    jitter: Jitter = attrs.field(default="full", validator=_check_jitter)
    max_elapsed: float = attrs.field(default=300.0, validator=_positive_number("max_elapsed"))
    max_server_wait: float = attrs.field(
        default=120.0, validator=_positive_number("max_server_wait")
    )

    def __attrs_post_init__(self) -> None:
        if self.max_backoff < self.initial_backoff:
            raise ConfigurationError("max_backoff must be >= initial_backoff")

    def backoff(
        self, attempt: int, *, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """Return the backoff before retrying after failed attempt number ``attempt`` (1-based).

        Args:
            attempt: The number of the attempt that just failed.
            uniform: The random source for jitter (``random.uniform`` by default).

        Returns:
            Seconds to wait, never more than ``max_backoff``.
        """
        exponent = min(max(attempt, 1) - 1, 64)
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0**exponent)
        if self.jitter == "full":
            return min(ceiling, uniform(0.0, ceiling))
        if self.jitter == "equal":
            return min(ceiling, ceiling / 2 + uniform(0.0, ceiling / 2))
        return ceiling


#: The policy :class:`BatchUploader` uses unless told otherwise.
DEFAULT_RETRY = RetryPolicy()


def _check_count(name: str) -> Callable[[object, attrs.Attribute[int], int], None]:
    def validator(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, not {value!r}")

    return validator


def _check_ratio(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigurationError(f"failure_ratio must be a number in (0, 1], not {value!r}")


@attrs.frozen(slots=True)
class BreakerPolicy:
    """When an upload judges Braze down and stops; changed with :func:`attrs.evolve`.

    Two rules; whichever trips first stops the upload. No new request starts, retries waiting
    are not resent, requests in flight finish, and every batch not sent is reported as failed
    with a :class:`~braze_cohorts.CircuitOpenError` (see :meth:`BatchUploader.upload`). Each
    upload starts with a closed breaker.

    * ``consecutive_failures`` batches in a row (in the order they finish) failed for good,
      after their retries, whatever the error.
    * Among the last ``window`` requests (retries included), at least ``failure_ratio`` failed
      with an error that says Braze is down: 5XX, 423 or a transport error (no answer, a
      timeout). A 429 is Braze pacing the caller, not an outage: it does not count as failed.

    Args:
        consecutive_failures: Failed batches in a row that stop the upload.
        window: How many of the most recent requests the failure ratio looks at.
        failure_ratio: The share of failed requests in a full window that stops the upload.

    Raises:
        ConfigurationError: If a value is out of range.
    """

    consecutive_failures: int = attrs.field(
        default=3, validator=_check_count("consecutive_failures")
    )
    window: int = attrs.field(default=100, validator=_check_count("window"))
    failure_ratio: float = attrs.field(default=0.9, validator=_check_ratio)


#: The breaker :class:`BatchUploader` uses unless told otherwise.
DEFAULT_BREAKER = BreakerPolicy()


def _is_outage(exc: BrazeCohortsError) -> bool:
    """Whether ``exc`` says Braze is down (5XX, 423, no answer), as the breaker counts it."""
    return exc.retryable and not isinstance(exc, RateLimitedError)


class _Breaker:
    """The state of one upload's breaker (internal): fed by worker threads, under a lock.

    A worker counts each request it sends (:meth:`request`) and each batch it finishes
    (:meth:`batch`) before handing the batch back, so a trip stops the very next batch.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._recent: collections.deque[bool] = collections.deque(maxlen=policy.window)
        self._failed = 0
        self._threshold = max(1, math.ceil(policy.failure_ratio * policy.window - 1e-9))
        self._in_a_row = 0

    def request(self, error: BrazeCohortsError | None) -> CircuitOpenError | None:
        """Count one finished request; return the error to stop with if the ratio tripped."""
        failed = error is not None and _is_outage(error)
        with self._lock:
            recent = self._recent
            if len(recent) == self.policy.window:
                self._failed -= recent[0]
            recent.append(failed)
            self._failed += failed
            if not failed or len(recent) < self.policy.window or self._failed < self._threshold:
                return None
            count = self._failed
        window = self.policy.window
        return CircuitOpenError(
            f"{count} of the last {window} requests failed with {_name(error)}: Braze looks "
            "down, so the upload stopped",
            rule="failure_ratio",
            last_error=error,
        )

    def batch(self, error: BrazeCohortsError | None) -> CircuitOpenError | None:
        """Count one batch that was sent and finished; return the error to stop with if tripped."""
        with self._lock:
            if error is None:
                self._in_a_row = 0
                return None
            self._in_a_row += 1
            in_a_row = self._in_a_row
        if in_a_row < self.policy.consecutive_failures:
            return None
        return CircuitOpenError(
            f"{in_a_row} batches in a row failed after retries (the last with "
            f"{_name(error)}): Braze looks down, so the upload stopped",
            rule="consecutive_failures",
            last_error=error,
        )


def _name(error: BaseException | None) -> str:
    if isinstance(error, APIError):
        return f"{type(error).__name__} (HTTP {error.status_code})"
    return type(error).__name__


@attrs.frozen(slots=True)
class UploadProgress:
    """How far an upload is, passed to the ``progress`` hook after every finished batch.

    Attributes:
        batches_done: Batches acknowledged by Braze.
        batches_failed: Batches that failed after retries.
        added: Ids acknowledged as added.
        removed: Ids acknowledged as removed.
        failed_ids: Ids in failed batches.
        requests: Requests sent so far, retries included.
        retries: Retries among them.
    """

    batches_done: int = 0
    batches_failed: int = 0
    added: int = 0
    removed: int = 0
    failed_ids: int = 0
    requests: int = 0
    retries: int = 0

    @property
    def ids_done(self) -> int:
        """Ids acknowledged, added and removed together."""
        return self.added + self.removed


class RateLimiter:
    """Paces request starts, shared by threads, so that ``requests_per_hour`` is never exceeded.

    Starts are spaced evenly, ``3600 / (0.99 * requests_per_hour)`` seconds apart, with no burst:
    a slot unused while idle is not saved for later, and the very first start waits one interval.
    So any stretch of time ``T`` sees at most ``T / interval + 1`` starts, which stays under the
    limit for an hour-long window (sliding or fixed) and for the whole run. Threads wake late
    now and then (the GIL, the scheduler), which bunches starts a little; so the starts are also
    counted in a sliding window (one second, or one interval for rates under one a second), and
    a start that would put more than 99 % of the window's share in it waits. Besides pacing it
    pauses every caller (up to ``max_hold`` seconds) when Braze says the window is nearly used up
    (``X-RateLimit-Remaining`` no more than the requests in flight) or answers 429.

    Args:
        requests_per_hour: The limit to stay under.
        clock: Monotonic seconds (``time.monotonic``).
        wall_clock: UTC epoch seconds (``time.time``), to read ``X-RateLimit-Reset``.
        max_hold: The longest pause a response can impose on everyone.

    Raises:
        ConfigurationError: If ``requests_per_hour`` is not a positive number.
    """

    def __init__(
        self,
        requests_per_hour: float,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        max_hold: float = 120.0,
    ) -> None:
        if (
            isinstance(requests_per_hour, bool)
            or not isinstance(requests_per_hour, (int, float))
            or not 0 < requests_per_hour < math.inf
        ):
            raise ConfigurationError(
                f"requests_per_hour must be a positive number, not {requests_per_hour!r}"
            )
        self.interval = 3600.0 / (requests_per_hour * _PACING_SHARE)
        self._window = max(1.0, self.interval)
        self._window_cap = max(
            1, math.floor(requests_per_hour * self._window / 3600 * _PACING_SHARE)
        )
        self._starts: collections.deque[float] = collections.deque()
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_hold = max_hold
        self._lock = threading.Lock()
        self._next: float | None = None
        self._hold_until = -math.inf
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"RateLimiter(interval={self.interval:.6f}s)"

    @property
    def in_flight(self) -> int:
        """Requests that were granted a start and not yet finished."""
        return self._in_flight

    def acquire(self, sleep: Sleep) -> None:
        """Wait (with ``sleep``) until a request may start, and count it as in flight.

        Every successful call must be paired with one :meth:`finish`.
        """
        while True:
            with self._lock:
                now = self._clock()
                if self._next is None:
                    self._next = now + self.interval
                slot = max(self._next, now, self._hold_until)
                self._next = slot + self.interval
            delay = slot - self._clock()
            if delay > 0:
                sleep(delay)
            with self._lock:
                # A pause imposed while we slept moves us behind it (the slot is forfeited).
                if self._hold_until > slot:
                    continue
                now = self._clock()
                starts = self._starts
                while starts and starts[0] <= now - self._window:
                    starts.popleft()
                if len(starts) < self._window_cap:
                    starts.append(now)
                    self._in_flight += 1
                    return
                crowded = starts[0] + self._window - now
            # Late wake-ups bunched the starts: wait until the window has room, then queue anew.
            sleep(crowded)

    def finish(self, rate_limit: RateLimitInfo | None = None) -> None:
        """Mark a request as finished; ``rate_limit`` is what its response's headers said."""
        with self._lock:
            self._in_flight -= 1
            if rate_limit is None or rate_limit.remaining is None or rate_limit.reset is None:
                return
            if rate_limit.remaining > self._in_flight:
                return
            until_reset = rate_limit.reset - self._wall_clock()
        if until_reset > 0:
            log.debug(
                "rate limit nearly used up (%d left); pausing %.3fs until the window resets",
                rate_limit.remaining,
                min(until_reset, self._max_hold),
            )
            self.hold(until_reset)

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` (capped at ``max_hold``) from now."""
        seconds = min(max(seconds, 0.0), self._max_hold)
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)


class _CancelledError(Exception):
    """The upload stopped before this attempt was sent (internal; never escapes)."""


@attrs.define(slots=True)
class _Outcome:
    """What one worker did with one batch (internal)."""

    batch: Batch
    attempts: int = 0
    response: CohortResponse | None = None
    error: BrazeCohortsError | None = None
    outcome_unknown: bool = False
    sent: bool = False


def _is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


class _RetryPlan:
    """When to retry a request and how long to wait, per :class:`RetryPolicy` (internal).

    The wait is the larger of the server's ``retry_after`` and the policy's jittered backoff;
    it gives up after ``attempts``, when the server asks for more than ``max_server_wait``,
    when the next wait would pass ``max_elapsed`` or the upload's ``deadline`` (a
    ``clock()`` reading), or when ``stopped()`` says so.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Clock,
        stopped: Callable[[], bool] = lambda: False,
        deadline: float = math.inf,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._stopped = stopped
        self._deadline = deadline
        self._started = clock()
        self._plans: dict[int, tuple[float, bool]] = {}

    def __call__(self, state: RetryCallState) -> tuple[float, bool]:
        number = state.attempt_number
        if number not in self._plans:
            assert state.outcome is not None
            policy = self._policy
            exc = state.outcome.exception()
            server_wait = getattr(exc, "retry_after", None) or 0.0
            delay = max(server_wait, policy.backoff(number))
            now = self._clock()
            give_up = (
                number >= policy.attempts
                or server_wait > policy.max_server_wait
                or now - self._started + delay > policy.max_elapsed
                or now + delay >= self._deadline
                or self._stopped()
            )
            self._plans[number] = (delay, give_up)
        return self._plans[number]

    def retrying(self, sleep: Sleep, what: str) -> Retrying:
        """A tenacity ``Retrying`` that follows this plan, sleeping with ``sleep``."""

        def before_sleep(state: RetryCallState) -> None:
            assert state.outcome is not None
            log.debug(
                "retrying %s after attempt %d failed with %s; waiting %.3fs",
                what,
                state.attempt_number,
                type(state.outcome.exception()).__name__,
                self._plans[state.attempt_number][0],
            )

        def pause(seconds: float) -> None:
            sleep(seconds)

        return Retrying(
            retry=retry_if_exception(_is_retryable),
            stop=lambda state: self(state)[1],
            wait=lambda state: self(state)[0],
            sleep=pause,
            before_sleep=before_sleep,
            reraise=True,
        )


class _Run:
    """The shared state of one :meth:`BatchUploader.upload` call (internal)."""

    def __init__(self, uploader: BatchUploader, cohort_id: str) -> None:
        self.uploader = uploader
        self.cohort_id = cohort_id
        self.stopped = threading.Event()
        self._stop_lock = threading.Lock()
        #: Why the upload stopped early, when a deadline or the breaker stopped it.
        self.stop_reason: StopReason | None = None
        #: The error every batch it did not send is reported with.
        self.stop_error: DeadlineExceededError | CircuitOpenError | None = None
        self.breaker = _Breaker(uploader._breaker) if uploader._breaker is not None else None
        self.limiter = uploader._limiter
        self.clock = uploader._clock
        #: The ``clock()`` reading after which no request starts.
        self.deadline = (
            math.inf if uploader._deadline is None else uploader._clock() + uploader._deadline
        )
        if uploader._sleep is time.sleep:
            # Real waits end early when the upload stops (401, a failing hook, Ctrl-C).
            self.wait: Sleep = self.stopped.wait
        else:
            self.wait = uploader._sleep
        #: How workers wait (for the limiter, between retries): never past the deadline.
        self.pause: Sleep = self.wait if self.deadline == math.inf else self._pause

    def stop(self, reason: StopReason, error: DeadlineExceededError | CircuitOpenError) -> None:
        """Stop sending because of the deadline or the breaker (the first stop wins)."""
        with self._stop_lock:
            if self.stopped.is_set():
                return
            self.stop_reason = reason
            self.stop_error = error
            self.stopped.set()
        log.warning("upload to cohort %s stopped: %s", self.cohort_id, error)

    def expired(self) -> bool:
        """Whether the deadline has passed; if so, stop the upload."""
        if self.deadline == math.inf or self.clock() < self.deadline:
            return False  # (the common case costs one comparison: no clock is read)
        seconds = self.uploader._deadline
        assert seconds is not None
        self.stop(
            "deadline",
            DeadlineExceededError(
                f"the upload's deadline of {seconds:g} s passed before this batch was sent",
                deadline=seconds,
            ),
        )
        return True

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, but not past the deadline: then stop and raise _CancelledError."""
        if self.clock() + seconds < self.deadline:
            self.wait(seconds)
            return
        self.wait(max(self.deadline - self.clock(), 0.0))
        if self.expired():
            raise _CancelledError
        # Woken early (the upload stopped): the caller looks again at why it was waiting.

    def send(self, batch: Batch) -> _Outcome:
        """Send one batch with retries; runs on a worker thread."""
        try:
            return self._send(batch)
        except BaseException:
            self.stopped.set()  # a bug: stop everything, the coordinator re-raises it
            raise

    def _send(self, batch: Batch) -> _Outcome:
        outcome = _Outcome(batch)
        if self.stopped.is_set() or self.expired():
            return outcome
        up = self.uploader
        limiter = self.limiter
        breaker = self.breaker
        plan = _RetryPlan(up._retry, self.clock, self.stopped.is_set, self.deadline)

        def attempt() -> CohortResponse | None:
            if self.stopped.is_set():
                raise _CancelledError
            limiter.acquire(self.pause)
            if self.stopped.is_set() or self.expired():
                limiter.finish()
                raise _CancelledError
            outcome.attempts += 1
            outcome.sent = True
            try:
                response = up._client.update_members(
                    self.cohort_id, add=batch.add, remove=batch.remove
                )
            except RateLimitedError as exc:
                limiter.finish()
                if exc.retry_after:
                    limiter.hold(exc.retry_after)
                outcome.error = exc
                if breaker is not None:
                    breaker.request(exc)
                raise
            except BrazeCohortsError as exc:
                limiter.finish()
                if isinstance(exc, AuthenticationError):
                    self.stopped.set()  # every later request would fail too
                if isinstance(exc, ServerError) or (
                    isinstance(exc, TransportError) and exc.outcome_unknown
                ):
                    outcome.outcome_unknown = True
                outcome.error = exc
                if breaker is not None:
                    tripped = breaker.request(exc)
                    if tripped is not None:
                        self.stop("circuit_open", tripped)
                raise
            except BaseException:
                limiter.finish()
                raise
            limiter.finish(response.rate_limit if response is not None else None)
            if breaker is not None:
                breaker.request(None)
            return response

        retrying = plan.retrying(self.pause, f"a batch of {len(batch)} ids")
        try:
            outcome.response = retrying(attempt)
            outcome.error = None
        except (ConfigurationError, InvalidIdentifierError):
            # The client refused before sending: the same will happen to every batch.
            raise
        except (_CancelledError, BrazeCohortsError):
            # The last real error (if any attempt was sent) is already in outcome.error.
            pass
        if breaker is not None and outcome.sent and not self.stopped.is_set():
            tripped = breaker.batch(outcome.error)
            if tripped is not None:
                self.stop("circuit_open", tripped)
        return outcome


@attrs.define(slots=True)
class _Tally:
    """Running totals of one upload (internal; touched by the coordinating thread only)."""

    requests: int = 0
    retries: int = 0
    added: int = 0
    removed: int = 0
    batches_done: int = 0
    failed_ids: int = 0
    failed: list[FailedBatch] = attrs.field(factory=list)
    warnings: list[object] = attrs.field(factory=list)

    def progress(self) -> UploadProgress:
        return UploadProgress(
            batches_done=self.batches_done,
            batches_failed=len(self.failed),
            added=self.added,
            removed=self.removed,
            failed_ids=self.failed_ids,
            requests=self.requests,
            retries=self.retries,
        )

    def report(self, stopped_reason: StopReason | None = None) -> UploadReport:
        return UploadReport(
            requests=self.requests,
            retries=self.retries,
            added=self.added,
            removed=self.removed,
            failed_batches=tuple(self.failed),
            warnings=tuple(self.warnings),
            stopped_reason=stopped_reason,
        )


def _ref(item: UserRef | str) -> UserRef | str:
    # Plain strings (external ids) are by far the most common input: they stay strings and
    # are checked in bulk by _refs; anything else becomes an identifier.
    return item if item.__class__ is str else as_ref(item)


def _refs(
    items: Iterator[UserRef | str], count: int, kind: str, offset: int
) -> tuple[UserRef | str, ...]:
    try:
        chunk = tuple(islice(items, count))
        try:
            check_external_ids(chunk)  # the common case: plain, valid external ids
            return CheckedIds(chunk)  # so the client need not check them again
        except InvalidIdentifierError:
            # Identifier objects among them, or a bad value: item by item, precise errors.
            chunk = tuple(map(_ref, chunk))
            check_external_ids([item for item in chunk if isinstance(item, str)])
        return chunk
    except InvalidIdentifierError as exc:
        raise InvalidIdentifierError(
            f"{exc} (in {kind}, among items {offset + 1} to {offset + count})"
        ) from exc


def _check_disjoint(batch: Batch) -> None:
    if batch.add and batch.remove:
        removed = set(map(key_of, batch.remove))
        both = sum(1 for key in map(key_of, batch.add) if key in removed)
        if both:
            raise InputError(
                f"{both} user(s) are both added and removed in the same upload; "
                "add and remove must not overlap"
            )


def _pack(
    add: Iterable[UserRef | str], remove: Iterable[UserRef | str], size: int
) -> Iterator[Batch]:
    """Yield batches of at most ``size`` ids: all adds first, then all removes, lazily.

    At most one batch (where the adds run out) carries both adds and removes; it is checked
    for a user in both.
    """
    adds, removes = iter(add), iter(remove)
    n_add = n_remove = 0
    while True:
        chunk = _refs(adds, size, "add", n_add)
        n_add += len(chunk)
        if len(chunk) == size:
            yield Batch(add=chunk)
            continue
        rest = _refs(removes, size - len(chunk), "remove", n_remove)
        n_remove += len(rest)
        if chunk or rest:
            batch = Batch(add=chunk, remove=rest)
            _check_disjoint(batch)
            yield batch
        break
    while True:
        chunk = _refs(removes, size, "remove", n_remove)
        if not chunk:
            return
        n_remove += len(chunk)
        yield Batch(remove=chunk)


class BatchUploader:
    """Sends membership changes of any size: packed, concurrent, rate limited, retried.

    One uploader may run several uploads (for several cohorts, from several threads) at once;
    they share its rate limiter, so share one uploader to share one budget.

    Args:
        client: What sends one request; :class:`~braze_cohorts.CohortClient` or any
            :class:`~braze_cohorts.typing.MembersClient`. It must be thread-safe.
        concurrency: Worker threads, i.e. requests in flight at most. The default (16) reaches
            Braze's full rate with about 100 ms a request; 8 measured only ~75 % of it, since
            each request also spends time waiting for the GIL.
        requests_per_hour: The rate never to exceed (Braze allows 250,000).
        retry: The :class:`RetryPolicy`.
        batch_size: Ids per request at most (1 to 1,000).
        clock: Monotonic seconds; inject a fake one in tests.
        sleep: Waits; inject a fake one in tests so they never really wait. With the default
            (``time.sleep``) waits end early when an upload stops.
        wall_clock: UTC epoch seconds, to read ``X-RateLimit-Reset``.
        deadline: Seconds an upload may take, from the call to :meth:`upload` (``None``, the
            default: no limit). Once it passes no request starts, and what was not sent is
            reported as failed.
        breaker: When an upload judges Braze down and stops (:class:`BreakerPolicy`);
            ``None`` turns the breaker off.
        limiter: What paces request starts (a :class:`~braze_cohorts.typing.RequestLimiter`),
            e.g. one shared with other uploaders or processes. By default a
            :class:`RateLimiter` of ``requests_per_hour``; when given, ``requests_per_hour``
            only shows in the ``repr``.

    Raises:
        ConfigurationError: If an option is out of range.
    """

    def __init__(
        self,
        client: MembersClient,
        *,
        concurrency: int = 16,
        requests_per_hour: float = 250_000,
        retry: RetryPolicy = DEFAULT_RETRY,
        batch_size: int = MAX_IDS_PER_REQUEST,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        wall_clock: Clock = time.time,
        deadline: float | None = None,
        breaker: BreakerPolicy | None = DEFAULT_BREAKER,
        limiter: RequestLimiter | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_IDS_PER_REQUEST
        ):
            raise ConfigurationError(
                f"batch_size must be an int from 1 to {MAX_IDS_PER_REQUEST}, not {batch_size!r}"
            )
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, (int, float))
            or not 0 < deadline < math.inf
        ):
            raise ConfigurationError(
                f"deadline must be a positive number or None, not {deadline!r}"
            )
        if breaker is not None and not isinstance(breaker, BreakerPolicy):
            raise ConfigurationError(
                f"breaker must be a BreakerPolicy or None, not {type(breaker).__name__}"
            )
        self._client = client
        self._concurrency = concurrency
        self._retry = retry
        self._batch_size = batch_size
        self._clock = clock
        self._sleep = sleep
        self._deadline = deadline
        self._breaker = breaker
        self._limiter: RequestLimiter = (
            limiter
            if limiter is not None
            else RateLimiter(
                requests_per_hour,
                clock=clock,
                wall_clock=wall_clock,
                max_hold=retry.max_server_wait,
            )
        )
        self._requests_per_hour = requests_per_hour

    def __repr__(self) -> str:
        return (
            f"BatchUploader(concurrency={self._concurrency}, "
            f"requests_per_hour={self._requests_per_hour}, retry={self._retry!r}, "
            f"deadline={self._deadline!r}, breaker={self._breaker!r})"
        )

    @property
    def concurrency(self) -> int:
        """Requests in flight at most."""
        return self._concurrency

    @property
    def requests_per_hour(self) -> float:
        """The rate never exceeded."""
        return self._requests_per_hour

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._retry

    @property
    def deadline(self) -> float | None:
        """Seconds an upload may take, or ``None``."""
        return self._deadline

    @property
    def breaker(self) -> BreakerPolicy | None:
        """The circuit breaker's policy, or ``None`` when it is off."""
        return self._breaker

    @property
    def limiter(self) -> RequestLimiter:
        """What paces request starts."""
        return self._limiter

    def with_limiter(self, limiter: RequestLimiter) -> BatchUploader:
        """A copy of this uploader (same client and settings) whose starts ``limiter`` paces.

        :class:`~braze_cohorts.CohortSync` uses it to put a
        :class:`~braze_cohorts.SharedRateLimiter` in front of the uploader's own limiter.
        """
        twin = copy.copy(self)
        twin._limiter = limiter
        return twin

    def call(self, request: Callable[[], _T]) -> _T:
        """Send one request that is not a batch (e.g. naming a cohort) the uploader's way.

        The request shares the rate limit with uploads and is retried by the same policy:
        429, 423, 5XX and transport errors are retried with backoff, honouring the server's
        wait; 400 and 401 are raised at once.

        Args:
            request: Sends exactly one request, e.g.
                ``lambda: client.name_cohort("power-users", "Power users")``.

        Returns:
            What ``request`` returned.

        Raises:
            BrazeCohortsError: The last error, once retries are used up or for errors that are
                never retried.
        """
        limiter = self._limiter

        def attempt() -> _T:
            limiter.acquire(self._sleep)
            try:
                result = request()
            except RateLimitedError as exc:
                limiter.finish()
                if exc.retry_after:
                    limiter.hold(exc.retry_after)
                raise
            except BaseException:
                limiter.finish()
                raise
            limiter.finish(getattr(result, "rate_limit", None))
            return result

        retrying = _RetryPlan(self._retry, self._clock).retrying(self._sleep, "a request")
        return retrying(attempt)

    def upload(
        self,
        cohort_id: str,
        *,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
        progress: ProgressHook | None = None,
        on_batch_done: BatchDoneHook | None = None,
        on_batch_failed: BatchFailedHook | None = None,
    ) -> UploadReport:
        """Add and remove users, in as many requests as it takes.

        ``add`` and ``remove`` are read lazily, a few batches ahead of the requests, so they may
        be generators of any size. A plain ``str`` means an external id. All adds are sent
        before the removes; the two must not overlap (only the one request that carries both
        is checked, since checking the whole input would need memory for all of it).

        Hooks are called from the thread that called ``upload``, one at a time, as batches
        finish (in completion order, not input order).

        Args:
            cohort_id: The partner's cohort id.
            add: Users to add.
            remove: Users to remove.
            progress: Called with an :class:`UploadProgress` after every finished batch.
            on_batch_done: Called with the batch and Braze's answer for every acknowledged
                batch.
            on_batch_failed: Called with a :class:`~braze_cohorts.FailedBatch` for every batch
                that failed after retries (``outcome_unknown`` says whether Braze may have
                applied it anyway), for a batch whose retries were cut short by a stop, and,
                when the deadline or the breaker stopped the upload, for every batch not sent
                (their error is a :class:`~braze_cohorts.DeadlineExceededError` or a
                :class:`~braze_cohorts.CircuitOpenError`, ``outcome_unknown`` is ``False``).

        Returns:
            The report. Failed batches are listed in it, not raised. When the deadline or the
            breaker stopped the upload, its ``stopped_reason`` says which, and the rest of
            ``add`` and ``remove`` has been read and reported as failed batches, so that
            nothing given goes unaccounted for.

        Raises:
            AuthenticationError: On a 401. No new request starts; requests in flight finish
                and are reported through the hooks first.
            InvalidIdentifierError: If an item is not a valid identifier. The batch it would
                have been in is not sent; earlier batches finish and are reported first.
            InputError: If one request would both add and remove the same user.
            ConfigurationError: If ``cohort_id`` is empty, ``add`` or ``remove`` is a single
                identifier or string instead of an iterable of them (nothing is sent), or the
                client refuses a request as misconfigured (the upload stops as for a 401).
        """
        if not isinstance(cohort_id, str) or not cohort_id.strip():
            raise ConfigurationError("cohort_id must be a non-empty str")
        for name, items in (("add", add), ("remove", remove)):
            if isinstance(items, (str, bytes, ExternalId, UserAlias, DeviceId)):
                raise ConfigurationError(
                    f"{name} must be an iterable of identifiers, not a single "
                    f"{type(items).__name__}"
                )
        run = _Run(self, cohort_id)
        tally = _Tally()
        hooks = _Hooks(progress, on_batch_done, on_batch_failed, tally, run)
        limit = 2 * self._concurrency
        pending: set[Future[_Outcome]] = set()
        # Finished futures arrive here, so waiting for the next one costs the same whatever the
        # concurrency (concurrent.futures.wait would install a waiter on every pending future).
        finished: queue.SimpleQueue[Future[_Outcome]] = queue.SimpleQueue()

        def absorb_next() -> None:
            future = finished.get()
            pending.discard(future)
            hooks.absorb(future)

        log.info("uploading to cohort %s", cohort_id)
        batches = _pack(add, remove, self._batch_size)
        held: list[Batch] = []  # read, but the upload stopped before it could be handed out
        executor = ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="braze-cohorts-upload"
        )
        try:
            try:
                while not run.stopped.is_set() and not run.expired():
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception as exc:
                        # Bad input: this batch never goes; those handed out before it finish.
                        hooks.input_error = exc
                        break
                    while len(pending) >= limit and not run.stopped.is_set():
                        absorb_next()
                    if run.stopped.is_set():
                        held.append(batch)
                        break
                    future = executor.submit(run.send, batch)
                    pending.add(future)
                    future.add_done_callback(finished.put)
            except BaseException as exc:
                hooks.fail(exc)
            # Drain: requests in flight finish and are reported, whatever stopped the feed. Not
            # through the queue: an interrupt between its get() and the discard above would
            # leave a future in pending that the queue never hands out again (a hang).
            for future in as_completed(list(pending)):
                pending.discard(future)
                hooks.absorb(future)
        finally:
            run.stopped.set()
            executor.shutdown(wait=True, cancel_futures=True)
        if run.stop_error is not None:
            hooks.report_unsent(held, batches)
        report = tally.report(run.stop_reason)
        log.info(
            "upload to cohort %s %s: %d requests (%d retries), %d added, %d removed, "
            "%d failed batches",
            cohort_id,
            "stopped"
            if hooks.fatal or hooks.auth_error or hooks.input_error or run.stop_reason
            else "finished",
            report.requests,
            report.retries,
            report.added,
            report.removed,
            len(report.failed_batches),
        )
        if hooks.fatal is not None:
            raise hooks.fatal
        if hooks.auth_error is not None:
            raise hooks.auth_error
        if hooks.input_error is not None:
            raise hooks.input_error
        return report


class _Hooks:
    """Turns worker outcomes into tallies and hook calls (internal; coordinating thread only)."""

    def __init__(
        self,
        progress: ProgressHook | None,
        on_batch_done: BatchDoneHook | None,
        on_batch_failed: BatchFailedHook | None,
        tally: _Tally,
        run: _Run,
    ) -> None:
        self.progress = progress
        self.on_batch_done = on_batch_done
        self.on_batch_failed = on_batch_failed
        self.tally = tally
        self.run = run
        self.auth_error: AuthenticationError | None = None
        #: A bug, a failing hook, Ctrl-C: raised first.
        self.fatal: BaseException | None = None
        #: An input that cannot be sent; raised after a 401, which matters more to the caller.
        self.input_error: Exception | None = None

    def fail(self, exc: BaseException) -> None:
        """Stop the upload because of ``exc``; the first such error is the one raised."""
        self.run.stopped.set()
        if self.fatal is None:
            self.fatal = exc
        else:
            log.error("another error while stopping an upload: %s", type(exc).__name__)

    def absorb(self, future: Future[_Outcome]) -> None:
        """Handle a finished batch; an error (a bug, a failing hook) stops the upload."""
        try:
            self.handle(future.result())
        except BaseException as exc:
            self.fail(exc)

    def report_unsent(self, held: list[Batch], batches: Iterator[Batch]) -> None:
        """Report the batches never handed out, and the rest of the input, as failed."""
        if self.fatal is not None or self.auth_error is not None or self.input_error is not None:
            return  # the upload raises; the caller does not expect a full account
        error = self.run.stop_error
        assert error is not None
        try:
            for batch in held:
                self.failed(batch, error, outcome_unknown=False)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except Exception as exc:
                    self.input_error = exc
                    return
                self.failed(batch, error, outcome_unknown=False)
        except BaseException as exc:
            self.fail(exc)

    def failed(self, batch: Batch, error: BrazeCohortsError, *, outcome_unknown: bool) -> None:
        """Count and report one failed batch."""
        tally = self.tally
        failed = FailedBatch(batch=batch, error=error, outcome_unknown=outcome_unknown)
        tally.failed.append(failed)
        tally.failed_ids += len(batch)
        if self.on_batch_failed is not None:
            self.on_batch_failed(failed)
        if self.progress is not None:
            self.progress(tally.progress())

    def handle(self, outcome: _Outcome) -> None:
        tally = self.tally
        run = self.run
        if not outcome.sent:
            # Stopped before its first request: Braze never saw it. A deadline or the breaker
            # reports it as failed; a 401 or a bug raises instead.
            if run.stop_error is not None:
                self.failed(outcome.batch, run.stop_error, outcome_unknown=False)
            return
        tally.requests += outcome.attempts
        tally.retries += outcome.attempts - 1
        batch = outcome.batch
        if outcome.error is None:
            tally.batches_done += 1
            tally.added += len(batch.add)
            tally.removed += len(batch.remove)
            if outcome.response is not None and outcome.response.errors:
                tally.warnings.extend(outcome.response.errors)
            if self.on_batch_done is not None:
                self.on_batch_done(batch, outcome.response)
            if self.progress is not None:
                self.progress(tally.progress())
        else:
            if isinstance(outcome.error, AuthenticationError) and self.auth_error is None:
                self.auth_error = outcome.error
            self.failed(batch, outcome.error, outcome_unknown=outcome.outcome_unknown)
