"""Every error braze_cohorts raises, in one tree.

::

    BrazeCohortsError
    ├── ConfigurationError (ValueError)      bad endpoint, refused http://, missing key, bad option
    │   └── BatchTooLargeError               more than 1,000 ids given for one request
    ├── InvalidIdentifierError (ValueError)  an identifier Braze cannot take
    ├── InputError (ValueError)              an input file or record stream that cannot be read
    │   └── TooManyRejectedError             too many records could not be matched; nothing sent
    ├── ScheduleError (ValueError)           an invalid schedule spec
    ├── APIError                             Braze answered, and the answer is not success
    │   ├── InvalidRequestError              400: the request is wrong (never retried)
    │   ├── AuthenticationError              401: a key is refused, or the partner not enabled
    │   ├── ResourceLockedError              423: transient (retried)
    │   ├── RateLimitedError                 429: transient, carries the wait (retried)
    │   ├── ServerError                      5XX: transient (retried)
    │   └── UnexpectedResponseError          a redirect, or any other status Braze does not document
    ├── TransportError                       no answer: connection refused/reset, timeout (retried)
    ├── DeadlineExceededError                an upload's deadline passed before a batch was sent
    ├── CircuitOpenError                     an upload's circuit breaker judged Braze down
    ├── StoreError                           the state store failed (sqlite3 errors are translated)
    │   └── ImportInProgressError            another import of the same cohort holds its lock
    ├── ImportRefusedError                   a guard refused an import before anything was sent
    │   ├── MassRemovalError                 the plan would remove too much of the cohort
    │   └── WorkspaceChangedError            a delta against state of another workspace
    ├── ImportFailedError                    raised by ImportRun.raise_for_result(); carries .run
    ├── ScheduleConflictError                a cohort already has a live schedule
    ├── ScheduleNotFoundError (LookupError)  a cohort has no schedule
    └── NotificationError                    a notification could not be delivered

Errors never carry a key: messages are built from status codes, Braze's ``message`` and counts only.
``retryable`` says whether the same request may succeed if sent again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from braze_cohorts._models import ImportRun

__all__ = [
    "APIError",
    "AuthenticationError",
    "BatchTooLargeError",
    "BrazeCohortsError",
    "CircuitOpenError",
    "ConfigurationError",
    "DeadlineExceededError",
    "ImportFailedError",
    "ImportInProgressError",
    "ImportRefusedError",
    "InputError",
    "InvalidIdentifierError",
    "InvalidRequestError",
    "MassRemovalError",
    "NotificationError",
    "RateLimitedError",
    "ResourceLockedError",
    "ScheduleConflictError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "ServerError",
    "SourceError",
    "StoreError",
    "TooManyRejectedError",
    "TransportError",
    "UnexpectedResponseError",
    "WorkspaceChangedError",
]


class BrazeCohortsError(Exception):
    """Root of every error the library raises."""

    #: Whether sending the same request again may succeed.
    retryable: bool = False


class ConfigurationError(BrazeCohortsError, ValueError):
    """Invalid configuration, found before any request is sent."""


class BatchTooLargeError(ConfigurationError):
    """More ids were given for one request than Braze accepts; nothing was sent.

    Attributes:
        limit: The most ids one request may carry.
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class InvalidIdentifierError(BrazeCohortsError, ValueError):
    """An identifier value that Braze cannot match (empty, padded, control characters ...)."""


class InputError(BrazeCohortsError, ValueError):
    """An input (file, record stream) that cannot be read at all."""


class SourceError(InputError):
    """A member source failed while it was being read, after it had started.

    A query that errors after some rows, a database connection dropped mid-stream, a compressed
    file that ends early. Raised from the records iterator: what was read before is incomplete
    and must not be used as the whole membership.
    """


class ScheduleError(BrazeCohortsError, ValueError):
    """An invalid schedule specification."""


class APIError(BrazeCohortsError):
    """Braze answered with a status that is not success.

    Attributes:
        status_code: The HTTP status code.
        message: Braze's ``message`` field (or a short description when the body had none).
        errors: Braze's ``errors`` list, if the body carried one.
        path: The request path (it never contains a key).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        path: str = "",
        errors: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.path = path
        self.errors: tuple[object, ...] = tuple(errors)

    def __str__(self) -> str:
        where = f" from POST {self.path}" if self.path else ""
        return f"HTTP {self.status_code}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, message={self.message!r})"


class InvalidRequestError(APIError):
    """400: Braze refused the request as malformed. Not retryable."""


class AuthenticationError(APIError):
    """401: a credential is wrong, revoked, or the partner is not enabled. Not retryable.

    Attributes:
        cause: ``"partner_api_key"``, ``"data_import_key"``, ``"partner_not_enabled"`` or
            ``"unknown"``, as far as Braze's message tells.
        advice: What to do about it when Braze's own text misleads, else ``""``. For
            ``"partner_not_enabled"`` (Braze's text names the client secret, yet the key was
            recognised: its workspace has not enabled the partner integration) it says to
            enable the integration; rotating the key does not help. ``str()`` appends it.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 401,
        path: str = "",
        errors: Sequence[object] = (),
        cause: str = "unknown",
        advice: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, path=path, errors=errors)
        self.cause = cause
        if advice is None:
            advice = _PARTNER_NOT_ENABLED_ADVICE if cause == "partner_not_enabled" else ""
        self.advice = advice

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.advice})" if self.advice else text


_PARTNER_NOT_ENABLED_ADVICE = (
    "the data import key was recognised, but its Braze workspace has not enabled this partner "
    "integration: enable it in that workspace under Partner integrations > Technology partners, "
    "or use the data import key of the workspace where it is enabled; a new key does not help"
)


class ResourceLockedError(APIError):
    """423: the resource is locked. Transient."""

    retryable = True


class RateLimitedError(APIError):
    """429: rate limited. Transient.

    Attributes:
        retry_after: Seconds to wait before the next request, from ``Retry-After`` or
            ``X-RateLimit-Reset``; ``None`` when the response said nothing.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        path: str = "",
        errors: Sequence[object] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, path=path, errors=errors)
        self.retry_after = retry_after


class ServerError(APIError):
    """5XX: Braze had trouble. Transient."""

    retryable = True


class UnexpectedResponseError(APIError):
    """A status Braze does not document for these endpoints, including every redirect."""


class TransportError(BrazeCohortsError):
    """No HTTP answer: connection refused or reset, timeout, TLS failure. Transient.

    Attributes:
        outcome_unknown: ``True`` when the request may have reached Braze (so its effect may
            or may not have happened); ``False`` when it certainly did not leave (connect failed).
    """

    retryable = True

    def __init__(self, message: str, *, outcome_unknown: bool) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class DeadlineExceededError(BrazeCohortsError):
    """An upload's deadline passed before this batch was sent; Braze never saw it. Transient.

    :class:`~braze_cohorts.BatchUploader` reports every batch it did not send because of its
    ``deadline`` as a :class:`~braze_cohorts.FailedBatch` carrying this error.

    Attributes:
        deadline: The upload's deadline, in seconds from its start.
    """

    retryable = True

    def __init__(self, message: str, *, deadline: float) -> None:
        super().__init__(message)
        self.deadline = deadline


class CircuitOpenError(BrazeCohortsError):
    """An upload's circuit breaker judged Braze down, so this batch was not sent. Transient.

    :class:`~braze_cohorts.BatchUploader` reports every batch it did not send because its
    :class:`~braze_cohorts.BreakerPolicy` tripped as a :class:`~braze_cohorts.FailedBatch`
    carrying this error.

    Attributes:
        rule: What tripped it: ``"consecutive_failures"`` or ``"failure_ratio"``.
        last_error: The error that tripped it (its class and message carry no id or key).
    """

    retryable = True

    def __init__(self, message: str, *, rule: str, last_error: BrazeCohortsError | None) -> None:
        super().__init__(message)
        self.rule = rule
        self.last_error = last_error


class StoreError(BrazeCohortsError):
    """The state store failed."""


class ImportInProgressError(StoreError):
    """Another import of the same cohort is running (in this or another process)."""


class TooManyRejectedError(InputError):
    """Too many records could not be matched; the import was refused before anything was sent.

    An input whose every record is rejected (a wrong encoding, a wrong column) would otherwise
    empty the cohort.

    Attributes:
        rejected: Records rejected, by reason.
        matched: Records that were matched.
    """

    def __init__(self, message: str, *, rejected: Mapping[str, int], matched: int) -> None:
        super().__init__(message)
        self.rejected = dict(rejected)
        self.matched = matched


class ImportRefusedError(BrazeCohortsError):
    """A guard refused an import before anything was sent (the run is recorded as refused)."""


class MassRemovalError(ImportRefusedError):
    """The import would remove more of the cohort than allowed; nothing was sent.

    Pass ``allow_mass_removal=True`` (CLI: ``--allow-mass-removal``) when that is intended.

    Attributes:
        removing: Members the plan would remove.
        held: Members Braze is known to hold.
    """

    def __init__(self, message: str, *, removing: int, held: int) -> None:
        super().__init__(message)
        self.removing = removing
        self.held = held


class WorkspaceChangedError(ImportRefusedError):
    """A delta was given for a cohort whose state describes another Braze workspace.

    A delta alone cannot be correct against a workspace this state has never seen: run a full
    :meth:`~braze_cohorts.CohortSync.sync` (which resyncs) first.
    """


class ImportFailedError(BrazeCohortsError):
    """An import did not succeed; raised by :meth:`ImportRun.raise_for_result`.

    Attributes:
        run: The recorded run (its ``result``, ``error`` and ``error_kind`` say why).
    """

    def __init__(self, run: ImportRun) -> None:
        super().__init__(
            f"import of cohort {run.cohort_id!r} {run.result}"
            + (f" ({run.error_kind}): {run.error}" if run.error else "")
        )
        self.run = run


class ScheduleConflictError(BrazeCohortsError):
    """A cohort already has a live schedule and the caller did not ask to replace it."""


class ScheduleNotFoundError(BrazeCohortsError, LookupError):
    """A cohort has no schedule (to show, pause, resume, clear or trigger)."""


class NotificationError(BrazeCohortsError):
    """A notification could not be delivered."""


def _authentication_cause(message: str) -> str:
    """Which credential a 401 message from Braze blames, as :attr:`AuthenticationError.cause`.

    "Not enabled" is looked for first: Braze's "Partner not enabled for client with client
    secret: ..." names the client secret, yet the key is fine; the workspace it selects has not
    enabled the partner integration.

    Returns:
        ``"partner_api_key"``, ``"data_import_key"`` (Braze calls it the client secret),
        ``"partner_not_enabled"`` or ``"unknown"``.
    """
    text = message.lower().replace("_", " ")
    if "not enabled" in text:
        return "partner_not_enabled"
    if "partner api key" in text:
        return "partner_api_key"
    if "client secret" in text or "data import key" in text:
        return "data_import_key"
    return "unknown"


def _describe_error(exc: BaseException) -> str:
    """One line for a run's ``error``: the library's own message, or the class of anything else.

    The text of a foreign exception may carry data that does not belong in a history or an
    email, so only an ``OSError``'s description is kept.
    """
    if isinstance(exc, BrazeCohortsError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"unexpected error: {type(exc).__name__}"
