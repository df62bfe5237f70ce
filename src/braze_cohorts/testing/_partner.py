"""The emulated Braze partner endpoints: credentials, validation, matching, faults, the log.

``POST /partners/{partner}/cohorts`` names a cohort and ``POST /partners/{partner}/cohorts/users``
changes its members. Both take their credentials in the JSON body and answer with Braze's
documented texts. Each request runs through one pipeline and is logged once, when its answer
is known: route → latency → an injected fault that answers instead → the rate limit → Braze's
own checks and the change → a fault that alters the answer afterwards.

The user cohort endpoint accepts a cohort that was never named (Braze's behaviour here is not
documented): it creates the cohort unnamed; the request log shows the order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from braze_cohorts.testing._faults import Fault, FaultKind, FaultPlan
from braze_cohorts.testing._records import RequestLog, RequestRecord
from braze_cohorts.testing._wire import Answer, Request, reason_phrase
from braze_cohorts.testing._world import Change, World

__all__ = ["MAX_IDS_PER_REQUEST", "PartnerEndpoints", "json_body", "parse_changes"]

#: Braze's cap on identifiers in one request, over all objects and kinds together.
MAX_IDS_PER_REQUEST = 1000

_PATH_RE = re.compile(r"^/partners/([^/]+)/cohorts(/users)?$")
_CHANGE_KEYS = frozenset({"user_ids", "device_ids", "aliases", "should_remove"})

MSG_INVALID_PARTNER_KEY = "Invalid Partner API key"
MSG_INVALID_CLIENT_SECRET = "Invalid client secret"  # noqa: S105 - a message, not a secret
MSG_PARTNER_NOT_ENABLED = "Partner not enabled for client with client secret: {client_secret}"
MSG_UNAUTHORIZED = "Unauthorized access"
MSG_COHORT_ID = "cohort_id must be a valid string"
MSG_NAME = "name must be a non-empty string"
MSG_CREATED_AT = "created_at must be a valid ISO-8601 timestamp"
MSG_TOO_MANY_IDS = f"Cannot send more than {MAX_IDS_PER_REQUEST} ids per request"
MSG_CHANGES = "cohort_changes must be an array of objects"
MSG_INVALID_JSON = "Request body must be a JSON object"
_MASK = "***"


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """How a request ends: its record (without status), the answer, or no answer."""

    record: RequestRecord
    status: int | None
    message: str = ""
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    errors: Sequence[object] | None = None
    rate_headers: bool = True


class PartnerEndpoints:
    """Answers the partner endpoints against a :class:`World`, with a :class:`FaultPlan`.

    Args:
        world: The partners, keys, workspaces and users.
        faults: The injected faults, latency and rate limit.
        requests: Where each request's record goes, once, when its answer is known.
        clock: Epoch seconds.
        stopping: Set when the server stops (cuts an injected latency short).
    """

    def __init__(
        self,
        world: World,
        faults: FaultPlan,
        requests: RequestLog,
        clock: Callable[[], float],
        stopping: threading.Event,
    ) -> None:
        self._world = world
        self._faults = faults
        self._requests = requests
        self._clock = clock
        self._stopping = stopping

    def handle(self, request: Request) -> Answer:
        """Answer one request for a path outside the admin API."""
        path = request.path
        match = _PATH_RE.match(path)
        base = RequestRecord(
            method=request.method,
            path=path,
            status=None,
            endpoint=None if match is None else ("users" if match.group(2) else "cohorts"),
            partner=None if match is None else urllib.parse.unquote(match.group(1)),
            key_outside_body=self._world.any_key_in(
                request.head.decode("latin-1") + urllib.parse.unquote(request.target)
            ),
            received_at=self._clock(),
        )
        self._requests.append_raw(request.head)
        if match is None:
            outcome = _Outcome(base, 404, "Not found")
        elif request.method != "POST":
            outcome = _Outcome(base, 405, "Method not allowed", [("Allow", "POST")])
        else:
            delay = self._faults.delay()
            if delay > 0:
                self._stopping.wait(delay)
            outcome = self._outcome(base, _json_object(request.body), self._faults.take(path))
        return self._deliver(outcome, request.keep_alive)

    def refuse(self, reason: str) -> Answer:
        """The ``400`` answer to bytes that are no readable HTTP request."""
        record = RequestRecord(method="", path="", status=400, message=reason)
        self._requests.append(record)
        return Answer(400, json_body(reason), close=True)

    def _outcome(self, base: RequestRecord, payload: Any, fault: Fault | None) -> _Outcome:
        now = self._clock()
        kind = None if fault is None else fault.kind
        faulted = dataclasses.replace(base, fault=kind)
        if fault is not None and kind is FaultKind.FAIL:
            headers, body = fault.failure(now, self._faults.rate_limit[0])
            phrase = reason_phrase(fault.status, "Error")
            return _Outcome(
                faulted, fault.status, phrase, headers, body, rate_headers=fault.status != 429
            )
        if fault is not None and kind is FaultKind.REDIRECT:
            return _Outcome(faulted, fault.status, "Redirect", [("Location", fault.location)])
        if kind is FaultKind.DROP_BEFORE_APPLY:
            return _Outcome(faulted, None)
        wait = self._faults.admit(now)
        if wait is not None:
            return _Outcome(
                dataclasses.replace(base, fault=FaultKind.RATE_LIMITED),
                429,
                "Rate limit exceeded",
                [("Retry-After", str(wait)), *self._faults.rate_headers(now)],
                rate_headers=False,
            )
        outcome = self._process(base, payload)
        if fault is not None and kind is FaultKind.ERRORS and outcome.status == 200:
            return dataclasses.replace(
                outcome, record=dataclasses.replace(outcome.record, fault=kind), errors=fault.errors
            )
        if kind is FaultKind.DROP_AFTER_APPLY:
            # Handled (and applied, if valid); the client never hears it.
            return _Outcome(dataclasses.replace(outcome.record, fault=kind), None)
        return outcome

    def _process(self, base: RequestRecord, payload: Any) -> _Outcome:
        """Braze's own checks, in Braze's order, and the change when they pass."""
        if not isinstance(payload, dict):
            return _Outcome(base, 400, MSG_INVALID_JSON)
        cohort_id = payload.get("cohort_id")
        rec = dataclasses.replace(base, cohort_id=cohort_id if isinstance(cohort_id, str) else None)
        partner = rec.partner or ""
        partner_key = self._world.partner_key(payload.get("partner_api_key"))
        if partner_key is None or partner_key.region != self._world.region:
            return _Outcome(rec, 401, MSG_INVALID_PARTNER_KEY)
        if partner_key.partner != partner or partner not in self._world.partners:
            return _Outcome(rec, 401, MSG_UNAUTHORIZED)
        secret = payload.get("client_secret")
        ws = self._world.workspace_for(secret)
        if ws is None:
            return _Outcome(rec, 401, MSG_INVALID_CLIENT_SECRET)
        rec = dataclasses.replace(rec, workspace=ws.name)
        if not ws.partner_enabled(partner):
            # Braze echoes the data import key here; the log masks it.
            return _Outcome(
                rec,
                401,
                MSG_PARTNER_NOT_ENABLED.format(client_secret=_MASK),
                body=json_body(MSG_PARTNER_NOT_ENABLED.format(client_secret=secret)),
            )
        if not isinstance(cohort_id, str) or not cohort_id.strip():
            return _Outcome(rec, 400, MSG_COHORT_ID)
        if rec.endpoint == "cohorts":
            name = payload.get("name")
            if not isinstance(name, str) or not name.strip():
                return _Outcome(rec, 400, MSG_NAME)
            created_at = payload.get("created_at")
            rec = dataclasses.replace(
                rec, name=name, created_at=created_at if isinstance(created_at, str) else None
            )
            if not isinstance(created_at, str) or not _is_iso8601(created_at):
                return _Outcome(rec, 400, MSG_CREATED_AT)
            ws.name_cohort(cohort_id, name, created_at)
            return _Outcome(dataclasses.replace(rec, applied=True), 200, "success")
        changes = parse_changes(payload.get("cohort_changes"))
        if isinstance(changes, str):
            return _Outcome(rec, 400, changes)
        rec = dataclasses.replace(
            rec,
            user_ids=sum(len(c.user_ids) for c in changes),
            device_ids=sum(len(c.device_ids) for c in changes),
            aliases=sum(len(c.aliases) for c in changes),
            removed=sum(c.ids for c in changes if c.remove),
        )
        matched = ws.apply(cohort_id, changes)
        return _Outcome(dataclasses.replace(rec, applied=True, matched=matched), 200, "success")

    def _deliver(self, outcome: _Outcome, keep_alive: bool) -> Answer:
        """Log the finished record once and build the answer to write."""
        record = dataclasses.replace(outcome.record, status=outcome.status, message=outcome.message)
        if outcome.status is None:
            record = dataclasses.replace(record, message="")
        self._requests.append(record)
        if outcome.status is None:
            return Answer(None)
        headers = [
            *(self._faults.rate_headers(record.received_at) if outcome.rate_headers else []),
            *outcome.headers,
        ]
        body = outcome.body
        if body is None:
            body = json_body(outcome.message, outcome.errors)
        return Answer(outcome.status, body, headers, close=not keep_alive)


def json_body(message: str, errors: Sequence[object] | None = None) -> bytes:
    """A Braze-style JSON body: ``{"message": ...}``, with ``errors`` when given."""
    payload: dict[str, object] = {"message": message}
    if errors is not None:
        payload["errors"] = list(errors)
    return json.dumps(payload).encode()


def _json_object(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


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


def parse_changes(raw: object, *, limit: int | None = MAX_IDS_PER_REQUEST) -> list[Change] | str:
    """Return the parsed ``cohort_changes`` or the 400 message that refuses them."""
    if not isinstance(raw, list):
        return MSG_CHANGES
    changes: list[Change] = []
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
        changes.append(Change(remove, lists["user_ids"], lists["device_ids"], aliases))
    if limit is not None and sum(c.ids for c in changes) > limit:
        return MSG_TOO_MANY_IDS
    return changes
