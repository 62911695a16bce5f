"""The email channel: one message per person, plain text and HTML, sent with smtplib.

The mail server comes from the settings (``KPI_SMTP_HOST``, port, STARTTLS, user and
password); with no host, no email is queued at all. Every text that people typed (KPI and
rule names, units, summaries) is escaped in the HTML part, and header values are kept to
one line, so a name can neither inject markup nor headers.
"""

from __future__ import annotations

import datetime as dt
import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import sqlalchemy as sa

from . import notifications as queue
from .config import Settings
from .formats import MISSING, format_time, format_value
from .notification_records import ChannelHealth, NotificationEvent
from .notifications import Permanent, Transient
from .schema import notification_attempts as tries_log
from .schema import notification_deliveries as deliveries

MAX_SUBJECT_CHARS = 200


def message(
    settings: Settings, event: NotificationEvent, recipient: str, notification_id: int
) -> EmailMessage:
    """The email for one person: a subject naming what happened, then the figures."""
    link = queue.run_link(event.run_id, settings.public_url)
    mail = EmailMessage()
    mail["Subject"] = subject(event)
    mail["From"] = settings.smtp_from
    mail["To"] = recipient
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid("kpi-desk")
    mail["Auto-Submitted"] = "auto-generated"  # no out-of-office answers, please
    mail["X-KPI-Desk-Notification"] = str(notification_id)
    mail.set_content(plain_text(event, link))
    mail.add_alternative(html_text(event, link), subtype="html")
    return mail


def subject(event: NotificationEvent) -> str:
    text = f"[KPI Desk] {queue.KIND_WORDS[event.kind]}: {event.kpi_name} ({event.rule_name})"
    return _one_line(text)[:MAX_SUBJECT_CHARS]


def facts(event: NotificationEvent) -> list[tuple[str, str]]:
    """What every message shows, as (label, text) pairs."""
    change = MISSING if event.change_pct is None else f"{event.change_pct:+.1f}%"
    return [
        ("KPI", event.kpi_name),
        ("Rule", event.rule_name),
        ("State", event.state),
        ("Value", format_value(event.value, event.unit)),
        ("Target", format_value(event.target, event.unit)),
        ("Change", change),
        ("When", format_time(event.occurred_at)),
    ]


def plain_text(event: NotificationEvent, link: str | None) -> str:
    lines = [event.summary, ""]
    lines += [f"{label}: {text}" for label, text in facts(event)]
    if link:
        lines += ["", f"Open the run: {link}"]
    return "\n".join(lines) + "\n"


def html_text(event: NotificationEvent, link: str | None) -> str:
    """The same facts as a small table; every value escaped."""
    rows = "\n".join(
        f'<tr><th align="left" style="padding-right:1em">{html.escape(label)}</th>'
        f"<td>{html.escape(text)}</td></tr>"
        for label, text in facts(event)
    )
    opener = (
        f'<p><a href="{html.escape(link, quote=True)}">Open the run in KPI Desk</a></p>'
        if link
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html><body style="font-family:sans-serif">\n'
        f"<p>{html.escape(event.summary)}</p>\n<table>\n{rows}\n</table>\n{opener}\n"
        "</body></html>\n"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def send(settings: Settings, mail: EmailMessage) -> None:
    """Hand one message to the mail server: STARTTLS and login when set (port 465: TLS
    from the start). Raises ``Transient`` (4xx, unreachable) or ``Permanent`` (5xx)."""
    implicit_tls = settings.smtp_port == 465
    client = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.notify_timeout_s
    try:
        with client(host, port, timeout=timeout) as smtp:
            if settings.smtp_starttls and not implicit_tls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password)
            smtp.send_message(mail)
    except smtplib.SMTPNotSupportedError as error:
        raise Permanent(f"the mail server does not offer this: {error}") from None
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _text in error.recipients.values()]
        fault = Transient if all(400 <= c < 500 for c in codes) else Permanent
        raise fault(f"the mail server refused the recipient ({codes[0]})") from None
    except smtplib.SMTPResponseException as error:
        said = error.smtp_error
        said = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said or "")
        fault = Transient if 400 <= error.smtp_code < 500 else Permanent
        raise fault(f"the mail server answered {error.smtp_code} {said}".rstrip()) from None
    except ssl.SSLCertVerificationError as error:
        raise Permanent(f"the mail server's certificate is not trusted: {error}") from None
    except (smtplib.SMTPException, OSError) as error:
        raise Transient(f"cannot reach the mail server: {error or type(error).__name__}") from None


def health(connection: sa.engine.Connection, settings: Settings) -> ChannelHealth:
    """Whether email is set up, and failing: its last tries all failed, or its last
    delivery did."""
    on_email = deliveries.c.channel == queue.EMAIL
    logged = sa.select(tries_log).join(deliveries).where(on_email)
    recent = connection.execute(
        logged.order_by(tries_log.c.id.desc()).limit(queue.FAILING_AFTER)
    ).all()
    failure = connection.execute(
        logged.where(tries_log.c.ok.is_(False)).order_by(tries_log.c.id.desc()).limit(1)
    ).first()
    success: dt.datetime | None = connection.execute(
        sa.select(sa.func.max(tries_log.c.attempted_at))
        .join(deliveries)
        .where(on_email, tries_log.c.ok.is_(True))
    ).scalar_one()
    last_status = connection.execute(
        sa.select(deliveries.c.status)
        .where(on_email, deliveries.c.status != queue.PENDING)
        .order_by(sa.func.coalesce(deliveries.c.sent_at, deliveries.c.failed_at).desc())
        .limit(1)
    ).scalar_one_or_none()
    all_failed = len(recent) == queue.FAILING_AFTER and not any(r.ok for r in recent)
    return ChannelHealth(
        channel="email",
        name="email",
        configured=bool(settings.smtp_host),
        active=bool(settings.smtp_host),
        failing=all_failed or last_status == queue.FAILED,
        detail=_where(settings),
        pending=sum(queue.pending_counts(connection, queue.EMAIL).values()),
        last_error=failure.error if failure else None,
        last_failure_at=failure.attempted_at if failure else None,
        last_success_at=success,
    )


def _where(settings: Settings) -> str:
    if not settings.smtp_host:
        return "off: set KPI_SMTP_HOST to send alert emails"
    where = f"via {settings.smtp_host}:{settings.smtp_port}"
    if settings.smtp_port == 465:
        where += " over TLS"
    elif settings.smtp_starttls:
        where += " with STARTTLS"
    return where + (f" as {settings.smtp_user}" if settings.smtp_user else "")
