"""Counters and timings of every import through the OpenTelemetry API, or nothing.

When ``opentelemetry-api`` is installed (``pip install 'braze-cohorts[otel]'``), each finished
import adds to the instruments below on the meter ``braze_cohorts`` of the global meter
provider (whatever the application configured: Prometheus, OTLP, …; the API alone records
nothing until an SDK provider is set). Without it every call here is a no-op. Attributes are
the cohort id, the trigger and the result: never user ids or keys.

=================================  =========  ===============================================
instrument                         unit       what
=================================  =========  ===============================================
``braze_cohorts.runs``             {run}      finished imports (attributes: result, trigger,
                                              full_resync)
``braze_cohorts.run.duration``     s          a histogram of the imports' durations
``braze_cohorts.requests``         {request}  HTTP requests sent, retries included
``braze_cohorts.retries``          {request}  requests that were retries
``braze_cohorts.ids_sent``         {id}       ids acknowledged by Braze (attribute direction:
                                              add, remove)
``braze_cohorts.rejected``         {record}   records that could not be matched (attribute
                                              reason)
``braze_cohorts.rate_limit.wait``  s          seconds request starts were asked to wait by the
                                              rate limiter (pacing and 429 holds), recorded by
                                              a :class:`MeteredLimiter` as they happen
=================================  =========  ===============================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from braze_cohorts._models import ImportRun, RateLimitInfo
from braze_cohorts._version import __version__
from braze_cohorts.typing import RequestLimiter

__all__ = ["METER_NAME", "MeteredLimiter", "record_run"]

log = logging.getLogger(__name__)

#: The name of the meter every instrument belongs to.
METER_NAME = "braze_cohorts"

try:
    from opentelemetry import metrics as _otel_metrics
except ImportError:  # the [otel] extra is not installed: every call is a no-op
    _otel_metrics = None  # type: ignore[assignment]


class _Instruments:
    """The instruments of one meter provider, created once."""

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(METER_NAME, __version__)

        def counter(name: str, unit: str, description: str) -> Any:
            return meter.create_counter(name, unit=unit, description=description)

        self.runs = counter("braze_cohorts.runs", "{run}", "Finished imports.")
        self.duration = meter.create_histogram(
            "braze_cohorts.run.duration", unit="s", description="How long imports took."
        )
        self.requests = counter(
            "braze_cohorts.requests", "{request}", "HTTP requests sent to Braze, retries included."
        )
        self.retries = counter(
            "braze_cohorts.retries",
            "{request}",
            "Requests that were retries of an earlier attempt.",
        )
        self.ids_sent = counter("braze_cohorts.ids_sent", "{id}", "Ids acknowledged by Braze.")
        self.rejected = counter(
            "braze_cohorts.rejected", "{record}", "Records that could not be matched to a user."
        )
        self.rate_limit_wait = counter(
            "braze_cohorts.rate_limit.wait",
            "s",
            "Seconds request starts were asked to wait by the rate limiter.",
        )


_cached: tuple[Any, _Instruments] | None = None


def _instruments(provider: Any) -> _Instruments:
    global _cached
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = (provider, _Instruments(provider))
        _cached = cached
    return cached[1]


def _instruments_of(meter_provider: Any) -> _Instruments | None:
    """The instruments of ``meter_provider`` (else the global one); ``None`` without the API."""
    if _otel_metrics is None:
        return None
    if meter_provider is None:
        meter_provider = _otel_metrics.get_meter_provider()
    return _instruments(meter_provider)


def record_run(run: ImportRun, *, meter_provider: Any = None) -> None:
    """Add a finished run's counts and duration to the instruments; never raises.

    Args:
        run: The run as recorded at its end.
        meter_provider: Record there instead of the global meter provider (tests).
    """
    try:
        ins = _instruments_of(meter_provider)
        if ins is not None:
            _record(ins, run)
    except Exception as exc:  # a broken exporter must never fail an import
        log.warning("could not record the metrics of a run: %s", type(exc).__name__)


def _record(ins: _Instruments, run: ImportRun) -> None:
    cohort = {"cohort_id": run.cohort_id}
    outcome = {**cohort, "result": run.result, "trigger": run.trigger}
    ins.runs.add(1, {**outcome, "full_resync": run.full_resync})
    if run.finished_at is not None:
        ins.duration.record(max((run.finished_at - run.started_at).total_seconds(), 0.0), outcome)
    ins.requests.add(run.requests, cohort)
    ins.retries.add(run.retries, cohort)
    if run.result != "dry_run":  # a dry run's counts are what *would* be sent
        ins.ids_sent.add(run.added, {**cohort, "direction": "add"})
        ins.ids_sent.add(run.removed, {**cohort, "direction": "remove"})
    for reason, count in sorted(run.rejected.items()):
        ins.rejected.add(count, {**cohort, "reason": reason})


class MeteredLimiter:
    """A :class:`~braze_cohorts.typing.RequestLimiter` that records how long starts waited.

    It wraps another limiter (by default the uploader's :class:`~braze_cohorts.RateLimiter`)
    and adds every wait that limiter asks for, pacing and 429 holds alike, to the counter
    ``braze_cohorts.rate_limit.wait`` (seconds; summed over the worker threads, so it can
    exceed the wall time). Without ``opentelemetry-api`` it only delegates.

    Args:
        limiter: The limiter that decides.
        meter_provider: Record there instead of the global meter provider (tests).

    Example:
        >>> import braze_cohorts as bc
        >>> limiter = bc.MeteredLimiter(bc.RateLimiter(250_000))
        >>> uploader = bc.BatchUploader(client, limiter=limiter)  # doctest: +SKIP
    """

    def __init__(self, limiter: RequestLimiter, *, meter_provider: Any = None) -> None:
        self._limiter = limiter
        self._provider = meter_provider

    def __repr__(self) -> str:
        return f"MeteredLimiter({self._limiter!r})"

    @property
    def limiter(self) -> RequestLimiter:
        """The wrapped limiter."""
        return self._limiter

    def acquire(self, sleep: Callable[[float], object]) -> None:
        """Return when the wrapped limiter lets a request start; record what it waited."""

        def waiting(seconds: float) -> object:
            if seconds > 0:
                _record_wait(seconds, self._provider)
            return sleep(seconds)

        self._limiter.acquire(waiting)

    def finish(self, rate_limit: RateLimitInfo | None = None) -> None:
        """Pass the end of a request on to the wrapped limiter."""
        self._limiter.finish(rate_limit)

    def hold(self, seconds: float) -> None:
        """Pass a pause on to the wrapped limiter."""
        self._limiter.hold(seconds)


def _record_wait(seconds: float, meter_provider: Any) -> None:
    try:
        ins = _instruments_of(meter_provider)
        if ins is not None:
            ins.rate_limit_wait.add(seconds)
    except Exception as exc:  # a broken exporter must never fail an upload
        log.warning("could not record a rate-limit wait: %s", type(exc).__name__)
