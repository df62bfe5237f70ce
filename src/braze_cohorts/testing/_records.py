"""The emulator's request log: one :class:`RequestRecord` per request to the partner endpoints."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

from braze_cohorts.testing._faults import FaultKind

__all__ = ["RequestLog", "RequestRecord"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """What the emulator saw of one request. It never holds a key.

    Attributes:
        method: The HTTP method.
        path: The request path (without the query string).
        status: The status answered, or ``None`` when the connection was dropped unanswered.
        message: The ``message`` of the answer (``"success"``, a validation message ...), with
            any key Braze would echo masked as ``***``.
        endpoint: ``"cohorts"`` (name endpoint), ``"users"`` (user cohort endpoint) or ``None``.
        partner: The partner name in the path.
        workspace: The workspace the data import key selected, if it was valid.
        cohort_id: The body's ``cohort_id`` when it was a string.
        name: The body's ``name`` on the cohort name endpoint.
        user_ids: External ids in the request (added and removed).
        device_ids: Device ids in the request (added and removed).
        aliases: Aliases in the request (added and removed).
        removed: Ids of all kinds in objects with ``should_remove: true``.
        matched: Ids that matched a known user of the workspace (only when applied).
        applied: Whether the request changed the emulator's state.
        fault: The :class:`FaultKind` that answered, if any (it compares equal to its string
            value: ``"fail"``, ``"drop_before_apply"``, ``"drop_after_apply"``, ``"redirect"``,
            ``"errors"`` or ``"rate_limited"``).
        key_outside_body: ``True`` if a key the emulator knows appeared in the request line or
            a header (it must only ever travel in the body).
        received_at: The emulator's clock when the request arrived, before any injected
            latency (epoch seconds). The rate limit counts a request when it is handled.
        created_at: The body's ``created_at`` on the cohort name endpoint, when it was a string.
    """

    method: str
    path: str
    status: int | None
    message: str = ""
    endpoint: str | None = None
    partner: str | None = None
    workspace: str | None = None
    cohort_id: str | None = None
    name: str | None = None
    user_ids: int = 0
    device_ids: int = 0
    aliases: int = 0
    removed: int = 0
    matched: int = 0
    applied: bool = False
    fault: FaultKind | None = None
    key_outside_body: bool = False
    received_at: float = 0.0
    created_at: str | None = None

    @property
    def ids(self) -> int:
        """All identifiers in the request, every kind, added and removed."""
        return self.user_ids + self.device_ids + self.aliases

    @property
    def added(self) -> int:
        """Identifiers in objects that add members."""
        return self.ids - self.removed

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (the admin API's ``GET /_emulator/requests``)."""
        out = dataclasses.asdict(self)
        out["fault"] = None if self.fault is None else self.fault.value
        out["ids"] = self.ids
        out["added"] = self.added
        return out


class RequestLog:
    """The newest records (and, if asked, raw request heads), at most ``limit`` of each."""

    def __init__(self, limit: int | None, *, record_raw: bool) -> None:
        if limit is not None and limit < 1:
            raise ValueError("log_limit must be >= 1 or None")
        self._lock = threading.Lock()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=limit)
        self._raw: collections.deque[tuple[bytes, bytes]] = collections.deque(maxlen=limit)
        self._record_raw = record_raw

    def append(self, record: RequestRecord) -> None:
        """Add a finished record (and log one INFO line of counts)."""
        with self._lock:
            self._records.append(record)
        log.info(
            "emulator: %s %s -> %s (%d ids%s)",
            record.method,
            record.path,
            record.status if record.status is not None else "dropped",
            record.ids,
            f", fault {record.fault}" if record.fault else "",
        )

    def append_raw(self, head: bytes) -> None:
        """Keep a request's line and header block, if raw recording is on."""
        if self._record_raw:
            line, _, rest = head.partition(b"\n")
            with self._lock:
                self._raw.append((line.rstrip(b"\r"), rest))

    def records(self) -> list[RequestRecord]:
        """A copy of the records, oldest first."""
        with self._lock:
            return list(self._records)

    def raw(self) -> list[tuple[bytes, bytes]]:
        """A copy of the raw heads, oldest first."""
        with self._lock:
            return list(self._raw)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def reset(self) -> None:
        """Forget every record and raw head."""
        with self._lock:
            self._records.clear()
            self._raw.clear()
