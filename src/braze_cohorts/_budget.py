"""SharedRateLimiter: one request budget per Braze workspace, shared by every job on a store.

Braze's limit (250,000 requests an hour) belongs to the workspace, not to a process: two cron
jobs importing two cohorts into one workspace at once must share it. A
:class:`SharedRateLimiter` reserves each request start in a
:class:`~braze_cohorts.typing.BudgetStore` (the :class:`~braze_cohorts.SQLiteStore` file every
job already opens), keyed by the client's workspace fingerprint:

* a start is one short write transaction, ``slot = max(next_start, now, hold_until)`` and
  ``next_start = slot + 3600 / (0.99 * limit)``, then a sleep until ``slot``. Starts go out in
  the order they are asked for, whatever the process: fair between concurrent imports (each
  gets a share in proportion to the requests it has waiting), and evenly spaced for all of
  them together;
* a start is a reservation of a moment, not a lease: a process killed mid-run leaves nothing
  to give back; the starts it had reserved (at most one per worker thread) simply pass;
* the actual starts of the last second are kept too, and a start that would put more than a
  second's share of the limit in it waits: threads of several processes that wake late cannot bunch
  their starts above the limit;
* a 429's ``Retry-After`` (or ``X-RateLimit-Remaining`` at or below the requests in flight)
  holds the whole budget: every job sharing it pauses;
* an optional ``cap`` (a :class:`~braze_cohorts.RateLimiter`) keeps one job under its own
  ``requests_per_hour`` as well.

When the store fails (a file locked for longer than its timeout), a request is paced by the
``cap`` alone, and the failure is logged once: a budget table that is busy never fails an
import.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from braze_cohorts.exceptions import BrazeCohortsError, ConfigurationError
from braze_cohorts.typing import BudgetStore, RequestLimiter

if TYPE_CHECKING:
    from braze_cohorts._models import RateLimitInfo

__all__ = ["DEFAULT_WORKSPACE_REQUESTS_PER_HOUR", "SharedRateLimiter"]

log = logging.getLogger(__name__)

#: Braze's limit per workspace: the budget every job sharing a store shares by default.
DEFAULT_WORKSPACE_REQUESTS_PER_HOUR = 250_000

#: As :class:`~braze_cohorts.RateLimiter`: plan for 99 % of the limit.
_PACING_SHARE = 0.99


class SharedRateLimiter:
    """Paces request starts against a budget shared through a store, per Braze workspace.

    A :class:`~braze_cohorts.typing.RequestLimiter` for
    :class:`~braze_cohorts.BatchUploader`'s ``limiter=``. Every job (thread or process) that
    uses a ``SharedRateLimiter`` on the same store and ``workspace`` shares one budget of
    ``requests_per_hour``; see ``docs/uploader.md``.

    Args:
        store: Where the budget lives: a :class:`~braze_cohorts.typing.BudgetStore` such as
            :class:`~braze_cohorts.SQLiteStore`.
        workspace: The budget's key: the client's workspace fingerprint
            (:attr:`CohortClient.workspace <braze_cohorts.CohortClient.workspace>`).
        requests_per_hour: The limit shared by everyone on this budget (Braze's: 250,000).
        cap: A limiter this job also goes through first, e.g. a
            :class:`~braze_cohorts.RateLimiter` for its own ``requests_per_hour``.
        wall_clock: UTC epoch seconds (``time.time``): compared between processes.
        max_hold: The longest pause a response can impose on everyone.

    Raises:
        ConfigurationError: If ``requests_per_hour`` is not a positive number or
            ``workspace`` is empty.

    Example:
        >>> import braze_cohorts as bc
        >>> store = bc.SQLiteStore(":memory:")
        >>> limiter = bc.SharedRateLimiter(store, "ws1:example", requests_per_hour=360_000)
        >>> limiter.acquire(lambda seconds: None); limiter.finish()
        >>> limiter
        SharedRateLimiter(workspace='ws1:example', interval=0.010101s)
    """

    def __init__(
        self,
        store: BudgetStore,
        workspace: str,
        *,
        requests_per_hour: float = DEFAULT_WORKSPACE_REQUESTS_PER_HOUR,
        cap: RequestLimiter | None = None,
        wall_clock: Callable[[], float] = time.time,
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
        if not isinstance(workspace, str) or not workspace:
            raise ConfigurationError("workspace must be a non-empty str")
        self._store = store
        self._workspace = workspace
        self.interval = 3600.0 / (requests_per_hour * _PACING_SHARE)
        # Starts are also counted over a sliding second (or one interval), up to the limit's
        # share of it: the pacing above stays under it, so the window only stops bunched
        # starts (a start it refuses forfeits its slot, which would cost rate if the window
        # were stricter than the pacing).
        self._window = max(1.0, self.interval)
        self._window_cap = max(1, math.floor(requests_per_hour * self._window / 3600))
        self._cap = cap
        self._clock = wall_clock
        self._max_hold = max_hold
        self._lock = threading.Lock()
        self._in_flight = 0
        self._store_failed = False

    def __repr__(self) -> str:
        return f"SharedRateLimiter(workspace={self._workspace!r}, interval={self.interval:.6f}s)"

    @property
    def workspace(self) -> str:
        """The budget's key."""
        return self._workspace

    @property
    def cap(self) -> RequestLimiter | None:
        """The limiter this job also goes through, or ``None``."""
        return self._cap

    def _failed(self, exc: BrazeCohortsError) -> None:
        if not self._store_failed:
            self._store_failed = True
            log.warning(
                "the shared request budget is unavailable (%s); pacing this job alone",
                type(exc).__name__,
            )

    def acquire(self, sleep: Callable[[float], object]) -> None:
        """Wait (with ``sleep``) for a start reserved in the shared budget; count it in flight.

        Every successful call must be paired with one :meth:`finish`.
        """
        cap = self._cap
        if cap is not None:
            cap.acquire(sleep)
        try:
            self._take(sleep)
        except BaseException:
            if cap is not None:
                cap.finish()
            raise
        with self._lock:
            self._in_flight += 1

    def _take(self, sleep: Callable[[float], object]) -> None:
        store, workspace = self._store, self._workspace
        while True:
            try:
                slot = store.reserve_start(workspace, self.interval, self._clock())
            except BrazeCohortsError as exc:
                self._failed(exc)
                return
            delay = slot - self._clock()
            if delay > 0:
                sleep(delay)
            try:
                wait = store.claim_start(workspace, self._clock(), self._window, self._window_cap)
            except BrazeCohortsError as exc:
                self._failed(exc)
                return
            if wait <= 0:
                return
            # Held by someone's 429 while we slept, or late wake-ups (of any process) crowded
            # the window: wait, then queue anew (the reserved start is forfeited).
            sleep(wait)

    def finish(self, rate_limit: RateLimitInfo | None = None) -> None:
        """Mark a request as finished; ``rate_limit`` is what its response's headers said.

        When Braze says the window is nearly used up (``X-RateLimit-Remaining`` no more than
        the requests in flight), the whole budget waits for ``X-RateLimit-Reset``.
        """
        with self._lock:
            self._in_flight -= 1
            in_flight = self._in_flight
        if self._cap is not None:
            self._cap.finish(rate_limit)
        if rate_limit is None or rate_limit.remaining is None or rate_limit.reset is None:
            return
        if rate_limit.remaining > in_flight:
            return
        until_reset = rate_limit.reset - self._clock()
        if until_reset > 0:
            self.hold(until_reset)

    def hold(self, seconds: float) -> None:
        """Let no request of anyone sharing the budget start for ``seconds`` (capped)."""
        seconds = min(max(seconds, 0.0), self._max_hold)
        if self._cap is not None:
            self._cap.hold(seconds)
        try:
            self._store.hold_budget(self._workspace, self._clock() + seconds)
        except BrazeCohortsError as exc:
            self._failed(exc)


def shared_limiter(
    store: object,
    workspace: object,
    requests_per_hour: float | None,
    cap: RequestLimiter | None,
    max_hold: float,
) -> SharedRateLimiter | None:
    """The limiter :class:`~braze_cohorts.CohortSync` uses by default, or ``None``.

    ``None`` when the budget is off (``requests_per_hour`` is ``None``), the store keeps no
    budgets, or the client names no workspace.
    """
    if requests_per_hour is None or not isinstance(store, BudgetStore):
        return None
    if not isinstance(workspace, str) or not workspace:
        return None
    if isinstance(cap, SharedRateLimiter):
        return None  # the caller shares a budget already
    return SharedRateLimiter(
        store, workspace, requests_per_hour=requests_per_hour, cap=cap, max_hold=max_hold
    )
