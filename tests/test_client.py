"""CohortClient: endpoints, configuration, request bodies, response and transport error mapping."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests
import responses
import urllib3.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st
from responses import matchers
from responses.registries import OrderedRegistry

import braze_cohorts as bc
from braze_cohorts import (
    DEFAULT_TIMEOUT,
    APIError,
    AuthenticationError,
    BatchTooLargeError,
    CohortClient,
    ConfigurationError,
    DeviceId,
    ExternalId,
    InvalidIdentifierError,
    InvalidRequestError,
    RateLimitedError,
    ResourceLockedError,
    ServerError,
    Timeout,
    TransportError,
    UnexpectedResponseError,
    UserAlias,
    _endpoints,
    resolve_endpoint,
)
from doc_examples import run_doc_examples
from loopback import JSONHandler, serving

BASE = "https://rest.iad-03.braze.com"
NAME_URL = f"{BASE}/partners/kubit/cohorts"
USERS_URL = f"{BASE}/partners/kubit/cohorts/users"
PK = "partner-key"
DK = "import-key"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_client(**kwargs: Any) -> CohortClient:
    options: dict[str, Any] = {
        "partner": "kubit",
        "partner_api_key": PK,
        "data_import_key": DK,
        "clock": lambda: NOW,
    }
    options.update(kwargs)
    endpoint = options.pop("endpoint", "US-03")
    return CohortClient(endpoint, **options)


@pytest.fixture
def client() -> Iterator[CohortClient]:
    with make_client() as c:
        yield c


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def users_body(changes: list[dict[str, Any]], cohort_id: str = "c1") -> dict[str, Any]:
    return {
        "partner_api_key": PK,
        "client_secret": DK,
        "cohort_id": cohort_id,
        "cohort_changes": changes,
    }


def expect_users_post(mocked: responses.RequestsMock, body: dict[str, Any]) -> None:
    """Answer success to a POST of the users endpoint only if its JSON body is exactly ``body``."""
    mocked.post(USERS_URL, json={"message": "success"}, match=[matchers.json_params_matcher(body)])


def sent_json(rsps: responses.RequestsMock, index: int = 0) -> Any:
    body = rsps.calls[index].request.body
    assert isinstance(body, bytes)
    return json.loads(body)


# ------------------------------------------------------------------------------------------------


# Braze's published instance list, written out by hand (not derived from the code's table):
# cluster -> (REST endpoint, dashboard host). There is no US-09.
BRAZE_INSTANCES: dict[str, tuple[str, str]] = {
    **{
        f"US-0{n}": (f"https://rest.iad-0{n}.braze.com", f"dashboard-0{n}.braze.com")
        for n in range(1, 9)
    },
    "US-10": ("https://rest.us-10.braze.com", "dashboard.us-10.braze.com"),
    "EU-01": ("https://rest.fra-01.braze.eu", "dashboard-01.braze.eu"),
    "EU-02": ("https://rest.fra-02.braze.eu", "dashboard-02.braze.eu"),
    "AU-01": ("https://rest.au-01.braze.com", "dashboard.au-01.braze.com"),
    "ID-01": ("https://rest.id-01.braze.com", "dashboard.id-01.braze.com"),
    "JP-01": ("https://rest.jp-01.braze.com", "dashboard.jp-01.braze.com"),
    "KR-01": ("https://rest.kr-01.braze.com", "dashboard.kr-01.braze.com"),
}


class TestResolveEndpoint:
    def test_the_table_is_brazes_instance_list(self) -> None:
        """The code's cluster table holds exactly Braze's published clusters and hosts."""
        assert {
            name: (f"https://{rest}", dash) for name, (rest, dash) in _endpoints.CLUSTERS.items()
        } == BRAZE_INSTANCES

    @pytest.mark.parametrize(("cluster", "url"), [(c, u) for c, (u, _) in BRAZE_INSTANCES.items()])
    def test_cluster_names_map_to_rest_hosts(self, cluster: str, url: str) -> None:
        """Every documented cluster name resolves to its REST endpoint, in any case."""
        assert resolve_endpoint(cluster) == url
        assert resolve_endpoint(cluster.lower()) == url
        assert resolve_endpoint(f"  {cluster}\n") == url

    @pytest.mark.parametrize(
        ("cluster", "url", "dashboard"),
        [(c, u, d) for c, (u, d) in BRAZE_INSTANCES.items()],
    )
    def test_every_cluster_by_rest_url_host_and_dashboard(
        self, cluster: str, url: str, dashboard: str
    ) -> None:
        """Each cluster's REST URL, bare REST host, dashboard URL and bare dashboard host work."""
        host = url.removeprefix("https://")
        assert resolve_endpoint(url) == url
        assert resolve_endpoint(f"{url}/") == url
        assert resolve_endpoint(host.upper()) == url
        assert resolve_endpoint(f"https://{dashboard}/app/segments") == url
        assert resolve_endpoint(dashboard) == url
        assert resolve_endpoint(f"{dashboard.upper()}/") == url

    def test_unknown_cluster_error_lists_the_known_ones(self) -> None:
        """An unknown cluster name is refused with every known name in the message."""
        with pytest.raises(ConfigurationError) as info:
            resolve_endpoint("us-09")
        message = str(info.value)
        assert "'US-09'" in message
        for name in BRAZE_INSTANCES:
            assert name in message

    @pytest.mark.parametrize(
        "url",
        [
            "https://rest.us-11.braze.com",
            "https://rest.sg-01.braze.com",
            "https://rest.fra-03.braze.eu",
        ],
    )
    def test_any_braze_rest_url_is_accepted_as_is(self, url: str) -> None:
        """A Braze REST URL newer than the table is used as given."""
        assert resolve_endpoint(url) == url

    @settings(max_examples=200, deadline=None)
    @given(
        value=st.from_regex(r"[A-Za-z0-9_-]{12,64}", fullmatch=True),
        form=st.sampled_from(
            [
                "{}",
                "http://{}",
                "http://{}.example.com",
                "ftp://{}",
                "{}://host",
                "https://host/?k={}",
                "https://host:{}",
                "https://dashboard-{}.braze.com",
                "{}.example/path",
                " {} x",
                "US-{}",
            ]
        ),
    )
    def test_errors_never_echo_the_value(self, value: str, form: str) -> None:
        """A refused endpoint's message shows its length and shape, never the value."""
        endpoint = form.format(value)
        error = _endpoints.resolve_endpoint_or_error(endpoint)
        if isinstance(error, ConfigurationError):
            assert value not in str(error)
            assert error.__cause__ is None
            assert error.__context__ is None
            if "@" not in endpoint:
                assert f"{len(endpoint.strip())}-character" in str(error) or "cluster" in str(error)

    @settings(max_examples=60, deadline=None)
    @given(
        st.sampled_from(sorted(BRAZE_INSTANCES)).flatmap(
            lambda name: st.tuples(
                st.just(name),
                st.lists(st.booleans(), min_size=len(name), max_size=len(name)),
            )
        )
    )
    def test_cluster_names_are_case_insensitive(self, case: tuple[str, list[bool]]) -> None:
        """Any mix of upper and lower case names the same cluster."""
        name, uppers = case
        mixed = "".join(
            ch.upper() if up else ch.lower() for ch, up in zip(name, uppers, strict=True)
        )
        assert resolve_endpoint(mixed) == resolve_endpoint(name)

    @pytest.mark.parametrize(
        ("dashboard", "url"),
        [
            ("https://dashboard-03.braze.com", "https://rest.iad-03.braze.com"),
            ("https://dashboard-08.braze.com/", "https://rest.iad-08.braze.com"),
            ("https://dashboard-01.braze.com/app/segments", "https://rest.iad-01.braze.com"),
            ("https://dashboard-01.braze.eu", "https://rest.fra-01.braze.eu"),
            ("https://DASHBOARD-02.braze.eu", "https://rest.fra-02.braze.eu"),
            ("https://dashboard.au-01.braze.com", "https://rest.au-01.braze.com"),
            ("dashboard-05.braze.com", "https://rest.iad-05.braze.com"),
            ("Dashboard-05.braze.com/app/segments", "https://rest.iad-05.braze.com"),
        ],
    )
    def test_dashboard_urls_map_to_rest_hosts(self, dashboard: str, url: str) -> None:
        """A dashboard URL (path ignored) means its cluster's REST endpoint."""
        assert resolve_endpoint(dashboard) == url

    @pytest.mark.parametrize(
        ("given_url", "url"),
        [
            ("https://rest.iad-03.braze.com", "https://rest.iad-03.braze.com"),
            ("https://rest.iad-03.braze.com/", "https://rest.iad-03.braze.com"),
            ("rest.fra-01.braze.eu", "https://rest.fra-01.braze.eu"),
            ("rest.fra-01.braze.eu/", "https://rest.fra-01.braze.eu"),
            ("HTTPS://Rest.IAD-01.Braze.com", "https://rest.iad-01.braze.com"),
            ("https://proxy.example.com/braze/", "https://proxy.example.com/braze"),
            ("https://proxy.example.com:8443/a/b", "https://proxy.example.com:8443/a/b"),
            ("https://rest.iad-09.braze.com", "https://rest.iad-09.braze.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.5.6.7/prefix/", "http://127.5.6.7/prefix"),
            ("http://localhost:5000", "http://localhost:5000"),
            ("http://[::1]:9000", "http://[::1]:9000"),
            ("https://[2001:db8::1]:443", "https://[2001:db8::1]:443"),
        ],
    )
    def test_urls_are_accepted_and_normalised(self, given_url: str, url: str) -> None:
        """REST URLs, other https base URLs and loopback http URLs are accepted."""
        assert resolve_endpoint(given_url) == url

    @pytest.mark.parametrize(
        "endpoint",
        [
            "",
            "   ",
            "US-09",
            "us-00",
            "EU-03",
            "AU-02",
            "XX-01",
            "US03",
            "rest.iad-03",
            "example.com",
            "ftp://rest.iad-03.braze.com",
            "file:///etc/passwd",
            "http://example.com",
            "http://rest.iad-03.braze.com",
            "http://10.0.0.1",
            "http://0.0.0.0:8080",
            "http://::ffff:127.0.0.1",
            "http://evil.localhost",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "https://",
            "https:///path",
            "https://host?x=1",
            "https://host/?",
            "https://host#frag",
            "https://host:99999",
            "https://host:port",
            "https://ho st",
            "https://host/\x00",
            "https://dashboard-09.braze.com",
            "http://dashboard-03.braze.com",
            "//rest.iad-03.braze.com",
        ],
    )
    def test_everything_else_is_refused(self, endpoint: str) -> None:
        """Unknown clusters, other schemes, remote http and odd URLs raise ConfigurationError."""
        with pytest.raises(ConfigurationError):
            resolve_endpoint(endpoint)

    def test_refusal_is_a_value_error(self) -> None:
        """ConfigurationError is also a ValueError, so generic handlers catch it."""
        with pytest.raises(ValueError, match="http://"):
            resolve_endpoint("http://example.com")

    def test_non_str_is_refused(self) -> None:
        """A non-str endpoint is a configuration error, not a TypeError from deep inside."""
        with pytest.raises(ConfigurationError, match="str"):
            resolve_endpoint(3)  # type: ignore[arg-type]

    def test_userinfo_is_refused_without_echoing_it(self) -> None:
        """A URL with user:password@ is refused and the password is not repeated."""
        with pytest.raises(ConfigurationError) as info:
            resolve_endpoint("https://user:hunter2@rest.iad-03.braze.com")
        assert "hunter2" not in str(info.value)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=40) | st.from_regex(r"(https?|ftp)://[a-z0-9.:\[\]@?#/-]{0,30}"))
    def test_any_string_resolves_safely_or_is_refused(self, endpoint: str) -> None:
        """Any input gives an https URL, a loopback http URL, or a ConfigurationError."""
        try:
            url = resolve_endpoint(endpoint)
        except ConfigurationError:
            return
        assert url.startswith(("https://", "http://"))
        assert not url.endswith("/")
        assert "?" not in url
        assert "#" not in url
        assert "@" not in url
        if url.startswith("http://"):
            host = url[len("http://") :].split("/")[0]
            assert host.startswith(("127.", "localhost", "[::1]"))

    @settings(max_examples=100, deadline=None)
    @given(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){1,3}", fullmatch=True),
        st.from_regex(r"(/[a-z0-9_-]{1,8}){0,3}/?", fullmatch=True),
    )
    def test_https_base_urls_keep_host_and_path(self, host: str, path: str) -> None:
        """Any https host with a path prefix is kept, minus the trailing slash."""
        if host.startswith("dashboard"):
            return
        assert resolve_endpoint(f"https://{host}{path}") == f"https://{host}{path.rstrip('/')}"


class TestTimeout:
    def test_default_timeout(self) -> None:
        """DEFAULT_TIMEOUT is a Timeout with positive connect and read values."""
        assert isinstance(DEFAULT_TIMEOUT, Timeout)
        assert Timeout() == DEFAULT_TIMEOUT
        assert DEFAULT_TIMEOUT.as_tuple() == (5.0, 30.0)

    @pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5", None, True])
    def test_invalid_values_are_refused(self, bad: object) -> None:
        """Zero, negative, infinite, non-numeric and bool timeouts are refused."""
        with pytest.raises(ConfigurationError, match="connect"):
            Timeout(connect=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="read"):
            Timeout(read=bad)  # type: ignore[arg-type]

    def test_timeout_is_frozen(self) -> None:
        """Timeout values cannot be changed after construction."""
        import attrs

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            DEFAULT_TIMEOUT.read = 1.0  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("given_timeout", "expected"),
        [
            (Timeout(connect=1, read=2), Timeout(connect=1, read=2)),
            (7.5, Timeout(connect=7.5, read=7.5)),
            (3, Timeout(connect=3, read=3)),
            ((2.0, 60.0), Timeout(connect=2.0, read=60.0)),
        ],
    )
    def test_client_accepts_timeout_forms(self, given_timeout: Any, expected: Timeout) -> None:
        """The client takes a Timeout, one number, or a (connect, read) tuple."""
        with make_client(timeout=given_timeout) as c:
            assert c.timeout == expected

    @pytest.mark.parametrize("bad", ["10", (1.0,), (1.0, 2.0, 3.0), None, (0, 5), False])
    def test_client_refuses_bad_timeouts(self, bad: Any) -> None:
        """Anything else given as timeout is a ConfigurationError."""
        with pytest.raises(ConfigurationError):
            make_client(timeout=bad)

    def test_timeout_is_passed_to_requests(self, mocked: responses.RequestsMock) -> None:
        """Each request is sent with the (connect, read) timeout."""
        mocked.post(NAME_URL, json={"message": "success"})
        with make_client(timeout=(1.5, 9.0)) as c:
            c.name_cohort("c1", "Power users")
        kwargs = mocked.calls[0].request.req_kwargs  # type: ignore[attr-defined]
        assert kwargs["timeout"] == (1.5, 9.0)


class TestClientConfiguration:
    @pytest.mark.parametrize("partner", ["", "a/b", "a b", "..", ".", "kü", "a?b", "a%2F", "a#"])
    def test_bad_partner_is_refused(self, partner: str) -> None:
        """A partner that is not a safe URL path segment is refused."""
        with pytest.raises(ConfigurationError, match="partner"):
            make_client(partner=partner)

    @pytest.mark.parametrize("field", ["partner_api_key", "data_import_key"])
    @pytest.mark.parametrize("value", ["", " s3cr3t", "s3cr3t\n", "s3\x00cr3t", None, 123])
    def test_bad_keys_are_refused(self, field: str, value: object) -> None:
        """Empty, padded, control-character or non-str keys are refused, naming the field."""
        with pytest.raises(ConfigurationError, match=field) as info:
            make_client(**{field: value})
        if isinstance(value, str) and value.strip():
            assert value.strip() not in str(info.value)

    def test_missing_keyword_is_a_type_error(self) -> None:
        """Partner and keys are keyword-only and required."""
        with pytest.raises(TypeError):
            CohortClient("US-03", "kubit", PK, DK)  # type: ignore[call-arg]

    @pytest.mark.parametrize("pool_size", [0, -3, True, 2.5, "8"])
    def test_bad_pool_size_is_refused(self, pool_size: object) -> None:
        """pool_size must be a positive int."""
        with pytest.raises(ConfigurationError, match="pool_size"):
            make_client(pool_size=pool_size)

    def test_bad_clock_and_session_are_refused(self) -> None:
        """A clock that cannot be called and a session of the wrong type are refused."""
        with pytest.raises(ConfigurationError, match="clock"):
            make_client(clock=5)
        with pytest.raises(ConfigurationError, match="session"):
            make_client(session=object())

    def test_properties(self) -> None:
        """endpoint, partner and timeout show the resolved configuration."""
        with make_client(endpoint="eu-02", partner="my_partner-1.x~") as c:
            assert c.endpoint == "https://rest.fra-02.braze.eu"
            assert c.partner == "my_partner-1.x~"
            assert c.timeout == DEFAULT_TIMEOUT

    def test_repr_hides_keys(self) -> None:
        """repr shows the endpoint and partner, and masks both keys."""
        with make_client() as c:
            text = repr(c)
        assert text == (
            "CohortClient(endpoint='https://rest.iad-03.braze.com', partner='kubit', "
            "partner_api_key='***', data_import_key='***')"
        )
        assert PK not in str(c)

    def test_own_session_has_pool_and_no_retries(self) -> None:
        """The client's own session pools pool_size connections and never retries."""
        with make_client(pool_size=48) as c:
            adapter = c._session.get_adapter(BASE)
            assert isinstance(adapter, requests.adapters.HTTPAdapter)
            assert adapter._pool_maxsize == 48  # type: ignore[attr-defined]
            assert adapter.max_retries.total == 0
            assert c._session.get_adapter("http://127.0.0.1") is adapter

    def test_close_closes_own_session(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """close() closes the session the client made, once, and is idempotent."""
        c = make_client()
        closed: list[bool] = []
        monkeypatch.setattr(c._session, "close", lambda: closed.append(True))
        c.close()
        c.close()
        assert closed == [True]

    def test_caller_session_is_used_and_left_open(self, mocked: responses.RequestsMock) -> None:
        """A session passed in is used for requests and is not closed by the client."""
        mocked.post(NAME_URL, json={"message": "success"})
        session = requests.Session()
        closed: list[bool] = []
        session.close = lambda: closed.append(True)  # type: ignore[method-assign]
        with make_client(session=session) as c:
            c.name_cohort("c1", "n")
            assert c._session is session
        assert closed == []

    def test_closed_client_refuses_calls(self, mocked: responses.RequestsMock) -> None:
        """After close(), calls fail with a clear error and send nothing."""
        c = make_client()
        c.close()
        with pytest.raises(ConfigurationError, match="closed"):
            c.name_cohort("c1", "n")
        with pytest.raises(ConfigurationError, match="closed"):
            c.update_members("c1", add=["u1"])
        assert len(mocked.calls) == 0

    def test_path_prefix_of_base_url_is_kept(self, mocked: responses.RequestsMock) -> None:
        """Requests go to {base}/partners/{partner}/... under the base URL's path prefix."""
        mocked.post("https://proxy.example.com/braze/partners/kubit/cohorts", json={})
        mocked.post("https://proxy.example.com/braze/partners/kubit/cohorts/users", json={})
        with make_client(endpoint="https://proxy.example.com/braze/") as c:
            c.name_cohort("c1", "n")
            c.update_members("c1", add=["u"])
        assert [call.request.url for call in mocked.calls] == [
            "https://proxy.example.com/braze/partners/kubit/cohorts",
            "https://proxy.example.com/braze/partners/kubit/cohorts/users",
        ]


class TestNameCohort:
    def test_sends_keys_in_body_with_headers(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """The body holds both keys, the cohort, its name and created_at; headers are set."""
        mocked.post(
            NAME_URL,
            json={"message": "success"},
            match=[
                matchers.json_params_matcher(
                    {
                        "partner_api_key": PK,
                        "client_secret": DK,
                        "cohort_id": "c1",
                        "name": "Power users",
                        "created_at": "2023-11-14T22:13:20Z",
                    }
                ),
                matchers.header_matcher(
                    {
                        "User-Agent": f"braze-cohorts/{bc.__version__}",
                        "Content-Type": "application/json",
                    }
                ),
            ],
        )
        result = client.name_cohort("c1", "Power users")
        assert result == bc.CohortResponse(
            status_code=200, message="success", elapsed=result.elapsed
        )
        assert result.elapsed >= 0

    def test_aware_created_at_is_sent_as_utc_iso(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """An aware datetime in another zone goes out as the same instant in UTC, seconds, Z."""
        mocked.post(NAME_URL, json={"message": "success"})
        berlin = dt.timezone(dt.timedelta(hours=1))
        client.name_cohort(
            "c1", "n", created_at=dt.datetime(2024, 3, 1, 9, 30, 15, 999_999, tzinfo=berlin)
        )
        created = sent_json(mocked)["created_at"]
        assert created == "2024-03-01T08:30:15Z"

    def test_default_created_at_uses_clock(self, mocked: responses.RequestsMock) -> None:
        """Without created_at, the injected clock's now (UTC) is sent."""
        mocked.post(NAME_URL, json={"message": "success"})
        with make_client(clock=lambda: 86_400.5) as c:
            c.name_cohort("c1", "n")
        assert sent_json(mocked)["created_at"] == "1970-01-02T00:00:00Z"

    @settings(max_examples=100, deadline=None)
    @given(
        st.datetimes(
            min_value=dt.datetime(1970, 1, 2),
            max_value=dt.datetime(9998, 12, 31),
            timezones=st.sampled_from(
                [
                    dt.timezone.utc,
                    dt.timezone(dt.timedelta(hours=-7)),
                    dt.timezone(dt.timedelta(hours=5, minutes=30)),
                ]
            ),
        )
    )
    def test_created_at_is_whole_seconds_with_z(self, when: dt.datetime) -> None:
        """Any aware datetime is sent as YYYY-MM-DDTHH:MM:SSZ: its instant, floored to seconds."""
        with responses.RequestsMock() as mocked, make_client() as c:
            mocked.post(NAME_URL, json={"message": "success"})
            c.name_cohort("c1", "n", created_at=when)
            created = sent_json(mocked)["created_at"]
        assert len(created) == 20
        assert created.endswith("Z")
        parsed = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert parsed == when.astimezone(dt.timezone.utc).replace(microsecond=0)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"created_at": dt.datetime(2024, 1, 1)}, "timezone-aware"),
            ({"created_at": "2024-01-01T00:00:00Z"}, "datetime"),
            ({"created_at": dt.date(2024, 1, 1)}, "datetime"),
            ({"name": ""}, "name"),
            ({"name": "   "}, "name"),
            ({"name": 5}, "name"),
            ({"cohort_id": ""}, "cohort_id"),
            ({"cohort_id": " "}, "cohort_id"),
            ({"cohort_id": 17}, "cohort_id"),
        ],
    )
    def test_invalid_arguments_send_nothing(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        kwargs: dict[str, Any],
        match: str,
    ) -> None:
        """A naive datetime, a blank name or cohort id is refused before any request."""
        args: dict[str, Any] = {"cohort_id": "c1", "name": "n", **kwargs}
        with pytest.raises(ConfigurationError, match=match):
            client.name_cohort(**args)
        assert len(mocked.calls) == 0


class TestUpdateMembers:
    def test_external_ids_and_plain_strings(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Plain str and ExternalId both go out as user_ids, in order, in one add object."""
        expect_users_post(mocked, users_body([{"user_ids": ["u1", "U1", "u2"]}]))
        result = client.update_members("c1", add=["u1", ExternalId("U1"), "u2"])
        assert result is not None
        assert result.message == "success"

    def test_all_kinds_in_add_and_remove(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Each object carries only its non-empty lists; the remove object has should_remove."""
        expected = users_body(
            [
                {
                    "user_ids": ["u1"],
                    "device_ids": ["d1"],
                    "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}],
                },
                {"device_ids": ["d2"], "should_remove": True},
            ]
        )
        expect_users_post(mocked, expected)
        client.update_members(
            "c1",
            add=[DeviceId("d1"), "u1", UserAlias(alias_name="a@x.io", alias_label="email")],
            remove=[DeviceId("d2")],
        )
        assert len(mocked.calls) == 1

    def test_only_removes(self, client: CohortClient, mocked: responses.RequestsMock) -> None:
        """With nothing to add, the body has just the remove object."""
        expect_users_post(mocked, users_body([{"user_ids": ["u9"], "should_remove": True}]))
        client.update_members("c1", remove=iter(["u9"]))

    def test_nothing_to_send_makes_no_request(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Empty add and remove return None without a request."""
        assert client.update_members("c1") is None
        assert client.update_members("c1", add=[], remove=iter(())) is None
        assert len(mocked.calls) == 0

    def test_exactly_1000_ids_is_one_request(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """1,000 ids over add and remove together go out in a single request."""
        mocked.post(USERS_URL, json={"message": "success"})
        client.update_members(
            "c1", add=[f"a{i}" for i in range(600)], remove=[DeviceId(f"d{i}") for i in range(400)]
        )
        body = sent_json(mocked)
        assert len(body["cohort_changes"][0]["user_ids"]) == 600
        assert len(body["cohort_changes"][1]["device_ids"]) == 400
        assert len(mocked.calls) == 1

    @pytest.mark.parametrize(("n_add", "n_remove"), [(1001, 0), (0, 1001), (600, 401), (1, 1000)])
    def test_more_than_1000_ids_is_refused(
        self, client: CohortClient, mocked: responses.RequestsMock, n_add: int, n_remove: int
    ) -> None:
        """More than 1,000 ids in total raise BatchTooLargeError (a ValueError), sending nothing."""
        with pytest.raises(BatchTooLargeError) as info:
            client.update_members(
                "c1",
                add=[f"a{i}" for i in range(n_add)],
                remove=[f"r{i}" for i in range(n_remove)],
            )
        assert isinstance(info.value, ValueError)
        assert info.value.limit == 1000
        assert len(mocked.calls) == 0

    def test_endless_input_stops_at_the_limit(self, client: CohortClient) -> None:
        """An endless iterable is refused once it passes the limit instead of being drained."""

        def endless() -> Iterator[str]:
            n = 0
            while True:
                n += 1
                yield f"u{n}"

        with pytest.raises(BatchTooLargeError):
            client.update_members("c1", add=endless())

    def test_duplicates_are_sent_once(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """The same user twice in a list is sent once and counted once against the limit."""
        mocked.post(USERS_URL, json={"message": "success"})
        client.update_members(
            "c1", add=["u1", ExternalId("u1"), *[f"x{i}" for i in range(999)]], remove=[]
        )
        assert sent_json(mocked)["cohort_changes"][0]["user_ids"][:2] == ["u1", "x0"]

    @pytest.mark.parametrize(
        ("add", "remove"),
        [
            (["u1"], ["u1"]),
            (["u1"], [ExternalId("u1")]),
            ([DeviceId("d")], ["x", DeviceId("d")]),
            (
                [UserAlias(alias_name="n", alias_label="l")],
                [UserAlias(alias_name="n", alias_label="l")],
            ),
        ],
    )
    def test_same_user_in_add_and_remove_is_refused(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        add: list[Any],
        remove: list[Any],
    ) -> None:
        """One user both added and removed is a ValueError and nothing is sent."""
        with pytest.raises(ConfigurationError, match="both"):
            client.update_members("c1", add=add, remove=remove)
        assert len(mocked.calls) == 0

    def test_same_value_of_different_kinds_is_no_conflict(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """External id 'x' and device id 'x' are different users."""
        mocked.post(USERS_URL, json={"message": "success"})
        client.update_members("c1", add=["x"], remove=[DeviceId("x")])
        assert len(mocked.calls) == 1

    @pytest.mark.parametrize("bad", [123, "", " u1", None, b"u1"])
    def test_invalid_items_are_refused(
        self, client: CohortClient, mocked: responses.RequestsMock, bad: object
    ) -> None:
        """An item that is not a valid identifier raises InvalidIdentifierError; nothing is sent."""
        with pytest.raises(InvalidIdentifierError):
            client.update_members("c1", add=["ok", bad])  # type: ignore[list-item]
        assert len(mocked.calls) == 0

    @pytest.mark.parametrize("single", ["u1", ExternalId("u1"), b"u1"])
    def test_single_identifier_instead_of_iterable_is_refused(
        self, client: CohortClient, single: Any
    ) -> None:
        """add='u1' would send 'u' and '1'; it is refused instead."""
        with pytest.raises(ConfigurationError, match="iterable"):
            client.update_members("c1", add=single)

    def test_blank_cohort_id_is_refused(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """A blank cohort id is refused before any request."""
        with pytest.raises(ConfigurationError, match="cohort_id"):
            client.update_members("", add=["u1"])
        assert len(mocked.calls) == 0

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.from_regex(r"[a-zA-Z0-9@._-]{1,12}", fullmatch=True),
                st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True).map(DeviceId),
                st.tuples(
                    st.from_regex(r"[a-z0-9@.]{1,8}", fullmatch=True),
                    st.sampled_from(["email", "phone"]),
                ).map(lambda t: UserAlias(alias_name=t[0], alias_label=t[1])),
            ),
            max_size=60,
        ),
        st.data(),
    )
    def test_body_carries_exactly_the_given_users(self, users: list[Any], data: Any) -> None:
        """For any mix of kinds split into add and remove, every user is sent once, in its side."""
        refs = {bc.as_ref(u).key: u for u in users}
        items = list(refs.values())
        flags = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
        add = [u for u, f in zip(items, flags, strict=True) if f]
        remove = [u for u, f in zip(items, flags, strict=True) if not f]
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.post(USERS_URL, json={"message": "success"})
            with make_client() as c:
                result = c.update_members("c1", add=add, remove=remove)
            if not items:
                assert result is None
                assert len(rsps.calls) == 0
                return
            body = sent_json(rsps)
        sides: dict[bool, set[str]] = {False: set(), True: set()}
        for change in body["cohort_changes"]:
            assert set(change) <= {"user_ids", "device_ids", "aliases", "should_remove"}
            assert all(change[k] for k in ("user_ids", "device_ids", "aliases") if k in change)
            removing = change.get("should_remove", False)
            keys = sides[removing]
            keys.update(ExternalId(v).key for v in change.get("user_ids", []))
            keys.update(DeviceId(v).key for v in change.get("device_ids", []))
            keys.update(UserAlias(**a).key for a in change.get("aliases", []))
        assert len(body["cohort_changes"]) == (1 if add else 0) + (1 if remove else 0)
        assert sides[False] == {bc.as_ref(u).key for u in add}
        assert sides[True] == {bc.as_ref(u).key for u in remove}


class TestPlainIdFastPath:
    """Lists and tuples of plain str take a bulk path; it must behave like the general one."""

    @settings(max_examples=150, deadline=None)
    @given(
        add=st.lists(st.sampled_from(["u1", "u2", "u3", " u4", "", "u\x00"]), max_size=6),
        remove=st.lists(st.sampled_from(["u3", "u5", "u6", "u7 "]), max_size=6),
    )
    def test_list_and_generator_inputs_send_the_same_or_fail_the_same(
        self, add: list[str], remove: list[str]
    ) -> None:
        """The same ids as lists (bulk path) and as generators (general path) agree."""
        outcomes = []
        for as_given in (lambda xs: xs, lambda xs: (x for x in xs)):
            with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
                rsps.post(USERS_URL, json={"message": "success"})
                with make_client() as client:
                    try:
                        client.update_members("c1", add=as_given(add), remove=as_given(remove))
                    except bc.BrazeCohortsError as exc:
                        outcomes.append(type(exc).__name__)
                        continue
                outcomes.append(json.loads(rsps.calls[0].request.body) if rsps.calls else None)
        assert outcomes[0] == outcomes[1]

    def test_more_than_1000_plain_ids_are_refused(self, client: CohortClient) -> None:
        """A list of 1,001 distinct ids is refused before anything is sent."""
        with pytest.raises(bc.BatchTooLargeError):
            client.update_members("c1", add=[f"u{i}" for i in range(1001)])


class TestResponseMapping:
    @pytest.mark.parametrize(
        ("status", "error_type", "retryable"),
        [
            (400, InvalidRequestError, False),
            (401, AuthenticationError, False),
            (423, ResourceLockedError, True),
            (429, RateLimitedError, True),
            (500, ServerError, True),
            (502, ServerError, True),
            (503, ServerError, True),
            (599, ServerError, True),
            (403, UnexpectedResponseError, False),
            (404, UnexpectedResponseError, False),
            (409, UnexpectedResponseError, False),
            (418, UnexpectedResponseError, False),
        ],
    )
    def test_status_maps_to_error(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        status: int,
        error_type: type[APIError],
        retryable: bool,
    ) -> None:
        """Each non-2XX status raises its error class, carrying status, message, errors, path."""
        mocked.post(
            USERS_URL,
            status=status,
            json={"message": "Braze says no", "errors": ["e1", {"k": "v"}]},
        )
        with pytest.raises(error_type) as info:
            client.update_members("c1", add=["u1"])
        error = info.value
        assert type(error) is error_type
        assert error.status_code == status
        assert error.message == "Braze says no"
        assert error.errors == ("e1", {"k": "v"})
        assert error.path == "/partners/kubit/cohorts/users"
        assert error.retryable is retryable
        assert str(error) == f"HTTP {status} from POST /partners/kubit/cohorts/users: Braze says no"

    def test_400_keeps_brazes_message(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """A 400 keeps Braze's own message."""
        mocked.post(NAME_URL, status=400, json={"message": "created_at must be ISO-8601"})
        with pytest.raises(InvalidRequestError, match="created_at must be ISO-8601"):
            client.name_cohort("c1", "n")

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_redirects_are_refused_not_followed(
        self, client: CohortClient, mocked: responses.RequestsMock, status: int
    ) -> None:
        """A 3xx is an UnexpectedResponseError and the Location is never requested."""
        mocked.post(NAME_URL, status=status, headers={"Location": "https://evil.example/steal"})
        target = mocked.post("https://evil.example/steal", json={})
        mocked.get("https://evil.example/steal", json={})
        with pytest.raises(UnexpectedResponseError, match="redirect") as info:
            client.name_cohort("c1", "n")
        assert info.value.status_code == status
        assert not info.value.retryable
        assert target.call_count == 0
        assert len(mocked.calls) == 1

    @pytest.mark.parametrize(
        ("message", "cause"),
        [
            ("Invalid partner API key", "partner_api_key"),
            ("invalid PARTNER_API_KEY", "partner_api_key"),
            ("Invalid client secret", "data_import_key"),
            ("The data import key was revoked", "data_import_key"),
            ("Partner not enabled for this customer", "partner_not_enabled"),
            ("PARTNER NOT ENABLED", "partner_not_enabled"),
            ("Partner not enabled for client with client secret: ***", "partner_not_enabled"),
            ("Unauthorized access", "unknown"),
            ("", "unknown"),
        ],
    )
    def test_401_says_which_credential(
        self, client: CohortClient, mocked: responses.RequestsMock, message: str, cause: str
    ) -> None:
        """A 401's cause is read from Braze's message, case-insensitively."""
        mocked.post(NAME_URL, status=401, json={"message": message})
        with pytest.raises(AuthenticationError) as info:
            client.name_cohort("c1", "n")
        assert info.value.cause == cause
        assert info.value.message == (message or "Unauthorized")

    def test_2xx_errors_are_kept_and_logged(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 2XX body with errors is success, the errors are returned and a WARNING counts them."""
        mocked.post(
            USERS_URL,
            status=201,
            json={"message": "success", "errors": ["bad id", "another"]},
        )
        with caplog.at_level(logging.WARNING, logger="braze_cohorts"):
            result = client.update_members("c1", add=["u1"])
        assert result is not None
        assert result.status_code == 201
        assert result.errors == ("bad id", "another")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "2 errors" in warnings[0].getMessage()

    def test_2xx_errors_that_are_not_a_list_are_kept(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """An errors value that is not a list is kept as one error."""
        mocked.post(USERS_URL, json={"message": "success", "errors": {"u1": "unknown"}})
        result = client.update_members("c1", add=["u1"])
        assert result is not None
        assert result.errors == ({"u1": "unknown"},)

    @pytest.mark.parametrize("style", [str.lower, str.upper, lambda s: s])
    def test_rate_limit_headers_any_case(
        self, client: CohortClient, mocked: responses.RequestsMock, style: Any
    ) -> None:
        """X-RateLimit-* headers are parsed whatever their case."""
        mocked.post(
            USERS_URL,
            json={"message": "success"},
            headers={
                style("X-RateLimit-Limit"): "250000",
                style("X-RateLimit-Remaining"): "17",
                style("X-RateLimit-Reset"): "1700000100",
            },
        )
        result = client.update_members("c1", add=["u1"])
        assert result is not None
        assert result.rate_limit == bc.RateLimitInfo(limit=250000, remaining=17, reset=1.7000001e9)

    def test_missing_or_garbled_rate_limit_headers(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Absent or unparsable rate-limit headers give None fields, not a crash."""
        mocked.post(
            USERS_URL,
            json={"message": "success"},
            headers={"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "nan"},
        )
        result = client.update_members("c1", add=["u1"])
        assert result is not None
        assert result.rate_limit == bc.RateLimitInfo()

    @pytest.mark.parametrize(
        ("headers", "wait"),
        [
            ({"Retry-After": "30"}, 30.0),
            ({"retry-after": "2.5"}, 2.5),
            ({"RETRY-AFTER": "0"}, 0.0),
            ({"Retry-After": "-5"}, 0.0),
            ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90.0),
            ({"Retry-After": email.utils.formatdate(NOW - 90, usegmt=True)}, 0.0),
            ({"X-RateLimit-Reset": str(int(NOW) + 42)}, 42.0),
            ({"x-ratelimit-reset": str(int(NOW) + 7)}, 7.0),
            ({"X-RateLimit-Reset": str(int(NOW) - 7)}, 0.0),
            ({"Retry-After": "soon", "X-RateLimit-Reset": str(int(NOW) + 5)}, 5.0),
            ({"Retry-After": "12", "X-RateLimit-Reset": str(int(NOW) + 99)}, 12.0),
            ({}, None),
            ({"Retry-After": "soon"}, None),
        ],
    )
    def test_429_wait_from_headers(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        headers: dict[str, str],
        wait: float | None,
    ) -> None:
        """retry_after comes from Retry-After (seconds or date), else X-RateLimit-Reset - now."""
        mocked.post(USERS_URL, status=429, json={"message": "rate limited"}, headers=headers)
        with pytest.raises(RateLimitedError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.retry_after == wait

    @pytest.mark.parametrize("status", [200, 400, 500, 502])
    @pytest.mark.parametrize(
        "body",
        [
            b"<html><body>Bad gateway " + b"x" * 5000 + b"</body></html>",
            b"\xff\xfe\x00garbage",
            b"[1, 2, 3]",
            b'"just a string"',
            b"",
        ],
    )
    def test_odd_bodies_do_not_crash(
        self, client: CohortClient, mocked: responses.RequestsMock, status: int, body: bytes
    ) -> None:
        """Non-JSON, non-object or empty bodies give a short description, never a crash."""
        mocked.post(NAME_URL, status=status, body=body, content_type="text/html")
        if status == 200:
            result = client.name_cohort("c1", "n")
            message = result.message
        else:
            with pytest.raises(APIError) as info:
                client.name_cohort("c1", "n")
            message = info.value.message
            assert message
        assert len(message) < 300

    def test_non_json_body_message_describes_it(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """The description names the content type, the size and the start of the body."""
        mocked.post(
            NAME_URL, status=502, body=b"<h1>Bad   Gateway</h1>\n", content_type="text/html"
        )
        with pytest.raises(ServerError) as info:
            client.name_cohort("c1", "n")
        assert "text/html" in info.value.message
        assert "23 bytes" in info.value.message
        assert "<h1>Bad Gateway</h1>" in info.value.message

    def test_empty_error_body_uses_reason(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Without a body, the message is the HTTP reason phrase."""
        mocked.post(NAME_URL, status=503, body=b"")
        with pytest.raises(ServerError, match="Service Unavailable"):
            client.name_cohort("c1", "n")

    def test_one_info_line_per_call_without_ids(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each call logs one INFO line with path, status and the id count, never the ids."""
        mocked.post(USERS_URL, json={"message": "success"})
        with caplog.at_level(logging.DEBUG, logger="braze_cohorts"):
            client.update_members("c1", add=["user-AAA", "user-BBB"], remove=["user-CCC"])
        lines = [r for r in caplog.records if r.name == "braze_cohorts._client"]
        assert len(lines) == 1
        text = lines[0].getMessage()
        assert lines[0].levelno == logging.INFO
        assert "/partners/kubit/cohorts/users" in text
        assert "200" in text
        assert "3 ids" in text
        assert "user-" not in text

    def test_ordered_429_then_200(self) -> None:
        """The client maps each response of a sequence independently (no state between calls)."""
        with responses.RequestsMock(registry=OrderedRegistry) as rsps:
            rsps.post(USERS_URL, status=429, json={"message": "slow"}, headers={"Retry-After": "1"})
            rsps.post(USERS_URL, status=200, json={"message": "success"})
            with make_client() as c:
                with pytest.raises(RateLimitedError):
                    c.update_members("c1", add=["u1"])
                result = c.update_members("c1", add=["u1"])
        assert result is not None
        assert result.status_code == 200


def _connect_error() -> requests.exceptions.ConnectionError:
    pool = urllib3.HTTPSConnectionPool("rest.iad-03.braze.com")
    reason = urllib3.exceptions.NewConnectionError(pool, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(pool, "/partners/kubit/cohorts", reason)
    )


class TestTransportErrors:
    @pytest.mark.parametrize(
        ("exc", "unknown"),
        [
            (requests.exceptions.ConnectTimeout("connect timed out"), False),
            (_connect_error(), False),
            (requests.exceptions.ReadTimeout("read timed out"), True),
            (
                requests.exceptions.ConnectionError(
                    urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
                ),
                True,
            ),
            (requests.exceptions.ChunkedEncodingError("broken chunk"), True),
            (requests.exceptions.SSLError("bad handshake"), True),
            (requests.exceptions.RequestException("odd"), True),
            (ConnectionResetError(104, "Connection reset by peer"), True),
        ],
    )
    def test_transport_errors_are_translated(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        exc: Exception,
        unknown: bool,
    ) -> None:
        """Connect failures are 'not sent'; every other failure marks the outcome unknown."""
        mocked.post(USERS_URL, body=exc)
        with pytest.raises(TransportError) as info:
            client.update_members("c1", add=["u1"])
        assert info.value.outcome_unknown is unknown
        assert info.value.retryable
        assert info.value.__cause__ is exc
        assert type(exc).__name__ in str(info.value)
        assert "/partners/kubit/cohorts/users" in str(info.value)


class _Handler(JSONHandler):
    """Answers each POST with its own cohort_id and id count, after recording the request."""

    records: ClassVar[list[tuple[str, dict[str, str], Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        with self.lock:
            self.records.append((self.path, dict(self.headers), body))
        count = sum(len(c.get("user_ids", [])) for c in body.get("cohort_changes", []))
        message = f"{body['cohort_id']}:{count}"
        self.reply(200, {"message": message}, {"X-RateLimit-Remaining": "99"})


@pytest.fixture
def loopback_server() -> Iterator[str]:
    _Handler.records = []
    with serving(_Handler) as url:
        yield url


class TestOverRealSockets:
    def test_concurrent_calls_from_threads(self, loopback_server: str) -> None:
        """Many threads share one client; each gets the answer to its own request."""
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        with make_client(endpoint=loopback_server, pool_size=8) as c:

            def work(n: int) -> None:
                try:
                    for round_ in range(5):
                        answer = c.update_members(
                            f"c{n}", add=[f"u{n}-{i}" for i in range(n + round_)] or ["x"]
                        )
                        assert answer is not None
                        assert answer.rate_limit.remaining == 99
                        results[n * 10 + round_] = answer.message
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []
        assert results == {n * 10 + r: f"c{n}:{n + r}" for n in range(1, 9) for r in range(5)}
        path, headers, body = _Handler.records[0]
        assert path == "/partners/kubit/cohorts/users"
        assert headers["User-Agent"] == f"braze-cohorts/{bc.__version__}"
        assert headers["Content-Type"] == "application/json"
        assert body["partner_api_key"] == PK
        assert body["client_secret"] == DK

    def test_refused_connection_is_not_sent(self) -> None:
        """A refused connection is a TransportError whose outcome is known (not sent)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with (
            make_client(endpoint=f"http://127.0.0.1:{port}") as c,
            pytest.raises(TransportError) as info,
        ):
            c.name_cohort("c1", "n")
        assert info.value.outcome_unknown is False

    def test_silent_server_times_out_with_unknown_outcome(self) -> None:
        """A server that accepts but never answers gives a read timeout, outcome unknown."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            with (
                make_client(endpoint=f"http://127.0.0.1:{port}", timeout=(2.0, 0.2)) as c,
                pytest.raises(TransportError) as info,
            ):
                c.update_members("c1", add=["u1"])
        assert info.value.outcome_unknown is True
        assert "ReadTimeout" in str(info.value)

    def test_server_that_hangs_up_gives_unknown_outcome(self) -> None:
        """A connection closed after the request was read marks the outcome unknown."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]

            def hang_up() -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)

            thread = threading.Thread(target=hang_up, daemon=True)
            thread.start()
            with (
                make_client(endpoint=f"http://127.0.0.1:{port}") as c,
                pytest.raises(TransportError) as info,
            ):
                c.update_members("c1", add=["u1"])
            thread.join()
        assert info.value.outcome_unknown is True


class TestAgainstEmulator:
    def test_name_add_remove_and_errors_round_trip(self) -> None:
        """Against the bundled emulator, names, members and a 401 cause come out as expected."""
        from braze_cohorts.testing import BrazeEmulator

        with BrazeEmulator() as braze:
            braze.add_user("u1")
            braze.add_user(aliases=[("a@x.io", "email")])
            braze.add_user(device_ids=["d-1"])
            with CohortClient(
                braze.url,
                partner="kubit",
                partner_api_key=braze.partner_api_key,
                data_import_key=braze.data_import_key,
            ) as c:
                c.name_cohort("c1", "Cohort one")
                c.update_members(
                    "c1", add=["u1", UserAlias(alias_name="a@x.io", alias_label="email")]
                )
                c.update_members("c1", add=[DeviceId("d-1")], remove=["u1"])
                assert braze.cohort_name("c1") == "Cohort one"
                assert braze.members("c1") == {("alias", "a@x.io", "email"), ("device_id", "d-1")}
                braze.succeed_with_errors_next(errors=["e1"])
                answer = c.update_members("c1", add=["u1"])
                assert answer is not None
                assert answer.errors == ("e1",)
                braze.fail_next(status=429, retry_after=7)
                with pytest.raises(RateLimitedError) as limited:
                    c.update_members("c1", add=["u1"])
                assert limited.value.retry_after == 7
                braze.redirect_next(location="https://elsewhere.example/")
                with pytest.raises(UnexpectedResponseError):
                    c.name_cohort("c1", "Cohort one")
                braze.revoke_data_import_key(braze.data_import_key)
                with pytest.raises(AuthenticationError) as denied:
                    c.update_members("c1", add=["u1"])
                assert denied.value.cause == "data_import_key"


class TestPartnerNotEnabled:
    BRAZE_TEXT = f"Partner not enabled for client with client secret: {DK}"

    def test_brazes_text_names_the_integration_not_the_key(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Braze's documented 401 text means the partner is not enabled, not a bad key."""
        mocked.post(USERS_URL, status=401, json={"message": self.BRAZE_TEXT})
        with pytest.raises(AuthenticationError) as info:
            client.update_members("c1", add=["u1"])
        error = info.value
        assert error.cause == "partner_not_enabled"
        assert error.message == "Partner not enabled for client with client secret: ***"
        assert "enable it in that workspace" in str(error)
        assert "a new key does not help" in error.advice
        for text in (str(error), repr(error), error.message, repr(error.args)):
            assert DK not in text

    def test_the_echoed_secret_is_masked_in_errors_too(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """The secret echoed inside Braze's errors list is masked as well."""
        mocked.post(
            NAME_URL,
            status=401,
            json={"message": self.BRAZE_TEXT, "errors": [{"detail": f"client secret: {DK}"}]},
        )
        with pytest.raises(AuthenticationError) as info:
            client.name_cohort("c1", "n")
        assert info.value.errors == ({"detail": "client secret: ***"},)

    def test_other_causes_have_no_advice(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """Only the misleading text gets advice; Braze's other texts speak for themselves."""
        mocked.post(NAME_URL, status=401, json={"message": "Invalid client secret"})
        with pytest.raises(AuthenticationError) as info:
            client.name_cohort("c1", "n")
        assert (info.value.cause, info.value.advice) == ("data_import_key", "")
        assert (
            str(info.value) == "HTTP 401 from POST /partners/kubit/cohorts: Invalid client secret"
        )


class TestCheck:
    def test_sends_a_no_op_removal_to_the_probe_cohort(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """check() posts one well-formed update that removes a user who cannot exist."""
        probe_user = "braze-cohorts-credential-check-no-such-user"
        expect_users_post(
            mocked,
            users_body(
                [{"user_ids": [probe_user], "should_remove": True}],
                cohort_id="braze-cohorts-credential-check",
            ),
        )
        result = client.check()
        assert result == bc.CheckResult(
            endpoint=BASE,
            partner="kubit",
            status_code=200,
            message="success",
            elapsed=result.elapsed,
        )
        assert len(mocked.calls) == 1
        assert str(result).startswith(f"{BASE} accepted partner 'kubit'")

    def test_result_is_frozen(self, client: CohortClient, mocked: responses.RequestsMock) -> None:
        """The result is a value: it cannot be changed."""
        mocked.post(USERS_URL, json={"message": "success"})
        result = client.check()
        with pytest.raises(AttributeError):
            result.status_code = 500  # type: ignore[misc]

    def test_another_cohort_may_be_probed(
        self, client: CohortClient, mocked: responses.RequestsMock
    ) -> None:
        """cohort_id= sends the same no-op removal to that cohort; a blank one is refused."""
        mocked.post(USERS_URL, json={"message": "success"})
        client.check(cohort_id="power-users")
        assert sent_json(mocked)["cohort_id"] == "power-users"
        with pytest.raises(ConfigurationError, match="cohort_id"):
            client.check(cohort_id=" ")
        assert len(mocked.calls) == 1

    @pytest.mark.parametrize(
        ("message", "cause"),
        [
            ("Invalid partner API key", "partner_api_key"),
            ("Invalid client secret", "data_import_key"),
            (f"Partner not enabled for client with client secret: {DK}", "partner_not_enabled"),
            ("Unauthorized access", "unknown"),
        ],
    )
    def test_a_refused_credential_raises_with_its_cause(
        self, client: CohortClient, mocked: responses.RequestsMock, message: str, cause: str
    ) -> None:
        """A 401 raises AuthenticationError naming the credential."""
        mocked.post(USERS_URL, status=401, json={"message": message})
        with pytest.raises(AuthenticationError) as info:
            client.check()
        assert info.value.cause == cause
        assert DK not in str(info.value)

    @pytest.mark.parametrize(
        ("reply", "error"),
        [
            ({"status": 404, "body": "not found"}, UnexpectedResponseError),
            (
                {"status": 302, "headers": {"Location": "https://login.example"}},
                UnexpectedResponseError,
            ),
            ({"status": 400, "json": {"message": "bad"}}, InvalidRequestError),
            ({"status": 503, "json": {"message": "down"}}, ServerError),
            ({"body": requests.exceptions.ConnectionError("refused")}, TransportError),
        ],
    )
    def test_other_failures_raise_the_usual_errors(
        self,
        client: CohortClient,
        mocked: responses.RequestsMock,
        reply: dict[str, Any],
        error: type[Exception],
    ) -> None:
        """A wrong endpoint, a refusal or no answer raise their errors, once, not retried."""
        mocked.post(USERS_URL, **reply)
        with pytest.raises(error):
            client.check()
        assert len(mocked.calls) == 1

    def test_closed_client_refuses(self, mocked: responses.RequestsMock) -> None:
        """A closed client sends no check."""
        c = make_client()
        c.close()
        with pytest.raises(ConfigurationError, match="closed"):
            c.check()
        assert len(mocked.calls) == 0


class _RecordingAdapter(requests.adapters.BaseAdapter):
    """A transport double mounted on a session: answers 200 and keeps what it was sent."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []
        self.status = status
        self.headers = headers or {}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        response = requests.Response()
        response.status_code = self.status
        response.reason = "OK"
        response.headers.update({"Content-Type": "application/json", **self.headers})
        response._content = b'{"message": "success"}'
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


class TestCallerSession:
    def test_mounted_adapter_receives_every_request(self) -> None:
        """An adapter mounted on the caller's session is the transport the client uses."""
        adapter = _RecordingAdapter()
        session = requests.Session()
        session.mount("https://rest.iad-03.braze.com/", adapter)
        with make_client(session=session) as c:
            c.name_cohort("c1", "n")
            c.update_members("c1", add=["u1"])
        assert [r.url for r in adapter.sent] == [NAME_URL, USERS_URL]
        body = json.loads(adapter.sent[1].body or b"")
        assert body["cohort_changes"] == [{"user_ids": ["u1"]}]

    def test_response_hooks_are_called(self, mocked: responses.RequestsMock) -> None:
        """The session's response hooks run for every answer (they were skipped before)."""
        mocked.post(USERS_URL, json={"message": "success"})
        seen: list[int] = []
        session = requests.Session()
        session.hooks["response"].append(lambda r, **kw: seen.append(r.status_code))
        with make_client(session=session) as c:
            c.update_members("c1", add=["u1"])
            c.update_members("c1", add=["u2"])
        assert seen == [200, 200]

    def test_hooks_added_after_the_first_call_are_called(
        self, mocked: responses.RequestsMock
    ) -> None:
        """Hooks are read from the session on every call, not frozen at the first one."""
        mocked.post(USERS_URL, json={"message": "success"})
        seen: list[str] = []
        session = requests.Session()
        with make_client(session=session) as c:
            c.update_members("c1", add=["u1"])
            session.hooks["response"].append(lambda r, **kw: seen.append("late"))
            c.update_members("c1", add=["u2"])
        assert seen == ["late"]

    def test_an_auth_that_registers_a_hook_adds_it_to_one_request_only(
        self, mocked: responses.RequestsMock
    ) -> None:
        """An auth that registers a response hook per request (as digest auth does) sees it once."""
        mocked.post(USERS_URL, json={"message": "success"})
        calls: list[int] = []

        def auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.register_hook("response", lambda r, **kw: calls.append(1))
            return request

        session = requests.Session()
        session.auth = auth
        with make_client(session=session) as c:
            for _ in range(3):
                c.update_members("c1", add=["u1"])
        assert calls == [1, 1, 1]
        assert session.hooks == {"response": []}

    def test_hook_that_replaces_the_response_is_honoured(
        self, mocked: responses.RequestsMock
    ) -> None:
        """A hook's returned response is the one the client maps (as for session.post)."""
        mocked.post(USERS_URL, json={"message": "success"})

        def hook(r: requests.Response, **kw: Any) -> requests.Response:
            r.status_code = 503
            return r

        session = requests.Session()
        session.hooks["response"].append(hook)
        with make_client(session=session) as c, pytest.raises(ServerError):
            c.update_members("c1", add=["u1"])

    def test_auth_sees_each_body_and_keys_stay_in_it(self, mocked: responses.RequestsMock) -> None:
        """The session's auth runs per request after the body is set, as for session.post."""
        mocked.post(USERS_URL, json={"message": "success"})
        signed: list[bytes] = []

        def sign(request: requests.PreparedRequest) -> requests.PreparedRequest:
            body = request.body if isinstance(request.body, bytes) else b""
            signed.append(body)
            request.headers["X-Signature"] = str(len(body))
            return request

        session = requests.Session()
        session.auth = sign
        with make_client(session=session) as c:
            c.update_members("c1", add=["u1"])
            c.update_members("c1", add=["u1", "u22"])
        assert [json.loads(b)["cohort_changes"] for b in signed] == [
            [{"user_ids": ["u1"]}],
            [{"user_ids": ["u1", "u22"]}],
        ]
        for call, body in zip(mocked.calls, signed, strict=True):
            assert call.request.headers["X-Signature"] == str(len(body))
            assert call.request.headers["Content-Length"] == str(len(body))
            assert call.request.url == USERS_URL
            assert PK not in repr(dict(call.request.headers))

    def test_auth_set_after_the_first_call_is_used(self, mocked: responses.RequestsMock) -> None:
        """The session's auth is read on every call, like its hooks."""
        mocked.post(USERS_URL, json={"message": "success"})
        session = requests.Session()
        with make_client(session=session) as c:
            c.update_members("c1", add=["u1"])
            session.auth = ("proxy-user", "proxy-pass")
            c.update_members("c1", add=["u2"])
        assert "Authorization" not in mocked.calls[0].request.headers
        assert mocked.calls[1].request.headers["Authorization"].startswith("Basic ")

    def test_basic_auth_tuple_is_sent(self, mocked: responses.RequestsMock) -> None:
        """A (user, password) auth on the session becomes an Authorization header."""
        mocked.post(NAME_URL, json={"message": "success"})
        session = requests.Session()
        session.auth = ("proxy-user", "proxy-pass")
        with make_client(session=session) as c:
            c.name_cohort("c1", "n")
        assert mocked.calls[0].request.headers["Authorization"].startswith("Basic ")

    def test_cookies_an_answer_sets_are_kept_in_the_session(
        self, mocked: responses.RequestsMock
    ) -> None:
        """A cookie in an answer lands in the session's jar, as with session.post."""
        mocked.post(NAME_URL, json={"message": "success"}, headers={"Set-Cookie": "lb=node-7"})
        session = requests.Session()
        with make_client(session=session) as c:
            c.name_cohort("c1", "n")
        assert session.cookies.get("lb") == "node-7"

    def test_a_hook_that_follows_a_redirect_is_refused(
        self, mocked: responses.RequestsMock
    ) -> None:
        """A hook that followed a redirect (history set) makes the answer refused."""
        mocked.post(USERS_URL, json={"message": "success"})

        def follow(r: requests.Response, **kw: Any) -> requests.Response:
            r.history = [requests.Response()]
            return r

        session = requests.Session()
        session.hooks["response"].append(follow)
        with (
            make_client(session=session) as c,
            pytest.raises(UnexpectedResponseError, match="redirect"),
        ):
            c.update_members("c1", add=["u1"])

    def test_redirects_are_not_followed_even_by_a_session_that_would(
        self, mocked: responses.RequestsMock
    ) -> None:
        """A caller's session never follows a 307: one request, refused."""
        mocked.post(USERS_URL, status=307, headers={"Location": "https://elsewhere.example/x"})
        mocked.post("https://elsewhere.example/x", json={"message": "success"})
        session = requests.Session()
        session.max_redirects = 30
        with make_client(session=session) as c, pytest.raises(UnexpectedResponseError):
            c.update_members("c1", add=["u1"])
        assert [call.request.url for call in mocked.calls] == [USERS_URL]

    def test_a_failing_hook_is_refused_loudly(self, mocked: responses.RequestsMock) -> None:
        """An exception from the session's own code becomes a clear ConfigurationError."""
        mocked.post(USERS_URL, json={"message": "success"})

        def broken(r: requests.Response, **kw: Any) -> None:
            raise KeyError("oops")

        session = requests.Session()
        session.hooks["response"].append(broken)
        with make_client(session=session) as c, pytest.raises(ConfigurationError) as info:
            c.update_members("c1", add=["u1"])
        assert "raised KeyError (from one of its hooks" in str(info.value)


class TestDocs:
    def test_client_page_examples_run(self) -> None:
        """The examples in docs/client.md run as shown."""
        assert run_doc_examples("client.md", section="client-examples") > 15
