"""The emulator's admin HTTP API under /_emulator/, driven over real HTTP with requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braze_cohorts import (
    AuthenticationError,
    BatchUploader,
    CohortClient,
    DeviceId,
    RateLimitedError,
    RetryPolicy,
    ServerError,
)
from braze_cohorts.testing import BrazeEmulator, FaultKind
from braze_cohorts.testing._admin import ROUTES


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    return braze_emulator


@pytest.fixture
def admin(emulator: BrazeEmulator) -> Iterator[Admin]:
    with requests.Session() as session:
        yield Admin(emulator.admin_url, session)


@pytest.fixture
def client(braze_client: CohortClient) -> CohortClient:
    return braze_client


def connect(emulator: BrazeEmulator, **keys: str) -> CohortClient:
    """A client of ``emulator`` with its default keys, or these instead."""
    options = {
        "partner_api_key": emulator.partner_api_key,
        "data_import_key": emulator.data_import_key,
        **keys,
    }
    return CohortClient(emulator.url, partner=emulator.partner, **options)


class Admin:
    """A thin JSON caller of the admin API that checks the status it expects."""

    def __init__(self, base: str, session: requests.Session) -> None:
        self.base = base
        self.session = session

    def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=10)
        assert response.status_code == expect, response.text
        assert response.headers["Content-Type"] == "application/json"
        return response.json()


class TestFaults:
    def test_injected_503s_reach_the_client_then_clear(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """POST /faults queues failures the client sees; nothing is applied meanwhile."""
        emulator.add_user("u1")
        pending = admin.call("POST", "/faults", {"kind": "fail", "n": 2, "status": 503})
        assert pending == {"faults": [{"kind": "fail", "n": 2, "status": 503}]}
        for _ in range(2):
            with pytest.raises(ServerError):
                client.update_members("c1", add=["u1"])
        client.update_members("c1", add=["u1"])
        assert emulator.members("c1") == {("external_id", "u1")}
        assert [r.fault for r in emulator.request_log] == [FaultKind.FAIL, FaultKind.FAIL, None]

    def test_a_list_of_faults_queues_in_order_and_can_be_cleared(self, admin: Admin) -> None:
        """A list queues every fault in order; DELETE /faults forgets them all."""
        admin.call(
            "POST",
            "/faults",
            [
                {"kind": "fail", "status": 429, "retry_after": 2, "path": "/cohorts/users"},
                {"kind": "drop_after_apply", "n": 3},
                {"kind": "errors", "errors": ["some ids were dropped"]},
                {"kind": "redirect", "location": "https://elsewhere.example", "status": 302},
            ],
        )
        kinds = [f["kind"] for f in admin.call("GET", "/faults")["faults"]]
        assert kinds == ["fail", "drop_after_apply", "errors", "redirect"]
        assert admin.call("DELETE", "/faults") == {"cleared": 4}
        assert admin.call("GET", "/faults") == {"faults": []}

    @pytest.mark.parametrize(
        "fault",
        [
            {"kind": "explode"},
            {"kind": "fail", "status": 99},
            {"kind": "fail", "n": 0},
            {"kind": "fail", "n": True},
            {"kind": "fail", "colour": "red"},
            {"kind": "redirect", "status": 200},
            {"kind": "errors", "errors": "not a list"},
            {"kind": "fail", "retry_after": -1},
            "fail",
        ],
    )
    def test_invalid_faults_are_400_and_queue_nothing(self, admin: Admin, fault: Any) -> None:
        """A fault the emulator cannot honour is refused whole, with a reason."""
        answer = admin.call("POST", "/faults", [{"kind": "fail"}, fault], expect=400)
        assert answer["message"]
        assert admin.call("GET", "/faults") == {"faults": []}

    def test_2xx_with_errors_is_applied_and_reported(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """An "errors" fault applies the change and answers 200 with Braze's errors list."""
        emulator.add_user("u1")
        admin.call("POST", "/faults", {"kind": "errors", "errors": ["x"]})
        response = client.update_members("c1", add=["u1"])
        assert (response.status_code, response.message, response.errors) == (200, "success", ("x",))
        assert emulator.members("c1") == {("external_id", "u1")}

    def test_latency_and_rate_limit_are_set_and_read_back(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """PUT /latency and /rate-limit change the emulator; GET / shows them."""
        assert admin.call("PUT", "/latency", {"fixed": 0.01, "jitter": 0}) == {
            "fixed": 0.01,
            "jitter": 0.0,
        }
        admin.call("PUT", "/rate-limit", {"requests_per_hour": 1})
        client.name_cohort("c1", "n")
        with pytest.raises(RateLimitedError):
            client.name_cohort("c1", "n")
        state = admin.call("GET", "/")
        assert state["latency"] == {"fixed": 0.01, "jitter": 0.0}
        assert state["rate_limit"] == {"requests_per_hour": 1, "window": 3600.0}
        admin.call("PUT", "/rate-limit", {"requests_per_hour": None})
        client.name_cohort("c1", "n")
        admin.call("PUT", "/latency", {"fixed": -1}, expect=400)
        assert emulator.latency == (0.01, 0.0)


class TestUsersAndKeys:
    def test_users_created_late_join_at_the_next_import(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """An id Braze ignored matches once POST /users has created the user."""
        client.update_members("c1", add=["late"])
        assert emulator.members("c1") == frozenset()
        answer = admin.call(
            "POST",
            "/users",
            {"users": [{"external_id": "late"}], "generate": {"count": 2, "prefix": "g"}},
            expect=201,
        )
        assert answer == {"workspace": "default", "added": 3, "users": 3}
        client.update_members("c1", add=["late", "g1"])
        assert emulator.members("c1") == {("external_id", "late"), ("external_id", "g1")}

    def test_users_file_errors_are_400(self, admin: Admin) -> None:
        """A body that is not the users.json format is refused."""
        assert admin.call("POST", "/users", {"people": []}, expect=400)["message"]
        assert admin.call("POST", "/users", [{"external_id": 1, "x": 2}], expect=400)

    def test_keys_and_users_of_the_wrong_type_are_400_and_braze_keeps_answering(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """A key that is no string, or a users body that is a string (a file name from
        Python), is refused; the partner endpoints are unharmed."""
        admin.call("POST", "/partner-keys", {"key": 5}, expect=400)
        admin.call("POST", "/data-import-keys", {"key": ["x"]}, expect=400)
        admin.call("POST", "/users", "/etc/passwd", expect=400)
        admin.call("POST", "/users", [{"external_id": 5}], expect=400)
        client.name_cohort("c1", "n")
        assert emulator.cohort_name("c1") == "n"

    def test_revoked_key_gets_401_and_a_new_key_works(
        self, emulator: BrazeEmulator, admin: Admin
    ) -> None:
        """DELETE /data-import-keys/KEY revokes; POST /data-import-keys issues a working one."""
        admin.call("DELETE", f"/data-import-keys/{emulator.data_import_key}")
        with (
            connect(emulator) as old,
            pytest.raises(AuthenticationError) as info,
        ):
            old.name_cohort("c1", "n")
        assert info.value.cause == "data_import_key"
        admin.call("DELETE", f"/data-import-keys/{emulator.data_import_key}", expect=404)
        new = admin.call("POST", "/data-import-keys", {}, expect=201)
        assert new["workspace"] == "default"
        with connect(emulator, data_import_key=new["data_import_key"]) as fresh:
            fresh.name_cohort("c1", "n")
        assert emulator.cohort_name("c1") == "n"

    def test_partner_keys_are_created_and_revoked(
        self, emulator: BrazeEmulator, admin: Admin
    ) -> None:
        """A partner key from POST /partner-keys works until DELETE revokes it."""
        key = admin.call("POST", "/partner-keys", {}, expect=201)["partner_api_key"]
        with connect(emulator, partner_api_key=key) as client:
            client.name_cohort("c1", "n")
            admin.call("DELETE", f"/partner-keys/{key}")
            with pytest.raises(AuthenticationError) as info:
                client.name_cohort("c1", "n")
        assert info.value.message == "Invalid Partner API key"

    def test_workspace_without_the_partner_answers_not_enabled(
        self, emulator: BrazeEmulator, admin: Admin
    ) -> None:
        """POST /workspaces with partner_enabled false models Braze's "not enabled" 401."""
        ws = admin.call(
            "POST", "/workspaces", {"name": "closed", "partner_enabled": False}, expect=201
        )
        assert (ws["name"], ws["partners"], ws["data_import_keys"]) == ("closed", [], 1)
        response = requests.post(
            f"{emulator.url}/partners/kubit/cohorts",
            json={
                "partner_api_key": emulator.partner_api_key,
                "client_secret": ws["data_import_key"],
                "cohort_id": "c1",
                "name": "n",
                "created_at": "2026-01-01T00:00:00Z",
            },
            timeout=10,
        )
        assert response.status_code == 401
        assert response.json() == {
            "message": f"Partner not enabled for client with client secret: {ws['data_import_key']}"
        }
        names = [w["name"] for w in admin.call("GET", "/workspaces")["workspaces"]]
        assert names == ["default", "closed"]
        admin.call("POST", "/workspaces", {"name": "closed"}, expect=400)

    def test_users_go_to_the_workspace_named_in_the_query(
        self, emulator: BrazeEmulator, admin: Admin
    ) -> None:
        """?workspace=NAME selects the workspace; an unknown one is 404."""
        admin.call("POST", "/workspaces", {"name": "staging"}, expect=201)
        admin.call("POST", "/users?workspace=staging", [{"external_id": "s1"}], expect=201)
        assert emulator.get_workspace("staging").user_count() == 1
        assert emulator.workspace.user_count() == 0
        admin.call("POST", "/users?workspace=nope", [], expect=404)


class TestCohorts:
    def test_cohort_members_name_and_created_at_are_read(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """GET /cohorts/ID shows members in JSON and the first created_at through a rename."""
        emulator.add_user("u1", aliases=[("a@x.io", "email")])
        emulator.add_user(device_ids=["d1"])
        client.name_cohort(
            "c 1", "First", created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        )
        client.name_cohort(
            "c 1", "Renamed", created_at=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
        )
        client.update_members("c 1", add=["u1", DeviceId("d1")])
        first, second = (r.created_at for r in emulator.request_log[:2])
        assert str(first).startswith("2026-01-01")
        assert str(second).startswith("2026-06-01")
        cohort = admin.call("GET", "/cohorts/c%201")
        assert cohort == {
            "cohort_id": "c 1",
            "name": "Renamed",
            "created_at": first,
            "member_count": 2,
            "members": [{"device_id": "d1"}, {"external_id": "u1"}],
        }
        listing = admin.call("GET", "/cohorts")
        assert listing["cohorts"] == [
            {
                "cohort_id": "c 1",
                "name": "Renamed",
                "created_at": first,
                "member_count": 2,
            }
        ]
        admin.call("GET", "/cohorts/unknown", expect=404)

    def test_out_of_band_removal_and_emptying(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """Dashboard-style edits take members out without any partner request."""
        emulator.add_users(4, prefix="u")
        emulator.add_user("x", aliases=[("x@x.io", "email")])
        client.update_members("c1", add=["u0", "u1", "u2", "u3", "x"])
        before = len(emulator.request_log)
        answer = admin.call(
            "POST",
            "/cohorts/c1/remove",
            {
                "users": [
                    "u0",
                    {"external_id": "u1"},
                    {"alias_name": "x@x.io", "alias_label": "email"},
                ]
            },
        )
        assert answer == {"removed": 3}
        assert emulator.members("c1") == {("external_id", "u2"), ("external_id", "u3")}
        admin.call("POST", "/cohorts/c1/remove", {"users": ["nobody"]}, expect=404)
        admin.call("POST", "/cohorts/c1/remove", {"users": [{"who": "u2"}]}, expect=400)
        assert admin.call("DELETE", "/cohorts/c1/members") == {"removed": 2}
        assert emulator.members("c1") == frozenset()
        assert len(emulator.request_log) == before


class TestRequestLog:
    def test_log_is_served_without_keys_and_can_be_reset(
        self, emulator: BrazeEmulator, admin: Admin, client: CohortClient
    ) -> None:
        """GET /requests lists each partner request (admin calls excluded), never a key."""
        emulator.add_user("u1")
        admin.call("POST", "/faults", {"kind": "drop_before_apply"})
        uploader = BatchUploader(
            client,
            sleep=lambda _s: None,
            retry=RetryPolicy(initial_backoff=0.001, max_backoff=0.001),
        )
        assert uploader.upload("c1", add=["u1"]).ok
        response = admin.session.get(admin.base + "/requests", timeout=10)
        assert emulator.partner_api_key not in response.text
        assert emulator.data_import_key not in response.text
        records = response.json()["requests"]
        assert [(r["status"], r["fault"], r["ids"]) for r in records] == [
            (None, "drop_before_apply", 0),
            (200, None, 1),
        ]
        assert (records[1]["matched"], records[1]["endpoint"]) == (1, "users")
        assert admin.call("GET", "/requests?since=1")["requests"] == records[1:]
        admin.call("GET", "/requests?since=x", expect=400)
        admin.call("DELETE", "/requests")
        assert admin.call("GET", "/requests") == {"requests": []}


class TestRouting:
    def test_unknown_routes_and_methods(self, admin: Admin) -> None:
        """Unknown admin paths are 404, a known path with another method 405, bad JSON 400."""
        assert "no admin route" in admin.call("GET", "/nope", expect=404)["message"]
        response = admin.session.put(admin.base + "/faults", json={}, timeout=10)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "POST", "DELETE"}
        response = admin.session.post(admin.base + "/faults", data=b"{not json", timeout=10)
        assert response.status_code == 400

    def test_admin_requests_skip_faults_and_the_log(
        self, emulator: BrazeEmulator, admin: Admin
    ) -> None:
        """A pending fault or a rate limit never hits the admin API, nor does the log see it."""
        emulator.fail_next(5)
        emulator.set_rate_limit(1)
        for _ in range(3):
            admin.call("GET", "/")
        assert emulator.request_log == []
        assert emulator.pending_faults()[0][1] == 5

    def test_admin_api_can_be_turned_off(self) -> None:
        """With admin=False the prefix is an ordinary unknown Braze path (404, logged)."""
        with BrazeEmulator(admin=False) as braze:
            response = requests.get(braze.admin_url + "/", timeout=10)
            assert response.status_code == 404
            assert response.json() == {"message": "Not found"}
            assert len(braze.request_log) == 1

    def test_every_route_is_documented(self) -> None:
        """docs/testing.md names every admin route with its method."""
        docs = (Path(__file__).resolve().parents[1] / "docs" / "testing.md").read_text("utf-8")
        for method, path, _doc in ROUTES:
            assert f"`{method} {path}`" in docs, (method, path)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "users",
                    "generate",
                    "external_id",
                    "aliases",
                    "device_ids",
                    "name",
                    "kind",
                    "n",
                    "status",
                    "count",
                    "prefix",
                    "identified",
                    "partners",
                    "requests_per_hour",
                    "fixed",
                    "workspace",
                    "key",
                    "region",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)
WRITES = [
    ("POST", "/faults"),
    ("POST", "/users"),
    ("POST", "/workspaces"),
    ("POST", "/data-import-keys"),
    ("POST", "/partner-keys"),
    ("PUT", "/latency"),
    ("PUT", "/rate-limit"),
    ("POST", "/cohorts/c1/remove"),
]


class TestAnyInput:
    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(route=st.sampled_from(WRITES), body=JSON)
    def test_any_json_body_gets_a_client_error_or_success_never_a_500(
        self, admin: Admin, route: tuple[str, str], body: object
    ) -> None:
        """Whatever JSON a CI script sends, the admin API answers 2XX or 4XX with a message."""
        method, path = route
        response = admin.session.request(method, admin.base + path, json=body, timeout=10)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.json()["message"]
        probe = requests.post(
            f"{admin.base.removesuffix('/_emulator')}/partners/kubit/cohorts", json={}, timeout=10
        )
        assert probe.status_code < 500, "the partner endpoints still answer"
