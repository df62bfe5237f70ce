"""The SMTP and webhook notifiers, tested against real SMTP and HTTP servers on loopback."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import braze_cohorts as bc
from braze_cohorts._notify import (
    EMAIL_WARNINGS,
    deliver,
    render_body,
    render_message,
    run_to_dict,
    validate_recipients,
)
from doc_examples import run_doc_examples
from helpers import free_port
from hook_server import HookServer

UTC = dt.timezone.utc


@pytest.fixture
def hook() -> Iterator[HookServer]:
    """A webhook server on loopback, stopped after the test."""
    with HookServer() as server:
        yield server


class _Sink:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Sink, int]]:
    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def _run(**changes: Any) -> bc.ImportRun:
    run = bc.ImportRun(
        cohort_id="churn-risk",
        name="Churn risk",
        trigger="scheduled",
        started_at=dt.datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC),
        finished_at=dt.datetime(2026, 11, 28, 9, 0, 12, 500000, tzinfo=UTC),
        result="succeeded",
        users=1234,
        added=40,
        removed=7,
        rejected={"missing_identifier": 2, "invalid_external_id": 1},
        requests=3,
        retries=1,
        id=17,
    )
    return attrs.evolve(run, **changes)


class TestValidateRecipients:
    def test_accepts_plain_and_named_addresses(self) -> None:
        """Plain and display-name addresses pass and keep their form."""
        got = validate_recipients(["ops@example.com", "Ops Team <team@example.com>"])
        assert got == ("ops@example.com", "Ops Team <team@example.com>")

    def test_removes_duplicates_case_insensitively(self) -> None:
        """The same address twice (any case) is kept once, first form wins."""
        assert validate_recipients(["A@example.com", "a@EXAMPLE.com"]) == ("A@example.com",)

    def test_single_string_is_one_address(self) -> None:
        """A bare string is one address, not a sequence of characters."""
        assert validate_recipients("ops@example.com") == ("ops@example.com",)

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "ops",
            "ops@",
            "@example.com",
            "ops@example",
            "ops@example..com",
            "o ps@example.com",
            "a@example.com, b@example.com",
            "ops@example.com\r\nBcc: evil@example.com",
        ],
    )
    def test_refuses_invalid_addresses(self, bad: str) -> None:
        """Anything that is not one plausible address is a ConfigurationError (a ValueError)."""
        with pytest.raises(bc.ConfigurationError):
            validate_recipients([bad])
        with pytest.raises(ValueError):  # noqa: PT011 - the ValueError base is the point
            validate_recipients([bad])


class TestRenderMessage:
    def test_subject_names_cohort_and_result(self) -> None:
        """The subject is '[braze-cohorts] <name>: <result>'."""
        msg = render_message(_run(), sender="bot@example.com", recipients=["ops@example.com"])
        assert msg["Subject"] == "[braze-cohorts] Churn risk: succeeded"
        assert msg["From"] == "bot@example.com"
        assert msg["To"] == "ops@example.com"
        assert msg["Message-ID"]
        assert msg["Date"]

    def test_body_holds_every_figure(self) -> None:
        """The body gives name, id, result, UTC times, duration, users, added, removed, rejected."""
        msg = render_message(_run(), sender="bot@example.com", recipients=["ops@example.com"])
        body = msg.get_content()
        assert "Churn risk (id churn-risk)" in body
        assert "Result:    succeeded" in body
        assert "Trigger:   scheduled" in body
        assert "Started:   2026-11-28 09:00:00 UTC" in body
        assert "(took 12.5 s)" in body
        assert "Users in the cohort: 1,234" in body
        assert "Added:     40" in body
        assert "Removed:   7" in body
        assert "Rejected:  3" in body
        assert "  - invalid_external_id: 1\n  - missing_identifier: 2" in body
        assert "Requests:  3 (1 retries)" in body
        assert "Error" not in body
        assert "PAUSED" not in body

    def test_body_says_what_users_counts(self) -> None:
        """The users figure says it counts members Braze acknowledged, not users Braze holds."""
        body = render_body(_run())
        assert "members acknowledged by Braze" in body
        assert "Braze ignores ids it does not know" in body

    def test_body_says_a_delta_is_a_delta(self) -> None:
        """An ordinary import is shown as a delta, never as a full resync."""
        body = render_body(_run())
        assert "Kind:      delta" in body
        assert "FULL RESYNC" not in body

    @pytest.mark.parametrize(
        ("reason", "text"),
        [
            ("requested", "asked for"),
            ("period_elapsed", "older than its resync period"),
            ("workspace_changed", "another Braze workspace"),
            ("first_import", "first import of this cohort"),
        ],
    )
    def test_body_says_why_a_run_was_a_full_resync(self, reason: str, text: str) -> None:
        """A full resync is named as such, with its reason in words."""
        body = render_body(_run(full_resync=True, full_resync_reason=reason))
        assert "Kind:      FULL RESYNC (every member re-sent): " in body
        assert text in body.split("Kind:", 1)[1].splitlines()[0]

    def test_body_lists_brazes_warnings_bounded(self) -> None:
        """Braze's warnings are listed (at most EMAIL_WARNINGS), the rest counted."""
        warnings = tuple(f"bad id in batch {i}" for i in range(EMAIL_WARNINGS + 3))
        body = render_body(_run(warnings=warnings))
        assert f"Warnings from Braze ({EMAIL_WARNINGS + 3};" in body
        assert "re-sent at the next import" in body
        for shown in warnings[:EMAIL_WARNINGS]:
            assert f"  - {shown}\n" in body
        assert warnings[EMAIL_WARNINGS] not in body
        assert "… and 3 more (braze-cohorts history churn-risk --json)" in body

    def test_first_import_note_is_not_called_a_braze_warning(self) -> None:
        """The engine's first-import note is shown as a note; Braze's warnings follow it."""
        run = _run(
            full_resync=True,
            full_resync_reason="first_import",
            warnings=("first import of this cohort with this state: ...", "user not found"),
        )
        body = render_body(run)
        note, _, rest = body.partition("Warnings from Braze (1;")
        assert "Note:\n  first import of this cohort with this state" in note
        assert "  - user not found" in rest

    def test_no_warnings_no_section(self) -> None:
        """A run without warnings has no warnings section."""
        assert "Warnings" not in render_body(_run())

    def test_warnings_cannot_inject_lines(self) -> None:
        """Control characters in a warning become spaces: one warning, one line."""
        body = render_body(_run(warnings=("evil\nSubject: x\r\nmore",)))
        assert "  - evil Subject: x more" in body

    def test_times_are_shown_in_utc(self) -> None:
        """A run recorded in another zone is shown in UTC."""
        berlin = dt.timezone(dt.timedelta(hours=1))
        run = _run(
            started_at=dt.datetime(2026, 11, 28, 10, 0, tzinfo=berlin),
            finished_at=dt.datetime(2026, 11, 28, 10, 3, 5, tzinfo=berlin),
        )
        body = render_message(run, sender="b@example.com", recipients=["o@example.com"])
        assert "Started:   2026-11-28 09:00:00 UTC" in body.get_content()
        assert "(took 3 min 5 s)" in body.get_content()

    def test_failed_run_carries_the_error(self) -> None:
        """A failed run's error is in the body and 'failed' in the subject."""
        run = _run(result="failed", error="HTTP 500 from POST /partners/x/cohorts/users: boom")
        msg = render_message(run, sender="bot@example.com", recipients=["ops@example.com"])
        assert msg["Subject"] == "[braze-cohorts] Churn risk: failed"
        assert "HTTP 500 from POST /partners/x/cohorts/users: boom" in msg.get_content()

    def test_paused_schedule_is_announced_with_reason(self) -> None:
        """When the run paused the schedule, subject and body say so, with the reason."""
        run = _run(result="failed", error="HTTP 401: invalid data import key")
        msg = render_message(
            run,
            sender="bot@example.com",
            recipients=["ops@example.com"],
            paused_reason="authentication failed: invalid data import key",
        )
        assert msg["Subject"] == "[braze-cohorts] Churn risk: failed, schedule paused"
        body = msg.get_content()
        assert "PAUSED" in body
        assert "Reason: authentication failed: invalid data import key" in body
        assert "braze-cohorts schedule resume churn-risk" in body

    def test_header_injection_through_the_name_is_neutralised(self) -> None:
        """A cohort name with line breaks cannot add headers."""
        run = _run(name="Evil\r\nBcc: victim@example.com")
        msg = render_message(run, sender="bot@example.com", recipients=["ops@example.com"])
        assert msg["Bcc"] is None
        assert "\n" not in msg["Subject"]
        headers = bytes(msg).split(b"\n\n", 1)[0]
        assert b"\nBcc:" not in headers
        assert "Cohort:    Evil Bcc: victim@example.com (id churn-risk)" in msg.get_content()

    def test_needs_a_recipient(self) -> None:
        """No recipient at all is a ConfigurationError."""
        with pytest.raises(bc.ConfigurationError):
            render_message(_run(), sender="bot@example.com", recipients=[])

    def test_several_recipients_share_one_message(self) -> None:
        """All recipients are in the one To header."""
        msg = render_message(
            _run(), sender="bot@example.com", recipients=["a@example.com", "b@example.com"]
        )
        assert msg["To"] == "a@example.com, b@example.com"


class TestSmtpNotifierConfig:
    def test_password_never_in_repr(self) -> None:
        """The password is hidden from repr and str."""
        notifier = bc.SmtpNotifier(
            "smtp.example.com", 587, sender="b@example.com", username="u", password="s3cr3t-pw"
        )
        assert "s3cr3t-pw" not in repr(notifier)
        assert "s3cr3t-pw" not in str(notifier)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"sender": "not an address"},
            {"sender": "b@example.com", "starttls": True, "ssl": True},
            {"sender": "b@example.com", "password": "x"},
            {"sender": "b@example.com", "timeout": 0},
            {"sender": "b@example.com", "default_recipients": ["nope"]},
        ],
    )
    def test_invalid_options_are_refused(self, kwargs: dict[str, Any]) -> None:
        """Bad addresses, both TLS modes, password without user, zero timeout fail at once."""
        with pytest.raises(bc.ConfigurationError):
            bc.SmtpNotifier("smtp.example.com", **kwargs)

    @pytest.mark.parametrize("port", [0, 65536, -1])
    def test_invalid_port_is_refused(self, port: int) -> None:
        """A port outside 1..65535 is a ConfigurationError."""
        with pytest.raises(bc.ConfigurationError):
            bc.SmtpNotifier("smtp.example.com", port, sender="b@example.com")

    def test_options_are_keyword_only(self) -> None:
        """Everything after host and port must be named."""
        with pytest.raises(TypeError):
            bc.SmtpNotifier("smtp.example.com", 25, "b@example.com")  # type: ignore[call-arg]


class TestSmtpNotifierDelivery:
    def test_one_email_reaches_all_recipients(self, smtp_server: tuple[_Sink, int]) -> None:
        """One message, sent to every recipient, with the rendered subject and body."""
        sink, port = smtp_server
        notifier = bc.SmtpNotifier("127.0.0.1", port, sender="bot@example.com")
        notifier.notify_recipients(_run(), ["a@example.com", "Bee <b@example.com>"])
        assert len(sink.messages) == 1
        mail_from, rcpt = sink.envelopes[0]
        assert mail_from == "bot@example.com"
        assert rcpt == ["a@example.com", "b@example.com"]
        msg = sink.messages[0]
        assert msg["Subject"] == "[braze-cohorts] Churn risk: succeeded"
        assert "Users in the cohort: 1,234" in msg.get_content()

    def test_notify_uses_default_recipients(self, smtp_server: tuple[_Sink, int]) -> None:
        """The Notifier-protocol method mails the default recipients."""
        sink, port = smtp_server
        notifier = bc.SmtpNotifier(
            "127.0.0.1", port, sender="bot@example.com", default_recipients=["d@example.com"]
        )
        notifier.notify(_run(result="failed", error="boom"))
        assert [rcpt for _f, rcpt in sink.envelopes] == [["d@example.com"]]
        assert "boom" in sink.messages[0].get_content()

    def test_no_recipients_sends_nothing(self, smtp_server: tuple[_Sink, int]) -> None:
        """Without schedule or default recipients no email is sent and nothing fails."""
        sink, port = smtp_server
        notifier = bc.SmtpNotifier("127.0.0.1", port, sender="bot@example.com")
        notifier.notify(_run())
        notifier.notify_recipients(_run(), [])
        assert sink.messages == []

    def test_non_ascii_name_survives(self, smtp_server: tuple[_Sink, int]) -> None:
        """A non-ASCII cohort name arrives intact in subject and body."""
        sink, port = smtp_server
        notifier = bc.SmtpNotifier("127.0.0.1", port, sender="bot@example.com")
        notifier.notify_recipients(_run(name="K\u00e4ufer \u2013 K\u00f6ln"), ["a@example.com"])
        msg = sink.messages[0]
        assert msg["Subject"] == "[braze-cohorts] K\u00e4ufer \u2013 K\u00f6ln: succeeded"
        assert "K\u00e4ufer \u2013 K\u00f6ln (id churn-risk)" in msg.get_content()

    def test_dead_port_raises_notification_error(self) -> None:
        """A server that is not there is a NotificationError, never an OSError."""
        notifier = bc.SmtpNotifier("127.0.0.1", free_port(), sender="b@example.com", timeout=2)
        with pytest.raises(bc.NotificationError, match="could not send") as info:
            notifier.notify_recipients(_run(), ["a@example.com"])
        assert isinstance(info.value.__cause__, OSError)

    def test_refused_recipient_raises_notification_error(self) -> None:
        """A server that refuses a recipient makes the notification fail, naming the count."""

        class Picky(_Sink):
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if address.startswith("nobody"):
                    return "550 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

        sink = Picky()
        port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            notifier = bc.SmtpNotifier("127.0.0.1", port, sender="bot@example.com")
            with pytest.raises(bc.NotificationError, match="refused 1 recipient"):
                notifier.notify_recipients(_run(), ["a@example.com", "nobody@example.com"])
            with pytest.raises(bc.NotificationError, match="SMTPRecipientsRefused"):
                notifier.notify_recipients(_run(), ["nobody@example.com"])
        finally:
            controller.stop()
        assert [rcpt for _f, rcpt in sink.envelopes] == [["a@example.com"]]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:  # pragma: no cover - depends on the machine
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class TestSmtpNotifierLogin:
    def test_starttls_and_login(self, tls_files: tuple[Path, Path]) -> None:
        """With starttls and a user name, the notifier upgrades, logs in, then sends."""
        cert, key = tls_files
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        logins: list[tuple[bytes, bytes]] = []

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            assert isinstance(data, LoginPassword)
            logins.append((data.login, data.password))
            return AuthResult(success=data.password == b"pw-123", handled=False)

        sink = _Sink()
        port = free_port()
        controller = Controller(
            sink,
            hostname="127.0.0.1",
            port=port,
            tls_context=server_ctx,
            require_starttls=True,
            auth_required=True,
            authenticator=authenticator,
        )
        controller.start()
        try:
            good = bc.SmtpNotifier(
                "127.0.0.1",
                port,
                sender="bot@example.com",
                username="mailer",
                password="pw-123",
                starttls=True,
                ssl_context=client_ctx,
                timeout=5,
            )
            good.notify_recipients(_run(), ["a@example.com"])
            bad = attrs.evolve(good, password="wrong-pw")
            with pytest.raises(bc.NotificationError, match="SMTPAuthenticationError") as info:
                bad.notify_recipients(_run(), ["a@example.com"])
            plain = attrs.evolve(good, starttls=False, username=None, password=None)
            with pytest.raises(bc.NotificationError):
                plain.notify_recipients(_run(), ["a@example.com"])
        finally:
            controller.stop()
        assert logins[0] == (b"mailer", b"pw-123")
        assert set(logins[1:]) == {(b"mailer", b"wrong-pw")}  # smtplib tries each mechanism
        assert len(sink.messages) == 1
        assert "wrong-pw" not in str(info.value)

    def test_login_without_tls_calls_smtplib_in_order(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Implicit TLS: SMTP_SSL is used with the context, then login, then send."""
        calls: list[str] = []

        class FakeSmtp:
            def __init__(self, host: str, port: int, **kwargs: Any) -> None:
                calls.append(f"connect {host}:{port} context={kwargs.get('context') is not None}")

            def __enter__(self) -> FakeSmtp:
                return self

            def __exit__(self, *exc: object) -> None:
                calls.append("quit")

            def starttls(self, **kwargs: Any) -> None:  # pragma: no cover - must not be called
                calls.append("starttls")

            def login(self, user: str, password: str) -> None:
                calls.append(f"login {user}")

            def send_message(self, msg: EmailMessage) -> dict[str, Any]:
                calls.append(f"send {msg['To']}")
                return {}

        monkeypatch.setattr(smtplib, "SMTP_SSL", FakeSmtp)
        notifier = bc.SmtpNotifier(
            "smtp.example.com", 465, sender="b@example.com", username="u", password="p", ssl=True
        )
        notifier.notify_recipients(_run(), ["a@example.com"])
        assert calls == [
            "connect smtp.example.com:465 context=True",
            "login u",
            "send a@example.com",
            "quit",
        ]


class TestDocs:
    def test_notify_page_examples_run(self) -> None:
        """The examples in docs/notify.md run as shown."""
        assert run_doc_examples("notify.md", section="notify") >= 5

    def test_sample_email_in_the_docs_matches_the_renderer(self) -> None:
        """The sample body on the docs page is what render_message writes for that run."""
        text = (Path(__file__).parents[1] / "docs" / "notify.md").read_text(encoding="utf-8")
        sample = text.split("```text\n")[1].split("```")[0]
        subject, body = sample.split("\n\n", 1)
        msg = render_message(_run(), sender="bot@example.com", recipients=["o@example.com"])
        assert subject == f"Subject: {msg['Subject']}"
        assert msg.get_content().startswith(body)


# --------------------------------------------------------------------------------------------
# WebhookNotifier, against a real HTTP server on loopback
# --------------------------------------------------------------------------------------------

HOOK_ENV = "TEST_BRAZE_COHORTS_HOOK"
SECRET_PATH = "/services/T000/B000/s3cr3t-token"


class _Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def hook_env(hook: HookServer, monkeypatch: pytest.MonkeyPatch) -> HookServer:
    monkeypatch.setenv(HOOK_ENV, hook.url(SECRET_PATH))
    return hook


class TestWebhookNotifierConfig:
    def test_repr_names_the_variable_never_the_url(self, hook_env: HookServer) -> None:
        """repr shows the variable's name; the URL it holds appears nowhere."""
        notifier = bc.WebhookNotifier(HOOK_ENV, format="slack", timeout=3, retries=1)
        assert repr(notifier) == (
            f"WebhookNotifier(url_env='{HOOK_ENV}', format='slack', timeout=3, retries=1)"
        )
        assert "s3cr3t" not in repr(notifier) + str(notifier)

    @pytest.mark.parametrize(
        "options",
        [
            {"url_env": "https://hooks.slack.com/services/T/B/s3cr3t"},
            {"url_env": ""},
            {"url_env": "1ABC"},
            {"format": "xml"},
            {"timeout": 0},
            {"retries": -1},
            {"retries": 11},
            {"retries": True},
        ],
    )
    def test_invalid_settings_are_refused_without_echoing_a_url(
        self, options: dict[str, Any]
    ) -> None:
        """Bad settings raise ConfigurationError; a URL given as the name is not repeated."""
        with pytest.raises(bc.ConfigurationError) as info:
            bc.WebhookNotifier(**options)
        assert "s3cr3t" not in str(info.value)

    def test_default_variable(self) -> None:
        """The default variable is BRAZE_COHORTS_WEBHOOK_URL."""
        assert bc.WebhookNotifier().url_env == "BRAZE_COHORTS_WEBHOOK_URL"


class TestWebhookNotifierDelivery:
    def test_timeout_then_500_then_200_is_delivered_on_the_third_attempt(
        self, hook_env: HookServer
    ) -> None:
        """A hung answer and a 500 are retried with backoff; the 200 ends it."""
        hook_env.script = ["hang", 500, 200]
        sleeps = _Sleeps()
        notifier = bc.WebhookNotifier(HOOK_ENV, timeout=0.5, retries=2, sleep=sleeps)
        run = _run(
            warnings=("1 id was not valid",),
            full_resync=True,
            full_resync_reason="period_elapsed",
            error_kind=None,
        )
        notifier.notify(run)
        assert [path for path, _ in hook_env.received] == [SECRET_PATH] * 3
        body = hook_env.received[-1][1]
        assert body == json.loads(json.dumps(run_to_dict(run)))
        assert (body["warnings"], body["full_resync"], body["full_resync_reason"]) == (
            ["1 id was not valid"],
            True,
            "period_elapsed",
        )
        assert (body["rejected_total"], body["seconds"], body["error_kind"]) == (
            3,
            12.5,
            None,
        )
        assert hook_env.headers[-1]["Content-Type"] == "application/json"
        assert len(sleeps.waits) == 2
        assert sleeps.waits[0] < sleeps.waits[1]

    def test_retries_used_up_raise_notification_error_without_the_url(
        self, hook_env: HookServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After the last retry it raises NotificationError; no message or log shows the URL."""
        hook_env.script = ["hang", 503]
        caplog.set_level("DEBUG")
        notifier = bc.WebhookNotifier(HOOK_ENV, timeout=0.3, retries=1, sleep=_Sleeps())
        with pytest.raises(bc.NotificationError) as info:
            notifier.notify(_run())
        assert str(info.value) == (
            f"the webhook in ${HOOK_ENV} failed after 2 attempt(s): it answered HTTP 503"
        )
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert len(hook_env.received) == 2
        assert "s3cr3t" not in caplog.text
        assert "127.0.0.1" not in caplog.text

    def test_connection_refused_is_retried_then_reported(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Nothing listening: each attempt fails to connect; the error names the kind only."""
        monkeypatch.setenv(HOOK_ENV, f"http://127.0.0.1:{free_port()}{SECRET_PATH}")
        sleeps = _Sleeps()
        with pytest.raises(bc.NotificationError, match="connection failed") as info:
            bc.WebhookNotifier(HOOK_ENV, retries=2, sleep=sleeps).notify(_run())
        assert len(sleeps.waits) == 2
        assert "s3cr3t" not in str(info.value)

    @pytest.mark.parametrize(
        ("status", "what"), [(400, "HTTP 400"), (404, "HTTP 404"), (302, "redirect")]
    )
    def test_client_errors_and_redirects_are_not_retried(
        self, hook_env: HookServer, status: int, what: str
    ) -> None:
        """A 4XX fails at once; a redirect is not followed (the secret stays where it was sent)."""
        hook_env.script = [status]
        sleeps = _Sleeps()
        with pytest.raises(bc.NotificationError, match=what):
            bc.WebhookNotifier(HOOK_ENV, sleep=sleeps).notify(_run())
        assert len(hook_env.received) == 1
        assert sleeps.waits == []

    def test_slack_format_posts_only_text(self, hook_env: HookServer) -> None:
        """The slack format posts {"text": ...}, with the pause reason when the schedule paused."""
        bc.WebhookNotifier(HOOK_ENV, format="slack").notify_recipients(
            _run(
                result="failed",
                error="HTTP 401: <Invalid> & revoked",
                error_kind="AuthenticationError",
            ),
            ["ignored@example.com"],
            paused_reason="authentication failed",
        )
        [(_path, body)] = hook_env.received
        assert list(body) == ["text"]
        text = body["text"]
        assert text.startswith(":x: *Churn risk* (`churn-risk`): scheduled import failed\n")
        assert "Error: HTTP 401: &lt;Invalid&gt; &amp; revoked" in text
        assert "Schedule PAUSED: authentication failed" in text
        assert "braze-cohorts schedule resume churn-risk" in text

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (None, "is not set"),
            ("", "is not set"),
            ("http://hooks.example.com/x", "plain http:// URL"),
            ("ftp://127.0.0.1/x", "does not hold an http\\(s\\) URL"),
            ("https://127.0.0.1:99999/x", "does not hold a valid URL"),
            ("not a url", "does not hold an http\\(s\\) URL"),
        ],
    )
    def test_unusable_variable_fails_at_once_without_echoing_it(
        self, monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
    ) -> None:
        """An unset variable, plain http to a remote host, or a non-URL fail with no request."""
        if value is None:
            monkeypatch.delenv(HOOK_ENV, raising=False)
        else:
            monkeypatch.setenv(HOOK_ENV, value)
        sleeps = _Sleeps()
        with pytest.raises(bc.NotificationError, match=message) as info:
            bc.WebhookNotifier(HOOK_ENV, sleep=sleeps).notify(_run())
        assert sleeps.waits == []
        assert "example.com" not in str(info.value)

    def test_https_with_a_trusted_certificate(
        self, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Over https the certificate is verified: trusted it delivers, untrusted it fails once."""
        cert, key = tls_files
        with HookServer(tls=(str(cert), str(key))) as server:
            monkeypatch.setenv(HOOK_ENV, server.url(SECRET_PATH))
            trusted = ssl.create_default_context(cafile=str(cert))
            bc.WebhookNotifier(HOOK_ENV, ssl_context=trusted).notify(_run())
            assert len(server.received) == 1
            sleeps = _Sleeps()
            with pytest.raises(bc.NotificationError, match="certificate could not be verified"):
                bc.WebhookNotifier(HOOK_ENV, sleep=sleeps).notify(_run())
            assert sleeps.waits == []

    def test_a_rotated_url_is_read_at_each_call(
        self, hook: HookServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The variable is read when notifying, so a new URL needs no new notifier."""
        notifier = bc.WebhookNotifier(HOOK_ENV)
        monkeypatch.setenv(HOOK_ENV, hook.url("/old"))
        notifier.notify(_run())
        monkeypatch.setenv(HOOK_ENV, hook.url("/new"))
        notifier.notify(_run())
        assert [path for path, _ in hook.received] == ["/old", "/new"]

    def test_failure_is_recorded_on_the_run_and_never_fails_the_import(
        self, hook_env: HookServer, tmp_path: Path
    ) -> None:
        """Through deliver, a failing webhook becomes the run's notification_error in the store."""
        hook_env.script = [500]
        with bc.SQLiteStore(tmp_path / "state.db") as store:
            run = store.finish_run(
                attrs.evolve(_run(id=None), id=store.start_run(_run(id=None, result="running")).id)
            )
            notifier = bc.WebhookNotifier(HOOK_ENV, retries=1, sleep=_Sleeps())
            told = deliver(notifier, run, record_error=store.record_notification_error)
            assert told.notification_error == (
                f"the webhook in ${HOOK_ENV} failed after 2 attempt(s): it answered HTTP 500"
            )
            assert store.history("churn-risk")[0].notification_error == told.notification_error


class TestWebhookDocs:
    def test_webhook_section_examples_run(self) -> None:
        """The webhook examples in docs/notify.md run as shown."""
        assert run_doc_examples("notify.md", section="webhook") >= 6

    def test_rules_section_examples_run(self) -> None:
        """The notification-rule examples in docs/notify.md run as shown."""
        assert run_doc_examples("notify.md", section="rules") >= 6
