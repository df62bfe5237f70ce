"""Secrets never leak from CohortClient, and no requests exception escapes it untranslated."""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
import urllib3.exceptions

from braze_cohorts import BrazeCohortsError, CohortClient, TransportError
from loopback import JSONHandler, serving

PARTNER_KEY = "PK-9f8e7d6c5b4a-partner"
IMPORT_KEY = "DK-1a2b3c4d5e6f-import"
SECRETS = (PARTNER_KEY, IMPORT_KEY)
BASE = "https://rest.fra-01.braze.eu"
NAME_URL = f"{BASE}/partners/kubit/cohorts"
USERS_URL = f"{NAME_URL}/users"


def make_client(endpoint: str = "EU-01") -> CohortClient:
    return CohortClient(
        endpoint,
        partner="kubit",
        partner_api_key=PARTNER_KEY,
        data_import_key=IMPORT_KEY,
        clock=lambda: 1_700_000_000.0,
    )


def assert_clean(*texts: object) -> None:
    for text in texts:
        rendered = text if isinstance(text, str) else repr(text)
        for secret in SECRETS:
            assert secret not in rendered, f"secret leaked in: {rendered[:200]!r}"


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = []
    for record in caplog.records:
        texts.append(formatter.format(record))
        texts.append(repr(record.args))
    return texts


def exception_texts(exc: BaseException) -> list[str]:
    texts = [repr(exc), str(exc), repr(exc.args)]
    texts.extend(traceback.format_exception(type(exc), exc, exc.__traceback__))
    texts.extend(frame_locals(exc))
    for name in ("message", "errors", "path"):
        if hasattr(exc, name):
            texts.append(repr(getattr(exc, name)))
    return texts


def frame_locals(exc: BaseException) -> list[str]:
    """The local variables of every frame in the traceback (and its causes), as error trackers
    such as Sentry or rich render them; the test's own frame (holding its inputs) is skipped."""
    texts = []
    pending: list[traceback.TracebackException | None] = [
        traceback.TracebackException.from_exception(exc, capture_locals=True)
    ]
    while pending:
        current = pending.pop()
        if current is None:
            continue
        for frame in current.stack:
            if frame.filename != __file__:
                texts.append(f"{frame.filename}:{frame.name} {frame.locals!r}")
        pending += [current.__cause__, current.__context__]
    return texts


def _echo(status: int) -> dict[str, Any]:
    """A hostile or buggy server that echoes both keys back in every field it can."""
    return {
        "status": status,
        "json": {
            "message": f"bad key {PARTNER_KEY} / {IMPORT_KEY}",
            "errors": [IMPORT_KEY, {"key": PARTNER_KEY, "nested": [IMPORT_KEY]}],
        },
    }


# (id, method, response kwargs for responses.add)
SCENARIOS: list[tuple[str, str, dict[str, Any]]] = [
    ("name-200", "name", {"json": {"message": "success"}}),
    ("users-200", "users", {"json": {"message": "success"}}),
    ("users-201-errors", "users", {"status": 201, "json": {"message": "ok", "errors": ["x"]}}),
    ("users-400", "users", {"status": 400, "json": {"message": "cohort_changes is invalid"}}),
    ("name-401-pk", "name", {"status": 401, "json": {"message": "Invalid partner API key"}}),
    ("name-401-dk", "name", {"status": 401, "json": {"message": "Invalid client secret"}}),
    (
        "users-401-ne",
        "users",
        {"status": 401, "json": {"message": "Partner not enabled for this customer"}},
    ),
    ("users-401-un", "users", {"status": 401, "json": {"message": "Unauthorized access"}}),
    (
        "users-401-ne-braze-text",
        "users",
        {
            "status": 401,
            "json": {"message": f"Partner not enabled for client with client secret: {IMPORT_KEY}"},
        },
    ),
    ("check-200", "check", {"json": {"message": "success"}}),
    ("check-401-dk", "check", {"status": 401, "json": {"message": "Invalid client secret"}}),
    (
        "check-401-ne-braze-text",
        "check",
        {
            "status": 401,
            "json": {
                "message": f"Partner not enabled for client with client secret: {IMPORT_KEY}",
                "errors": [f"client secret: {IMPORT_KEY}"],
            },
        },
    ),
    ("check-401-echo", "check", _echo(401)),
    ("check-404", "check", {"status": 404, "body": f"no route for {PARTNER_KEY}"}),
    ("users-423", "users", {"status": 423, "json": {"message": "resource locked"}}),
    (
        "users-429",
        "users",
        {"status": 429, "json": {"message": "slow down"}, "headers": {"Retry-After": "3"}},
    ),
    ("users-500", "users", {"status": 500, "json": {"message": "oops"}}),
    ("users-502-html", "users", {"status": 502, "body": "<html>bad gateway</html>"}),
    ("users-404", "users", {"status": 404, "body": ""}),
    ("name-307", "name", {"status": 307, "headers": {"Location": f"{BASE}/elsewhere"}}),
    ("users-200-echo", "users", _echo(200)),
    ("users-400-echo", "users", _echo(400)),
    ("name-401-echo", "name", _echo(401)),
    ("users-500-echo-html", "users", {"status": 500, "body": f"<p>{PARTNER_KEY}{IMPORT_KEY}</p>"}),
    (
        "name-302-echo",
        "name",
        {"status": 302, "headers": {"Location": f"https://x.example/?k={IMPORT_KEY}"}},
    ),
]

ECHOING_FAILURE = requests.exceptions.RequestException(f"a library echoing {IMPORT_KEY}")
TRANSPORT_FAILURES: list[BaseException] = [
    requests.exceptions.ConnectTimeout("connect timed out"),
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    ),
    requests.exceptions.ChunkedEncodingError("broken"),
    requests.exceptions.SSLError("handshake failed"),
    requests.exceptions.ProxyError("proxy said no"),
    ECHOING_FAILURE,
    ConnectionResetError(104, "Connection reset by peer"),
]


def call(client: CohortClient, method: str) -> Any:
    if method == "name":
        return client.name_cohort("c1", "Power users")
    if method == "check":
        return client.check()
    return client.update_members("c1", add=["u1", "u2"], remove=["u3"])


class TestSecretsNeverLeak:
    @pytest.mark.parametrize(
        ("method", "reply"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
    )
    def test_no_secret_in_logs_reprs_urls_headers_or_errors(
        self, caplog: pytest.LogCaptureFixture, method: str, reply: dict[str, Any]
    ) -> None:
        """Across successes and every kind of failure, neither key shows anywhere but the body."""
        caplog.set_level(logging.DEBUG)
        url = NAME_URL if method == "name" else USERS_URL
        texts: list[object] = []
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.post(url, **reply)
            with make_client() as client:
                texts += [repr(client), str(client), vars(client)]
                try:
                    result = call(client, method)
                except BrazeCohortsError as exc:
                    texts += exception_texts(exc)
                else:
                    texts += [repr(result), str(result)]
            assert len(rsps.calls) == 1
            request = rsps.calls[0].request
            texts += [request.url, repr(dict(request.headers))]
            assert isinstance(request.body, bytes)
            body = json.loads(request.body)
        assert body["partner_api_key"] == PARTNER_KEY
        assert body["client_secret"] == IMPORT_KEY
        texts += log_texts(caplog)
        assert caplog.records, "the client logs every call"
        assert_clean(*texts)

    @pytest.mark.parametrize("method", ["name", "users"])
    @pytest.mark.parametrize(
        "failure", TRANSPORT_FAILURES, ids=[type(f).__name__ for f in TRANSPORT_FAILURES]
    )
    def test_no_secret_in_transport_errors(
        self, caplog: pytest.LogCaptureFixture, method: str, failure: BaseException
    ) -> None:
        """Transport errors (and their chained causes and log lines) carry no key."""
        caplog.set_level(logging.DEBUG)
        url = NAME_URL if method == "name" else USERS_URL
        with responses.RequestsMock() as rsps, make_client() as client:
            rsps.post(url, body=failure)
            with pytest.raises(TransportError) as info:
                call(client, method)
            request = rsps.calls[0].request
            assert_clean(request.url, repr(dict(request.headers)))
        assert_clean(repr(info.value), str(info.value), *log_texts(caplog))
        if failure is not ECHOING_FAILURE:
            # A lower-layer error that itself quotes a key would still show in the chained
            # traceback (``raise ... from exc``); requests never puts the body in its errors.
            assert_clean(*exception_texts(info.value))

    def test_configuration_errors_never_echo_keys(self) -> None:
        """Refused keys are named by field, never shown."""
        for bad in (f" {PARTNER_KEY}", f"{PARTNER_KEY}\n", f"{PARTNER_KEY}\x00"):
            with pytest.raises(BrazeCohortsError) as info:
                CohortClient("US-01", partner="kubit", partner_api_key=bad, data_import_key="x")
            assert_clean(*exception_texts(info.value))

    @pytest.mark.parametrize(
        "endpoint",
        [
            PARTNER_KEY,
            IMPORT_KEY,
            f"  {IMPORT_KEY}\n",
            f"{IMPORT_KEY} {PARTNER_KEY}",
            f"http://{IMPORT_KEY}",
            f"http://{IMPORT_KEY}.example.com",
            f"ftp://{IMPORT_KEY}",
            f"{IMPORT_KEY}://x",
            f"https://x/?k={IMPORT_KEY}",
            f"https://x/#{IMPORT_KEY}",
            f"https://x:{IMPORT_KEY}",
            f"https://{PARTNER_KEY}:{IMPORT_KEY}@x",
            f"https://dashboard-{IMPORT_KEY}.braze.com",
            f"{IMPORT_KEY}.braze.com/x",
            f"US-{IMPORT_KEY}",
            "Ab-1234567890123",
        ],
    )
    def test_endpoint_errors_never_echo_the_value(self, endpoint: str) -> None:
        """A key given as the endpoint (--endpoint $BRAZE_PARTNER_API_KEY) is never shown."""
        with pytest.raises(BrazeCohortsError) as info:
            CohortClient(
                endpoint, partner="kubit", partner_api_key=PARTNER_KEY, data_import_key=IMPORT_KEY
            )
        texts = exception_texts(info.value)
        assert_clean(*texts)
        if endpoint == "Ab-1234567890123":
            assert all(endpoint not in text for text in texts)

    @pytest.mark.parametrize("partner", [PARTNER_KEY, IMPORT_KEY, f"{IMPORT_KEY}/x"])
    def test_a_key_given_as_the_partner_is_refused_unshown(self, partner: str) -> None:
        """The partner goes into the URL path: a key given there is refused, never shown."""
        with pytest.raises(BrazeCohortsError) as info:
            CohortClient(
                "EU-01", partner=partner, partner_api_key=PARTNER_KEY, data_import_key=IMPORT_KEY
            )
        assert_clean(*exception_texts(info.value))

    def test_a_cut_echo_of_the_secret_is_masked(self) -> None:
        """Braze's "client secret: <key>" is masked even when the echo is cut or altered."""
        cut = IMPORT_KEY[:15]
        with responses.RequestsMock() as rsps, make_client() as client:
            rsps.post(
                USERS_URL,
                status=401,
                json={"message": f"Partner not enabled for client with client secret: {cut}"},
            )
            with pytest.raises(BrazeCohortsError) as info:
                client.check()
        assert all(cut not in text for text in exception_texts(info.value))
        assert "client secret: ***" in str(info.value)

    def test_a_session_hook_that_fails_with_a_key_is_scrubbed(self) -> None:
        """A caller's session hook raising with the body in its message: key masked, no leak."""

        def hook(response: requests.Response, **kwargs: Any) -> None:
            raise RuntimeError(f"hook saw {response.request.body!r}")

        session = requests.Session()
        session.hooks["response"].append(hook)
        with responses.RequestsMock() as rsps:
            rsps.post(USERS_URL, json={"message": "success"})
            client = CohortClient(
                "EU-01",
                partner="kubit",
                partner_api_key=PARTNER_KEY,
                data_import_key=IMPORT_KEY,
                session=session,
            )
            with pytest.raises(BrazeCohortsError) as info:
                client.check()
        assert_clean(repr(info.value), str(info.value), *frame_locals(info.value))

    def test_held_keys_show_as_mask(self) -> None:
        """The objects holding the keys render as '***' however they are shown."""
        with make_client() as client:
            held = [client._partner_api_key, client._data_import_key]
            assert [str(k) for k in held] == ["***", "***"]
            assert [repr(k) for k in held] == ["'***'", "'***'"]
            assert_clean(f"{held[0]} {held[1]!r}", repr(vars(client)))

    def test_client_cannot_be_pickled_with_its_keys(self) -> None:
        """Pickling a client (e.g. into a cache or a worker) fails instead of writing the keys."""
        with make_client() as client, pytest.raises(TypeError, match="secret"):
            pickle.dumps(client)


class _Server(JSONHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 401 if self.path.endswith("/users") else 200
        self.reply(status, {"message": "Invalid client secret" if status == 401 else "ok"})


@pytest.fixture
def server_url() -> Iterator[str]:
    with serving(_Server) as url:
        yield url


class TestSecretsOverRealSockets:
    def test_urllib3_and_client_debug_logs_are_clean(
        self, caplog: pytest.LogCaptureFixture, server_url: str
    ) -> None:
        """With every logger at DEBUG and a real connection, no key reaches a log record."""
        caplog.set_level(logging.DEBUG)
        with make_client(server_url) as client:
            client.name_cohort("c1", "n")
            with pytest.raises(BrazeCohortsError) as info:
                client.update_members("c1", add=["u1"])
        assert any(r.name.startswith("urllib3") for r in caplog.records)
        assert_clean(*log_texts(caplog), *exception_texts(info.value))


def _instantiate(cls: type[requests.exceptions.RequestException]) -> BaseException:
    if issubclass(cls, requests.exceptions.JSONDecodeError):
        return cls("Expecting value", "doc", 0)
    return cls("simulated failure")


REQUESTS_EXCEPTIONS = sorted(
    (
        cls
        for _, cls in inspect.getmembers(requests.exceptions, inspect.isclass)
        if issubclass(cls, requests.exceptions.RequestException)
    ),
    key=lambda cls: cls.__name__,
)


class TestNoRequestsExceptionEscapes:
    @pytest.mark.parametrize("method", ["name", "users"])
    @pytest.mark.parametrize("cls", REQUESTS_EXCEPTIONS, ids=lambda c: c.__name__)
    def test_every_requests_exception_is_translated(
        self, method: str, cls: type[requests.exceptions.RequestException]
    ) -> None:
        """Whatever requests raises becomes a TransportError chained to the original."""
        url = NAME_URL if method == "name" else USERS_URL
        failure = _instantiate(cls)
        with responses.RequestsMock() as rsps, make_client() as client:
            rsps.post(url, body=failure)
            with pytest.raises(TransportError) as info:
                call(client, method)
        assert info.value.__cause__ is failure
        assert not isinstance(info.value, requests.exceptions.RequestException)

    @pytest.mark.parametrize(
        "failure",
        [
            urllib3.exceptions.ProtocolError("raw protocol error"),
            urllib3.exceptions.ReadTimeoutError(None, "/", "raw read timeout"),  # type: ignore[arg-type]
            OSError("raw socket error"),
        ],
        ids=lambda f: type(f).__name__,
    )
    def test_lower_layer_errors_are_translated(self, failure: BaseException) -> None:
        """urllib3 and socket errors that slip past requests are translated too."""
        with responses.RequestsMock() as rsps, make_client() as client:
            rsps.post(USERS_URL, body=failure)
            with pytest.raises(TransportError) as info:
                client.update_members("c1", add=["u1"])
        assert info.value.outcome_unknown is True
        assert info.value.__cause__ is failure
