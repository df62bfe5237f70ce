"""CohortClient: one method = one HTTP call to Braze's partner cohort import API.

The client knows endpoints and clusters, holds the two keys, builds one request per call and maps
every response (or the lack of one) to a typed result or error from :mod:`braze_cohorts.exceptions`.
It knows nothing of batching, retries or state: that is the uploader's and the sync engine's job.

Both keys travel only in the JSON body. They are never part of a URL, a header, a log line, a
``repr`` or an exception's text.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import http.client
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Union

import attrs
import requests
import requests.adapters
import urllib3.exceptions

from braze_cohorts._endpoints import resolve_endpoint_or_error
from braze_cohorts._identifiers import (
    _FORBIDDEN,
    CheckedIds,
    DeviceId,
    ExternalId,
    UserAlias,
    UserRef,
    as_ref,
    check_external_ids,
)
from braze_cohorts._models import CohortResponse, RateLimitInfo
from braze_cohorts._version import __version__
from braze_cohorts.exceptions import (
    APIError,
    AuthenticationError,
    BatchTooLargeError,
    ConfigurationError,
    InvalidIdentifierError,
    InvalidRequestError,
    RateLimitedError,
    ResourceLockedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    _authentication_cause,
)

__all__ = [
    "CHECK_COHORT_ID",
    "CHECK_USER_ID",
    "DEFAULT_TIMEOUT",
    "CheckResult",
    "MAX_IDS_PER_REQUEST",
    "CohortClient",
    "Timeout",
]

log = logging.getLogger(__name__)

#: Braze accepts at most this many identifiers per request, over all kinds together.
MAX_IDS_PER_REQUEST: Final = 1000

_USER_AGENT: Final = f"braze-cohorts/{__version__}"
_HEADERS: Final[Mapping[str, str]] = {
    "User-Agent": _USER_AGENT,
    "Content-Type": "application/json",
    "Accept": "application/json",
}
_MASK: Final = "***"
# "client secret: <key>", "client_secret=<key>", "secret: '<key>'": what follows is masked.
_ECHOED_SECRET: Final = re.compile(
    r"(secret[\"']?\s*[:=]\s*[\"']?)[^\s\"',;)}\]*][^\s\"',;)}\]]*", re.IGNORECASE
)
_SNIPPET_CHARS: Final = 120
#: The errors of the statuses whose error takes nothing more than the status, path and errors
#: (401, 429 and 5XX have their own; any other status is unexpected).
_STATUS_ERRORS: Final[dict[int, type[APIError]]] = {
    400: InvalidRequestError,
    423: ResourceLockedError,
}


# --------------------------------------------------------------------------------------------
# Timeouts


def _check_seconds(_inst: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        shown = repr(value) if isinstance(value, (int, float)) else type(value).__name__
        raise ConfigurationError(
            f"Timeout.{attribute.name} must be a positive, finite number of seconds, not {shown}"
        )


@attrs.frozen(slots=True)
class Timeout:
    """How long the client waits for Braze, in seconds.

    Args:
        connect: Seconds to wait for a connection to be established.
        read: Seconds to wait for the answer once the request is sent (between bytes).

    Raises:
        ConfigurationError: If a value is not a positive, finite number.
    """

    connect: float = attrs.field(default=5.0, validator=_check_seconds)
    read: float = attrs.field(default=30.0, validator=_check_seconds)

    def as_tuple(self) -> tuple[float, float]:
        """Return ``(connect, read)``, the form ``requests`` takes."""
        return (self.connect, self.read)


#: The timeouts a client uses unless told otherwise: 5 s to connect, 30 s to read.
DEFAULT_TIMEOUT: Final = Timeout()

#: What ``timeout=`` accepts: a :class:`Timeout`, one number for both, or ``(connect, read)``.
TimeoutTypes = Union[Timeout, float, tuple[float, float]]  # noqa: UP007 - runtime alias on 3.10


def _as_timeout(value: object) -> Timeout:
    if isinstance(value, Timeout):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeout(connect=value, read=value)
    if isinstance(value, tuple) and len(value) == 2:
        return Timeout(connect=value[0], read=value[1])
    raise ConfigurationError(
        "timeout must be a Timeout, a number of seconds or a (connect, read) tuple, "
        f"not {type(value).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Secrets


class _Secret:
    """A key that does not show itself: ``repr`` and ``str`` are ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return repr(_MASK)

    def __str__(self) -> str:
        return _MASK

    def __reduce__(self) -> Any:
        raise TypeError("a secret cannot be pickled")


def _key_problem(name: str, value: object) -> str | None:
    """What is wrong with a key, or ``None``; returns instead of raising (see ``__init__``)."""
    if not isinstance(value, str):
        return f"{name} must be a str, not {type(value).__name__}"
    if not value:
        return f"{name} is empty"
    if value != value.strip():
        return f"{name} has surrounding whitespace (a stray newline?)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"{name} contains control characters"
    return None


_PARTNER = re.compile(r"[A-Za-z0-9._~-]+")


def _check_partner(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"partner must be a str, not {type(value).__name__}")
    if not value:
        raise ConfigurationError("partner is empty")
    if not _PARTNER.fullmatch(value) or value in (".", ".."):
        # Described, not echoed: a key given as the partner by mistake must not be printed.
        raise ConfigurationError(
            f"partner (a {len(value)}-character value) must be a single URL path segment "
            "(letters, digits, '.', '_', '~', '-')"
        )
    return value


# --------------------------------------------------------------------------------------------
# The client

#: The cohort :meth:`CohortClient.check` sends its no-op update to; no real cohort should use it.
CHECK_COHORT_ID: Final = "braze-cohorts-credential-check"
#: The user :meth:`CohortClient.check` "removes": an external id no real user has.
CHECK_USER_ID: Final = "braze-cohorts-credential-check-no-such-user"


@attrs.frozen(slots=True)
class CheckResult:
    """What :meth:`CohortClient.check` found: Braze accepted the endpoint, partner and keys.

    Attributes:
        endpoint: The REST base URL that answered.
        partner: The partner name in the path.
        status_code: Braze's status (2XX).
        message: Braze's ``message``.
        elapsed: Seconds the request took.
    """

    endpoint: str
    partner: str
    status_code: int
    message: str
    elapsed: float

    def __str__(self) -> str:
        return (
            f"{self.endpoint} accepted partner {self.partner!r}, the partner API key and the "
            f"data import key (HTTP {self.status_code} in {self.elapsed * 1000:.0f} ms)"
        )


@attrs.frozen(slots=True)
class _Reply:
    """What the client keeps of an HTTP answer: parsed, masked, and without the raw body."""

    status: int
    reason: str
    message: str
    errors: tuple[object, ...]
    rate_limit: RateLimitInfo
    retry_after: float | None
    location: str | None
    followed_redirect: bool


#: What ``requests`` accepts as auth: a ``(user, password)`` pair or a callable (an ``AuthBase``).
_Auth = Union[tuple[str, str], Callable[[requests.PreparedRequest], requests.PreparedRequest]]  # noqa: UP007


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


@attrs.frozen(slots=True)
class _SessionFailure:
    """An exception that is not a transport failure, raised by a caller's session."""

    error: Exception


class CohortClient:
    """A client of Braze's partner cohort import API: one method sends one request.

    Safe to share between threads: calls keep no state on the client, and the underlying
    ``requests.Session`` pools up to ``pool_size`` connections.

    Args:
        endpoint: A cluster name (``"US-03"``, any case), the REST URL, the dashboard URL, any
            other ``https://`` base URL, or ``http://`` to a loopback host. See
            :func:`resolve_endpoint`.
        partner: The integration partner's name, as in ``/partners/{partner}/...``.
        partner_api_key: The partner's API key (sent as ``partner_api_key``).
        data_import_key: The customer's data import key (sent as ``client_secret``).
        timeout: A :class:`Timeout`, one number of seconds for both, or ``(connect, read)``.
        session: A ``requests.Session`` to use; the caller keeps ownership (``close()`` leaves
            it open). By default the client makes its own, without retries or redirects.
        pool_size: Connections kept per host by the client's own session; at least the
            uploader's concurrency.
        clock: Returns the current UTC epoch seconds; used for ``created_at`` and to turn
            ``Retry-After`` dates and ``X-RateLimit-Reset`` into waits.

    Raises:
        ConfigurationError: If any argument is invalid; nothing has been sent then.

    Example:
        >>> client = CohortClient("US-03", partner="kubit", partner_api_key="pk",
        ...                       data_import_key="dk")
        >>> client
        CohortClient(endpoint='https://rest.iad-03.braze.com', partner='kubit', partner_api_key='***', data_import_key='***')
        >>> client.close()
    """  # noqa: E501

    #: Braze accepts at most this many identifiers per request, over all kinds together.
    MAX_IDS_PER_REQUEST: Final = MAX_IDS_PER_REQUEST

    def __init__(
        self,
        endpoint: str,
        *,
        partner: str,
        partner_api_key: str,
        data_import_key: str,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        pool_size: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Keys never stay in a local variable of a frame that raises: error trackers render
        # the locals of every frame in a traceback.
        problem = _key_problem("partner_api_key", partner_api_key) or _key_problem(
            "data_import_key", data_import_key
        )
        self._partner_api_key = _Secret(partner_api_key)
        self._data_import_key = _Secret(data_import_key)
        del partner_api_key, data_import_key
        if problem:
            raise ConfigurationError(problem)
        # The same for the endpoint and the partner: a key given there by mistake is refused
        # from a frame that no longer holds it.
        resolved = resolve_endpoint_or_error(endpoint)
        partner_or_error = self._partner_or_error(partner)
        del endpoint, partner
        for checked in (resolved, partner_or_error):
            if isinstance(checked, ConfigurationError):
                raise checked
        assert isinstance(resolved, str)
        assert isinstance(partner_or_error, str)
        self._endpoint = resolved
        self._partner = partner_or_error
        self._timeout = _as_timeout(timeout)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            shown = repr(pool_size) if isinstance(pool_size, int) else type(pool_size).__name__
            raise ConfigurationError(f"pool_size must be a positive int, not {shown}")
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning epoch seconds")
        if session is not None and not isinstance(session, requests.Session):
            raise ConfigurationError(
                f"session must be a requests.Session, not {type(session).__name__}"
            )
        self._clock = clock
        base_path = urllib.parse.urlsplit(self._endpoint).path
        self._name_path = f"{base_path}/partners/{self._partner}/cohorts"
        self._users_path = f"{self._name_path}/users"
        self._name_url = f"{self._endpoint}/partners/{self._partner}/cohorts"
        self._users_url = f"{self._name_url}/users"
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=pool_size, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._session = session
        self._closed = False
        self._settings_cache: dict[str, dict[str, Any]] = {}
        self._templates: dict[str, tuple[requests.PreparedRequest, _Auth | None]] = {}

    def _partner_or_error(self, partner: object) -> str | ConfigurationError:
        try:
            checked = _check_partner(partner)
        except ConfigurationError as exc:
            return exc.with_traceback(None)
        if checked in (self._partner_api_key.reveal(), self._data_import_key.reveal()):
            # The partner goes into the URL path, where a key must never be.
            return ConfigurationError(
                "partner is the same as one of the keys: give the partner's name (as in "
                "/partners/{partner}/...), not a key"
            )
        return checked

    # -- properties ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The resolved REST base URL, without a trailing slash."""
        return self._endpoint

    @property
    def partner(self) -> str:
        """The integration partner's name."""
        return self._partner

    @property
    def timeout(self) -> Timeout:
        """The connect and read timeouts."""
        return self._timeout

    @property
    def workspace(self) -> str:
        """A fingerprint of the Braze workspace this client sends to, safe to store.

        A one-way hash (SHA-256, truncated to 128 bits) of the endpoint, the partner and the
        data import key: it changes when any of them does, and neither key can be recovered
        from it (a data import key is a random secret, not a guessable word).
        :class:`~braze_cohorts.CohortSync` binds each cohort's state to it, so a state file used
        against another workspace (or after a key rotation) triggers a full resync.
        """
        material = "\0".join(
            (
                "braze_cohorts workspace v1",
                self._endpoint,
                self._partner,
                self._data_import_key.reveal(),
            )
        )
        return "ws1:" + hashlib.sha256(material.encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        # getattr: a repr may be asked for while __init__ is still running (error trackers).
        return (
            f"{type(self).__name__}(endpoint={getattr(self, '_endpoint', None)!r}, "
            f"partner={getattr(self, '_partner', None)!r}, "
            f"partner_api_key={_MASK!r}, data_import_key={_MASK!r})"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections; a session passed in by the caller is left open.

        Calling it again does nothing. A closed client refuses further calls.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> CohortClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the two endpoints ----------------------------------------------------------------------

    def name_cohort(
        self,
        cohort_id: str,
        name: str,
        created_at: dt.datetime | None = None,
    ) -> CohortResponse:
        """Create or rename a cohort (``POST /partners/{partner}/cohorts``).

        Call it before a cohort's first members are sent, and whenever its name changes.

        Args:
            cohort_id: The partner-chosen cohort id.
            name: The name shown in Braze's segment filter; not blank.
            created_at: When the cohort was created; timezone-aware. Defaults to now (UTC).

        Returns:
            Braze's answer; its ``errors`` are kept if Braze reported any.

        Raises:
            ConfigurationError: If an argument is invalid (nothing is sent).
            APIError: A subclass for each status Braze answered with (see the error tree).
            TransportError: If no answer arrived.
        """
        cohort_id = _check_cohort_id(cohort_id)
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("name must be a non-blank str")
        if created_at is None:
            created_at = dt.datetime.fromtimestamp(self._clock(), tz=dt.timezone.utc)
        elif not isinstance(created_at, dt.datetime):
            raise ConfigurationError(
                f"created_at must be a datetime, not {type(created_at).__name__}"
            )
        elif created_at.tzinfo is None or created_at.utcoffset() is None:
            raise ConfigurationError(
                "created_at must be timezone-aware (a naive datetime is ambiguous); "
                "e.g. datetime.now(timezone.utc)"
            )
        fields = {
            "cohort_id": cohort_id,
            "name": name,
            # Whole seconds with "Z", as Braze's examples show: "2026-12-02T04:05:06Z".
            "created_at": created_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return self._post(self._name_url, self._name_path, fields, ids=0)

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        """Add and remove users in one request (``POST /partners/{partner}/cohorts/users``).

        A plain ``str`` means an external id. Duplicates within ``add`` or within ``remove``
        are sent once.

        Args:
            cohort_id: The cohort.
            add: Users to add.
            remove: Users to remove.

        Returns:
            Braze's answer, or ``None`` when there was nothing to send (no request was made).

        Raises:
            BatchTooLargeError: If more than 1,000 ids were given in total (nothing is sent).
            ConfigurationError: If the same user is in ``add`` and ``remove``, or an argument
                is invalid (nothing is sent).
            InvalidIdentifierError: If an item is not an identifier or a valid ``str``.
            APIError: A subclass for each status Braze answered with (see the error tree).
            TransportError: If no answer arrived.
        """
        cohort_id = _check_cohort_id(cohort_id)
        plain = _plain_external_ids(add, remove)
        if plain is not None:
            added, n_add, removed, n_remove = plain
        else:
            seen: set[str] = set()
            added, n_add = _collect("add", add, seen, conflict=None, budget=MAX_IDS_PER_REQUEST)
            added_keys = set(seen)
            removed, n_remove = _collect(
                "remove", remove, seen, conflict=added_keys, budget=MAX_IDS_PER_REQUEST - n_add
            )
        total = n_add + n_remove
        if total == 0:
            return None
        changes: list[dict[str, object]] = []
        if n_add:
            changes.append(added)
        if n_remove:
            removed["should_remove"] = True
            changes.append(removed)
        fields = {"cohort_id": cohort_id, "cohort_changes": changes}
        return self._post(self._users_url, self._users_path, fields, ids=total)

    def check(self, *, cohort_id: str = CHECK_COHORT_ID) -> CheckResult:
        """Verify the endpoint, the partner and both keys without changing any cohort's members.

        Sends one ``POST /partners/{partner}/cohorts/users`` that removes one user who cannot
        exist (:data:`CHECK_USER_ID`) from a cohort nobody uses (:data:`CHECK_COHORT_ID`). The
        body is an ordinary, well-formed membership update, so Braze checks the keys exactly as
        for a real import; since Braze ignores unknown users, nothing changes in any cohort. See
        ``docs/client.md`` for what this proves and what it cannot.

        Args:
            cohort_id: The cohort to send the no-op removal to (default: the probe cohort).

        Returns:
            A :class:`CheckResult`: Braze accepted the request.

        Raises:
            AuthenticationError: Braze refused a credential; ``cause`` says which
                (``"partner_api_key"``, ``"data_import_key"``, ``"partner_not_enabled"`` or
                ``"unknown"``).
            UnexpectedResponseError: The endpoint answered, but not as Braze's partner API
                (a 404, a redirect): the endpoint is wrong.
            TransportError: The endpoint could not be reached.
            APIError: Any other refusal (a 400, 429 or 5XX), not retried.
            ConfigurationError: If ``cohort_id`` is blank or the client is closed.
        """
        cohort_id = _check_cohort_id(cohort_id)
        fields = {
            "cohort_id": cohort_id,
            "cohort_changes": [{"user_ids": [CHECK_USER_ID], "should_remove": True}],
        }
        response = self._post(self._users_url, self._users_path, fields, ids=1)
        return CheckResult(
            endpoint=self._endpoint,
            partner=self._partner,
            status_code=response.status_code,
            message=response.message,
            elapsed=response.elapsed,
        )

    # -- one request ------------------------------------------------------------------------------

    def _post(
        self, url: str, path: str, fields: Mapping[str, object], *, ids: int
    ) -> CohortResponse:
        if self._closed:
            raise ConfigurationError("the client is closed")
        started = time.perf_counter()
        reply = self._send(url, fields)
        elapsed = time.perf_counter() - started
        if isinstance(reply, _SessionFailure):
            failed = reply.error
            log.info("POST %s -> the session failed (%s), %d ids", path, type(failed).__name__, ids)
            refused = ConfigurationError(
                f"POST {path}: the requests.Session given to CohortClient raised "
                f"{type(failed).__name__} (from one of its hooks, auth or mounted adapters?): "
                f"{self._scrub(_truncate(str(failed)))}; whether Braze received the request is "
                "unknown"
            )
            # Not chained, and forgotten here: the caller's exception may quote the body.
            del reply, failed
            raise refused from None
        if isinstance(reply, BaseException):
            error = self._transport_error(reply, path)
            log.info(
                "POST %s -> no answer (%s) after %.0f ms, %d ids, outcome %s",
                path,
                type(reply).__name__,
                elapsed * 1000,
                ids,
                "unknown" if error.outcome_unknown else "not sent",
            )
            raise error from reply
        log.info("POST %s -> %d in %.0f ms, %d ids", path, reply.status, elapsed * 1000, ids)
        return self._interpret(reply, path, elapsed)

    def _send(
        self, url: str, fields: Mapping[str, object]
    ) -> _Reply | _SessionFailure | BaseException:
        """Send one request; return its digested answer, or the exception that stopped it.

        This is the only frame that holds the request body (with the keys) and the raw answer
        (which a server could have filled with anything), so it returns, never raises: the
        frames left in a traceback then hold neither.
        """
        body = json.dumps(
            {
                "partner_api_key": self._partner_api_key.reveal(),
                "client_secret": self._data_import_key.reveal(),
                **fields,
            },
            separators=(",", ":"),
        ).encode("ascii")
        try:
            template, netrc_auth = self._template(url)
            session = self._session
            auth = session.auth if session.auth is not None else netrc_auth
            prepared = template.copy()
            prepared.prepare_body(body, None)
            # The session's hooks as they are now, in lists of this request's own (an auth
            # such as HTTPDigestAuth registers a hook on each request it signs).
            prepared.hooks = {event: list(hooks) for event, hooks in session.hooks.items()}
            if auth is not None:
                # After the body, as Session.prepare_request does: an auth may sign the body.
                prepared.prepare_auth(auth, url)
            # Through Session.send, so that the session's mounted adapters, response hooks
            # and cookie jar work as for session.post(); never following a redirect.
            response = session.send(
                prepared,
                allow_redirects=False,
                stream=False,
                timeout=self._timeout.as_tuple(),
                **self._environment_settings(url),
            )
            content = response.content
            followed = bool(response.history)
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            _drop_tracebacks(exc)
            return exc
        except Exception as exc:  # a hook, auth or adapter of a caller's session failed
            _drop_tracebacks(exc)
            return _SessionFailure(exc)
        status = response.status_code
        headers = response.headers
        message, errors = self._parse_body(headers.get("Content-Type"), content)
        location = headers.get("Location")
        return _Reply(
            status=status,
            reason=self._scrub(_truncate(response.reason or "")),
            message=message,
            errors=errors,
            rate_limit=_rate_limit(headers),
            retry_after=_retry_after(headers, self._clock) if status == 429 else None,
            location=None if location is None else self._scrub(_truncate(location)),
            followed_redirect=followed,
        )

    def _template(self, url: str) -> tuple[requests.PreparedRequest, _Auth | None]:
        """A prepared request for ``url`` without a body, and its ``~/.netrc`` auth, once per URL.

        ``Session.prepare_request`` merges the session's headers, params and cookies anew for
        every request (and reads ``~/.netrc``); the client does it once per URL and copies the
        result, so those session settings count as they are when the client first sends to that
        URL. The session's hooks and auth are read on every request instead (see ``_send``); the
        netrc entry, as ``requests`` finds it, stands in when the session has no auth.
        """
        entry = self._templates.get(url)
        if entry is None:
            session = self._session
            netrc_auth = requests.utils.get_netrc_auth(url) if session.trust_env else None
            template = session.prepare_request(
                # A request-level auth that does nothing keeps the session's auth off the
                # template (requests lets a request's auth override the session's).
                requests.Request("POST", url, headers=_HEADERS, auth=_no_auth)
            )
            entry = (template, netrc_auth)
            self._templates[url] = entry
        return entry

    def _environment_settings(self, url: str) -> dict[str, Any]:
        """Proxies, TLS verification and certificates for ``url``, as ``Session.post`` finds them.

        ``requests`` reads the environment (``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``
        …) on every call, which costs more than building a request of 1,000 ids; the client
        reads it once per URL and keeps the answer.
        """
        settings = self._settings_cache.get(url)
        if settings is None:
            settings = dict(self._session.merge_environment_settings(url, {}, None, None, None))
            settings.pop("stream", None)
            self._settings_cache[url] = settings
        return settings

    def _transport_error(self, exc: BaseException, path: str) -> TransportError:
        not_sent = _connect_failed(exc)
        what = (
            "could not connect, the request was not sent"
            if not_sent
            else "no answer, the request may have reached Braze"
        )
        detail = self._scrub(_truncate(str(exc)))
        return TransportError(
            f"POST {path}: {what} ({type(exc).__name__}: {detail})",
            outcome_unknown=not not_sent,
        )

    def _interpret(self, reply: _Reply, path: str, elapsed: float) -> CohortResponse:
        status = reply.status
        if reply.followed_redirect:
            raise UnexpectedResponseError(
                "a redirect was followed by the session given to CohortClient (one of its "
                "hooks?), which re-sends the keys elsewhere; the client refuses such answers. "
                "Check the endpoint and the session's hooks",
                status_code=status,
                path=path,
            )
        if 300 <= status < 400:
            where = f" to {reply.location!r}" if reply.location else ""
            raise UnexpectedResponseError(
                f"redirect{where} refused: the client never follows redirects, since following "
                "one would re-send the keys to another location; check the endpoint",
                status_code=status,
                path=path,
            )
        errors = reply.errors
        if 200 <= status < 300:
            if errors:
                log.warning("POST %s succeeded but Braze reported %d errors", path, len(errors))
            return CohortResponse(
                status_code=status,
                message=reply.message,
                errors=errors,
                rate_limit=reply.rate_limit,
                elapsed=elapsed,
            )
        message = reply.message or reply.reason or f"HTTP {status}"
        about: dict[str, Any] = {"status_code": status, "path": path, "errors": errors}
        error: APIError
        if status == 401:
            error = AuthenticationError(message, **about, cause=_authentication_cause(message))
        elif status == 429:
            error = RateLimitedError(message, **about, retry_after=reply.retry_after)
        elif 500 <= status < 600:
            error = ServerError(message, **about)
        else:
            error = _STATUS_ERRORS.get(status, UnexpectedResponseError)(message, **about)
        raise error

    def _parse_body(
        self, content_type: str | None, content: bytes
    ) -> tuple[str, tuple[object, ...]]:
        """Return Braze's ``message`` and ``errors``, or a safe description of an odd body."""
        if not content.strip():
            return "", ()
        try:
            data = json.loads(content)
        except ValueError:
            text = content[:_SNIPPET_CHARS].decode("utf-8", "replace")
            snippet = " ".join(text.split())
            more = "..." if len(content) > _SNIPPET_CHARS else ""
            ctype = _truncate(content_type or "no content type", 60)
            return (
                self._scrub(f"non-JSON body ({ctype}, {len(content)} bytes): {snippet!r}{more}"),
                (),
            )
        if not isinstance(data, dict):
            return f"unexpected JSON body (a {type(data).__name__}, not an object)", ()
        raw_message = data.get("message")
        message = "" if raw_message is None else self._scrub(str(raw_message))
        raw_errors = data.get("errors")
        errors: tuple[object, ...]
        if raw_errors is None or raw_errors == []:
            errors = ()
        elif isinstance(raw_errors, list):
            errors = tuple(self._scrub_value(e) for e in raw_errors)
        else:
            errors = (self._scrub_value(raw_errors),)
        return message, errors

    def _scrub(self, text: str) -> str:
        """Mask the keys in text that came from elsewhere (Braze, a proxy, an exception).

        Besides the client's own keys, whatever follows Braze's "client secret:" is masked
        (Braze's "Partner not enabled" text echoes the key, maybe cut or re-encoded).
        """
        for secret in (self._partner_api_key, self._data_import_key):
            value = secret.reveal()
            if value in text:
                text = text.replace(value, _MASK)
        if "secret" in text.lower():
            text = _ECHOED_SECRET.sub(rf"\g<1>{_MASK}", text)
        return text

    def _scrub_value(self, value: object) -> object:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return [self._scrub_value(v) for v in value]
        if isinstance(value, dict):
            return {self._scrub(str(k)): self._scrub_value(v) for k, v in value.items()}
        return value


# --------------------------------------------------------------------------------------------
# Helpers


def _check_cohort_id(cohort_id: object) -> str:
    if not isinstance(cohort_id, str):
        raise ConfigurationError(f"cohort_id must be a str, not {type(cohort_id).__name__}")
    if not cohort_id.strip():
        raise ConfigurationError("cohort_id must be a non-blank str")
    return cohort_id


def _plain_external_ids(
    add: Iterable[UserRef | str], remove: Iterable[UserRef | str]
) -> tuple[dict[str, object], int, dict[str, object], int] | None:
    """The fast path of :meth:`CohortClient.update_members` for the common case.

    When ``add`` and ``remove`` are lists or tuples of plain ``str`` external ids, at most
    1,000 together, they are checked, deduplicated and compared in bulk (C-level calls, no
    object per id). Returns ``None`` for anything else: :func:`_collect` handles it, with the
    same rules and messages.
    """
    if not (isinstance(add, (list, tuple)) and isinstance(remove, (list, tuple))):
        return None
    if len(add) + len(remove) > MAX_IDS_PER_REQUEST:
        return None
    try:
        if type(add) is not CheckedIds:
            check_external_ids(add)
        if type(remove) is not CheckedIds:
            check_external_ids(remove)
    except InvalidIdentifierError:
        return None  # identifier objects, or a bad value: the general path says which
    unique_add = list(dict.fromkeys(add))
    unique_remove = list(dict.fromkeys(remove))
    if unique_add and unique_remove and not set(unique_add).isdisjoint(unique_remove):
        raise ConfigurationError(
            "the same user is both in add and in remove; send one or the other"
        )
    return (
        {"user_ids": unique_add} if unique_add else {},
        len(unique_add),
        {"user_ids": unique_remove} if unique_remove else {},
        len(unique_remove),
    )


def _collect(
    which: str,
    items: Iterable[UserRef | str],
    seen: set[str],
    *,
    conflict: set[str] | None,
    budget: int,
) -> tuple[dict[str, object], int]:
    """Sort ``items`` into the lists of one ``cohort_changes`` object.

    Adds each key to ``seen`` (duplicates are skipped) and stops with an error as soon as more
    than ``budget`` ids were found or a key is in ``conflict``.
    """
    if isinstance(items, (str, bytes, ExternalId, UserAlias, DeviceId)):
        raise ConfigurationError(
            f"{which} must be an iterable of identifiers, not a single {type(items).__name__}"
        )
    user_ids: list[str] = []
    device_ids: list[str] = []
    aliases: list[dict[str, str]] = []
    target: list[Any]
    value: Any
    count = 0
    search = _FORBIDDEN.search
    for item in items:
        if isinstance(item, str):
            # The hot path: a plain external id is checked inline, no object is built.
            if not item or item != item.strip() or search(item):
                ExternalId(item)  # raises the precise error
            key = "e:" + item
            target, value = user_ids, item
        else:
            ref = item if type(item) is ExternalId else as_ref(item)
            key = ref.key
            if isinstance(ref, ExternalId):
                target, value = user_ids, ref.value
            elif isinstance(ref, DeviceId):
                target, value = device_ids, ref.value
            else:
                target = aliases
                value = {"alias_name": ref.alias_name, "alias_label": ref.alias_label}
        if key in seen:
            if conflict is not None and key in conflict:
                raise ConfigurationError(
                    "the same user is both in add and in remove; send one or the other"
                )
            continue
        seen.add(key)
        count += 1
        if count > budget:
            raise BatchTooLargeError(
                f"more than {MAX_IDS_PER_REQUEST} ids in one request; Braze accepts at most "
                f"{MAX_IDS_PER_REQUEST} (use BatchUploader to split them)",
                limit=MAX_IDS_PER_REQUEST,
            )
        target.append(value)
    change: dict[str, object] = {}
    if user_ids:
        change["user_ids"] = user_ids
    if device_ids:
        change["device_ids"] = device_ids
    if aliases:
        change["aliases"] = aliases
    return change, count


def _exception_graph(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it: causes, contexts, args, urllib3 reasons."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, urllib3.exceptions.MaxRetryError) and current.reason is not None:
            stack.append(current.reason)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def _connect_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the connection was never made."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    return any(
        isinstance(
            current,
            (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError),
        )
        for current in _exception_graph(exc)
    )


def _drop_tracebacks(exc: BaseException) -> None:
    """Forget the frames of a lower-layer failure: their local variables hold the body."""
    for current in _exception_graph(exc):
        current.__traceback__ = None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _rate_limit(headers: Mapping[str, str]) -> RateLimitInfo:
    limit = _number(headers.get("X-RateLimit-Limit"))
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    return RateLimitInfo(
        limit=None if limit is None else int(limit),
        remaining=None if remaining is None else int(remaining),
        reset=_number(headers.get("X-RateLimit-Reset")),
    )


def _retry_after(headers: Mapping[str, str], clock: Callable[[], float]) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP date) or ``X-RateLimit-Reset``."""
    value = headers.get("Retry-After")
    if value is not None:
        seconds = _number(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return max(0.0, when.timestamp() - clock())
    reset = _number(headers.get("X-RateLimit-Reset"))
    if reset is not None:
        return max(0.0, reset - clock())
    return None


def _truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
