"""The Braze emulator, spoken to over raw HTTP (never through CohortClient)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from braze_cohorts.testing import BrazeEmulator, RequestRecord

NAME_PATH = "/partners/kubit/cohorts"
USERS_PATH = "/partners/kubit/cohorts/users"
CREATED_AT = "2026-11-28T12:00:00+00:00"


class Response:
    """A decoded answer."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        message: str = self.json()["message"]
        return message


class Http:
    """A keep-alive HTTP/1.1 connection to the emulator (http.client, no library code)."""

    def __init__(self, emulator: BrazeEmulator, timeout: float = 10.0) -> None:
        self.emulator = emulator
        self.conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def post(self, path: str, payload: Any, *, keys: bool = True) -> Response:
        if keys and isinstance(payload, dict):
            payload = {
                "partner_api_key": self.emulator.partner_api_key,
                "client_secret": self.emulator.data_import_key,
                **payload,
            }
        body = json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def name(self, cohort_id: str = "c1", name: str = "Cohort One", **extra: Any) -> Response:
        return self.post(
            NAME_PATH, {"cohort_id": cohort_id, "name": name, "created_at": CREATED_AT, **extra}
        )

    def users(self, changes: Any, cohort_id: str = "c1", **extra: Any) -> Response:
        return self.post(USERS_PATH, {"cohort_id": cohort_id, "cohort_changes": changes, **extra})

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    return braze_emulator


@pytest.fixture
def web(emulator: BrazeEmulator) -> Iterator[Http]:
    conn = Http(emulator)
    yield conn
    conn.close()


def raw_request(path: str, body: bytes, *, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def recv_response(sock: socket.socket) -> tuple[bytes, bytes, int]:
    """Read one response; return (head, body, how many recv calls it took)."""
    data = b""
    calls = 0
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        calls += 1
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
        calls += 1
    return head, body, calls


class TestLifecycle:
    def test_context_manager_serves_on_loopback_and_stops(self) -> None:
        """Inside the ``with`` block the URL answers; after it, the port refuses connections."""
        with BrazeEmulator() as emulator:
            assert emulator.url.startswith("http://127.0.0.1:")
            assert emulator.running
            web = Http(emulator)
            assert web.name().status == 200
            web.close()
            port = emulator.port
        assert not emulator.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    def test_start_twice_is_refused_and_stop_is_idempotent(self) -> None:
        """A running emulator cannot be started again; stopping twice is harmless."""
        emulator = BrazeEmulator().start()
        try:
            with pytest.raises(RuntimeError):
                emulator.start()
        finally:
            emulator.stop()
        emulator.stop()

    def test_stop_closes_idle_keep_alive_connections(self) -> None:
        """Stopping does not wait for clients that keep a connection open."""
        emulator = BrazeEmulator().start()
        web = Http(emulator)
        assert web.name().status == 200
        emulator.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            web.name()
        web.close()

    def test_concurrent_connections_are_served(self, emulator: BrazeEmulator) -> None:
        """Many clients at once are all answered, and all their changes are applied."""
        ids = emulator.add_users(80)
        results: list[int] = []
        lock = threading.Lock()

        def worker(chunk: list[str]) -> None:
            web = Http(emulator)
            try:
                for x in chunk:
                    status = web.users([{"user_ids": [x]}]).status
                    with lock:
                        results.append(status)
            finally:
                web.close()

        threads = [threading.Thread(target=worker, args=(ids[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 80
        assert emulator.members("c1") == {("external_id", x) for x in ids}


class TestWire:
    def test_each_response_arrives_in_one_write_on_keep_alive(
        self, emulator: BrazeEmulator
    ) -> None:
        """Header and body of every answer come in a single segment on a reused connection."""
        body = json.dumps(
            {
                "partner_api_key": emulator.partner_api_key,
                "client_secret": emulator.data_import_key,
                "cohort_id": "c1",
                "cohort_changes": [{"user_ids": [f"x{i}" for i in range(1000)]}],
            }
        ).encode()
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
            for _ in range(5):
                sock.sendall(raw_request(USERS_PATH, body))
                head, payload, calls = recv_response(sock)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert json.loads(payload) == {"message": "success"}
                assert calls == 1

    def test_success_body_and_content_length(self, web: Http) -> None:
        """Success is ``200 {"message": "success"}`` with a correct Content-Length."""
        resp = web.name()
        assert resp.status == 200
        assert resp.json() == {"message": "success"}
        assert int(resp.headers["content-length"]) == len(resp.body)
        assert resp.headers["content-type"] == "application/json"

    def test_unknown_path_is_404(self, web: Http) -> None:
        """Paths other than the two endpoints are not found."""
        for path in ("/", "/partners/kubit", "/partners/kubit/cohorts/users/x", "/cohorts"):
            resp = web.post(path, {})
            assert resp.status == 404
            assert int(resp.headers["content-length"]) == len(resp.body)

    def test_methods_other_than_post_are_405(self, web: Http) -> None:
        """GET, PUT and DELETE on an endpoint are refused and name the allowed method."""
        for method in ("GET", "PUT", "DELETE"):
            resp = web.request(method, USERS_PATH)
            assert resp.status == 405
            assert resp.headers["allow"] == "POST"

    @pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b""])
    def test_body_that_is_not_a_json_object_is_400(self, web: Http, body: bytes) -> None:
        """Invalid JSON, or JSON that is not an object, is a bad request."""
        resp = web.request("POST", NAME_PATH, body, {"Content-Type": "application/json"})
        assert resp.status == 400
        assert "JSON" in resp.message

    def test_chunked_request_body_is_read(self, emulator: BrazeEmulator) -> None:
        """A body sent with chunked transfer encoding is understood."""
        payload = json.dumps(
            {
                "partner_api_key": emulator.partner_api_key,
                "client_secret": emulator.data_import_key,
                "cohort_id": "c1",
                "name": "Chunked",
                "created_at": CREATED_AT,
            }
        ).encode()
        half = len(payload) // 2
        chunks = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n"
            for part in (payload[:half], payload[half:])
        )
        request = (
            f"POST {NAME_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunks
            + b"0\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
            sock.sendall(request)
            head, _, _ = recv_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert emulator.cohort_name("c1") == "Chunked"

    def test_connection_close_is_honoured(self, emulator: BrazeEmulator) -> None:
        """A request asking to close gets ``Connection: close`` and the socket is closed."""
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
            sock.sendall(raw_request(USERS_PATH, b"{}", extra="Connection: close\r\n"))
            head, _, _ = recv_response(sock)
            assert b"Connection: close" in head
            assert sock.recv(100) == b""

    def test_malformed_request_line_is_400(self, emulator: BrazeEmulator) -> None:
        """Garbage instead of HTTP gets a 400 and a closed connection."""
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
            sock.sendall(b"HELLO\r\n\r\n")
            head, _, _ = recv_response(sock)
            assert head.startswith(b"HTTP/1.1 400 ")


class TestCredentials:
    def test_unknown_partner_api_key_is_401(self, web: Http) -> None:
        """A partner key the emulator never issued is refused."""
        resp = web.name(partner_api_key="nope")
        assert (resp.status, resp.message) == (401, "Invalid Partner API key")

    def test_missing_keys_are_401(self, web: Http) -> None:
        """A body without keys is refused with the partner key message first."""
        resp = web.post(
            NAME_PATH, {"cohort_id": "c", "name": "n", "created_at": CREATED_AT}, keys=False
        )
        assert (resp.status, resp.message) == (401, "Invalid Partner API key")

    def test_partner_key_of_another_region_is_401(self, emulator: BrazeEmulator, web: Http) -> None:
        """An EU partner key does not work on a US cluster."""
        eu_key = emulator.add_partner_key(region="EU")
        resp = web.name(partner_api_key=eu_key)
        assert (resp.status, resp.message) == (401, "Invalid Partner API key")

    def test_eu_emulator_accepts_its_own_region(self) -> None:
        """An emulator of the EU region issues and accepts EU keys."""
        with BrazeEmulator(region="EU") as emulator:
            web = Http(emulator)
            assert web.name().status == 200
            us_key = emulator.add_partner_key(region="US")
            assert web.name(partner_api_key=us_key).status == 401
            web.close()

    def test_wrong_partner_in_path_is_unauthorized(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """A valid key used under another partner's path is unauthorized access."""
        resp = web.post(
            "/partners/other/cohorts", {"cohort_id": "c", "name": "n", "created_at": CREATED_AT}
        )
        assert (resp.status, resp.message) == (401, "Unauthorized access")

    def test_partner_key_belongs_to_its_partner(self) -> None:
        """With two partners served, each key works only under its own partner's path."""
        with BrazeEmulator(partner=("kubit", "acme")) as emulator:
            acme_key = emulator.add_partner_key(partner="acme")
            web = Http(emulator)
            body = {"cohort_id": "c", "name": "n", "created_at": CREATED_AT}
            assert (
                web.post("/partners/acme/cohorts", {**body, "partner_api_key": acme_key}).status
                == 200
            )
            resp = web.post("/partners/kubit/cohorts", {**body, "partner_api_key": acme_key})
            assert (resp.status, resp.message) == (401, "Unauthorized access")
            web.close()

    def test_unknown_client_secret_is_401(self, web: Http) -> None:
        """A data import key that does not exist is refused."""
        resp = web.name(client_secret="nope")
        assert (resp.status, resp.message) == (401, "Invalid client secret")

    def test_revoked_data_import_key_is_401(self, emulator: BrazeEmulator, web: Http) -> None:
        """Revoking a key while running makes the next request fail, and a new key works."""
        assert web.name().status == 200
        emulator.revoke_data_import_key(emulator.data_import_key)
        resp = web.name()
        assert (resp.status, resp.message) == (401, "Invalid client secret")
        new_key = emulator.create_data_import_key()
        assert web.name(client_secret=new_key).status == 200

    def test_data_import_key_selects_the_workspace(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """Cohorts land in the workspace of the key; workspaces do not share cohorts or users."""
        other = emulator.create_workspace("other")
        other.add_user("u1")
        emulator.add_user("u1")
        key = emulator.create_data_import_key(other)
        assert web.users([{"user_ids": ["u1"]}], cohort_id="c9", client_secret=key).status == 200
        assert other.members("c9") == {("external_id", "u1")}
        assert "c9" not in emulator.cohorts()
        assert emulator.request_log[-1].workspace == "other"

    def test_partner_not_enabled_for_workspace_is_401(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """A workspace that has not enabled the partner refuses it with Braze's text, which
        echoes the data import key; the request log masks it."""
        ws = emulator.create_workspace("closed", partners=())
        key = emulator.create_data_import_key(ws)
        resp = web.name(client_secret=key)
        assert (resp.status, resp.message) == (
            401,
            f"Partner not enabled for client with client secret: {key}",
        )
        record = emulator.request_log[-1]
        assert record.message == "Partner not enabled for client with client secret: ***"
        assert key not in repr(record)
        ws.enable_partner("kubit")
        assert web.name(client_secret=key).status == 200


class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"cohort_id": None}, "cohort_id must be a valid string"),
            ({"cohort_id": ""}, "cohort_id must be a valid string"),
            ({"cohort_id": 12}, "cohort_id must be a valid string"),
            ({"name": ""}, "name must be a non-empty string"),
            ({"name": "   "}, "name must be a non-empty string"),
            ({"name": ["x"]}, "name must be a non-empty string"),
            ({"created_at": "yesterday"}, "created_at must be a valid ISO-8601 timestamp"),
            ({"created_at": 1700000000}, "created_at must be a valid ISO-8601 timestamp"),
            ({"created_at": ""}, "created_at must be a valid ISO-8601 timestamp"),
        ],
    )
    def test_name_endpoint_refuses_bad_fields(
        self, web: Http, fields: dict[str, Any], message: str
    ) -> None:
        """Each documented 400 of the cohort name endpoint comes with its message."""
        body = {"cohort_id": "c1", "name": "n", "created_at": CREATED_AT, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        resp = web.post(NAME_PATH, body)
        assert (resp.status, resp.message) == (400, message)

    @pytest.mark.parametrize(
        "created_at", ["2026-11-28T12:00:00Z", "2026-11-28T12:00:00.123+01:00", "2026-11-28"]
    )
    def test_name_endpoint_accepts_iso_8601(self, web: Http, created_at: str) -> None:
        """Common ISO-8601 forms, with ``Z`` or an offset, are accepted."""
        assert web.name(created_at=created_at).status == 200

    @pytest.mark.parametrize(
        ("changes", "fragment"),
        [
            (None, "cohort_changes must be an array of objects"),
            ({"user_ids": ["u1"]}, "cohort_changes must be an array of objects"),
            (["u1"], "cohort_changes must be an array of objects"),
            ([{"user_ids": "u1"}], "user_ids must be an array of strings"),
            ([{"user_ids": [1]}], "user_ids must be an array of strings"),
            ([{"device_ids": [None]}], "device_ids must be an array of strings"),
            ([{"aliases": [{"alias_name": "a"}]}], "aliases must be objects"),
            ([{"aliases": ["a"]}], "aliases must be objects"),
            ([{"aliases": {"alias_name": "a", "alias_label": "b"}}], "aliases must be an array"),
            ([{"user_ids": ["u1"], "should_remove": "yes"}], "should_remove must be a boolean"),
            ([{"user_id": ["u1"]}], "may only hold"),
        ],
    )
    def test_users_endpoint_refuses_bad_shapes(
        self, web: Http, changes: Any, fragment: str
    ) -> None:
        """A ``cohort_changes`` of the wrong shape is a 400 that says what is wrong."""
        body: dict[str, Any] = {"cohort_id": "c1"}
        if changes is not None:
            body["cohort_changes"] = changes
        resp = web.post(USERS_PATH, body)
        assert resp.status == 400
        assert fragment in resp.message

    def test_users_endpoint_requires_cohort_id(self, web: Http) -> None:
        """The user cohort endpoint checks ``cohort_id`` too."""
        resp = web.post(USERS_PATH, {"cohort_changes": [{"user_ids": ["u1"]}]})
        assert (resp.status, resp.message) == (400, "cohort_id must be a valid string")

    def test_thousand_ids_over_all_kinds_are_accepted(self, web: Http) -> None:
        """Exactly 1,000 ids spread over kinds and objects is within the cap."""
        changes = [
            {
                "user_ids": [f"u{i}" for i in range(400)],
                "aliases": [{"alias_name": f"a{i}", "alias_label": "l"} for i in range(100)],
            },
            {"device_ids": [f"d{i}" for i in range(500)], "should_remove": True},
        ]
        assert web.users(changes).status == 200

    def test_thousand_and_one_ids_are_refused(self, emulator: BrazeEmulator, web: Http) -> None:
        """1,001 ids counted over all objects and kinds is a 400 and changes nothing."""
        emulator.add_user("u0")
        changes = [
            {"user_ids": [f"u{i}" for i in range(400)]},
            {"aliases": [{"alias_name": f"a{i}", "alias_label": "l"} for i in range(100)]},
            {"device_ids": [f"d{i}" for i in range(501)], "should_remove": True},
        ]
        resp = web.users(changes)
        assert (resp.status, resp.message) == (400, "Cannot send more than 1000 ids per request")
        assert "c1" not in emulator.cohorts()


class TestMatching:
    def test_known_external_ids_and_aliases_are_added(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """Identified users join by external id and by alias."""
        emulator.add_user("u1")
        emulator.add_user(aliases=[("a@x.io", "email")])
        resp = web.users(
            [{"user_ids": ["u1"], "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}]}]
        )
        assert resp.status == 200
        assert emulator.members("c1") == {("external_id", "u1"), ("alias", "a@x.io", "email")}

    def test_anonymous_device_id_is_added(self, emulator: BrazeEmulator, web: Http) -> None:
        """An anonymous user (no external id, no alias) joins by device id."""
        emulator.add_user(device_ids=["anon-1"])
        web.users([{"device_ids": ["anon-1"]}])
        assert emulator.members("c1") == {("device_id", "anon-1")}

    def test_identified_users_device_id_is_ignored(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """A device id belonging to an identified user changes nothing."""
        emulator.add_user("u1", device_ids=["dev-1"])
        emulator.add_user(aliases=[("n", "l")], device_ids=["dev-2"])
        resp = web.users([{"device_ids": ["dev-1", "dev-2"]}])
        assert resp.status == 200
        assert emulator.members("c1") == frozenset()
        assert emulator.request_log[-1].matched == 0

    def test_device_id_stops_matching_once_identified(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """After identification the user is matched by external id, not by the old device id."""
        emulator.add_user(device_ids=["dev-1"])
        emulator.workspace.identify("dev-1", "u7")
        web.users([{"device_ids": ["dev-1"]}])
        assert emulator.members("c1") == frozenset()
        web.users([{"user_ids": ["u7"]}])
        assert emulator.members("c1") == {("external_id", "u7")}

    def test_unknown_ids_are_silently_ignored(self, emulator: BrazeEmulator, web: Http) -> None:
        """Ids of users Braze does not know succeed and change nothing."""
        emulator.add_user("u1")
        resp = web.users(
            [
                {
                    "user_ids": ["u1", "ghost"],
                    "device_ids": ["ghost-dev"],
                    "aliases": [{"alias_name": "g", "alias_label": "l"}],
                }
            ]
        )
        assert resp.json() == {"message": "success"}
        assert emulator.members("c1") == {("external_id", "u1")}
        record = emulator.request_log[-1]
        assert (record.user_ids, record.device_ids, record.aliases, record.matched) == (2, 1, 1, 1)

    def test_objects_apply_in_order(self, emulator: BrazeEmulator, web: Http) -> None:
        """Changes apply object by object: add then remove leaves out, remove then add leaves in."""
        emulator.add_users(2, prefix="u")
        web.users(
            [
                {"user_ids": ["u0"]},
                {"user_ids": ["u0"], "should_remove": True},
                {"user_ids": ["u1"], "should_remove": True},
                {"user_ids": ["u1"]},
            ]
        )
        assert emulator.members("c1") == {("external_id", "u1")}
        assert emulator.request_log[-1].removed == 2

    def test_remove_takes_members_out(self, emulator: BrazeEmulator, web: Http) -> None:
        """Removing a member (and an absent user) works and is idempotent."""
        emulator.add_users(3, prefix="u")
        web.users([{"user_ids": ["u0", "u1", "u2"]}])
        web.users([{"user_ids": ["u1", "u2"], "should_remove": True}])
        web.users([{"user_ids": ["u1"], "should_remove": True}])
        assert emulator.members("c1") == {("external_id", "u0")}

    def test_primary_identifier_of_members(self, emulator: BrazeEmulator, web: Http) -> None:
        """A member shows its external id, else its first alias, else its first device id."""
        emulator.add_user("u1", aliases=[("a", "l")], device_ids=["d-u1"])
        emulator.add_user(aliases=[("b", "l"), ("c", "l")])
        emulator.add_user(device_ids=["d1", "d2"])
        web.users(
            [
                {
                    "aliases": [
                        {"alias_name": "a", "alias_label": "l"},
                        {"alias_name": "c", "alias_label": "l"},
                    ],
                    "device_ids": ["d2"],
                }
            ]
        )
        assert emulator.members("c1") == {
            ("external_id", "u1"),
            ("alias", "b", "l"),
            ("device_id", "d1"),
        }

    def test_members_before_name_create_an_unnamed_cohort(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """An unnamed cohort is accepted and created; a later name applies to it."""
        emulator.add_user("u1")
        web.users([{"user_ids": ["u1"]}], cohort_id="late")
        assert emulator.cohorts() == {"late": None}
        web.name(cohort_id="late", name="Named Later")
        assert emulator.cohort_name("late") == "Named Later"
        assert emulator.members("late") == {("external_id", "u1")}
        assert [r.endpoint for r in emulator.request_log] == ["users", "cohorts"]

    def test_renaming_keeps_members(self, emulator: BrazeEmulator, web: Http) -> None:
        """The name endpoint changes the name and leaves membership alone."""
        emulator.add_user("u1")
        web.name(name="First")
        web.users([{"user_ids": ["u1"]}])
        web.name(name="Second")
        assert emulator.cohort_name("c1") == "Second"
        assert emulator.members("c1") == {("external_id", "u1")}

    def test_unknown_cohort_raises_key_error(self, emulator: BrazeEmulator) -> None:
        """Inspecting a cohort that never existed is a KeyError, not an empty set."""
        with pytest.raises(KeyError):
            emulator.members("never")
        with pytest.raises(KeyError):
            emulator.cohort_name("never")

    def test_duplicate_identifiers_are_refused(self, emulator: BrazeEmulator) -> None:
        """An identifier belongs to at most one user."""
        emulator.add_user("u1", aliases=[("a", "l")], device_ids=["d1"])
        with pytest.raises(ValueError, match="external id"):
            emulator.add_user("u1")
        with pytest.raises(ValueError, match="alias"):
            emulator.add_user("u2", aliases=[("a", "l")])
        with pytest.raises(ValueError, match="device"):
            emulator.add_user(device_ids=["d1"])
        with pytest.raises(ValueError, match="already exist"):
            emulator.add_users(2, prefix="u")
        with pytest.raises(ValueError, match="needs"):
            emulator.add_user()
        with pytest.raises(ValueError, match="identified"):
            emulator.add_user("u9", identified=False)


class TestFaults:
    def test_fail_next_answers_then_recovers(self, emulator: BrazeEmulator, web: Http) -> None:
        """The next N requests get the status and apply nothing; the one after succeeds."""
        emulator.add_user("u1")
        emulator.fail_next(2, 503)
        assert [web.users([{"user_ids": ["u1"]}]).status for _ in range(3)] == [503, 503, 200]
        assert [r.applied for r in emulator.request_log] == [False, False, True]
        assert [r.fault for r in emulator.request_log] == ["fail", "fail", None]

    @pytest.mark.parametrize("status", [423, 500, 502, 503])
    def test_fail_next_statuses(self, emulator: BrazeEmulator, web: Http, status: int) -> None:
        """Each transient status can be injected, with a JSON message body."""
        emulator.fail_next(1, status)
        resp = web.name()
        assert resp.status == status
        assert isinstance(resp.message, str)
        assert "c1" not in emulator.cohorts()

    def test_429_carries_retry_after_and_rate_limit_headers(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """An injected 429 says when to retry, in both Braze styles."""
        emulator.fail_next(1, 429, retry_after=7)
        resp = web.name()
        assert resp.status == 429
        assert resp.headers["retry-after"] == "7"
        assert resp.headers["x-ratelimit-remaining"] == "0"
        assert int(resp.headers["x-ratelimit-limit"]) > 0
        assert (
            int(resp.headers["x-ratelimit-reset"]) >= int(emulator.request_log[-1].received_at) + 7
        )

    def test_fail_next_with_custom_headers_and_body(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """Headers and the raw body of an injected failure can be chosen."""
        emulator.fail_next(
            1, 502, headers={"Retry-After": "3", "X-Extra": "y"}, body=b"<html>bad gateway</html>"
        )
        resp = web.name()
        assert (resp.status, resp.body) == (502, b"<html>bad gateway</html>")
        assert resp.headers["retry-after"] == "3"
        assert resp.headers["x-extra"] == "y"

    def test_faults_can_target_one_path(self, emulator: BrazeEmulator, web: Http) -> None:
        """A fault for the user endpoint leaves the name endpoint alone."""
        emulator.fail_next(1, 500, path="/cohorts/users")
        assert web.name().status == 200
        assert web.users([{"user_ids": ["x"]}]).status == 500
        assert web.users([{"user_ids": ["x"]}]).status == 200

    def test_drop_before_apply_closes_without_answer_or_change(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """A dropped request gets no answer and changes nothing."""
        emulator.add_user("u1")
        emulator.drop_next(1, when="before_apply")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            web.users([{"user_ids": ["u1"]}])
        assert "c1" not in emulator.cohorts()
        record = emulator.request_log[-1]
        assert (record.status, record.applied, record.fault) == (None, False, "drop_before_apply")

    def test_drop_after_apply_changes_but_never_answers(
        self, emulator: BrazeEmulator, web: Http
    ) -> None:
        """The change happens, but the client never hears of it: outcome unknown."""
        emulator.add_user("u1")
        emulator.drop_next(1, when="after_apply")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            web.users([{"user_ids": ["u1"]}])
        assert emulator.members("c1") == {("external_id", "u1")}
        record = emulator.request_log[-1]
        assert (record.status, record.applied, record.fault) == (None, True, "drop_after_apply")

    def test_drop_after_apply_of_a_name(self, emulator: BrazeEmulator, web: Http) -> None:
        """A dropped name request still names the cohort."""
        emulator.drop_next(when="after_apply")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            web.name(name="Silent")
        assert emulator.cohort_name("c1") == "Silent"

    def test_succeed_with_errors(self, emulator: BrazeEmulator, web: Http) -> None:
        """A success can carry an ``errors`` list, and the change is applied."""
        emulator.add_user("u1")
        emulator.succeed_with_errors_next(1, errors=["some ids were odd"])
        resp = web.users([{"user_ids": ["u1"]}])
        assert (resp.status, resp.json()) == (
            200,
            {"message": "success", "errors": ["some ids were odd"]},
        )
        assert emulator.members("c1") == {("external_id", "u1")}

    def test_redirect_next(self, emulator: BrazeEmulator, web: Http) -> None:
        """A redirect names its target and applies nothing."""
        emulator.redirect_next(1, "http://127.0.0.1:1/elsewhere")
        resp = web.name()
        assert resp.status == 307
        assert resp.headers["location"] == "http://127.0.0.1:1/elsewhere"
        assert "c1" not in emulator.cohorts()

    def test_latency_beyond_client_timeout_times_out(self, emulator: BrazeEmulator) -> None:
        """With latency set, a client that gives up sooner gets no answer in time."""
        emulator.set_latency(2.0)
        web = Http(emulator, timeout=0.05)
        try:
            with pytest.raises(TimeoutError):
                web.name()
        finally:
            web.close()

    def test_invalid_fault_arguments_are_refused(self, emulator: BrazeEmulator) -> None:
        """Nonsense fault settings fail loudly."""
        with pytest.raises(ValueError, match="n must be"):
            emulator.fail_next(0)
        with pytest.raises(ValueError, match="status"):
            emulator.fail_next(1, 99)
        with pytest.raises(ValueError, match="when"):
            emulator.drop_next(when="sometime")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="latency"):
            emulator.set_latency(-1)
        with pytest.raises(ValueError, match="redirect"):
            emulator.redirect_next(1, "x", status=200)

    def test_clear_faults(self, emulator: BrazeEmulator, web: Http) -> None:
        """Pending faults can be forgotten."""
        emulator.fail_next(5, 500)
        emulator.clear_faults()
        assert web.name().status == 200


class FakeClock:
    """A settable clock."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestRateLimit:
    def test_requests_past_the_limit_get_429_until_a_slot_frees(self) -> None:
        """A sliding window: the 4th request in the window is refused until the 1st leaves it."""
        clock = FakeClock()
        with BrazeEmulator(requests_per_hour=3, rate_limit_window=10, clock=clock) as emulator:
            web = Http(emulator)
            statuses = []
            for step in range(3):
                clock.now += 1
                resp = web.name()
                statuses.append(resp.status)
                assert resp.headers["x-ratelimit-remaining"] == str(2 - step)
                assert resp.headers["x-ratelimit-limit"] == "3"
            first = 1_800_000_001
            assert resp.headers["x-ratelimit-reset"] == str(first + 10)
            clock.now = first + 9.5
            refused = web.name()
            assert refused.status == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["x-ratelimit-reset"] == str(first + 10)
            clock.now = first + 10
            assert web.name().status == 200
            web.close()
        assert statuses == [200, 200, 200]
        assert [r.fault for r in emulator.request_log].count("rate_limited") == 1

    def test_refused_requests_do_not_count(self) -> None:
        """Only accepted requests fill the window."""
        clock = FakeClock()
        with BrazeEmulator(requests_per_hour=1, rate_limit_window=60, clock=clock) as emulator:
            web = Http(emulator)
            assert web.name().status == 200
            assert [web.name().status for _ in range(5)] == [429] * 5
            clock.now += 60
            assert web.name().status == 200
            web.close()

    def test_no_rate_limit_headers_without_a_limit(self, web: Http) -> None:
        """Without a configured limit, answers carry no X-RateLimit headers."""
        assert "x-ratelimit-limit" not in web.name().headers


class TestRequestLog:
    def test_log_never_holds_keys(self, emulator: BrazeEmulator, web: Http) -> None:
        """No record, in any field or repr, holds a partner API key or data import key."""
        emulator.add_user("u1")
        web.name()
        web.users([{"user_ids": ["u1"]}])
        web.name(client_secret="bad")
        emulator.fail_next(1, 429)
        web.name()
        for record in emulator.request_log:
            text = repr(record) + str(vars(record) if hasattr(record, "__dict__") else "")
            assert emulator.partner_api_key not in text
            assert emulator.data_import_key not in text
            assert "bad" not in text
        assert emulator.partner_api_key not in repr(emulator)

    def test_log_counts_ids_by_kind(self, web: Http, emulator: BrazeEmulator) -> None:
        """Each record counts user ids, device ids, aliases and removals."""
        web.users(
            [
                {"user_ids": ["a", "b"], "device_ids": ["d"]},
                {
                    "aliases": [{"alias_name": "n", "alias_label": "l"}],
                    "user_ids": ["c"],
                    "should_remove": True,
                },
            ]
        )
        record = emulator.request_log[-1]
        assert isinstance(record, RequestRecord)
        assert (record.user_ids, record.device_ids, record.aliases, record.removed) == (3, 1, 1, 2)
        assert (record.ids, record.added) == (5, 3)
        assert (record.status, record.message, record.cohort_id, record.partner) == (
            200,
            "success",
            "c1",
            "kubit",
        )

    def test_key_outside_body_is_flagged(self, emulator: BrazeEmulator, web: Http) -> None:
        """A key in a header or in the URL is flagged in the log (the key itself is not kept)."""
        web.name()
        web.request("POST", NAME_PATH + "?k=" + emulator.data_import_key, b"{}")
        web.request(
            "POST", NAME_PATH, b"{}", {"Authorization": "Bearer " + emulator.partner_api_key}
        )
        assert [r.key_outside_body for r in emulator.request_log] == [False, True, True]

    def test_raw_requests_hold_line_and_headers_only(self) -> None:
        """With ``record_raw`` the request line and headers are kept, never the body."""
        with BrazeEmulator(record_raw=True) as emulator:
            web = Http(emulator)
            web.name()
            web.close()
            [(line, headers)] = emulator.raw_requests
        assert line == b"POST /partners/kubit/cohorts HTTP/1.1"
        assert b"content-type: application/json" in headers.lower()
        assert emulator.data_import_key.encode() not in line + headers

    def test_log_limit_keeps_the_newest_records(self) -> None:
        """With ``log_limit`` the log keeps only the latest records."""
        with BrazeEmulator(log_limit=2) as emulator:
            web = Http(emulator)
            for name in ("first", "second", "third"):
                web.name(name=name)
            web.close()
            assert [r.name for r in emulator.request_log] == ["second", "third"]
        with pytest.raises(ValueError, match="log_limit"):
            BrazeEmulator(log_limit=0)

    def test_reset_log(self, emulator: BrazeEmulator, web: Http) -> None:
        """The log can be emptied between phases of a test."""
        web.name()
        emulator.reset_log()
        assert emulator.request_log == []


class TestUsersFile:
    def test_load_users_from_file(self, emulator: BrazeEmulator, tmp_path: Path, web: Http) -> None:
        """The documented users.json format loads users of every kind plus generated ones."""
        path = tmp_path / "users.json"
        path.write_text(
            json.dumps(
                {
                    "users": [
                        {
                            "external_id": "u1",
                            "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}],
                        },
                        {"device_ids": ["anon-1"]},
                        {"external_id": "u2", "device_ids": ["known-2"]},
                    ],
                    "generate": {"count": 3, "prefix": "g-"},
                }
            )
        )
        assert emulator.load_users(path) == 6
        web.users(
            [
                {
                    "user_ids": ["g-2"],
                    "device_ids": ["anon-1", "known-2"],
                    "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}],
                }
            ]
        )
        assert emulator.members("c1") == {
            ("external_id", "g-2"),
            ("device_id", "anon-1"),
            ("external_id", "u1"),
        }

    def test_load_users_accepts_a_plain_list(self, emulator: BrazeEmulator) -> None:
        """A bare JSON array of users is accepted too."""
        assert (
            emulator.load_users([{"external_id": "u1"}, {"device_ids": ["d"], "identified": True}])
            == 2
        )
        assert emulator.workspace.user_count() == 2

    @pytest.mark.parametrize(
        "content",
        [
            {"people": []},
            [{"email": "x"}],
            {"generate": {"count": "3"}},
            42,
            [{"aliases": [{"name": "x"}]}],
        ],
    )
    def test_load_users_refuses_other_shapes(self, emulator: BrazeEmulator, content: Any) -> None:
        """Content of another shape is a ValueError, not a half-loaded emulator."""
        with pytest.raises(ValueError, match=r"user|generate"):
            emulator.load_users(content)


class TestPluginMarker:
    @pytest.mark.braze_emulator(partner="acme", region="AU", requests_per_hour=10)
    def test_marker_configures_the_fixture(self, braze_emulator: BrazeEmulator) -> None:
        """``@pytest.mark.braze_emulator(...)`` passes options to the fixture's emulator."""
        assert (braze_emulator.partner, braze_emulator.region) == ("acme", "AU")
        web = Http(braze_emulator)
        resp = web.post(
            "/partners/acme/cohorts", {"cohort_id": "c", "name": "n", "created_at": CREATED_AT}
        )
        web.close()
        assert (resp.status, resp.headers["x-ratelimit-limit"]) == (200, "10")


class TestCommandLine:
    def test_emulator_command_prints_url_and_keys_and_stops_on_sigterm(
        self, tmp_path: Path
    ) -> None:
        """``braze-cohorts emulator`` serves the users file and exits 0 on SIGTERM."""
        users = tmp_path / "users.json"
        users.write_text(json.dumps([{"external_id": "u1"}]))
        env = {**os.environ, "PYTHONWARNINGS": "error"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "braze_cohorts.cli",
                "emulator",
                "--port",
                "0",
                "--users",
                str(users),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(5)]
            assert lines[0].startswith("Braze emulator listening on http://127.0.0.1:")
            settings = dict(
                line.removeprefix("export ").strip().split("=", 1) for line in lines[1:]
            )
            url = settings["BRAZE_REST_ENDPOINT"]
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
            payload = {
                "partner_api_key": settings["BRAZE_PARTNER_API_KEY"],
                "client_secret": settings["BRAZE_DATA_IMPORT_KEY"],
                "cohort_id": "c1",
                "cohort_changes": [{"user_ids": ["u1"]}],
            }
            conn.request(
                "POST", f"/partners/{settings['BRAZE_PARTNER']}/cohorts/users", json.dumps(payload)
            )
            assert conn.getresponse().status == 200
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in err

    def test_emulator_command_refuses_a_bad_users_file(self, tmp_path: Path) -> None:
        """A users file of the wrong shape is a usage error (exit 2) before serving."""
        from braze_cohorts.cli import main

        users = tmp_path / "users.json"
        users.write_text(json.dumps({"people": []}))
        assert main(["emulator", "--port", "0", "--users", str(users)]) == 2


class TestDocumentation:
    def test_examples_in_docs_testing_md_run(self, tmp_path: Path) -> None:
        """Every Python example in docs/testing.md runs as a test under a fresh pytest."""
        docs = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
        blocks = re.findall(r"```python\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
        modules = []
        for i, block in enumerate(blocks):
            if "run_my_job" in block:  # shows the wiring of code that is not here
                continue
            if "def test_" not in block:
                body = "\n".join("    " + line for line in block.splitlines())
                block = (
                    f"def test_snippet_{i}(braze_emulator):\n    braze = braze_emulator\n{body}\n"
                )
            modules.append(block)
            (tmp_path / f"test_doc_{i}.py").write_text(block, encoding="utf-8")
        assert len(modules) >= 5
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--strict-markers",
                "-W",
                "error",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"\b(\d+) passed", result.stdout)
