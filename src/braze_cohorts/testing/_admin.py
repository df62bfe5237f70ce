"""The emulator's admin HTTP API: its Python controls over JSON, under ``/_emulator/``.

Braze's paths all start with ``/partners/``, so nothing under ``/_emulator/`` can collide with
them. Admin requests take no credentials, are not rate limited, delayed or faulted, and do not
appear in the request log. Every answer is JSON; an error is ``{"message": ...}`` with ``400``
(bad input), ``404`` (unknown route, workspace, cohort or key) or ``405``. The routes are listed
in :data:`ROUTES` and documented in ``docs/testing.md``. Each calls the public method of
:class:`~braze_cohorts.testing.BrazeEmulator` that does the same, so both stay one behaviour.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from braze_cohorts.testing._faults import Fault
from braze_cohorts.testing._wire import Answer, Request
from braze_cohorts.testing._world import (
    Workspace,
    World,
    identifier_from_json,
    identifier_to_json,
)

if TYPE_CHECKING:
    from braze_cohorts.testing._emulator import BrazeEmulator

__all__ = ["PREFIX", "ROUTES", "AdminApi"]

log = logging.getLogger(__name__)

#: Where the admin API lives on the emulator's server.
PREFIX = "/_emulator"


class _Error(Exception):
    """Ends an admin request with ``status`` and ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_Reply = tuple[int, Any]
_View = Callable[["AdminApi", Request, tuple[str, ...], Any], _Reply]

#: (method, path pattern under the prefix, what it does) for every admin route.
ROUTES: list[tuple[str, str, str]] = []
_TABLE: list[tuple[str, re.Pattern[str], _View]] = []


def _route(method: str, pattern: str, doc: str) -> Callable[[_View], _View]:
    def register(view: _View) -> _View:
        regex = re.compile("^" + re.sub(r"\{[a-z_]+\}", "([^/]+)", pattern) + "$")
        _TABLE.append((method, regex, view))
        ROUTES.append((method, PREFIX + pattern, doc))
        return view

    return register


class AdminApi:
    """Serves the admin routes for one emulator."""

    def __init__(self, emulator: BrazeEmulator, world: World) -> None:
        self._emulator = emulator
        self._world = world  # only to tell a revoked key from an unknown one

    def handle(self, request: Request) -> Answer:
        """Answer one request whose path starts with :data:`PREFIX`."""
        rest = request.path[len(PREFIX) :] or "/"
        allowed: list[str] = []
        try:
            for method, regex, view in _TABLE:
                match = regex.match(rest)
                if match is None:
                    continue
                if method != request.method:
                    allowed.append(method)
                    continue
                args = tuple(urllib.parse.unquote(g) for g in match.groups())
                status, payload = view(self, request, args, _body(request))
                return _answer(status, payload, request)
            if allowed:
                return _answer(
                    405, {"message": "Method not allowed"}, request, [("Allow", ", ".join(allowed))]
                )
            raise _Error(404, f"no admin route {request.method} {request.path}")
        except _Error as exc:
            return _answer(exc.status, {"message": exc.message}, request)
        except KeyError as exc:
            return _answer(
                404, {"message": f"not found: {exc.args[0] if exc.args else exc}"}, request
            )
        except (ValueError, TypeError) as exc:
            return _answer(400, {"message": str(exc)}, request)
        except Exception as exc:  # a bug of the emulator: say so, keep serving
            log.exception("emulator: admin request failed")
            return _answer(500, {"message": f"emulator error: {type(exc).__name__}"}, request)

    def workspace(self, request: Request) -> Workspace:
        """The workspace named by the ``workspace`` query parameter (default: the default)."""
        name = request.query.get("workspace")
        return self._emulator.workspace if name is None else self._emulator.get_workspace(name)

    # -- state -------------------------------------------------------------------------------

    @_route("GET", "/", "the emulator's state: partners, region, workspaces, faults, limits")
    def state(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        emu = self._emulator
        fixed, jitter = emu.latency
        limit, window = emu.rate_limit
        return 200, {
            "partners": list(emu.partners),
            "region": emu.region,
            "workspaces": [self._workspace_json(ws) for ws in emu.workspaces()],
            "faults": [f.to_json(n) for f, n in emu.pending_faults()],
            "latency": {"fixed": fixed, "jitter": jitter},
            "rate_limit": {"requests_per_hour": limit, "window": window},
            "requests": len(emu.request_log),
        }

    # -- faults ------------------------------------------------------------------------------

    @_route("GET", "/faults", "the pending faults, in the order they will be used")
    def faults(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return 200, {"faults": [f.to_json(n) for f, n in self._emulator.pending_faults()]}

    @_route("POST", "/faults", "queue a fault (or a list of faults) for the next requests")
    def add_faults(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        items = body if isinstance(body, list) else [body]
        faults = [Fault.from_json(item) for item in items]  # all valid before any is queued
        for fault in faults:
            self._emulator.inject(fault)
        return self.faults(request, args, body)

    @_route("DELETE", "/faults", "forget every pending fault")
    def clear_faults(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        cleared = len(self._emulator.pending_faults())
        self._emulator.clear_faults()
        return 200, {"cleared": cleared}

    @_route("PUT", "/latency", 'set the latency: {"fixed": seconds, "jitter": seconds}')
    def latency(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body, optional={"fixed", "jitter"})
        self._emulator.set_latency(fields.get("fixed", 0.0), fields.get("jitter", 0.0))
        fixed, jitter = self._emulator.latency
        return 200, {"fixed": fixed, "jitter": jitter}

    @_route(
        "PUT", "/rate-limit", 'set the rate limit: {"requests_per_hour": N or null, "window": s}'
    )
    def rate_limit(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body, required={"requests_per_hour"}, optional={"window"})
        self._emulator.set_rate_limit(
            fields["requests_per_hour"], window=fields.get("window", 3600.0)
        )
        limit, window = self._emulator.rate_limit
        return 200, {"requests_per_hour": limit, "window": window}

    # -- workspaces, users, keys -------------------------------------------------------------

    @_route("GET", "/workspaces", "every workspace: partners enabled, users, cohorts, keys")
    def workspaces(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return 200, {"workspaces": [self._workspace_json(ws) for ws in self._emulator.workspaces()]}

    @_route("POST", "/workspaces", 'create a workspace and a data import key for it: {"name": ...}')
    def create_workspace(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body, required={"name"}, optional={"partners", "partner_enabled"})
        partners = fields.get("partners")
        if partners is not None and (
            not isinstance(partners, list) or not all(isinstance(p, str) for p in partners)
        ):
            raise _Error(400, "partners must be an array of partner names")
        ws = self._emulator.create_workspace(
            fields["name"],
            partners=partners,
            partner_enabled=bool(fields.get("partner_enabled", True)),
        )
        key = self._emulator.create_data_import_key(ws)
        return 201, {**self._workspace_json(ws), "data_import_key": key}

    @_route("POST", "/users", "add users (the users.json format); ?workspace=NAME")
    def add_users(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        ws = self.workspace(request)
        if not isinstance(body, (list, dict)):  # a string would be read as a file name
            raise _Error(400, "the body must be the users.json format: an array or an object")
        added = ws.load_users(body)
        return 201, {"workspace": ws.name, "added": added, "users": ws.user_count()}

    @_route(
        "POST", "/data-import-keys", 'create a data import key: {"workspace": NAME, "key": ...}'
    )
    def create_key(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body or {}, optional={"workspace", "key"})
        ws = self._emulator.get_workspace(fields.get("workspace", self._emulator.workspace.name))
        key = self._emulator.create_data_import_key(ws, key=fields.get("key"))
        return 201, {"workspace": ws.name, "data_import_key": key}

    @_route("DELETE", "/data-import-keys/{key}", "revoke a data import key (then 401)")
    def revoke_key(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return _revoked(self._world.revoke_data_import_key(args[0]), "data import key")

    @_route("POST", "/partner-keys", 'create a partner API key: {"region": "US", "partner": ...}')
    def create_partner_key(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body or {}, optional={"key", "region", "partner"})
        key = self._emulator.add_partner_key(
            fields.get("key"),
            region=fields.get("region", self._emulator.region),
            partner=fields.get("partner"),
        )
        return 201, {"partner_api_key": key}

    @_route("DELETE", "/partner-keys/{key}", "revoke a partner API key (then 401)")
    def revoke_partner_key(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return _revoked(self._world.revoke_partner_key(args[0]), "partner API key")

    # -- cohorts -----------------------------------------------------------------------------

    @_route("GET", "/cohorts", "a workspace's cohorts: name, created_at, member count")
    def cohorts(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        ws = self.workspace(request)
        return 200, {
            "workspace": ws.name,
            "cohorts": [self._cohort_json(ws, cid, members=False) for cid in ws.cohorts()],
        }

    @_route("GET", "/cohorts/{cohort_id}", "one cohort with its members")
    def cohort(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return 200, self._cohort_json(self.workspace(request), args[0], members=True)

    @_route("POST", "/cohorts/{cohort_id}/remove", 'remove members out of band: {"users": [...]}')
    def remove_members(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        fields = _fields(body, required={"users"})
        if not isinstance(fields["users"], list):
            raise _Error(400, "users must be an array")
        users = [identifier_from_json(u) for u in fields["users"]]
        removed = self.workspace(request).remove_members(args[0], users)
        return 200, {"removed": removed}

    @_route("DELETE", "/cohorts/{cohort_id}/members", "empty a cohort out of band")
    def empty_cohort(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        return 200, {"removed": self.workspace(request).empty_cohort(args[0])}

    # -- the request log ---------------------------------------------------------------------

    @_route("GET", "/requests", "the request log, oldest first (never a key); ?since=N skips N")
    def requests(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        since = request.query.get("since", "0")
        if not since.isdigit():
            raise _Error(400, "since must be a whole number")
        records = self._emulator.request_log[int(since) :]
        return 200, {"requests": [r.to_json() for r in records]}

    @_route("DELETE", "/requests", "forget the request log")
    def reset_requests(self, request: Request, args: tuple[str, ...], body: Any) -> _Reply:
        self._emulator.reset_log()
        return 200, {"cleared": True}

    # -- JSON views --------------------------------------------------------------------------

    def _workspace_json(self, ws: Workspace) -> dict[str, Any]:
        return {
            "name": ws.name,
            "partners": sorted(ws.partners),
            "users": ws.user_count(),
            "cohorts": len(ws.cohorts()),
            "data_import_keys": self._emulator.data_import_key_count(ws),
        }

    @staticmethod
    def _cohort_json(ws: Workspace, cohort_id: str, *, members: bool) -> dict[str, Any]:
        held = ws.members(cohort_id)
        out: dict[str, Any] = {
            "cohort_id": cohort_id,
            "name": ws.cohort_name(cohort_id),
            "created_at": ws.cohort_created_at(cohort_id),
            "member_count": len(held),
        }
        if members:
            out["members"] = [identifier_to_json(m) for m in sorted(held)]
        return out


def _revoked(existed: bool, what: str) -> _Reply:
    if not existed:
        raise _Error(404, f"no such {what}")
    return 200, {"revoked": True}


def _body(request: Request) -> Any:
    if not request.body.strip():
        return None
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Error(400, "the body must be JSON") from exc


def _fields(
    body: Any, *, required: AbstractSet[str] = frozenset(), optional: AbstractSet[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise _Error(400, "the body must be a JSON object")
    missing = required - set(body)
    if missing:
        raise _Error(400, f"missing: {', '.join(sorted(missing))}")
    unknown = set(body) - required - optional
    if unknown:
        raise _Error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    return dict(body)


def _answer(
    status: int, payload: Any, request: Request, headers: list[tuple[str, str]] | None = None
) -> Answer:
    body = json.dumps(payload).encode()
    return Answer(status, body, headers or [], close=not request.keep_alive)
