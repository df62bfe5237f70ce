"""braze_cohorts: keep Braze partner cohorts equal to a membership that lives elsewhere.

The public surface is re-exported here; the modules starting with ``_`` are private.
"""

from __future__ import annotations

import logging

from braze_cohorts._client import DEFAULT_TIMEOUT, CohortClient, Timeout, resolve_endpoint
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
from braze_cohorts._models import (
    Batch,
    CohortResponse,
    FailedBatch,
    ImportRun,
    RateLimitInfo,
    RunResult,
    Trigger,
    UploadReport,
)
from braze_cohorts._notify import SmtpNotifier
from braze_cohorts._runner import ScheduledImport, ScheduleRunner, ScheduleState
from braze_cohorts._schedule import Schedule, ScheduleKind
from braze_cohorts._sources import read_records
from braze_cohorts._store import Delta, LockInfo, SQLiteStore
from braze_cohorts._sync import CohortSync
from braze_cohorts._uploader import DEFAULT_RETRY, BatchUploader, RetryPolicy, UploadProgress
from braze_cohorts._version import __version__
from braze_cohorts.exceptions import (
    APIError,
    AuthenticationError,
    BatchTooLargeError,
    BrazeCohortsError,
    ConfigurationError,
    ImportInProgressError,
    InputError,
    InvalidIdentifierError,
    InvalidRequestError,
    NotificationError,
    RateLimitedError,
    ResourceLockedError,
    ScheduleConflictError,
    ScheduleError,
    ScheduleNotFoundError,
    ServerError,
    StoreError,
    TransportError,
    UnexpectedResponseError,
)
from braze_cohorts.typing import Notifier, StateStore

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "APIError",
    "AuthenticationError",
    "Batch",
    "BatchTooLargeError",
    "BatchUploader",
    "BrazeCohortsError",
    "CohortClient",
    "CohortResponse",
    "CohortSync",
    "ConfigurationError",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "Delta",
    "DeviceId",
    "ExternalId",
    "FailedBatch",
    "IdentifierMatcher",
    "ImportInProgressError",
    "ImportRun",
    "InputError",
    "InvalidIdentifierError",
    "InvalidRequestError",
    "LockInfo",
    "MalformedRecord",
    "MatchResult",
    "NotificationError",
    "Notifier",
    "RateLimitInfo",
    "RateLimitedError",
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
    "ScheduleRunner",
    "ScheduleState",
    "ScheduledImport",
    "ServerError",
    "SmtpNotifier",
    "StateStore",
    "StoreError",
    "Timeout",
    "TransportError",
    "Trigger",
    "UnexpectedResponseError",
    "UploadProgress",
    "UploadReport",
    "UserAlias",
    "UserRef",
    "__version__",
    "as_ref",
    "key_of",
    "read_records",
    "ref_from_key",
    "resolve_endpoint",
]
