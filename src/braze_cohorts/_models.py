"""Value objects shared by the client, the uploader, the sync engine and the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from braze_cohorts._identifiers import UserRef
from braze_cohorts.exceptions import BrazeCohortsError, ImportFailedError

__all__ = [
    "Batch",
    "CohortResponse",
    "FailedBatch",
    "FullResyncReason",
    "ImportRun",
    "RateLimitInfo",
    "RunResult",
    "StopReason",
    "Trigger",
    "UploadReport",
]

#: Who started an import.
Trigger = Literal["manual", "scheduled"]

#: How an import ended: ``refused`` means a guard stopped it before anything was sent.
RunResult = Literal["running", "succeeded", "failed", "refused", "interrupted", "dry_run"]

#: Why an import re-sent every member: asked for, ``resync_every`` elapsed, the state was
#: bound to another workspace (endpoint, partner or data import key changed), or the first
#: import of the cohort with this state.
FullResyncReason = Literal["requested", "period_elapsed", "workspace_changed", "first_import"]

#: Why an upload stopped before sending everything: its deadline passed, or its circuit
#: breaker judged Braze down.
StopReason = Literal["deadline", "circuit_open"]


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
        stopped_reason: ``"deadline"`` or ``"circuit_open"`` when the upload stopped before
            sending everything (every batch not sent is then in ``failed_batches``, with a
            :class:`~braze_cohorts.DeadlineExceededError` or
            :class:`~braze_cohorts.CircuitOpenError`); ``None`` otherwise.
    """

    requests: int = 0
    retries: int = 0
    added: int = 0
    removed: int = 0
    failed_batches: tuple[FailedBatch, ...] = ()
    warnings: tuple[object, ...] = ()
    stopped_reason: StopReason | None = None

    @property
    def ok(self) -> bool:
        """``True`` when every batch was acknowledged."""
        return not self.failed_batches


def _jsonable(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _warnings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(slots=True)
class ImportRun:
    """One import of one cohort, as kept in the history.

    Braze never says which ids it matched: it silently ignores ids of users it does not know.
    So the counts here are what was *sent and acknowledged*, never how many users Braze put in
    the segment; nobody can know that from this API.

    Attributes:
        id: The run's id in the store (``None`` before it is recorded).
        cohort_id: The cohort.
        name: The cohort's name at the time of the run.
        trigger: ``"manual"`` or ``"scheduled"``.
        started_at: When it started (UTC).
        finished_at: When it ended (UTC); ``None`` while running.
        result: ``"succeeded"``, ``"failed"``, ``"refused"`` (a guard stopped it before
            anything was sent), ``"interrupted"``, ``"dry_run"`` (or ``"running"``).
        users: Members acknowledged by Braze and still in the cohort after the run, as far as
            this state knows: an upper bound of the segment's size, since Braze ignores ids of
            users that do not exist there yet.
        added: Ids acknowledged as added (planned, for a dry run); re-sent ids count again.
        removed: Ids acknowledged as removed (planned, for a dry run).
        rejected: Records that could not be matched, counted by reason.
        requests: HTTP requests sent, retries included.
        retries: Retries among them.
        error: What went wrong, if the run failed or was refused.
        error_kind: The class name of the error that failed the run (``"AuthenticationError"``,
            ``"MassRemovalError"`` …; for failed batches, that of the first one's last error),
            so code can tell failures apart without parsing ``error``.
        error_cause: For an ``AuthenticationError``, which credential Braze refused
            (:attr:`AuthenticationError.cause <braze_cohorts.AuthenticationError.cause>`).
        notification_error: Why the notification after the run could not be sent, if it failed.
        full_resync: Whether the run re-sent every member (see ``full_resync_reason``).
        full_resync_reason: ``"requested"``, ``"period_elapsed"``, ``"workspace_changed"`` or
            ``"first_import"``; ``None`` for an ordinary (delta) import.
        warnings: Distinct ``errors`` messages Braze put in success answers (at most
            :data:`MAX_WARNINGS`, each at most 300 characters); the ids of those requests are
            kept uncertain and re-sent by the next import. A cohort's first import with a
            state also records, first and besides those, a warning that this state cannot
            remove members Braze may already hold.
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
    error_cause: str | None = None
    full_resync: bool = False
    full_resync_reason: FullResyncReason | None = None
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_warnings)
    id: int | None = None

    @property
    def rejected_total(self) -> int:
        """All rejected records, whatever the reason."""
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """The run as a JSON-safe dict: what ``history --json`` prints and webhooks post.

        Every field under its own name (times as ISO 8601 UTC, ``rejected`` by reason,
        ``warnings`` as a list), plus ``rejected_total`` and ``seconds`` (the duration; ``None``
        while running).
        """
        data: dict[str, Any] = {
            field.name: _jsonable(getattr(self, field.name)) for field in attrs.fields(type(self))
        }
        data["rejected_total"] = self.rejected_total
        data["seconds"] = (
            (self.finished_at - self.started_at).total_seconds() if self.finished_at else None
        )
        return data

    @property
    def ok(self) -> bool:
        """``True`` when the run succeeded or was a dry run."""
        return self.result in ("succeeded", "dry_run")

    def raise_for_result(self) -> ImportRun:
        """Raise :class:`~braze_cohorts.ImportFailedError` unless the run succeeded.

        For callers who prefer an exception to checking ``result`` (the way
        ``requests.Response.raise_for_status`` works).

        Returns:
            The run itself, when it succeeded or was a dry run.

        Raises:
            ImportFailedError: If the run failed, was refused or was interrupted; it carries
                the run as ``.run``.
        """
        if self.ok:
            return self
        raise ImportFailedError(self)


#: The most distinct warnings a run keeps.
MAX_WARNINGS = 20
#: The longest warning a run keeps, in characters.
MAX_WARNING_CHARS = 300
