"""braze_cohorts: keep Braze partner cohorts equal to a membership that lives elsewhere.

The public surface is re-exported here; the modules starting with ``_`` are private.
"""

from __future__ import annotations

import logging

from braze_cohorts._client import DEFAULT_TIMEOUT, CheckResult, CohortClient, Timeout
from braze_cohorts._delta import Delta
from braze_cohorts._endpoints import resolve_endpoint
from braze_cohorts._identifiers import (
    DeviceId,
    ExternalId,
    IdentifierMatcher,
    MalformedRecord,
    MatchResult,
    Rejection,
    RejectReason,
    UserAlias,
    UserRef,
    as_ref,
    key_of,
    ref_from_key,
)
from braze_cohorts._metrics import MeteredLimiter
from braze_cohorts._models import (
    Batch,
    CohortResponse,
    FailedBatch,
    FullResyncReason,
    ImportRun,
    RateLimitInfo,
    RunResult,
    StopReason,
    Trigger,
    UploadReport,
)
from braze_cohorts._notify import SmtpNotifier
from braze_cohorts._schedule import Schedule, ScheduledImport, ScheduleKind, ScheduleState
from braze_cohorts._scheduler import Scheduler
from braze_cohorts._sources import read_records
from braze_cohorts._store import LockInfo, SQLiteStore
from braze_cohorts._sync import (
    DEFAULT_MAX_REJECT_FRACTION,
    DEFAULT_MAX_REMOVE_FRACTION,
    DEFAULT_RESEND_WINDOW,
    DEFAULT_RESYNC_EVERY,
    CohortSync,
    PhaseProgress,
)
from braze_cohorts._uploader import (
    DEFAULT_BREAKER,
    DEFAULT_RETRY,
    BatchUploader,
    BreakerPolicy,
    RateLimiter,
    RetryPolicy,
    UploadProgress,
)
from braze_cohorts._version import __version__
from braze_cohorts.exceptions import (
    APIError,
    AuthenticationError,
    BatchTooLargeError,
    BrazeCohortsError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    ImportFailedError,
    ImportInProgressError,
    ImportRefusedError,
    InputError,
    InvalidIdentifierError,
    InvalidRequestError,
    MassRemovalError,
    NotificationError,
    RateLimitedError,
    ResourceLockedError,
    ScheduleConflictError,
    ScheduleError,
    ScheduleNotFoundError,
    ServerError,
    StoreError,
    TooManyRejectedError,
    TransportError,
    UnexpectedResponseError,
    WorkspaceChangedError,
)
from braze_cohorts.typing import Importer, Notifier, ScheduleStore, StateStore

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "APIError",
    "AuthenticationError",
    "Batch",
    "BatchTooLargeError",
    "BatchUploader",
    "BrazeCohortsError",
    "BreakerPolicy",
    "CheckResult",
    "CircuitOpenError",
    "CohortClient",
    "CohortResponse",
    "CohortSync",
    "ConfigurationError",
    "DEFAULT_BREAKER",
    "DEFAULT_MAX_REJECT_FRACTION",
    "DEFAULT_MAX_REMOVE_FRACTION",
    "DEFAULT_RESEND_WINDOW",
    "DEFAULT_RESYNC_EVERY",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "DeadlineExceededError",
    "Delta",
    "DeviceId",
    "ExternalId",
    "FailedBatch",
    "FullResyncReason",
    "IdentifierMatcher",
    "ImportFailedError",
    "ImportInProgressError",
    "ImportRefusedError",
    "ImportRun",
    "Importer",
    "InputError",
    "InvalidIdentifierError",
    "InvalidRequestError",
    "LockInfo",
    "MalformedRecord",
    "MassRemovalError",
    "MatchResult",
    "MeteredLimiter",
    "NotificationError",
    "Notifier",
    "PhaseProgress",
    "RateLimitInfo",
    "RateLimitedError",
    "RateLimiter",
    "RejectReason",
    "Rejection",
    "ResourceLockedError",
    "RetryPolicy",
    "RunResult",
    "SQLiteStore",
    "Schedule",
    "ScheduleConflictError",
    "ScheduleError",
    "ScheduleKind",
    "ScheduleNotFoundError",
    "ScheduleState",
    "ScheduleStore",
    "ScheduledImport",
    "Scheduler",
    "ServerError",
    "SmtpNotifier",
    "StateStore",
    "StopReason",
    "StoreError",
    "Timeout",
    "TooManyRejectedError",
    "TransportError",
    "Trigger",
    "UnexpectedResponseError",
    "UploadProgress",
    "UploadReport",
    "UserAlias",
    "UserRef",
    "WorkspaceChangedError",
    "__version__",
    "as_ref",
    "key_of",
    "read_records",
    "ref_from_key",
    "resolve_endpoint",
]
