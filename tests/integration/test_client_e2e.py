"""CohortClient against the Braze emulator over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import requests

from braze_cohorts import (
    AuthenticationError,
    BatchTooLargeError,
    CohortClient,
    DeviceId,
    ExternalId,
    InvalidRequestError,
    RateLimitedError,
    ResourceLockedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UserAlias,
)
from braze_cohorts.testing import BrazeEmulator
from helpers import emulator_client


class TestPluginFixtures:
    def test_braze_client_is_bound_to_braze_emulator(
        self, braze_client: CohortClient, braze_emulator: BrazeEmulator
    ) -> None:
        """The two fixtures work together out of the box: a named cohort shows in the emulator."""
        response = braze_client.name_cohort("c1", "Power users")
        assert (response.status_code, response.message) == (200, "success")
        assert braze_emulator.cohort_name("c1") == "Power users"
        assert braze_client.endpoint == braze_emulator.url


class TestSuccess:
    def test_name_then_members(self, client: CohortClient, emulator: BrazeEmulator) -> None:
        """Naming then adding known users makes them members; the answer is a CohortResponse."""
        emulator.add_users(3, prefix="u")
        client.name_cohort(
            "c1", "Cohort", created_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
        )
        response = client.update_members("c1", add=["u0", ExternalId("u1")])
        assert response is not None
        assert (response.status_code, response.message, response.errors) == (200, "success", ())
        assert emulator.members("c1") == {("external_id", "u0"), ("external_id", "u1")}
        client.update_members("c1", add=["u2"], remove=["u0"])
        assert emulator.members("c1") == {("external_id", "u1"), ("external_id", "u2")}
        assert [r.endpoint for r in emulator.request_log] == ["cohorts", "users", "users"]

    def test_created_at_defaults_to_now_and_is_valid_iso(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """Without ``created_at`` the client sends a timestamp the emulator accepts."""
        client.name_cohort("c1", "Cohort")
        assert emulator.cohort_name("c1") == "Cohort"

    def test_nothing_to_send_sends_nothing(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """An empty change returns None and no request reaches the server."""
        assert client.update_members("c1") is None
        assert emulator.request_log == []

    def test_success_with_errors_keeps_them(
        self, client: CohortClient, emulator: BrazeEmulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 200 with an ``errors`` list returns them, and warns."""
        emulator.succeed_with_errors_next(1, errors=["odd id", {"id": 3}])
        with caplog.at_level(logging.WARNING):
            response = client.update_members("c1", add=["u1"])
        assert response is not None
        assert response.errors == ("odd id", {"id": 3})
        assert any("errors" in r.getMessage() for r in caplog.records)

    def test_rate_limit_headers_are_parsed(self) -> None:
        """With a server-side limit the response carries the limit, what remains and the reset."""
        with BrazeEmulator(requests_per_hour=50) as emulator, emulator_client(emulator) as client:
            client.name_cohort("c1", "n")
            response = client.name_cohort("c1", "n")
            first = emulator.request_log[0].received_at
        assert response.rate_limit.limit == 50
        assert response.rate_limit.remaining == 48
        assert response.rate_limit.reset is not None
        assert response.rate_limit.reset >= first + 3600 - 1


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("key", "value", "message", "cause"),
        [
            ("partner_api_key", "wrong", "Invalid Partner API key", "partner_api_key"),
            ("data_import_key", "wrong", "Invalid client secret", "data_import_key"),
        ],
    )
    def test_401_wrong_key(
        self, emulator: BrazeEmulator, key: str, value: str, message: str, cause: str
    ) -> None:
        """A wrong key is an AuthenticationError naming which key."""
        with (
            emulator_client(emulator, **{key: value}) as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.name_cohort("c1", "n")
        error = info.value
        assert (error.status_code, error.message, error.cause) == (401, message, cause)
        assert error.path == "/partners/kubit/cohorts"
        assert not error.retryable

    def test_401_revoked_key_after_success(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A key revoked while running fails the next call with cause data_import_key."""
        client.name_cohort("c1", "n")
        emulator.revoke_data_import_key(emulator.data_import_key)
        with pytest.raises(AuthenticationError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.cause == "data_import_key"

    def test_401_partner_not_enabled(self, emulator: BrazeEmulator) -> None:
        """Braze's "Partner not enabled ... client secret: <key>" names the integration, masked."""
        key = emulator.create_data_import_key(emulator.create_workspace("w", partners=()))
        with (
            emulator_client(emulator, data_import_key=key) as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.name_cohort("c1", "n")
        error = info.value
        assert (error.message, error.cause) == (
            "Partner not enabled for client with client secret: ***",
            "partner_not_enabled",
        )
        assert "enable it in that workspace" in str(error)
        assert key not in str(error) + repr(error) + repr(error.errors)
        raw = requests.post(
            f"{emulator.url}/partners/{emulator.partner}/cohorts",
            json={
                "partner_api_key": emulator.partner_api_key,
                "client_secret": key,
                "cohort_id": "c1",
                "name": "n",
                "created_at": "2026-12-02T04:05:06Z",
            },
            timeout=10,
        )
        assert key in raw.text  # the emulator echoes the key as Braze does: the mask is real

    def test_401_unauthorized_access(self, emulator: BrazeEmulator) -> None:
        """Using the key under another partner's path is unauthorized, cause unknown."""
        with (
            emulator_client(emulator, partner="someone-else") as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.name_cohort("c1", "n")
        assert (info.value.message, info.value.cause) == ("Unauthorized access", "unknown")

    def test_400_maps_to_invalid_request(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A 400 is an InvalidRequestError with Braze's message, never retryable."""
        emulator.fail_next(
            1, 400, body={"message": "cohort_changes has the wrong shape", "errors": ["x"]}
        )
        with pytest.raises(InvalidRequestError) as info:
            client.update_members("c1", add=["u1"])
        assert (info.value.status_code, info.value.message, info.value.errors) == (
            400,
            "cohort_changes has the wrong shape",
            ("x",),
        )
        assert not info.value.retryable

    def test_423_maps_to_resource_locked(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A 423 is a retryable ResourceLockedError."""
        emulator.fail_next(1, 423)
        with pytest.raises(ResourceLockedError) as info:
            client.name_cohort("c1", "n")
        assert info.value.retryable

    def test_429_retry_after_seconds(self, client: CohortClient, emulator: BrazeEmulator) -> None:
        """A 429 carries the server's Retry-After as ``retry_after``."""
        emulator.fail_next(1, 429, retry_after=7)
        with pytest.raises(RateLimitedError) as info:
            client.name_cohort("c1", "n")
        assert info.value.retry_after == 7
        assert info.value.retryable

    def test_429_reset_header_only(self, emulator: BrazeEmulator) -> None:
        """Without Retry-After, the wait comes from X-RateLimit-Reset and the client's clock."""
        now = 1_800_000_000.0
        with (
            BrazeEmulator(clock=lambda: now) as fake_emulator,
            emulator_client(fake_emulator, clock=lambda: now) as client,
        ):
            fake_emulator.fail_next(1, 429, retry_after=42, headers={"Retry-After": None})
            with pytest.raises(RateLimitedError) as info:
                client.name_cohort("c1", "n")
        assert info.value.retry_after == 42

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx_maps_to_server_error(
        self, client: CohortClient, emulator: BrazeEmulator, status: int
    ) -> None:
        """5XX answers are retryable ServerErrors."""
        emulator.fail_next(1, status)
        with pytest.raises(ServerError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.status_code == status
        assert info.value.retryable

    def test_non_json_error_body_is_described_safely(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """An HTML error page becomes a short description, not a crash."""
        emulator.fail_next(1, 502, body=b"<html><body>Bad gateway</body></html>")
        with pytest.raises(ServerError) as info:
            client.name_cohort("c1", "n")
        assert "non-JSON" in info.value.message

    def test_unknown_path_is_unexpected(self, emulator: BrazeEmulator) -> None:
        """A base URL with a path the server does not serve gives UnexpectedResponseError (404)."""
        with (
            emulator_client(emulator, endpoint=emulator.url + "/proxy") as client,
            pytest.raises(UnexpectedResponseError) as info,
        ):
            client.name_cohort("c1", "n")
        assert info.value.status_code == 404

    def test_redirect_is_refused_and_not_followed(self, emulator: BrazeEmulator) -> None:
        """A 307 is an error, and the redirect target never receives the request (or the keys)."""
        with BrazeEmulator(record_raw=True) as target:
            emulator.redirect_next(1, target.url + "/partners/kubit/cohorts")
            with (
                emulator_client(emulator) as client,
                pytest.raises(UnexpectedResponseError) as info,
            ):
                client.name_cohort("c1", "n")
            assert info.value.status_code == 307
            assert "redirect" in str(info.value)
            assert target.request_log == []
            assert target.raw_requests == []
        assert "c1" not in emulator.cohorts()


class TestTransport:
    def test_dropped_connection_is_outcome_unknown(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """No answer after sending is a TransportError whose outcome is unknown."""
        emulator.add_user("u1")
        emulator.drop_next(1, when="after_apply")
        with pytest.raises(TransportError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.outcome_unknown
        assert emulator.members("c1") == {("external_id", "u1")}

    def test_dropped_before_apply_is_also_unknown_to_the_client(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """The client cannot tell a drop before the change from one after it."""
        emulator.drop_next(1, when="before_apply")
        with pytest.raises(TransportError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.outcome_unknown

    def test_connection_refused_is_not_sent(self) -> None:
        """A server that is not there: the request certainly did not leave."""
        emulator = BrazeEmulator().start()
        url = emulator.url
        emulator.stop()
        with (
            emulator_client(emulator, endpoint=url) as client,
            pytest.raises(TransportError) as info,
        ):
            client.name_cohort("c1", "n")
        assert not info.value.outcome_unknown

    def test_read_timeout_is_outcome_unknown(self, emulator: BrazeEmulator) -> None:
        """A server slower than the read timeout gives an outcome-unknown TransportError."""
        emulator.set_latency(2.0)
        with (
            emulator_client(emulator, timeout=(2.0, 0.05)) as client,
            pytest.raises(TransportError) as info,
        ):
            client.name_cohort("c1", "n")
        assert info.value.outcome_unknown

    def test_keep_alive_connection_survives_a_drop(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """After a dropped connection the next call succeeds on a fresh one."""
        emulator.drop_next(1)
        with pytest.raises(TransportError):
            client.name_cohort("c1", "n")
        assert client.name_cohort("c1", "n").status_code == 200


class TestIdCap:
    def test_thousand_ids_of_all_kinds_go_in_one_request(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """1,000 ids mixed over kinds, adds and removes, are one accepted request."""
        add = [ExternalId(f"u{i}") for i in range(500)] + [
            UserAlias(f"a{i}", "email") for i in range(200)
        ]
        remove = [DeviceId(f"d{i}") for i in range(300)]
        response = client.update_members("c1", add=add, remove=remove)
        assert response is not None
        record = emulator.request_log[-1]
        assert (record.user_ids, record.aliases, record.device_ids, record.removed) == (
            500,
            200,
            300,
            300,
        )

    def test_client_refuses_1001_before_sending(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """1,001 ids raise BatchTooLargeError (a ValueError) and nothing reaches the server."""
        with pytest.raises(BatchTooLargeError):
            client.update_members(
                "c1",
                add=[f"u{i}" for i in range(600)],
                remove=[DeviceId(f"d{i}") for i in range(401)],
            )
        with pytest.raises(ValueError):  # noqa: PT011 - the family is the point
            client.update_members("c1", add=[f"u{i}" for i in range(1001)])
        assert emulator.request_log == []

    def test_emulator_refuses_1001_sent_raw(self, emulator: BrazeEmulator) -> None:
        """Bypassing the client, the server itself refuses 1,001 ids with Braze's message."""
        body = {
            "partner_api_key": emulator.partner_api_key,
            "client_secret": emulator.data_import_key,
            "cohort_id": "c1",
            "cohort_changes": [{"user_ids": [f"u{i}" for i in range(1001)]}],
        }
        with requests.Session() as session:
            response = session.post(
                emulator.url + "/partners/kubit/cohorts/users", data=json.dumps(body), timeout=10
            )
        assert response.status_code == 400
        assert response.json()["message"] == "Cannot send more than 1000 ids per request"


class TestIdentityRules:
    def test_anonymous_device_id_is_added(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A DeviceId of an anonymous user makes that user a member."""
        emulator.add_user(device_ids=["anon-1"])
        client.update_members("c1", add=[DeviceId("anon-1")])
        assert emulator.members("c1") == {("device_id", "anon-1")}

    def test_identified_users_device_id_is_not_added(
        self, client: CohortClient, emulator: BrazeEmulator
    ) -> None:
        """A DeviceId of an identified user succeeds but changes nothing; the external id works."""
        emulator.add_user("u1", device_ids=["dev-1"])
        response = client.update_members("c1", add=[DeviceId("dev-1")])
        assert response is not None
        assert response.message == "success"
        assert emulator.members("c1") == frozenset()
        client.update_members("c1", add=[ExternalId("u1")])
        assert emulator.members("c1") == {("external_id", "u1")}

    def test_alias_and_unknown_ids(self, client: CohortClient, emulator: BrazeEmulator) -> None:
        """Aliases match their user; unknown ids are silently ignored."""
        emulator.add_user(aliases=[("a@x.io", "email")])
        client.update_members(
            "c1", add=[UserAlias("a@x.io", "email"), "ghost", DeviceId("ghost-dev")]
        )
        assert emulator.members("c1") == {("alias", "a@x.io", "email")}
        assert emulator.request_log[-1].matched == 1


class TestCheck:
    def test_accepted_keys_change_no_cohort(self, emulator: BrazeEmulator) -> None:
        """check() succeeds with good settings and leaves every cohort's members as they were."""
        emulator.add_users(3, prefix="u")
        with emulator_client(emulator) as client:
            client.name_cohort("real", "Real")
            client.update_members("real", add=["u0", "u1", "u2"])
            before = {c: emulator.members(c) for c in emulator.cohorts()}
            result = client.check()
        assert (result.status_code, result.endpoint) == (200, emulator.url)
        assert {c: emulator.members(c) for c in before} == before
        probe = emulator.request_log[-1]
        assert (probe.endpoint, probe.applied, probe.matched, probe.removed) == (
            "users",
            True,
            0,
            1,
        )
        assert emulator.cohort_name(probe.cohort_id or "") is None  # never named: not listed

    def test_check_over_a_user_supplied_session_with_hooks(self, emulator: BrazeEmulator) -> None:
        """Over real HTTP, a caller's session hooks see the check's answer."""
        seen: list[int] = []
        session = requests.Session()
        session.hooks["response"].append(lambda r, **kw: seen.append(r.status_code))
        with emulator_client(emulator, session=session) as client:
            client.check()
        assert seen == [200]
        session.close()

    @pytest.mark.parametrize(
        ("setting", "cause"),
        [("partner_api_key", "partner_api_key"), ("data_import_key", "data_import_key")],
    )
    def test_a_wrong_key_is_named(self, emulator: BrazeEmulator, setting: str, cause: str) -> None:
        """A wrong key raises AuthenticationError naming it; nothing is applied."""
        with (
            emulator_client(emulator, **{setting: "wrong-key"}) as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.check()
        assert info.value.cause == cause
        assert not emulator.request_log[-1].applied

    def test_a_revoked_key_is_named(self, emulator: BrazeEmulator) -> None:
        """A data import key revoked in Braze is named as the data import key."""
        emulator.revoke_data_import_key(emulator.data_import_key)
        with emulator_client(emulator) as client, pytest.raises(AuthenticationError) as info:
            client.check()
        assert info.value.cause == "data_import_key"

    def test_partner_not_enabled_is_named(self, emulator: BrazeEmulator) -> None:
        """A workspace without the partner enabled gives cause partner_not_enabled."""
        workspace = emulator.create_workspace("staging", partners=())
        key = emulator.create_data_import_key(workspace)
        with emulator_client(emulator, data_import_key=key) as client:
            with pytest.raises(AuthenticationError) as info:
                client.check()
            workspace.enable_partner(emulator.partner)
            assert client.check().status_code == 200
        assert info.value.cause == "partner_not_enabled"
        assert key not in str(info.value)

    def test_a_wrong_endpoint_is_unexpected(self, emulator: BrazeEmulator) -> None:
        """An endpoint where the API is not answers 404: UnexpectedResponseError."""
        with (
            emulator_client(emulator, endpoint=f"{emulator.url}/elsewhere") as client,
            pytest.raises(UnexpectedResponseError) as info,
        ):
            client.check()
        assert info.value.status_code == 404


class TestKeysStayInTheBody:
    def test_keys_never_in_request_line_or_headers(self) -> None:
        """Over successes and every kind of failure, no key appears outside the JSON body."""
        with BrazeEmulator(record_raw=True) as emulator, emulator_client(emulator) as client:
            client.name_cohort("c1", "n")
            client.update_members("c1", add=["u1"], remove=[DeviceId("d1")])
            for status in (400, 423, 429, 500):
                emulator.fail_next(1, status)
                with pytest.raises(Exception):  # noqa: B017, PT011 - any mapped error
                    client.name_cohort("c1", "n")
            emulator.drop_next(1)
            with pytest.raises(TransportError):
                client.name_cohort("c1", "n")
            emulator.revoke_data_import_key(emulator.data_import_key)
            with pytest.raises(AuthenticationError):
                client.name_cohort("c1", "n")
            raw = emulator.raw_requests
            log = emulator.request_log
        assert len(raw) == len(log) == 8
        assert not any(r.key_outside_body for r in log)
        for line, headers in raw:
            for key in (emulator.partner_api_key, emulator.data_import_key):
                assert key.encode() not in line
                assert key.encode() not in headers
            assert b"?" not in line

    def test_keys_not_in_errors_or_logs(
        self, emulator: BrazeEmulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Errors and log records from real HTTP failures never show a key."""
        errors: list[BaseException] = []
        with caplog.at_level(logging.DEBUG), emulator_client(emulator) as client:
            emulator.fail_next(1, 500, body={"message": "echo " + emulator.data_import_key})
            emulator.drop_next(1)
            for _ in range(2):
                try:
                    client.name_cohort("c1", "n")
                except Exception as exc:
                    errors.append(exc)
        texts = [str(e) + repr(e) for e in errors] + [r.getMessage() for r in caplog.records]
        assert len(errors) == 2
        for text in texts:
            assert emulator.partner_api_key not in text
            assert emulator.data_import_key not in text
