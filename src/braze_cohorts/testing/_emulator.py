"""A loopback emulator of Braze's partner cohort import API, with fault injection.

The emulator is an honest, independent HTTP/1.1 server: it parses what arrives on the wire
itself and imports nothing from the rest of ``braze_cohorts`` (only the standard library), so a
bug in the client cannot hide behind shared code. :class:`BrazeEmulator` is a thin facade over
four parts:

* ``_wire`` — the HTTP/1.1 server (keep-alive, chunked bodies, one ``sendall`` per answer);
* ``_world`` — partners and their keys, workspaces and their data import keys, users, cohorts;
* ``_faults`` — injected faults (:class:`FaultKind`), latency and the sliding-window rate limit;
* ``_partner`` — Braze's two endpoints over those, and ``_admin`` — the admin HTTP API under
  ``/_emulator/`` that drives the same controls without Python.

Rate limit: with ``requests_per_hour`` set, a sliding window over the last ``rate_limit_window``
seconds of accepted requests answers ``429`` past the limit, and every answer carries
``X-RateLimit-Limit``/``-Remaining``/``-Reset``. The window is global to the emulator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from braze_cohorts.testing._admin import PREFIX, AdminApi
from braze_cohorts.testing._faults import Fault, FaultKind, FaultPlan
from braze_cohorts.testing._partner import MAX_IDS_PER_REQUEST, PartnerEndpoints
from braze_cohorts.testing._records import RequestLog, RequestRecord
from braze_cohorts.testing._wire import Answer, HttpServer, Request
from braze_cohorts.testing._world import Identifier, Region, UserName, Workspace, World

__all__ = ["MAX_IDS_PER_REQUEST", "BrazeEmulator", "FaultKind", "Identifier", "RequestRecord"]

log = logging.getLogger(__name__)


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
        admin: Serve the admin HTTP API under ``/_emulator/`` (see ``docs/testing.md``).
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
        admin: bool = True,
    ) -> None:
        self._requests = RequestLog(log_limit, record_raw=record_raw)
        self._world = World((partner,) if isinstance(partner, str) else tuple(partner), region)
        self._faults = FaultPlan()
        self._faults.set_latency(latency, jitter)
        self._faults.set_rate_limit(requests_per_hour, window=rate_limit_window)
        self._server = HttpServer(host, port, self._dispatch, self._refuse)
        self._partner = PartnerEndpoints(
            self._world, self._faults, self._requests, clock, self._server.stopping
        )
        self._admin = AdminApi(self, self._world) if admin else None
        self._partner_api_key = self.add_partner_key(partner_api_key, region=region)
        self._workspace = self.create_workspace("default")
        self._data_import_key = self.create_data_import_key(self._workspace, key=data_import_key)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"BrazeEmulator(url={self.url!r}, partner={self.partner!r}, {state})"

    def _dispatch(self, request: Request) -> Answer:
        path = request.path
        if self._admin is not None and (path == PREFIX or path.startswith(PREFIX + "/")):
            return self._admin.handle(request)
        return self._partner.handle(request)

    def _refuse(self, reason: str) -> Answer:
        return self._partner.refuse(reason)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> BrazeEmulator:
        """Bind the port and serve in a background thread; return once ready.

        Raises:
            RuntimeError: If the emulator is already running.
            OSError: If the address cannot be bound.
        """
        self._server.start()
        log.info("emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the handler threads. Idempotent."""
        self._server.stop()

    def __enter__(self) -> BrazeEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._server.running

    @property
    def host(self) -> str:
        """The address bound (or to bind)."""
        return self._server.host

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._server.port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``"http://127.0.0.1:54321"``.

        For a wildcard bind (``0.0.0.0``, ``::``) it names loopback, which the client accepts.
        """
        return self._server.url

    @property
    def admin_url(self) -> str:
        """The admin API's base URL, ``url + "/_emulator"``."""
        return self.url + PREFIX

    # -- credentials and workspaces -----------------------------------------------------------

    @property
    def partner(self) -> str:
        """The (first) partner name served."""
        return self._world.partners[0]

    @property
    def partners(self) -> tuple[str, ...]:
        """Every partner name served."""
        return self._world.partners

    @property
    def region(self) -> str:
        """The partner-key region of this emulator."""
        return self._world.region

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
        self, key: str | None = None, *, region: Region | str = "US", partner: str | None = None
    ) -> str:
        """Register a partner API key and return it.

        Args:
            key: The key; random if not given.
            region: The key's region: a key of another region than the emulator's is refused
                with ``401 Invalid Partner API key``, as a US key is by an EU cluster.
            partner: The partner the key belongs to (default: :attr:`partner`); using it in
                another partner's path is refused with ``401 Unauthorized access``.

        Raises:
            ValueError: If the region is unknown or the key already exists.
        """
        return self._world.add_partner_key(key, region=region, partner=partner)

    def revoke_partner_key(self, key: str) -> None:
        """Invalidate a partner API key (unknown keys are ignored)."""
        self._world.revoke_partner_key(key)

    def create_workspace(
        self, name: str, *, partners: Iterable[str] | None = None, partner_enabled: bool = True
    ) -> Workspace:
        """Create a workspace.

        Args:
            name: Its name.
            partners: The partners it enables (default: all of the emulator's).
            partner_enabled: ``False`` enables none: every request with one of its data import
                keys gets ``401 Partner not enabled for client with client secret: <key>``.

        Raises:
            ValueError: If a workspace of that name exists.
        """
        return self._world.create_workspace(
            name, partners=partners, partner_enabled=partner_enabled
        )

    add_workspace = create_workspace

    def get_workspace(self, name: str) -> Workspace:
        """The workspace called ``name``.

        Raises:
            KeyError: If there is none.
        """
        return self._world.get_workspace(name)

    def workspaces(self) -> list[Workspace]:
        """Every workspace, the default first."""
        return self._world.workspaces()

    def create_data_import_key(
        self, workspace: Workspace | str | None = None, *, key: str | None = None
    ) -> str:
        """Create a data import key selecting ``workspace`` (default: the default workspace).

        Raises:
            ValueError: If the key already exists.
            KeyError: If the workspace name is unknown.
        """
        return self._world.create_data_import_key(self._resolve(workspace), key=key)

    def revoke_data_import_key(self, key: str) -> None:
        """Invalidate a data import key: later requests get ``401 Invalid client secret``."""
        self._world.revoke_data_import_key(key)

    def data_import_key_count(self, workspace: Workspace | str | None = None) -> int:
        """How many valid data import keys select ``workspace``."""
        return self._world.key_count(self._resolve(workspace))

    def _resolve(self, workspace: Workspace | str | None) -> Workspace:
        if workspace is None:
            return self._workspace
        if isinstance(workspace, Workspace):
            return workspace
        return self._world.get_workspace(workspace)

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
        return self._resolve(workspace).load_users(source)

    def members(
        self, cohort_id: str, workspace: Workspace | str | None = None
    ) -> frozenset[Identifier]:
        """A cohort's members as identifiers; see :meth:`Workspace.members`."""
        return self._resolve(workspace).members(cohort_id)

    def cohort_name(self, cohort_id: str, workspace: Workspace | str | None = None) -> str | None:
        """A cohort's name (``None`` if never named); see :meth:`Workspace.cohort_name`."""
        return self._resolve(workspace).cohort_name(cohort_id)

    def cohort_created_at(
        self, cohort_id: str, workspace: Workspace | str | None = None
    ) -> str | None:
        """A cohort's first ``created_at``, kept through renames (``None`` if never named)."""
        return self._resolve(workspace).cohort_created_at(cohort_id)

    def cohorts(self, workspace: Workspace | str | None = None) -> dict[str, str | None]:
        """A workspace's cohorts and their names; see :meth:`Workspace.cohorts`."""
        return self._resolve(workspace).cohorts()

    def remove_members(
        self,
        cohort_id: str,
        users: Iterable[UserName],
        workspace: Workspace | str | None = None,
    ) -> int:
        """Remove members out of band (a dashboard edit); see :meth:`Workspace.remove_members`."""
        return self._resolve(workspace).remove_members(cohort_id, users)

    def empty_cohort(self, cohort_id: str, workspace: Workspace | str | None = None) -> int:
        """Remove every member out of band; return how many. See :meth:`Workspace.empty_cohort`."""
        return self._resolve(workspace).empty_cohort(cohort_id)

    # -- inspection -----------------------------------------------------------------------------

    @property
    def request_log(self) -> list[RequestRecord]:
        """A copy of the log: one :class:`RequestRecord` per request, oldest first."""
        return self._requests.records()

    @property
    def raw_requests(self) -> list[tuple[bytes, bytes]]:
        """With ``record_raw=True``: ``(request line, header block)`` per request (no bodies)."""
        return self._requests.raw()

    def reset_log(self) -> None:
        """Forget the request log (and the raw requests)."""
        self._requests.reset()

    # -- fault injection ------------------------------------------------------------------------

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every answer by ``fixed`` seconds plus up to ``jitter`` seconds at random."""
        self._faults.set_latency(fixed, jitter)

    @property
    def latency(self) -> tuple[float, float]:
        """The fixed latency and the jitter, in seconds."""
        return self._faults.latency

    def set_rate_limit(self, requests_per_hour: int | None, *, window: float = 3600.0) -> None:
        """Enforce at most ``requests_per_hour`` requests per sliding ``window`` (``None``: off).

        Changing the limit forgets the requests counted so far.
        """
        self._faults.set_rate_limit(requests_per_hour, window=window)

    @property
    def rate_limit(self) -> tuple[int | None, float]:
        """The rate limit (``None``: off) and its window in seconds."""
        return self._faults.rate_limit

    def inject(self, fault: Fault) -> None:
        """Queue a :class:`Fault` after those pending (the methods below build and queue one)."""
        self._faults.add(fault)

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """The pending faults in order, each with how many requests it still applies to."""
        return self._faults.pending()

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
        self.inject(
            Fault.fail(n, status, headers=headers, body=body, retry_after=retry_after, path=path)
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
        self.inject(Fault.drop(n, when=when, path=path))

    def succeed_with_errors_next(
        self,
        n: int = 1,
        errors: Sequence[object] = ("simulated error",),
        *,
        path: str | None = None,
    ) -> None:
        """Apply the next ``n`` valid requests and answer 200 with this ``errors`` list.

        The body is ``{"message": "success", "errors": [...]}``: Braze's "2XX with errors".
        """
        self.inject(Fault.errors_answer(n, errors, path=path))

    def redirect_next(
        self, n: int = 1, location: str = "", *, status: int = 307, path: str | None = None
    ) -> None:
        """Answer the next ``n`` requests with a redirect to ``location`` (nothing applied)."""
        self.inject(Fault.redirect(n, location, status=status, path=path))

    def clear_faults(self) -> None:
        """Forget every pending injected fault."""
        self._faults.clear()
