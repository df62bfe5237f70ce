"""Telling people after each import: email (SMTP) and webhooks (JSON or Slack).

:func:`render_message` turns an :class:`~braze_cohorts.ImportRun` into one plain-text
:class:`~email.message.EmailMessage`; :class:`SmtpNotifier` sends it with the standard library's
:mod:`smtplib`. :class:`WebhookNotifier` POSTs the run as JSON (:func:`run_to_dict`) or as a
Slack-compatible ``{"text": ...}`` message (:func:`render_slack_text`) to a URL it reads from an
environment variable at each call, so the URL (a secret) is never stored. Nothing here knows how
an import works: it only reads the finished run.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import http.client
import ipaddress
import json
import logging
import os
import re
import smtplib
import ssl as _ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from email.message import EmailMessage
from typing import Any, Literal, cast, get_args

import attrs
import tenacity

from braze_cohorts._models import ImportRun
from braze_cohorts.exceptions import (
    BrazeCohortsError,
    ConfigurationError,
    NotificationError,
    _describe_error,
)
from braze_cohorts.typing import Notifier, RecipientNotifier

__all__ = [
    "DEFAULT_WEBHOOK_ENV",
    "EMAIL_WARNINGS",
    "SUBJECT_PREFIX",
    "WEBHOOK_FORMATS",
    "SmtpNotifier",
    "WebhookFormat",
    "WebhookNotifier",
    "check_env_name",
    "render_message",
    "render_slack_text",
    "run_to_dict",
    "validate_recipients",
]

log = logging.getLogger(__name__)

#: Every subject starts with this, so mail filters can sort the messages.
SUBJECT_PREFIX = "[braze-cohorts]"


def _check_address(value: object) -> str:
    """Return ``value`` if it is one plausible email address (``a@b.c`` or ``Name <a@b.c>``)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"an email address must be a str, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ConfigurationError("an email address must not be empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ConfigurationError("an email address must not contain control characters")
    pairs = email.utils.getaddresses([text])
    addr = pairs[0][1] if len(pairs) == 1 else ""
    local, at, domain = addr.rpartition("@")
    if (
        not addr
        or not at
        or not local
        or "@" in local
        or any(ch.isspace() for ch in addr)
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
    ):
        raise ConfigurationError(f"not a valid email address: {text!r}")
    return text


def validate_recipients(recipients: Iterable[str] | str) -> tuple[str, ...]:
    """Validate email addresses and return them as a tuple, duplicates removed, order kept.

    Args:
        recipients: Addresses such as ``"ops@example.com"`` or ``"Ops <ops@example.com>"``.
            A single ``str`` is taken as one address.

    Raises:
        ConfigurationError: If any address is not a plausible single email address.
    """
    items = [recipients] if isinstance(recipients, str) else list(recipients)
    seen: dict[str, str] = {}
    for item in items:
        text = _check_address(item)
        key = email.utils.parseaddr(text)[1].lower()
        seen.setdefault(key, text)
    return tuple(seen.values())


def _plain(text: str) -> str:
    """Make ``text`` safe for one header line: control characters become spaces."""
    return " ".join("".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text).split())


def _utc(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _subject(run: ImportRun, paused_reason: str | None) -> str:
    name = _plain(run.name) or run.cohort_id
    suffix = ", schedule paused" if paused_reason is not None else ""
    return _plain(f"{SUBJECT_PREFIX} {name}: {run.result}{suffix}")


#: Why a run was a full resync, as the email says it.
_RESYNC_REASONS = {
    "requested": "asked for (full_resync=True / --full-resync)",
    "period_elapsed": "the cohort's last full resync is older than its resync period",
    "workspace_changed": "the state described another Braze workspace (endpoint, partner or "
    "data import key changed)",
    "first_import": "first import of this cohort with this state",
}
#: The most warnings an email lists (the history keeps them all).
EMAIL_WARNINGS = 5


def _kind_lines(run: ImportRun) -> list[str]:
    if not run.full_resync:
        return ["Kind:      delta (only changes and uncertain ids sent)"]
    reason = _RESYNC_REASONS.get(run.full_resync_reason or "", "unknown reason")
    return [f"Kind:      FULL RESYNC (every member re-sent): {reason}"]


def _warning_lines(run: ImportRun) -> list[str]:
    warnings = list(run.warnings)
    lines: list[str] = []
    if run.full_resync_reason == "first_import" and warnings:
        lines += ["", "Note:", f"  {_plain(warnings.pop(0))}"]
    if warnings:
        lines += [
            "",
            f"Warnings from Braze ({len(warnings)}; errors in answers that reported success - "
            "the ids of those requests are re-sent at the next import):",
        ]
        lines += [f"  - {_plain(w)}" for w in warnings[:EMAIL_WARNINGS]]
        if len(warnings) > EMAIL_WARNINGS:
            lines.append(
                f"  … and {len(warnings) - EMAIL_WARNINGS} more (braze-cohorts history "
                f"{run.cohort_id} --json)"
            )
    return lines


def render_body(run: ImportRun, *, paused_reason: str | None = None) -> str:
    """The plain-text body of the email about ``run`` (see :func:`render_message`)."""
    lines = [
        f"Cohort:    {_plain(run.name)} (id {_plain(run.cohort_id)})",
        f"Result:    {run.result}",
        f"Trigger:   {run.trigger}",
        f"Started:   {_utc(run.started_at)}",
    ]
    if run.finished_at is not None:
        took = (run.finished_at - run.started_at).total_seconds()
        lines.append(f"Finished:  {_utc(run.finished_at)} (took {_duration(max(took, 0.0))})")
    lines += _kind_lines(run)
    lines += [
        "",
        f"Users in the cohort: {run.users:,}",
        "  (members acknowledged by Braze; Braze ignores ids it does not know,",
        "  so the segment may hold fewer)",
        f"Added:     {run.added:,}",
        f"Removed:   {run.removed:,}",
        f"Rejected:  {run.rejected_total:,}",
    ]
    for reason, count in sorted(run.rejected.items()):
        lines.append(f"  - {reason}: {count:,}")
    retries = f" ({run.retries:,} retries)" if run.retries else ""
    lines.append(f"Requests:  {run.requests:,}{retries}")
    if run.error:
        lines += ["", "Error:", f"  {run.error}"]
    lines += _warning_lines(run)
    if paused_reason is not None:
        lines += [
            "",
            "The schedule of this cohort is now PAUSED and will not run again until it is resumed.",
            f"Reason: {paused_reason}",
            "Fix the cause (for example, enter the new data import key), then resume it:",
            f"  braze-cohorts schedule resume {run.cohort_id}",
        ]
    if run.id is not None:
        lines += ["", f"Run id: {run.id}"]
    lines += ["", "-- ", "Sent by braze-cohorts after an import."]
    return "\n".join(lines) + "\n"


def render_message(
    run: ImportRun,
    *,
    sender: str,
    recipients: Sequence[str],
    paused_reason: str | None = None,
) -> EmailMessage:
    """Build the email about one import.

    The subject reads ``"[braze-cohorts] <cohort name>: <result>"`` (with ``", schedule paused"``
    appended when the import paused its schedule). The plain-text body gives the cohort's name and
    id, the result and trigger, when it ran (UTC) and how long it took, whether it was a full
    resync and why, the users in the cohort (members acknowledged by Braze: Braze ignores ids it
    does not know), added, removed and rejected users (by reason), the requests sent, the error
    if any, and Braze's warnings (at most :data:`EMAIL_WARNINGS`; the history keeps them all).

    Args:
        run: The finished import.
        sender: The ``From`` address.
        recipients: The ``To`` addresses (validated).
        paused_reason: Why the cohort's schedule was paused by this import, if it was.

    Returns:
        The message, ready for :meth:`smtplib.SMTP.send_message`.

    Raises:
        ConfigurationError: If the sender or a recipient is not a valid address, or there is no
            recipient.
    """
    from_addr = _check_address(sender)
    to = validate_recipients(recipients)
    if not to:
        raise ConfigurationError("an email needs at least one recipient")
    msg = EmailMessage()
    msg["Subject"] = _subject(run, paused_reason)
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc))
    msg["Message-ID"] = email.utils.make_msgid(domain=from_addr.rpartition("@")[2].strip(">"))
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_body(run, paused_reason=paused_reason))
    return msg


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{attr.name} must be a positive number, not {value!r}")


def _port(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigurationError(f"port must be an int between 1 and 65535, not {value!r}")


def _host(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or any(ch.isspace() for ch in value):
        raise ConfigurationError(f"host must be a non-empty host name, not {value!r}")


def _sender(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    _check_address(value)


def _recipients(value: Iterable[str] | str) -> tuple[str, ...]:
    return validate_recipients(value)


def _smtp_error(exc: BaseException) -> str:
    """A short description of an SMTP failure (server code and first line; never a password)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        raw = exc.smtp_error
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        first = text.splitlines()[0] if text else ""
        return f"{type(exc).__name__}: {exc.smtp_code} {first}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"SMTPRecipientsRefused: all {len(exc.recipients)} recipient(s) refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@attrs.frozen(slots=True)
class SmtpNotifier:
    """Send one plain-text email per import through an SMTP server.

    Satisfies the :class:`braze_cohorts.typing.Notifier` protocol (``notify(run)`` mails the
    ``default_recipients``) and takes the recipients of a schedule through
    :meth:`notify_recipients`.

    Args:
        host: The SMTP server.
        port: Its port (25; 587 for STARTTLS; 465 for implicit TLS).
        sender: The ``From`` address.
        username: Log in with this user name (after STARTTLS, if enabled).
        password: The password for ``username``; never shown in ``repr`` or logs.
        starttls: Upgrade the connection with ``STARTTLS`` before logging in.
        ssl: Connect with implicit TLS (``SMTP_SSL``); excludes ``starttls``.
        timeout: Seconds to wait for the server on each step.
        default_recipients: Who gets the mail when the caller names nobody.
        ssl_context: The TLS context (default: :func:`ssl.create_default_context`).

    Raises:
        ConfigurationError: If an address, the port or the timeout is invalid, a password is
            given without a user name, or both ``starttls`` and ``ssl`` are set.
    """

    host: str = attrs.field(validator=_host)
    port: int = attrs.field(default=25, validator=_port)
    sender: str = attrs.field(kw_only=True, validator=_sender)
    username: str | None = attrs.field(default=None, kw_only=True)
    password: str | None = attrs.field(default=None, kw_only=True, repr=False)
    starttls: bool = attrs.field(default=False, kw_only=True)
    ssl: bool = attrs.field(default=False, kw_only=True)
    timeout: float = attrs.field(default=10.0, kw_only=True, validator=_positive)
    default_recipients: tuple[str, ...] = attrs.field(
        default=(), kw_only=True, converter=_recipients
    )
    ssl_context: _ssl.SSLContext | None = attrs.field(
        default=None, kw_only=True, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if self.starttls and self.ssl:
            raise ConfigurationError("choose either starttls or ssl, not both")
        if self.password is not None and not self.username:
            raise ConfigurationError("a password needs a username")

    def notify(self, run: ImportRun) -> None:
        """Mail ``run`` to the default recipients (nothing is sent when there are none).

        Raises:
            NotificationError: If the server could not be reached or refused the message.
        """
        if not self.default_recipients:
            log.debug("no default recipients: no email for run %s", run.id)
            return
        self.notify_recipients(run, self.default_recipients)

    def notify_recipients(
        self,
        run: ImportRun,
        recipients: Sequence[str],
        *,
        paused_reason: str | None = None,
    ) -> None:
        """Mail ``run`` to ``recipients`` (the default recipients when empty) in one email.

        Args:
            run: The finished import.
            recipients: The schedule's recipients.
            paused_reason: Why the import paused the cohort's schedule, if it did.

        Raises:
            ConfigurationError: If a recipient is not a valid address.
            NotificationError: If the server could not be reached, refused the login or refused
                the message for any recipient.
        """
        to = validate_recipients(recipients) or self.default_recipients
        if not to:
            log.debug("no recipients: no email for run %s", run.id)
            return
        msg = render_message(run, sender=self.sender, recipients=to, paused_reason=paused_reason)
        self.send(msg)
        log.info("import email for run %s sent to %d recipient(s)", run.id, len(to))

    def send(self, msg: EmailMessage) -> None:
        """Send one prepared message (its ``To`` header names the recipients).

        Raises:
            NotificationError: If the server could not be reached, refused the login or refused
                the message for any recipient.
        """
        context = self.ssl_context
        try:
            smtp: smtplib.SMTP
            if self.ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=context or _ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context or _ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            log.warning("email to %s:%d failed: %s", self.host, self.port, type(exc).__name__)
            raise NotificationError(
                f"could not send the email via {self.host}:{self.port}: {_smtp_error(exc)}"
            ) from exc
        if refused:
            raise NotificationError(
                f"the server {self.host}:{self.port} refused {len(refused)} recipient(s)"
            )


#: How a webhook's body is shaped: the run as JSON, or a Slack-compatible ``{"text": ...}``.
WebhookFormat = Literal["json", "slack"]
WEBHOOK_FORMATS: tuple[str, ...] = get_args(WebhookFormat)

#: The environment variable :class:`WebhookNotifier` reads its URL from by default.
DEFAULT_WEBHOOK_ENV = "BRAZE_COHORTS_WEBHOOK_URL"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: How much of a webhook's answer is read (and then dropped): enough to reuse nothing, finish.
_MAX_ANSWER = 64 * 1024


def check_env_name(value: object, what: str = "webhook_env") -> str:
    """Return ``value`` if it is an environment variable's name (the URL itself is refused).

    Raises:
        ConfigurationError: If ``value`` is not a name of letters, digits and ``_``. The value
            is never repeated in the message: it may be the secret itself.
    """
    if not isinstance(value, str) or _ENV_NAME.fullmatch(value) is None:
        hint = (
            " (it looks like a URL: put the URL in an environment variable and give its name)"
            if isinstance(value, str) and "://" in value
            else ""
        )
        raise ConfigurationError(
            f"{what} must be the name of an environment variable (letters, digits, _){hint}"
        )
    return value


def run_to_dict(run: ImportRun, *, paused_reason: str | None = None) -> dict[str, Any]:
    """The run as a JSON-safe dict: what :class:`WebhookNotifier` posts in the ``json`` format.

    The same object ``braze-cohorts history --json`` prints: every field of
    :class:`~braze_cohorts.ImportRun` under its own name (times as ISO 8601 UTC, ``rejected`` by
    reason, ``warnings`` as a list), plus ``rejected_total``, ``seconds`` (the duration;
    ``None`` while running) and ``paused_reason`` (why this import paused its schedule, else
    ``None``).
    """
    return {**run.to_dict(), "paused_reason": paused_reason}


_SLACK_ICON = {
    "succeeded": ":white_check_mark:",
    "dry_run": ":information_source:",
    "refused": ":no_entry:",
    "interrupted": ":warning:",
}


def _slack_escape(text: str) -> str:
    """Escape what Slack's mrkdwn treats as markup (``&``, ``<``, ``>``) in user text."""
    return _plain(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack_text(run: ImportRun, *, paused_reason: str | None = None) -> str:
    """The message :class:`WebhookNotifier` posts in the ``slack`` format (Slack ``mrkdwn``).

    Example:
        >>> import datetime as dt, braze_cohorts as bc
        >>> at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
        >>> run = bc.ImportRun("power-users", "Power users", "scheduled", at, "succeeded",
        ...                    at + dt.timedelta(seconds=42), users=1200, added=30, removed=4,
        ...                    id=7)
        >>> print(render_slack_text(run))
        :white_check_mark: *Power users* (`power-users`): scheduled import succeeded
        1,200 users, +30 / -4, 0 rejected, 42.0 s (run 7)
    """
    icon = _SLACK_ICON.get(run.result, ":x:")
    lines = [
        f"{icon} *{_slack_escape(run.name) or run.cohort_id}* "
        f"(`{_slack_escape(run.cohort_id)}`): {run.trigger} import {run.result}"
    ]
    took = (
        ""
        if run.finished_at is None
        else f", {_duration(max((run.finished_at - run.started_at).total_seconds(), 0.0))}"
    )
    kind = f", full resync ({run.full_resync_reason})" if run.full_resync else ""
    ident = f" (run {run.id})" if run.id is not None else ""
    lines.append(
        f"{run.users:,} users, +{run.added:,} / -{run.removed:,}, "
        f"{run.rejected_total:,} rejected{kind}{took}{ident}"
    )
    if run.error:
        lines.append(f"Error: {_slack_escape(run.error)}")
    if run.warnings:
        lines.append(f"{len(run.warnings)} warning(s) from Braze: {_slack_escape(run.warnings[0])}")
    if paused_reason is not None:
        lines.append(
            f":double_vertical_bar: Schedule PAUSED: {_slack_escape(paused_reason)}. "
            f"Fix it, then `braze-cohorts schedule resume {_slack_escape(run.cohort_id)}`"
        )
    return "\n".join(lines)


class _RetryableError(Exception):
    """A webhook attempt that may succeed if tried again (timeout, connection, 429/5XX)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _basic(user: str | None, password: str | None) -> str:
    raw = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}"
    return "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")


def _env_name(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    check_env_name(value, attr.name)


def _format(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in WEBHOOK_FORMATS:
        raise ConfigurationError(f"format must be one of {WEBHOOK_FORMATS}, not {value!r}")


def _retries(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise ConfigurationError(f"retries must be an int from 0 to 10, not {value!r}")


@attrs.frozen(slots=True)
class WebhookNotifier:
    """POST each finished import to a webhook: the run as JSON, or a Slack message.

    The URL is a secret (a Slack incoming-webhook URL is its own password), so the notifier
    keeps only the *name* of the environment variable that holds it and reads the variable at
    each call: the URL is never stored, logged, or shown in ``repr`` or an error, and a rotated
    URL is picked up without a restart. ``https://`` is required (plain ``http://`` only to a
    loopback address); redirects are not followed; ``HTTPS_PROXY``/``NO_PROXY`` are honoured.

    Timeouts, connection errors, ``429`` and ``5XX`` answers are retried ``retries`` times with
    a short exponential backoff (with jitter); anything else (a ``4XX``, a redirect, a missing
    variable) fails at once. Failing raises :class:`~braze_cohorts.NotificationError`, which the
    sync engine and the scheduler record on the run (``notification_error``): a webhook never
    fails an import.

    Satisfies :class:`~braze_cohorts.typing.Notifier` and
    :class:`~braze_cohorts.typing.RecipientNotifier` (recipients are ignored; the reason a
    schedule was paused is included).

    Args:
        url_env: The environment variable that holds the URL.
        format: ``"json"`` (:func:`run_to_dict`) or ``"slack"`` (``{"text": ...}``,
            :func:`render_slack_text`; also understood by Mattermost and Rocket.Chat).
        timeout: Seconds to wait for the connection and for the answer, per attempt.
        retries: Attempts after the first one (0-10).
        sleep: How to wait between attempts (injected by tests).
        ssl_context: The TLS context (default: :func:`ssl.create_default_context`).

    Raises:
        ConfigurationError: If ``url_env`` is not a variable's name (a URL is refused, without
            being repeated), or the format, timeout or retries are invalid.

    Example:
        >>> notifier = WebhookNotifier("SLACK_ALERTS_URL", format="slack")
        >>> notifier
        WebhookNotifier(url_env='SLACK_ALERTS_URL', format='slack', timeout=10.0, retries=2)
    """

    url_env: str = attrs.field(default=DEFAULT_WEBHOOK_ENV, validator=_env_name)
    format: WebhookFormat = attrs.field(default="json", kw_only=True, validator=_format)
    timeout: float = attrs.field(default=10.0, kw_only=True, validator=_positive)
    retries: int = attrs.field(default=2, kw_only=True, validator=_retries)
    sleep: Callable[[float], None] = attrs.field(
        default=time.sleep, kw_only=True, repr=False, eq=False
    )
    ssl_context: _ssl.SSLContext | None = attrs.field(
        default=None, kw_only=True, repr=False, eq=False
    )

    def notify(self, run: ImportRun) -> None:
        """POST ``run``.

        Raises:
            NotificationError: If the variable is unset or not an allowed URL, or the webhook
                did not answer 2XX (after retries, for timeouts, connection errors, 429, 5XX).
        """
        self.notify_recipients(run, ())

    def notify_recipients(
        self,
        run: ImportRun,
        recipients: Sequence[str],
        *,
        paused_reason: str | None = None,
    ) -> None:
        """POST ``run`` (``recipients`` are for email and ignored here).

        Raises:
            NotificationError: As for :meth:`notify`.
        """
        if self.format == "slack":
            payload: dict[str, Any] = {"text": render_slack_text(run, paused_reason=paused_reason)}
        else:
            payload = run_to_dict(run, paused_reason=paused_reason)
        status = self.post(json.dumps(payload, sort_keys=True).encode("utf-8"))
        log.info(
            "webhook %s answered %d for run %s of cohort %s",
            self.url_env,
            status,
            run.id,
            run.cohort_id,
            extra={"cohort_id": run.cohort_id, "run_id": run.id},
        )

    def post(self, body: bytes) -> int:
        """POST ``body`` (JSON) to the URL in the variable, with retries; return the status.

        Raises:
            NotificationError: As for :meth:`notify`.
        """
        url = self._url()
        attempts = 0

        def attempt() -> int:
            nonlocal attempts
            attempts += 1
            return self._post_once(url, body)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8.0) + tenacity.wait_random(0, 0.5),
            retry=tenacity.retry_if_exception_type(_RetryableError),
            sleep=self.sleep,
            before_sleep=lambda state: log.debug(
                "webhook %s attempt %d failed; retrying", self.url_env, state.attempt_number
            ),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _RetryableError as exc:
            log.warning("webhook %s failed after %d attempt(s)", self.url_env, attempts)
            raise NotificationError(
                f"the webhook in ${self.url_env} failed after {attempts} attempt(s): {exc.what}"
            ) from None

    def _url(self) -> urllib.parse.SplitResult:
        raw = os.environ.get(self.url_env, "").strip()
        if not raw:
            raise NotificationError(f"the webhook URL variable ${self.url_env} is not set")
        try:
            parts = urllib.parse.urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise NotificationError(f"${self.url_env} does not hold a valid URL") from None
        host = parts.hostname or ""
        if not host or parts.scheme not in ("https", "http"):
            raise NotificationError(f"${self.url_env} does not hold an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(host):
            raise NotificationError(
                f"${self.url_env} holds a plain http:// URL; use https:// (plain http is "
                "allowed to a loopback address only)"
            )
        return parts

    def _connection(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host = parts.hostname or ""
        if parts.scheme == "http":
            return http.client.HTTPConnection(host, parts.port, timeout=self.timeout)
        context = self.ssl_context or _ssl.create_default_context()
        proxy = urllib.request.getproxies().get("https")
        if proxy and not urllib.request.proxy_bypass(host):
            pparts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                pparts.hostname or "", pparts.port or 8080, timeout=self.timeout, context=context
            )
            headers = (
                {"Proxy-Authorization": _basic(pparts.username, pparts.password)}
                if pparts.username
                else None
            )
            conn.set_tunnel(host, parts.port or 443, headers=headers)
            return conn
        return http.client.HTTPSConnection(host, parts.port, timeout=self.timeout, context=context)

    def _post_once(self, parts: urllib.parse.SplitResult, body: bytes) -> int:
        from braze_cohorts._version import __version__

        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"braze-cohorts/{__version__}",
        }
        if parts.username:
            headers["Authorization"] = _basic(parts.username, parts.password)
        conn = self._connection(parts)
        try:
            conn.request("POST", path, body=body, headers=headers)
            answer = conn.getresponse()
            answer.read(_MAX_ANSWER)
            status = answer.status
        except _ssl.SSLCertVerificationError:
            raise NotificationError(
                f"the webhook in ${self.url_env}: its TLS certificate could not be verified"
            ) from None
        except TimeoutError:
            raise _RetryableError(f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _RetryableError(f"connection failed ({type(exc).__name__})") from None
        finally:
            conn.close()
        if 200 <= status < 300:
            return status
        if status == 429 or status >= 500:
            raise _RetryableError(f"it answered HTTP {status}")
        if 300 <= status < 400:
            raise NotificationError(
                f"the webhook in ${self.url_env} answered a redirect (HTTP {status}); redirects "
                "are not followed: give the final URL"
            )
        raise NotificationError(f"the webhook in ${self.url_env} answered HTTP {status}")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, BrazeCohortsError):
        return _describe_error(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Combined:
    """Several notifiers told in turn; one failing does not keep the others from being told.

    Raises one :class:`~braze_cohorts.NotificationError` naming every failure.
    """

    def __init__(self, parts: Sequence[Notifier | RecipientNotifier]) -> None:
        self.parts = tuple(parts)

    def notify_recipients(
        self,
        run: ImportRun,
        recipients: Sequence[str],
        *,
        paused_reason: str | None = None,
    ) -> None:
        errors: list[str] = []
        for part in self.parts:
            try:
                if isinstance(part, RecipientNotifier):
                    part.notify_recipients(run, recipients, paused_reason=paused_reason)
                else:
                    part.notify(run)
            except Exception as exc:
                errors.append(_error_text(exc))
        if errors:
            raise NotificationError("; ".join(errors))


def combine(
    *notifiers: Notifier | RecipientNotifier | None,
) -> Notifier | RecipientNotifier | None:
    """One notifier that tells each of ``notifiers`` (``None`` ones left out) in turn.

    Returns ``None`` when none is left, the notifier itself when one is.
    """
    parts = [n for n in notifiers if n is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return _Combined(parts)


def deliver(
    notifier: Notifier | RecipientNotifier | None,
    run: ImportRun,
    *,
    record_error: Callable[[int, str], None],
    recipients: Sequence[str] | None = None,
    paused_reason: str | None = None,
) -> ImportRun:
    """Tell ``notifier`` about ``run``: the one notification path of sync and scheduler.

    A notifier that can mail given recipients (:class:`~braze_cohorts.typing.RecipientNotifier`)
    gets ``recipients`` when they are given (a schedule's own); otherwise its plain ``notify``
    is called. A notifier's failure never fails the import: it is logged, recorded on the run
    through ``record_error(run_id, message)`` and returned as the run's ``notification_error``.

    Returns:
        ``run``, with ``notification_error`` set when the notification failed.
    """
    if notifier is None:
        return run
    try:
        if recipients is not None and isinstance(notifier, RecipientNotifier):
            notifier.notify_recipients(run, recipients, paused_reason=paused_reason)
        elif isinstance(notifier, RecipientNotifier) and not hasattr(notifier, "notify"):
            notifier.notify_recipients(run, (), paused_reason=paused_reason)
        else:
            cast("Notifier", notifier).notify(run)
    except Exception as exc:  # a notification never fails the import
        message = _error_text(exc)
        log.warning("notification for cohort %s failed: %s", run.cohort_id, type(exc).__name__)
        if run.id is not None:
            try:
                record_error(run.id, message)
            except BrazeCohortsError:
                log.exception("could not record the notification error of run %s", run.id)
        return attrs.evolve(run, notification_error=message)
    return run
