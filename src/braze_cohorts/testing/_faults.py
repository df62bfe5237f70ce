"""The emulator's faults: injected failures, latency and the rate limit.

An injected :class:`Fault` answers (or drops) the next requests in the way its
:class:`FaultKind` says. :class:`FaultPlan` queues them, takes the first that matches each
request's path, and also holds the latency and the sliding-window rate limit. Only the standard
library is used.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import math
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Fault", "FaultKind", "FaultPlan"]


class FaultKind(str, enum.Enum):
    """What answered a request instead of (or on top of) the emulated Braze.

    The values are the strings :attr:`RequestRecord.fault` has always held, so
    ``record.fault == "fail"`` still holds.
    """

    #: An error status (429, 423, 5XX ...); nothing is applied.
    FAIL = "fail"
    #: The connection is closed without an answer; nothing is applied.
    DROP_BEFORE_APPLY = "drop_before_apply"
    #: The change is applied, then the connection is closed without an answer.
    DROP_AFTER_APPLY = "drop_after_apply"
    #: A redirect (3XX); nothing is applied.
    REDIRECT = "redirect"
    #: The change is applied and the answer is ``200`` with an ``errors`` list ("2XX with errors").
    ERRORS = "errors"
    #: The emulator's rate limit refused the request with ``429`` (never injected).
    RATE_LIMITED = "rate_limited"

    def __str__(self) -> str:
        return self.value


#: The kinds that :meth:`FaultPlan.add` accepts.
INJECTABLE = tuple(k for k in FaultKind if k is not FaultKind.RATE_LIMITED)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected fault: what to do to the next ``times`` requests whose path ends with ``path``.

    Build it with a factory (:meth:`fail`, :meth:`drop`, :meth:`redirect`, :meth:`errors`) or
    from JSON (:meth:`from_json`); each validates its arguments.
    """

    kind: FaultKind
    times: int = 1
    path: str | None = None
    status: int = 0
    headers: tuple[tuple[str, str | None], ...] = ()
    body: bytes | None = None
    retry_after: float | None = None
    location: str = ""
    errors: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.times, bool) or not isinstance(self.times, int) or self.times < 1:
            raise ValueError("n must be >= 1")
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError("path must be a string")

    @classmethod
    def fail(
        cls,
        times: int = 1,
        status: int = 503,
        *,
        headers: Mapping[str, str | None] | None = None,
        body: bytes | str | Mapping[str, object] | Sequence[object] | None = None,
        retry_after: float | None = None,
        path: str | None = None,
    ) -> Fault:
        """Answer with ``status`` and apply nothing; see :meth:`BrazeEmulator.fail_next`."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if retry_after is not None and (not _is_number(retry_after) or retry_after < 0):
            raise ValueError("retry_after must be a number of seconds >= 0")
        if headers is not None and (
            not isinstance(headers, Mapping)
            or not all(isinstance(k, str) and k for k in headers)
            or not all(v is None or isinstance(v, str) for v in headers.values())
        ):
            raise ValueError("headers must map names to strings (or null to drop a default)")
        return cls(
            FaultKind.FAIL,
            times,
            path,
            status=status,
            headers=tuple((headers or {}).items()),
            body=_encode_body(body),
            retry_after=retry_after,
        )

    @classmethod
    def drop(cls, times: int = 1, *, when: str = "before_apply", path: str | None = None) -> Fault:
        """Close the connection unanswered, before or after applying the change."""
        kinds = {
            "before_apply": FaultKind.DROP_BEFORE_APPLY,
            "after_apply": FaultKind.DROP_AFTER_APPLY,
        }
        if when not in kinds:
            raise ValueError('when must be "before_apply" or "after_apply"')
        return cls(kinds[when], times, path)

    @classmethod
    def redirect(
        cls, times: int = 1, location: str = "", *, status: int = 307, path: str | None = None
    ) -> Fault:
        """Answer with a redirect to ``location`` and apply nothing."""
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 399:
            raise ValueError("status must be a redirect (3XX)")
        return cls(FaultKind.REDIRECT, times, path, status=status, location=str(location))

    @classmethod
    def errors_answer(
        cls,
        times: int = 1,
        errors: Sequence[object] = ("simulated error",),
        *,
        path: str | None = None,
    ) -> Fault:
        """Apply the change and answer ``200`` with this ``errors`` list."""
        if isinstance(errors, (str, bytes)) or not isinstance(errors, Sequence):
            raise ValueError("errors must be a list")
        return cls(FaultKind.ERRORS, times, path, errors=tuple(errors))

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """A fault from its JSON form (the admin API's ``POST /_emulator/faults`` body).

        ``{"kind": "fail", "n": 3, "status": 503, "retry_after": 2, "headers": {...},
        "body": ..., "path": "/cohorts/users"}``; ``{"kind": "drop_before_apply"}``,
        ``{"kind": "drop_after_apply"}``, ``{"kind": "redirect", "location": "..."}``,
        ``{"kind": "errors", "errors": ["..."]}``. ``n`` defaults to 1.

        Raises:
            ValueError: If the object is not such a fault.
        """
        if not isinstance(data, Mapping):
            raise ValueError("a fault is a JSON object with a kind")
        raw = dict(data)
        kind = raw.pop("kind", None)
        times = raw.pop("n", 1)
        allowed = {
            "fail": {"status", "headers", "body", "retry_after", "path"},
            "drop_before_apply": {"path"},
            "drop_after_apply": {"path"},
            "redirect": {"location", "status", "path"},
            "errors": {"errors", "path"},
        }
        if not isinstance(kind, str) or kind not in allowed:
            raise ValueError(f"kind must be one of {', '.join(allowed)}")
        unknown = set(raw) - allowed[kind]
        if unknown:
            raise ValueError(f"unknown fields for a {kind} fault: {', '.join(sorted(unknown))}")
        try:
            if kind == "fail":
                return cls.fail(times, **raw)
            if kind == "redirect":
                return cls.redirect(times, **raw)
            if kind == "errors":
                return cls.errors_answer(times, **raw)
            return cls.drop(times, when=kind.removeprefix("drop_"), **raw)
        except TypeError as exc:
            raise ValueError(f"invalid {kind} fault: {exc}") from exc

    def to_json(self, remaining: int | None = None) -> dict[str, Any]:
        """The fault as JSON (with how many requests it still applies to)."""
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "n": self.times if remaining is None else remaining,
        }
        if self.path is not None:
            out["path"] = self.path
        if self.kind in (FaultKind.FAIL, FaultKind.REDIRECT):
            out["status"] = self.status
        if self.kind is FaultKind.REDIRECT:
            out["location"] = self.location
        if self.kind is FaultKind.ERRORS:
            out["errors"] = list(self.errors)
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    def matches(self, path: str) -> bool:
        """Whether the fault applies to a request for ``path``."""
        return self.path is None or path.endswith(self.path)

    def failure(self, now: float, limit: int | None) -> tuple[list[tuple[str, str]], bytes | None]:
        """The headers and body of a :attr:`FaultKind.FAIL` answer at ``now``.

        A 429 carries ``Retry-After`` (default 1) and ``X-RateLimit-*`` (with ``limit``, or
        Braze's 250,000); explicit :attr:`headers` replace defaults, ``None`` removes one.
        """
        defaults: dict[str, str] = {}
        retry_after = self.retry_after
        if self.status == 429:
            if retry_after is None:
                retry_after = 1.0
            defaults["X-RateLimit-Limit"] = str(limit or 250_000)
            defaults["X-RateLimit-Remaining"] = "0"
            defaults["X-RateLimit-Reset"] = str(math.ceil(now + retry_after))
        if retry_after is not None:
            defaults["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
            )
        replaced = {k.lower() for k, _ in self.headers}
        headers = [(k, v) for k, v in defaults.items() if k.lower() not in replaced]
        headers.extend((k, v) for k, v in self.headers if v is not None)
        return headers, self.body


class FaultPlan:
    """The faults queued for the next requests, the latency and the rate limit. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[list[Any]] = []  # [fault, remaining]
        self._latency = 0.0
        self._jitter = 0.0
        self._limit: int | None = None
        self._window = 3600.0
        self._accepted: collections.deque[float] = collections.deque()

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` after those already pending."""
        if fault.kind not in INJECTABLE:
            raise ValueError(f"a {fault.kind.value} fault cannot be injected")
        with self._lock:
            self._queue.append([fault, fault.times])

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._queue.clear()

    def pending(self) -> list[tuple[Fault, int]]:
        """The pending faults, in order, each with how many requests it still applies to."""
        with self._lock:
            return [(f, n) for f, n in self._queue]

    def take(self, path: str) -> Fault | None:
        """Use up one application of the first pending fault that matches ``path``."""
        with self._lock:
            for i, entry in enumerate(self._queue):
                fault: Fault = entry[0]
                if fault.matches(path):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._queue[i]
                    return fault
        return None

    # -- latency ----------------------------------------------------------------------------

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every answer by ``fixed`` seconds plus up to ``jitter`` seconds at random."""
        if not (_is_number(fixed) and _is_number(jitter)) or fixed < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        with self._lock:
            self._latency = float(fixed)
            self._jitter = float(jitter)

    @property
    def latency(self) -> tuple[float, float]:
        """The fixed latency and the jitter, in seconds."""
        with self._lock:
            return self._latency, self._jitter

    def delay(self) -> float:
        """The delay for one answer: the fixed latency plus a random share of the jitter."""
        with self._lock:
            fixed, jitter = self._latency, self._jitter
        return fixed + (random.uniform(0, jitter) if jitter else 0.0)

    # -- rate limit -------------------------------------------------------------------------

    def set_rate_limit(self, requests_per_hour: int | None, *, window: float = 3600.0) -> None:
        """Enforce at most ``requests_per_hour`` requests per sliding ``window`` (``None``: off).

        Changing the limit forgets the requests counted so far.
        """
        if requests_per_hour is not None and (
            isinstance(requests_per_hour, bool)
            or not isinstance(requests_per_hour, int)
            or requests_per_hour < 1
        ):
            raise ValueError("requests_per_hour must be >= 1")
        if not _is_number(window) or not window > 0:
            raise ValueError("window must be > 0")
        with self._lock:
            self._limit = requests_per_hour
            self._window = float(window)
            self._accepted.clear()

    @property
    def rate_limit(self) -> tuple[int | None, float]:
        """The limit (``None``: off) and its window in seconds."""
        with self._lock:
            return self._limit, self._window

    def admit(self, now: float) -> int | None:
        """Count a request at ``now`` against the limit; ``None`` if admitted.

        Returns:
            ``None`` when the request is within the limit (it is then counted), else the
            whole seconds until a slot frees (at least 1).
        """
        with self._lock:
            if self._limit is None:
                return None
            accepted = self._accepted
            while accepted and accepted[0] <= now - self._window:
                accepted.popleft()
            if len(accepted) >= self._limit:
                return max(1, math.ceil(accepted[0] + self._window - now))
            accepted.append(now)
            return None

    def rate_headers(self, now: float) -> list[tuple[str, str]]:
        """``X-RateLimit-Limit``/``-Remaining``/``-Reset`` at ``now`` (none without a limit)."""
        with self._lock:
            if self._limit is None:
                return []
            accepted = self._accepted
            reset = (accepted[0] + self._window) if accepted else now + self._window
            return [
                ("X-RateLimit-Limit", str(self._limit)),
                ("X-RateLimit-Remaining", str(max(0, self._limit - len(accepted)))),
                ("X-RateLimit-Reset", str(math.ceil(reset))),
            ]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(value)
        and not math.isinf(value)
    )


def _encode_body(
    body: bytes | str | Mapping[str, object] | Sequence[object] | None,
) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()
