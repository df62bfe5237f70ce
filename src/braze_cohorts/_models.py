"""Value objects shared by the client, the uploader, the sync engine and the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Literal

import attrs

from braze_cohorts._identifiers import UserRef
from braze_cohorts.exceptions import BrazeCohortsError

__all__ = [
    "Batch",
    "CohortResponse",
    "FailedBatch",
    "ImportRun",
    "RateLimitInfo",
    "RunResult",
    "Trigger",
    "UploadReport",
]

#: Who started an import.
Trigger = Literal["manual", "scheduled"]

#: How an import ended.
RunResult = Literal["running", "succeeded", "failed", "interrupted", "dry_run"]


@attrs.frozen(slots=True)
class RateLimitInfo:
    """What Braze's ``X-RateLimit-*`` headers said on a response.

    Attributes:
        limit: ``X-RateLimit-Limit``, requests per window.
        remaining: ``X-RateLimit-Remaining``, requests left in the window.
        reset: ``X-RateLimit-Reset``, when the window resets (UTC epoch seconds).
    """

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None


@attrs.frozen(slots=True)
class CohortResponse:
    """A successful (2XX) answer from Braze.

    Attributes:
        status_code: The HTTP status.
        message: Braze's ``message`` (``"success"`` normally).
        errors: Braze's ``errors`` list: a 2XX may still report problems; they are kept, never
            dropped.
        rate_limit: The rate-limit headers, if any were sent.
        elapsed: Seconds the request took.
    """

    status_code: int
    message: str
    errors: tuple[object, ...] = ()
    rate_limit: RateLimitInfo = attrs.field(factory=RateLimitInfo)
    elapsed: float = 0.0


@attrs.frozen(slots=True)
class Batch:
    """The ids of one request to the user cohort endpoint (at most 1,000 together).

    As everywhere in the API, a plain ``str`` is an external id: the uploader passes plain
    strings through unchanged rather than building an :class:`ExternalId` for each (at 69,000
    ids a second that object is most of the cost). :func:`key_of` gives any item's canonical key.

    Attributes:
        add: Users to add.
        remove: Users to remove.
    """

    add: tuple[UserRef | str, ...] = ()
    remove: tuple[UserRef | str, ...] = ()

    def __len__(self) -> int:
        return len(self.add) + len(self.remove)


@attrs.frozen(slots=True)
class FailedBatch:
    """A batch that did not get acknowledged.

    Attributes:
        batch: The ids that were in the request.
        error: The last error (after retries).
        outcome_unknown: ``True`` if the request may have reached Braze, so its effect is unknown.
    """

    batch: Batch
    error: BrazeCohortsError
    outcome_unknown: bool


@attrs.frozen(slots=True)
class UploadReport:
    """What an upload did.

    Attributes:
        requests: HTTP requests sent, retries included.
        retries: Requests that were retries of an earlier attempt.
        added: Ids acknowledged as added.
        removed: Ids acknowledged as removed.
        failed_batches: Batches that failed after retries, with their ids and errors.
        warnings: ``errors`` lists that Braze returned on successful responses.
    """

    requests: int = 0
    retries: int = 0
    added: int = 0
    removed: int = 0
    failed_batches: tuple[FailedBatch, ...] = ()
    warnings: tuple[object, ...] = ()

    @property
    def ok(self) -> bool:
        """``True`` when every batch was acknowledged."""
        return not self.failed_batches


@attrs.frozen(slots=True)
class ImportRun:
    """One import of one cohort, as kept in the history.

    Attributes:
        id: The run's id in the store (``None`` before it is recorded).
        cohort_id: The cohort.
        name: The cohort's name at the time of the run.
        trigger: ``"manual"`` or ``"scheduled"``.
        started_at: When it started (UTC).
        finished_at: When it ended (UTC); ``None`` while running.
        result: ``"succeeded"``, ``"failed"``, ``"interrupted"``, ``"dry_run"`` (or ``"running"``).
        users: Members Braze is known to hold after the run (the snapshot size).
        added: Users acknowledged as added (planned, for a dry run).
        removed: Users acknowledged as removed (planned, for a dry run).
        rejected: Records that could not be matched, counted by reason.
        requests: HTTP requests sent, retries included.
        retries: Retries among them.
        error: What went wrong, if the run failed.
        error_kind: The class name of the error that failed the run (``"AuthenticationError"``,
            ``"ServerError"`` …; for failed batches, that of the first one's last error), so
            code can tell failures apart without parsing ``error``.
        notification_error: Why the notification after the run could not be sent, if it failed.
    """

    cohort_id: str
    name: str
    trigger: Trigger
    started_at: dt.datetime
    result: RunResult = "running"
    finished_at: dt.datetime | None = None
    users: int = 0
    added: int = 0
    removed: int = 0
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    requests: int = 0
    retries: int = 0
    error: str | None = None
    notification_error: str | None = None
    error_kind: str | None = None
    id: int | None = None

    @property
    def rejected_total(self) -> int:
        """All rejected records, whatever the reason."""
        return sum(self.rejected.values())
