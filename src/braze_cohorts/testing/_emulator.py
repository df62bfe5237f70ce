"""A loopback emulator of Braze's partner cohort import API, with fault injection.

The emulator is an honest, independent HTTP/1.1 server: it parses what arrives on the wire
itself and imports nothing from the rest of ``braze_cohorts`` (only the standard library), so a
bug in the client cannot hide behind shared code.

Model:

* **Partners and partner API keys.** The emulator serves one or more partner names
  (``/partners/{partner}/...``). Each partner API key belongs to one partner and one region
  (``"US"``, ``"EU"`` or ``"AU"``); only keys of the emulator's own region are valid on it.
* **Workspaces and data import keys.** A data import key (the body's ``client_secret``) selects a
  workspace. Keys can be created and revoked while the server runs. A workspace enables a set of
  partners; a partner that is not enabled gets ``401 Partner not enabled for this customer``.
* **Users and matching.** Each workspace knows users: external ids, aliases and device ids.
  Identified users (with an external id or an alias) are matched by external id or alias;
  anonymous users by device id. A device id that belongs to an identified user is ignored, and
  so are unknown ids. A cohort's membership is a set of users.
* **Cohorts.** The user cohort endpoint accepts a cohort that was never named (Braze's behaviour
  here is not documented): it creates the cohort unnamed; the request log shows the order.
* **Rate limit.** With ``requests_per_hour`` set, a sliding window over the last
  ``rate_limit_window`` seconds of accepted requests answers ``429`` past the limit, and every
  answer carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset``. The window is global to the
  emulator (not per key).

Every answer is written with a single ``sendall`` on a socket with ``TCP_NODELAY``: a header
write followed by a separate body write would stall each keep-alive request by about 40 ms
(Nagle's algorithm against delayed ACKs).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import email.utils
import http
import json
import logging
import math
import random
import re
import secrets
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "BrazeEmulator",
    "Identifier",
    "RequestRecord",
    "Workspace",
]

log = logging.getLogger(__name__)

#: Braze's cap on identifiers in one request, over all objects and kinds together.
MAX_IDS_PER_REQUEST = 1000

#: A cohort member as the emulator reports it: ``("external_id", id)``,
#: ``("alias", alias_name, alias_label)`` or ``("device_id", id)``.
Identifier = tuple[str, ...]

Region = Literal["US", "EU", "AU"]
_REGIONS = ("US", "EU", "AU")

_PATH_RE = re.compile(r"^/partners/([^/]+)/cohorts(/users)?$")
_CHANGE_KEYS = frozenset({"user_ids", "device_ids", "aliases", "should_remove"})
_MAX_LINE = 65536
_MAX_HEADERS = 100
_SERVER_NAME = "braze-cohorts-emulator"

MSG_INVALID_PARTNER_KEY = "Invalid partner API key"
MSG_INVALID_CLIENT_SECRET = "Invalid client secret"  # noqa: S105 - a message, not a secret
MSG_PARTNER_NOT_ENABLED = "Partner not enabled for this customer"
MSG_UNAUTHORIZED = "Unauthorized access"
MSG_COHORT_ID = "cohort_id must be a valid string"
MSG_NAME = "name must be a non-empty string"
MSG_CREATED_AT = "created_at must be a valid ISO-8601 timestamp"
MSG_TOO_MANY_IDS = f"Cannot send more than {MAX_IDS_PER_REQUEST} ids per request"
MSG_CHANGES = "cohort_changes must be an array of objects"
MSG_INVALID_JSON = "Request body must be a JSON object"


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """What the emulator saw of one request. It never holds a key.

    Attributes:
        method: The HTTP method.
        path: The request path (without the query string).
        status: The status answered, or ``None`` when the connection was dropped unanswered.
        message: The ``message`` of the answer (``"success"``, a validation message ...).
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
        fault: The injected fault that answered, if any: ``"fail"``, ``"drop_before_apply"``,
            ``"drop_after_apply"``, ``"redirect"``, ``"errors"`` or ``"rate_limited"``.
        key_outside_body: ``True`` if a key the emulator knows appeared in the request line or
            a header (it must only ever travel in the body).
        received_at: The emulator's clock when the request arrived, before any injected
            latency (epoch seconds). The rate limit counts a request when it is handled.
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
    fault: str | None = None
    key_outside_body: bool = False
    received_at: float = 0.0

    @property
    def ids(self) -> int:
        """All identifiers in the request, every kind, added and removed."""
        return self.user_ids + self.device_ids + self.aliases

    @property
    def added(self) -> int:
        """Identifiers in objects that add members."""
        return self.ids - self.removed


@dataclasses.dataclass
class _User:
    external_id: str | None
    aliases: tuple[tuple[str, str], ...]
    device_ids: tuple[str, ...]
    identified: bool

    def primary(self) -> Identifier:
        if self.external_id is not None:
            return ("external_id", self.external_id)
        if self.aliases:
            return ("alias", *self.aliases[0])
        return ("device_id", self.device_ids[0])


@dataclasses.dataclass
class _Cohort:
    name: str | None = None
    created_at: str | None = None
    members: set[int] = dataclasses.field(default_factory=set)


class Workspace:
    """One Braze workspace of the emulator: its users, its cohorts and its enabled partners.

    Get one from :meth:`BrazeEmulator.create_workspace` (or ``emulator.workspace``, the default).
    Every method is thread-safe and may be called while the server runs.
    """

    def __init__(self, name: str, partners: Iterable[str], lock: threading.RLock) -> None:
        self._name = name
        self._lock = lock
        self._partners: set[str] = set(partners)
        self._users: list[_User] = []
        self._by_external: dict[str, int] = {}
        self._by_alias: dict[tuple[str, str], int] = {}
        self._by_device: dict[str, int] = {}
        self._cohorts: dict[str, _Cohort] = {}

    def __repr__(self) -> str:
        return f"Workspace(name={self._name!r})"

    @property
    def name(self) -> str:
        """The workspace's name."""
        return self._name

    @property
    def partners(self) -> frozenset[str]:
        """The partners enabled for this workspace."""
        with self._lock:
            return frozenset(self._partners)

    def enable_partner(self, partner: str) -> None:
        """Enable ``partner`` for this workspace."""
        with self._lock:
            self._partners.add(partner)

    def disable_partner(self, partner: str) -> None:
        """Disable ``partner``: its requests get ``401 Partner not enabled for this customer``."""
        with self._lock:
            self._partners.discard(partner)

    def add_user(
        self,
        external_id: str | None = None,
        *,
        aliases: Iterable[tuple[str, str]] = (),
        device_ids: Iterable[str] = (),
        identified: bool | None = None,
    ) -> Identifier:
        """Add a known user and return its primary identifier.

        Args:
            external_id: The user's external id, if identified by one.
            aliases: ``(alias_name, alias_label)`` pairs.
            device_ids: The user's device ids.
            identified: Whether the user is identified. Defaults to ``True`` when the user has an
                external id or an alias; an anonymous user is matched only by device id, and the
                device ids of an identified user are ignored.

        Raises:
            ValueError: If the user has no identifier at all, if one of its identifiers already
                belongs to another user, or if ``identified=False`` contradicts an external id.
        """
        alias_pairs = tuple((str(n), str(lbl)) for n, lbl in aliases)
        devices = tuple(device_ids)
        if external_id is None and not alias_pairs and not devices:
            raise ValueError("a user needs an external id, an alias or a device id")
        if identified is None:
            identified = external_id is not None or bool(alias_pairs)
        elif not identified and external_id is not None:
            raise ValueError("a user with an external id is identified")
        with self._lock:
            self._check_free(external_id, alias_pairs, devices)
            uid = len(self._users)
            user = _User(external_id, alias_pairs, devices, identified)
            self._users.append(user)
            if external_id is not None:
                self._by_external[external_id] = uid
            for pair in alias_pairs:
                self._by_alias[pair] = uid
            for device in devices:
                self._by_device[device] = uid
            return user.primary()

    def add_users(self, n: int, *, prefix: str = "user-", start: int = 0) -> list[str]:
        """Add ``n`` identified users with external ids ``f"{prefix}{i}"`` and return the ids.

        Args:
            n: How many users.
            prefix: The start of every external id.
            start: The first number.

        Raises:
            ValueError: If ``n`` is negative or an id already exists.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        ids = [f"{prefix}{i}" for i in range(start, start + n)]
        with self._lock:
            taken = [x for x in ids if x in self._by_external]
            if taken:
                raise ValueError(f"{len(taken)} of these external ids already exist")
            base = len(self._users)
            self._users.extend(_User(x, (), (), True) for x in ids)
            self._by_external.update((x, base + i) for i, x in enumerate(ids))
        return ids

    def identify(self, device_id: str, external_id: str) -> None:
        """Identify the anonymous user owning ``device_id`` as ``external_id``.

        Afterwards the user is matched by ``external_id`` and no longer by the device id.

        Raises:
            KeyError: If no user has this device id.
            ValueError: If ``external_id`` belongs to another user.
        """
        with self._lock:
            uid = self._by_device[device_id]
            owner = self._by_external.get(external_id)
            if owner is not None and owner != uid:
                raise ValueError("this external id belongs to another user")
            user = self._users[uid]
            if user.external_id is not None and user.external_id != external_id:
                del self._by_external[user.external_id]
            user.external_id = external_id
            user.identified = True
            self._by_external[external_id] = uid

    def user_count(self) -> int:
        """How many users the workspace knows."""
        with self._lock:
            return len(self._users)

    def cohorts(self) -> dict[str, str | None]:
        """Every cohort of the workspace, mapped to its name (``None`` if never named)."""
        with self._lock:
            return {cid: c.name for cid, c in self._cohorts.items()}

    def cohort_name(self, cohort_id: str) -> str | None:
        """The cohort's latest name, or ``None`` if members arrived before any name.

        Raises:
            KeyError: If the workspace has no such cohort.
        """
        with self._lock:
            return self._cohorts[cohort_id].name

    def members(self, cohort_id: str) -> frozenset[Identifier]:
        """The cohort's members, each as its primary identifier.

        The primary identifier is the external id, else the first alias, else the first device
        id: ``("external_id", "u1")``, ``("alias", name, label)``, ``("device_id", "d1")``.

        Raises:
            KeyError: If the workspace has no such cohort.
        """
        with self._lock:
            cohort = self._cohorts[cohort_id]
            return frozenset(self._users[uid].primary() for uid in cohort.members)

    # -- used by the server, under the lock --------------------------------------------------

    def _check_free(
        self,
        external_id: str | None,
        aliases: Sequence[tuple[str, str]],
        devices: Sequence[str],
    ) -> None:
        if external_id is not None and external_id in self._by_external:
            raise ValueError("this external id already belongs to a user")
        if any(pair in self._by_alias for pair in aliases):
            raise ValueError("this alias already belongs to a user")
        if any(d in self._by_device for d in devices):
            raise ValueError("this device id already belongs to a user")

    def _name_cohort(self, cohort_id: str, name: str, created_at: str) -> None:
        cohort = self._cohorts.setdefault(cohort_id, _Cohort())
        cohort.name = name
        cohort.created_at = created_at

    def _apply(self, cohort_id: str, changes: Sequence[_Change]) -> int:
        cohort = self._cohorts.setdefault(cohort_id, _Cohort())
        members = cohort.members
        by_external = self._by_external
        by_alias = self._by_alias
        by_device = self._by_device
        users = self._users
        matched = 0
        for change in changes:
            uids: list[int] = []
            for x in change.user_ids:
                uid = by_external.get(x)
                if uid is not None:
                    uids.append(uid)
            for pair in change.aliases:
                uid = by_alias.get(pair)
                if uid is not None:
                    uids.append(uid)
            for d in change.device_ids:
                uid = by_device.get(d)
                if uid is not None and not users[uid].identified:
                    uids.append(uid)
            matched += len(uids)
            if change.remove:
                members.difference_update(uids)
            else:
                members.update(uids)
        return matched


@dataclasses.dataclass(frozen=True)
class _Change:
    remove: bool
    user_ids: list[str]
    device_ids: list[str]
    aliases: list[tuple[str, str]]


@dataclasses.dataclass
class _Fault:
    kind: str
    remaining: int
    path: str | None
    status: int = 0
    headers: tuple[tuple[str, str | None], ...] = ()
    body: bytes | None = None
    retry_after: float | None = None
    location: str = ""
    errors: tuple[object, ...] = ()

    def matches(self, path: str) -> bool:
        return self.path is None or path.endswith(self.path)


@dataclasses.dataclass
class _PartnerKey:
    partner: str
    region: str


class _Answer:
    """An answer to write (``status`` ``None`` means: close without answering)."""

    __slots__ = ("body", "close", "headers", "record", "status")

    def __init__(
        self,
        status: int | None,
        body: bytes,
        record: RequestRecord,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.record = record
        self.headers = headers
        self.close = close


def _json_body(message: str, errors: Sequence[object] | None = None) -> bytes:
    payload: dict[str, object] = {"message": message}
    if errors is not None:
        payload["errors"] = list(errors)
    return json.dumps(payload).encode()


def _encode_body(
    body: bytes | str | Mapping[str, object] | Sequence[object] | None,
) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _is_iso8601(value: str) -> bool:
    text = value.strip()
    if not text or text != value:
        return False
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _parse_changes(raw: object) -> list[_Change] | str:
    """Return the parsed ``cohort_changes`` or the 400 message that refuses them."""
    if not isinstance(raw, list):
        return MSG_CHANGES
    changes: list[_Change] = []
    total = 0
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            return MSG_CHANGES
        unknown = set(obj) - _CHANGE_KEYS
        if unknown:
            return (
                f"cohort_changes[{i}] may only hold user_ids, device_ids, aliases and "
                f"should_remove, not {', '.join(sorted(unknown))}"
            )
        remove = obj.get("should_remove", False)
        if not isinstance(remove, bool):
            return f"cohort_changes[{i}].should_remove must be a boolean"
        lists: dict[str, list[str]] = {}
        for field in ("user_ids", "device_ids"):
            values = obj.get(field, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                return f"cohort_changes[{i}].{field} must be an array of strings"
            lists[field] = values
        raw_aliases = obj.get("aliases", [])
        if not isinstance(raw_aliases, list):
            return f"cohort_changes[{i}].aliases must be an array of objects"
        aliases: list[tuple[str, str]] = []
        for alias in raw_aliases:
            if (
                not isinstance(alias, dict)
                or set(alias) != {"alias_name", "alias_label"}
                or not isinstance(alias["alias_name"], str)
                or not isinstance(alias["alias_label"], str)
            ):
                return (
                    f"cohort_changes[{i}].aliases must be objects with string alias_name "
                    "and alias_label"
                )
            aliases.append((alias["alias_name"], alias["alias_label"]))
        total += len(lists["user_ids"]) + len(lists["device_ids"]) + len(aliases)
        changes.append(_Change(remove, lists["user_ids"], lists["device_ids"], aliases))
    if total > MAX_IDS_PER_REQUEST:
        return MSG_TOO_MANY_IDS
    return changes


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: BrazeEmulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover
        log.exception("emulator: unexpected error while handling a connection")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(sock)
        self.rfile = sock.makefile("rb")

    def finish(self) -> None:
        sock: socket.socket = self.request
        with self.server.connections_lock:
            self.server.connections.discard(sock)
        self.rfile.close()

    def handle(self) -> None:
        emulator = self.server.emulator
        sock: socket.socket = self.request
        try:
            while True:
                request = self._read_request()
                if request is None:
                    return
                if isinstance(request, str):
                    sock.sendall(emulator._raw_answer(400, request, close=True))
                    return
                answer = emulator._handle(*request)
                if answer.status is None:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                sock.sendall(emulator._render(answer))
                if answer.close:
                    return
        except (OSError, ValueError):
            # The peer went away (or the emulator stopped): nothing left to answer.
            return

    def _read_request(
        self,
    ) -> tuple[str, str, bytes, dict[str, str], bytes, bool] | str | None:
        """Read one request: (method, target, head, headers, body, keep_alive), or an error."""
        line = self.rfile.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            return None
        if len(line) > _MAX_LINE:
            return "Request line too long"
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "Malformed request line"
        method, target, version = parts
        head = [line]
        headers: dict[str, str] = {}
        while True:
            hline = self.rfile.readline(_MAX_LINE + 1)
            if not hline:
                return None
            if hline in (b"\r\n", b"\n"):
                break
            head.append(hline)
            if len(head) > _MAX_HEADERS or len(hline) > _MAX_LINE:
                return "Request headers too large"
            name, sep, value = hline.decode("latin-1").partition(":")
            if not sep:
                return "Malformed header"
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body_or_error = self._read_chunked()
            if isinstance(body_or_error, str):
                return body_or_error
            body = body_or_error
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                return "Invalid Content-Length"
            if length < 0:
                return "Invalid Content-Length"
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                return None
        return method, target, b"".join(head), headers, body, keep_alive

    def _read_chunked(self) -> bytes | str:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                return "Malformed chunked body"
            if size == 0:
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)


class BrazeEmulator:
    """A local Braze partner cohort API on loopback, with inspection and fault injection.

    Use it as a context manager (or call :meth:`start`/:meth:`stop`)::

        with BrazeEmulator() as braze:
            braze.add_user("u1")
            client = CohortClient(braze.url, partner=braze.partner,
                                  partner_api_key=braze.partner_api_key,
                                  data_import_key=braze.data_import_key)
            ...
            assert braze.members("my-cohort") == {("external_id", "u1")}

    A default partner API key (for the emulator's region and its first partner), a default
    workspace (``emulator.workspace``) and a data import key for it exist from construction.
    Every method is thread-safe and may be called while the server runs.

    Args:
        host: The address to bind (loopback by default).
        port: The port; ``0`` picks a free one.
        partner: The partner name (or names) served at ``/partners/{partner}/...``.
        region: Which partner-key region this emulator is (``"US"``, ``"EU"`` or ``"AU"``).
        latency: Seconds added to every answer.
        jitter: Up to this many seconds added at random to every answer.
        requests_per_hour: Enforce this limit with ``429`` answers past it (``None``: no limit).
        rate_limit_window: The sliding window of the limit, in seconds.
        clock: Epoch seconds for the rate limit, ``X-RateLimit-Reset`` and the request log
            (inject a fake clock to test pacing without waiting).
        partner_api_key: The default partner API key (random if not given).
        data_import_key: The default workspace's data import key (random if not given).
        record_raw: Keep each request's line and headers (never the body) in :attr:`raw_requests`.
        log_limit: Keep at most this many records in :attr:`request_log` (and raw requests),
            dropping the oldest, so a long-running emulator does not grow without bound;
            ``None`` keeps everything.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        partner: str | Iterable[str] = "kubit",
        region: Region = "US",
        latency: float = 0.0,
        jitter: float = 0.0,
        requests_per_hour: int | None = None,
        rate_limit_window: float = 3600.0,
        clock: Callable[[], float] = time.time,
        partner_api_key: str | None = None,
        data_import_key: str | None = None,
        record_raw: bool = False,
        log_limit: int | None = 1_000_000,
    ) -> None:
        if log_limit is not None and log_limit < 1:
            raise ValueError("log_limit must be >= 1 or None")
        partners = (partner,) if isinstance(partner, str) else tuple(partner)
        if not partners or not all(isinstance(p, str) and p for p in partners):
            raise ValueError("partner must be a non-empty name or names")
        if region not in _REGIONS:
            raise ValueError(f"region must be one of {', '.join(_REGIONS)}")
        self._host = host
        self._port = port
        self._partners = partners
        self._region: str = region
        self._clock = clock
        self._record_raw = record_raw
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._partner_keys: dict[str, _PartnerKey] = {}
        self._import_keys: dict[str, Workspace] = {}
        self._workspaces: dict[str, Workspace] = {}
        self._faults: list[_Fault] = []
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=log_limit)
        self._raw: collections.deque[tuple[bytes, bytes]] = collections.deque(maxlen=log_limit)
        self._latency = 0.0
        self._jitter = 0.0
        self.set_latency(latency, jitter)
        self._limit: int | None = None
        self._window = 3600.0
        self._accepted: collections.deque[float] = collections.deque()
        self.set_rate_limit(requests_per_hour, window=rate_limit_window)
        self._partner_api_key = self.add_partner_key(partner_api_key, region=region)
        self._workspace = self.create_workspace("default")
        self._data_import_key = self.create_data_import_key(self._workspace, key=data_import_key)

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"BrazeEmulator(url={self.url!r}, partner={self.partner!r}, {state})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> BrazeEmulator:
        """Bind the port and serve in a background thread; return once ready.

        Raises:
            RuntimeError: If the emulator is already running.
            OSError: If the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._ready.clear()
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, args=(server,), name="braze-emulator", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        log.info("emulator listening on %s", self.url)
        return self

    def _serve(self, server: _Server) -> None:
        self._ready.set()
        server.serve_forever(poll_interval=0.01)

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the handler threads. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections)
        for sock in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> BrazeEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``"http://127.0.0.1:54321"``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- credentials and workspaces -----------------------------------------------------------

    @property
    def partner(self) -> str:
        """The (first) partner name served."""
        return self._partners[0]

    @property
    def partners(self) -> tuple[str, ...]:
        """Every partner name served."""
        return self._partners

    @property
    def region(self) -> str:
        """The partner-key region of this emulator."""
        return self._region

    @property
    def partner_api_key(self) -> str:
        """The default partner API key (valid for :attr:`partner` on this region)."""
        return self._partner_api_key

    @property
    def data_import_key(self) -> str:
        """The default workspace's data import key (unless revoked)."""
        return self._data_import_key

    @property
    def workspace(self) -> Workspace:
        """The default workspace."""
        return self._workspace

    def add_partner_key(
        self, key: str | None = None, *, region: Region = "US", partner: str | None = None
    ) -> str:
        """Register a partner API key and return it.

        Args:
            key: The key; random if not given.
            region: The key's region: a key of another region than the emulator's is refused
                with ``401 Invalid partner API key``, as a US key is by an EU cluster.
            partner: The partner the key belongs to (default: :attr:`partner`); using it in
                another partner's path is refused with ``401 Unauthorized access``.

        Raises:
            ValueError: If the region is unknown or the key already exists.
        """
        if region not in _REGIONS:
            raise ValueError(f"region must be one of {', '.join(_REGIONS)}")
        key = key or f"pak-{region.lower()}-{secrets.token_urlsafe(18)}"
        with self._lock:
            if key in self._partner_keys or key in self._import_keys:
                raise ValueError("this key already exists")
            self._partner_keys[key] = _PartnerKey(partner or self.partner, region)
        return key

    def revoke_partner_key(self, key: str) -> None:
        """Invalidate a partner API key (unknown keys are ignored)."""
        with self._lock:
            self._partner_keys.pop(key, None)

    def create_workspace(self, name: str, *, partners: Iterable[str] | None = None) -> Workspace:
        """Create a workspace with the given partners enabled (default: all of the emulator's).

        Raises:
            ValueError: If a workspace of that name exists.
        """
        with self._lock:
            if name in self._workspaces:
                raise ValueError(f"workspace {name!r} already exists")
            ws = Workspace(name, self._partners if partners is None else partners, self._lock)
            self._workspaces[name] = ws
            return ws

    def get_workspace(self, name: str) -> Workspace:
        """The workspace called ``name``.

        Raises:
            KeyError: If there is none.
        """
        with self._lock:
            return self._workspaces[name]

    def create_data_import_key(
        self, workspace: Workspace | str | None = None, *, key: str | None = None
    ) -> str:
        """Create a data import key selecting ``workspace`` (default: the default workspace).

        Raises:
            ValueError: If the key already exists.
            KeyError: If the workspace name is unknown.
        """
        key = key or f"dik-{secrets.token_urlsafe(18)}"
        with self._lock:
            ws = self._resolve(workspace)
            if key in self._import_keys or key in self._partner_keys:
                raise ValueError("this key already exists")
            self._import_keys[key] = ws
        return key

    def revoke_data_import_key(self, key: str) -> None:
        """Invalidate a data import key: later requests get ``401 Invalid client secret``."""
        with self._lock:
            self._import_keys.pop(key, None)

    def _resolve(self, workspace: Workspace | str | None) -> Workspace:
        if workspace is None:
            return self._workspace
        if isinstance(workspace, Workspace):
            return workspace
        return self._workspaces[workspace]

    # -- users and cohorts (default workspace unless told) -------------------------------------

    def add_user(
        self,
        external_id: str | None = None,
        *,
        aliases: Iterable[tuple[str, str]] = (),
        device_ids: Iterable[str] = (),
        identified: bool | None = None,
        workspace: Workspace | str | None = None,
    ) -> Identifier:
        """Add a known user to a workspace; see :meth:`Workspace.add_user`."""
        return self._resolve(workspace).add_user(
            external_id, aliases=aliases, device_ids=device_ids, identified=identified
        )

    def add_users(
        self,
        n: int,
        *,
        prefix: str = "user-",
        start: int = 0,
        workspace: Workspace | str | None = None,
    ) -> list[str]:
        """Add ``n`` identified users ``f"{prefix}{i}"``; see :meth:`Workspace.add_users`."""
        return self._resolve(workspace).add_users(n, prefix=prefix, start=start)

    def load_users(
        self,
        source: str | Path | Mapping[str, Any] | Sequence[Any],
        *,
        workspace: Workspace | str | None = None,
    ) -> int:
        """Add users from a ``users.json`` file (or its parsed content); return how many.

        The format is a JSON array of users, or an object ``{"users": [...], "generate":
        {"count": N, "prefix": "user-"}}`` (both keys optional). A user is an object with any of
        ``external_id`` (string), ``aliases`` (array of ``{"alias_name", "alias_label"}``),
        ``device_ids`` (array of strings) and ``identified`` (boolean)::

            {"users": [
                {"external_id": "u1",
                 "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}]},
                {"device_ids": ["anon-device-1"]},
                {"external_id": "u2", "device_ids": ["known-device-2"]}
             ],
             "generate": {"count": 1000, "prefix": "user-"}}

        Raises:
            ValueError: If the content does not have this shape.
            OSError: If the file cannot be read.
        """
        data: Any = source
        if isinstance(source, (str, Path)):
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        generate: Any = None
        if isinstance(data, Mapping):
            unknown = set(data) - {"users", "generate"}
            if unknown:
                raise ValueError(f"unknown keys in users file: {', '.join(sorted(unknown))}")
            generate = data.get("generate")
            data = data.get("users", [])
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
            raise ValueError("users must be an array of user objects")
        ws = self._resolve(workspace)
        added = 0
        for user in data:
            if not isinstance(user, Mapping) or set(user) - {
                "external_id",
                "aliases",
                "device_ids",
                "identified",
            }:
                raise ValueError(
                    "a user is an object with external_id, aliases, device_ids, identified"
                )
            try:
                aliases = [(a["alias_name"], a["alias_label"]) for a in user.get("aliases", [])]
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    "a user's aliases are objects with alias_name and alias_label"
                ) from exc
            ws.add_user(
                user.get("external_id"),
                aliases=aliases,
                device_ids=user.get("device_ids", []),
                identified=user.get("identified"),
            )
            added += 1
        if generate is not None:
            if not isinstance(generate, Mapping) or not isinstance(generate.get("count"), int):
                raise ValueError('generate must be {"count": N, "prefix": "..."}')
            added += len(ws.add_users(generate["count"], prefix=generate.get("prefix", "user-")))
        return added

    def members(
        self, cohort_id: str, workspace: Workspace | str | None = None
    ) -> frozenset[Identifier]:
        """A cohort's members as identifiers; see :meth:`Workspace.members`."""
        return self._resolve(workspace).members(cohort_id)

    def cohort_name(self, cohort_id: str, workspace: Workspace | str | None = None) -> str | None:
        """A cohort's name (``None`` if never named); see :meth:`Workspace.cohort_name`."""
        return self._resolve(workspace).cohort_name(cohort_id)

    def cohorts(self, workspace: Workspace | str | None = None) -> dict[str, str | None]:
        """A workspace's cohorts and their names; see :meth:`Workspace.cohorts`."""
        return self._resolve(workspace).cohorts()

    # -- inspection -----------------------------------------------------------------------------

    @property
    def request_log(self) -> list[RequestRecord]:
        """A copy of the log: one :class:`RequestRecord` per request, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def raw_requests(self) -> list[tuple[bytes, bytes]]:
        """With ``record_raw=True``: ``(request line, header block)`` per request (no bodies)."""
        with self._lock:
            return list(self._raw)

    def reset_log(self) -> None:
        """Forget the request log (and the raw requests)."""
        with self._lock:
            self._log.clear()
            self._raw.clear()

    # -- fault injection ------------------------------------------------------------------------

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every answer by ``fixed`` seconds plus up to ``jitter`` seconds at random."""
        if fixed < 0 or jitter < 0 or math.isnan(fixed) or math.isnan(jitter):
            raise ValueError("latency and jitter must be >= 0")
        with self._lock:
            self._latency = fixed
            self._jitter = jitter

    def set_rate_limit(self, requests_per_hour: int | None, *, window: float = 3600.0) -> None:
        """Enforce at most ``requests_per_hour`` requests per sliding ``window`` (``None``: off).

        Changing the limit forgets the requests counted so far.
        """
        if requests_per_hour is not None and requests_per_hour < 1:
            raise ValueError("requests_per_hour must be >= 1")
        if not window > 0:
            raise ValueError("window must be > 0")
        with self._lock:
            self._limit = requests_per_hour
            self._window = float(window)
            self._accepted.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        headers: Mapping[str, str | None] | None = None,
        body: bytes | str | Mapping[str, object] | Sequence[object] | None = None,
        retry_after: float | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status``, without applying them.

        Args:
            n: How many requests.
            status: The status (429, 423, 500, 502, 503 ... any code from 100 to 599).
            headers: Extra headers; they replace the defaults of the same name, and a value of
                ``None`` removes that default (e.g. ``{"Retry-After": None}`` for a 429 that
                only has ``X-RateLimit-Reset``).
            body: The body (bytes, text, or JSON-able); default ``{"message": <reason>}``.
            retry_after: For 429, the ``Retry-After`` seconds (default 1); with other statuses a
                ``Retry-After`` header is sent only if given. A 429 also carries
                ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``.
            path: Only requests whose path ends with this (e.g. ``"/cohorts/users"``).
        """
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        self._add_fault(
            _Fault(
                "fail",
                n,
                path,
                status=status,
                headers=tuple((headers or {}).items()),
                body=_encode_body(body),
                retry_after=retry_after,
            )
        )

    def drop_next(
        self,
        n: int = 1,
        *,
        when: Literal["before_apply", "after_apply"] = "before_apply",
        path: str | None = None,
    ) -> None:
        """Close the connection of the next ``n`` requests without answering.

        With ``when="after_apply"`` a valid request *is* applied first: the change happened but
        the client never hears it (an outcome-unknown failure).
        """
        if when not in ("before_apply", "after_apply"):
            raise ValueError('when must be "before_apply" or "after_apply"')
        self._add_fault(_Fault(f"drop_{when}", n, path))

    def succeed_with_errors_next(
        self,
        n: int = 1,
        errors: Sequence[object] = ("simulated error",),
        *,
        path: str | None = None,
    ) -> None:
        """Apply the next ``n`` valid requests and answer 200 with this ``errors`` list."""
        self._add_fault(_Fault("errors", n, path, errors=tuple(errors)))

    def redirect_next(
        self, n: int = 1, location: str = "", *, status: int = 307, path: str | None = None
    ) -> None:
        """Answer the next ``n`` requests with a redirect to ``location`` (nothing applied)."""
        if not 300 <= status <= 399:
            raise ValueError("status must be a redirect (3XX)")
        self._add_fault(_Fault("redirect", n, path, status=status, location=location))

    def clear_faults(self) -> None:
        """Forget every pending injected fault."""
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.matches(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[i]
                return fault
        return None

    # -- the request pipeline ---------------------------------------------------------------------

    def _rate_headers(self, now: float) -> list[tuple[str, str]]:
        if self._limit is None:
            return []
        window = self._accepted
        reset = (window[0] + self._window) if window else now + self._window
        return [
            ("X-RateLimit-Limit", str(self._limit)),
            ("X-RateLimit-Remaining", str(max(0, self._limit - len(window)))),
            ("X-RateLimit-Reset", str(math.ceil(reset))),
        ]

    def _key_outside_body(self, target: str, head: bytes) -> bool:
        text = head.decode("latin-1") + urllib.parse.unquote(target)
        return any(k in text for k in self._partner_keys) or any(
            k in text for k in self._import_keys
        )

    def _handle(
        self,
        method: str,
        target: str,
        head: bytes,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> _Answer:
        path = urllib.parse.urlsplit(target).path
        match = _PATH_RE.match(path)
        endpoint = None if match is None else ("users" if match.group(2) else "cohorts")
        partner = None if match is None else urllib.parse.unquote(match.group(1))
        with self._lock:
            now = self._clock()
            base = RequestRecord(
                method=method,
                path=path,
                status=None,
                endpoint=endpoint,
                partner=partner,
                key_outside_body=self._key_outside_body(target, head),
                received_at=now,
            )
            if self._record_raw:
                line, _, rest = head.partition(b"\n")
                self._raw.append((line.rstrip(b"\r"), rest))
            delay = self._latency + (random.uniform(0, self._jitter) if self._jitter else 0.0)
        if match is None:
            return self._finish(base, 404, "Not found", keep_alive)
        if method != "POST":
            return self._finish(
                base, 405, "Method not allowed", keep_alive, extra=[("Allow", "POST")]
            )
        if delay > 0:
            self._stopping.wait(delay)
        payload: Any
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        with self._lock:
            now = self._clock()
            fault = self._take_fault(path)
            if fault is not None and fault.kind == "fail":
                return self._fail(base, fault, now, keep_alive)
            if fault is not None and fault.kind == "redirect":
                return self._finish(
                    dataclasses.replace(base, fault="redirect"),
                    fault.status,
                    "Redirect",
                    keep_alive,
                    extra=[("Location", fault.location)],
                )
            if fault is not None and fault.kind == "drop_before_apply":
                rec = dataclasses.replace(base, fault=fault.kind)
                self._record(rec)
                return _Answer(None, b"", rec)
            if self._limit is not None:
                accepted = self._accepted
                while accepted and accepted[0] <= now - self._window:
                    accepted.popleft()
                if len(accepted) >= self._limit:
                    reset = accepted[0] + self._window
                    wait = max(1, math.ceil(reset - now))
                    return self._finish(
                        dataclasses.replace(base, fault="rate_limited"),
                        429,
                        "Rate limit exceeded",
                        keep_alive,
                        extra=[("Retry-After", str(wait)), *self._rate_headers(now)],
                        rate=False,
                    )
                accepted.append(now)
            answer = self._process(base, payload, endpoint or "", partner or "", fault, keep_alive)
            if fault is not None and fault.kind == "drop_after_apply":
                # The request was handled (and applied, if valid); the client never hears it.
                rec = dataclasses.replace(answer.record, status=None, message="", fault=fault.kind)
                self._log[-1] = rec
                return _Answer(None, b"", rec)
            return answer

    def _process(
        self,
        base: RequestRecord,
        payload: Any,
        endpoint: str,
        partner: str,
        fault: _Fault | None,
        keep_alive: bool,
    ) -> _Answer:
        if not isinstance(payload, dict):
            return self._finish(base, 400, MSG_INVALID_JSON, keep_alive)
        cohort_id = payload.get("cohort_id")
        rec = dataclasses.replace(base, cohort_id=cohort_id if isinstance(cohort_id, str) else None)
        pkey = payload.get("partner_api_key")
        partner_key = self._partner_keys.get(pkey) if isinstance(pkey, str) else None
        if partner_key is None or partner_key.region != self._region:
            return self._finish(rec, 401, MSG_INVALID_PARTNER_KEY, keep_alive)
        if partner_key.partner != partner or partner not in self._partners:
            return self._finish(rec, 401, MSG_UNAUTHORIZED, keep_alive)
        secret = payload.get("client_secret")
        ws = self._import_keys.get(secret) if isinstance(secret, str) else None
        if ws is None:
            return self._finish(rec, 401, MSG_INVALID_CLIENT_SECRET, keep_alive)
        rec = dataclasses.replace(rec, workspace=ws.name)
        if partner not in ws._partners:
            return self._finish(rec, 401, MSG_PARTNER_NOT_ENABLED, keep_alive)
        if not isinstance(cohort_id, str) or not cohort_id.strip():
            return self._finish(rec, 400, MSG_COHORT_ID, keep_alive)
        if endpoint == "cohorts":
            name = payload.get("name")
            if not isinstance(name, str) or not name.strip():
                return self._finish(rec, 400, MSG_NAME, keep_alive)
            rec = dataclasses.replace(rec, name=name)
            created_at = payload.get("created_at")
            if not isinstance(created_at, str) or not _is_iso8601(created_at):
                return self._finish(rec, 400, MSG_CREATED_AT, keep_alive)
            ws._name_cohort(cohort_id, name, created_at)
            rec = dataclasses.replace(rec, applied=True)
        else:
            changes = _parse_changes(payload.get("cohort_changes"))
            if isinstance(changes, str):
                return self._finish(rec, 400, changes, keep_alive)
            rec = dataclasses.replace(
                rec,
                user_ids=sum(len(c.user_ids) for c in changes),
                device_ids=sum(len(c.device_ids) for c in changes),
                aliases=sum(len(c.aliases) for c in changes),
                removed=sum(
                    len(c.user_ids) + len(c.device_ids) + len(c.aliases)
                    for c in changes
                    if c.remove
                ),
            )
            matched = ws._apply(cohort_id, changes)
            rec = dataclasses.replace(rec, applied=True, matched=matched)
        if fault is not None and fault.kind == "errors":
            return self._finish(
                dataclasses.replace(rec, fault="errors"),
                200,
                "success",
                keep_alive,
                errors=fault.errors,
            )
        return self._finish(rec, 200, "success", keep_alive)

    def _fail(self, base: RequestRecord, fault: _Fault, now: float, keep_alive: bool) -> _Answer:
        status = fault.status
        headers: dict[str, str] = {}
        retry_after = fault.retry_after
        if status == 429:
            if retry_after is None:
                retry_after = 1.0
            reset = math.ceil(now + retry_after)
            headers["X-RateLimit-Limit"] = str(self._limit or 250_000)
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Reset"] = str(reset)
        if retry_after is not None:
            headers["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else repr(retry_after)
            )
        lowered = {k.lower() for k, _ in fault.headers}
        extra = [(k, v) for k, v in headers.items() if k.lower() not in lowered]
        extra.extend((k, v) for k, v in fault.headers if v is not None)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        rec = dataclasses.replace(base, fault="fail")
        return self._finish(
            rec, status, phrase, keep_alive, extra=extra, body=fault.body, rate=status != 429
        )

    def _finish(
        self,
        rec: RequestRecord,
        status: int,
        message: str,
        keep_alive: bool,
        *,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        errors: Sequence[object] | None = None,
        rate: bool = True,
    ) -> _Answer:
        with self._lock:
            headers = [*(self._rate_headers(rec.received_at) if rate else []), *extra]
            rec = dataclasses.replace(rec, status=status, message=message)
            self._record(rec)
        payload = body if body is not None else _json_body(message, errors)
        return _Answer(status, payload, rec, headers, close=not keep_alive)

    def _record(self, rec: RequestRecord) -> None:
        self._log.append(rec)
        log.info(
            "emulator: %s %s -> %s (%d ids%s)",
            rec.method,
            rec.path,
            rec.status if rec.status is not None else "dropped",
            rec.ids,
            f", fault {rec.fault}" if rec.fault else "",
        )

    def _render(self, answer: _Answer) -> bytes:
        status = answer.status or 500
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {phrase}",
            f"Server: {_SERVER_NAME}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Content-Type: application/json",
            f"Content-Length: {len(answer.body)}",
            f"Connection: {'close' if answer.close else 'keep-alive'}",
        ]
        lines.extend(f"{k}: {v}" for k, v in answer.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + answer.body

    def _raw_answer(self, status: int, message: str, *, close: bool) -> bytes:
        rec = RequestRecord(method="", path="", status=status, message=message)
        with self._lock:
            self._record(rec)
        return self._render(_Answer(status, _json_body(message), rec, close=close))
