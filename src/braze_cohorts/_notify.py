"""Email after each import: the SMTP notifier and the message it sends.

:func:`render_message` turns an :class:`~braze_cohorts.ImportRun` into one plain-text
:class:`~email.message.EmailMessage`; :class:`SmtpNotifier` sends it with the standard library's
:mod:`smtplib`. Nothing here knows how an import works: it only reads the finished run.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import smtplib
import ssl as _ssl
from collections.abc import Callable, Iterable, Sequence
from email.message import EmailMessage
from typing import cast

import attrs

from braze_cohorts._models import ImportRun
from braze_cohorts.exceptions import (
    BrazeCohortsError,
    ConfigurationError,
    NotificationError,
    _describe_error,
)
from braze_cohorts.typing import Notifier, RecipientNotifier

__all__ = [
    "SUBJECT_PREFIX",
    "SmtpNotifier",
    "render_message",
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
    lines += [
        "",
        f"Users in the cohort: {run.users:,}",
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
    id, the result and trigger, when it ran (UTC) and how long it took, the users in the cohort,
    added, removed and rejected users (by reason), the requests sent, and the error if any.

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
        message = (
            _describe_error(exc)
            if isinstance(exc, BrazeCohortsError)
            else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        )
        log.warning("notification for cohort %s failed: %s", run.cohort_id, type(exc).__name__)
        if run.id is not None:
            try:
                record_error(run.id, message)
            except BrazeCohortsError:
                log.exception("could not record the notification error of run %s", run.id)
        return attrs.evolve(run, notification_error=message)
    return run
