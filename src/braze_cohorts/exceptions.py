"""Every error braze_cohorts raises, in one tree.

::

    BrazeCohortsError
    ├── ConfigurationError (ValueError)      bad endpoint, refused http://, missing key, bad option
    │   └── BatchTooLargeError               more than 1,000 ids given for one request
    ├── InvalidIdentifierError (ValueError)  an identifier Braze cannot take
    ├── InputError (ValueError)              an input file or record stream that cannot be read
    ├── ScheduleError (ValueError)           an invalid schedule spec
    ├── APIError                             Braze answered, and the answer is not success
    │   ├── InvalidRequestError              400: the request is wrong (never retried)
    │   ├── AuthenticationError              401: a key is wrong or revoked (never retried)
    │   ├── ResourceLockedError              423: transient (retried)
    │   ├── RateLimitedError                 429: transient, carries the wait (retried)
    │   ├── ServerError                      5XX: transient (retried)
    │   └── UnexpectedResponseError          a redirect, or any other status Braze does not document
    ├── TransportError                       no answer: connection refused/reset, timeout (retried)
    ├── StoreError                           the state store failed (sqlite3 errors are translated)
    │   └── ImportInProgressError            another import of the same cohort holds its lock
    ├── ScheduleConflictError                a cohort already has a live schedule
    ├── ScheduleNotFoundError (LookupError)  a cohort has no schedule
    └── NotificationError                    a notification could not be delivered

Errors never carry a key: messages are built from status codes, Braze's ``message`` and counts only.
``retryable`` says whether the same request may succeed if sent again.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "APIError",
    "AuthenticationError",
    "BatchTooLargeError",
    "BrazeCohortsError",
    "ConfigurationError",
    "ImportInProgressError",
    "InputError",
    "InvalidIdentifierError",
    "InvalidRequestError",
    "NotificationError",
    "RateLimitedError",
    "ResourceLockedError",
    "ScheduleConflictError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "ServerError",
    "StoreError",
    "TransportError",
    "UnexpectedResponseError",
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
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 401,
        path: str = "",
        errors: Sequence[object] = (),
        cause: str = "unknown",
    ) -> None:
        super().__init__(message, status_code=status_code, path=path, errors=errors)
        self.cause = cause


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


class StoreError(BrazeCohortsError):
    """The state store failed."""


class ImportInProgressError(StoreError):
    """Another import of the same cohort is running (in this or another process)."""


class ScheduleConflictError(BrazeCohortsError):
    """A cohort already has a live schedule and the caller did not ask to replace it."""


class ScheduleNotFoundError(BrazeCohortsError, LookupError):
    """A cohort has no schedule (to show, pause, resume, clear or trigger)."""


class NotificationError(BrazeCohortsError):
    """A notification could not be delivered."""


def _authentication_cause(message: str) -> str:
    """Which credential a 401 message from Braze blames, as :attr:`AuthenticationError.cause`.

    Returns:
        ``"partner_api_key"``, ``"data_import_key"`` (Braze calls it the client secret),
        ``"partner_not_enabled"`` or ``"unknown"``.
    """
    text = message.lower().replace("_", " ")
    if "partner api key" in text:
        return "partner_api_key"
    if "client secret" in text or "data import key" in text:
        return "data_import_key"
    if "not enabled" in text:
        return "partner_not_enabled"
    return "unknown"
