"""Webhook channels: named URLs that get a signed JSON POST for each notification.

The URL (whose path often holds a token) and the signing secret are encrypted with the
store key, as data-source URLs are; people see the URL masked and never the secret, which
is shown once when set. Each call carries ``X-KPI-Desk-Timestamp`` and
``X-KPI-Desk-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">``, so a receiver
can check it came from here and is fresh. Only http and https URLs are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import secrets as random_secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import sqlalchemy as sa

from . import audit, db, keys
from . import notifications as queue
from .config import Settings
from .errors import ValidationError
from .notification_records import ChannelHealth, NotificationEvent, WebhookSaved
from .notifications import Permanent, Transient
from .schema import webhook_channels as channels
from .vocabulary import AuditAction

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_URL_CHARS = 2_000
MIN_SECRET_CHARS, MAX_SECRET_CHARS = 16, 200
_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def checked_name(name: Any) -> str:
    text = name.strip() if isinstance(name, str) else ""
    if not NAME.match(text):
        raise ValidationError(
            "A webhook name must start with a letter or digit and hold only letters, digits, "
            "'_', '-' and '.' (at most 100).",
            {"name": "letters, digits, '_', '-' and '.' only"},
        )
    return text


def checked_url(url: Any) -> str:
    """An http or https URL with a host; anything else refused with a clear message."""
    text = url.strip() if isinstance(url, str) else ""
    parts = urllib.parse.urlsplit(text) if text else None
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        scheme = f" (this one starts with '{parts.scheme}:')" if parts and parts.scheme else ""
        raise ValidationError(
            f"A webhook URL must start with http:// or https://{scheme}.",
            {"url": "http:// or https:// only"},
        )
    if not _usable(parts, text):
        raise ValidationError(
            f"A webhook URL needs a host name and at most {MAX_URL_CHARS} characters, "
            "without spaces.",
            {"url": "not a usable address"},
        )
    return text


def _usable(parts: urllib.parse.SplitResult, text: str) -> bool:
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return bool(parts.hostname) and len(text) <= MAX_URL_CHARS and not _SPACE.search(text)


def masked_url(url: str) -> str:
    """Scheme, host and port only: a webhook's path and query often hold its token."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    where = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    hidden = parts.path not in ("", "/") or parts.query
    return where + ("/…" if hidden else "/")


def checked_secret(secret: Any) -> str:
    if not isinstance(secret, str) or not (
        MIN_SECRET_CHARS <= len(secret.strip()) <= MAX_SECRET_CHARS
    ):
        raise ValidationError(
            f"A webhook secret must be text of {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} "
            "characters (leave it out to have one generated).",
            {"secret": "too short or too long"},
        )
    return secret.strip()


def new_secret() -> str:
    return random_secrets.token_urlsafe(32)


def add_webhook(
    connection: sa.engine.Connection, name: str, url: str, actor: str, secret: str | None
) -> WebhookSaved:
    name, url = checked_name(name), checked_url(url)
    secret = new_secret() if secret is None else checked_secret(secret)
    if queue.channel_row(connection, name, required=False) is not None:
        raise ValidationError(
            f"A webhook named '{name}' already exists.", {"name": "already exists"}
        )
    key = keys.of(connection)
    connection.execute(
        channels.insert().values(
            name=name,
            url=key.encrypt(url),
            display_url=masked_url(url),
            secret=key.encrypt(secret),
            active=True,
            created_by=actor,
            created_at=db.utcnow(),
            consecutive_failures=0,
            last_delivery_failed=False,
        )
    )
    after = {"name": name, "url": masked_url(url), "active": True}
    _audit(connection, actor, AuditAction.CHANNEL_ADD, name, {"after": after})
    return WebhookSaved(channel=queue.webhook(connection, name), secret=secret)


def update_webhook(
    connection: sa.engine.Connection,
    name: str,
    actor: str,
    *,
    url: str | None,
    active: bool | None,
    secret: str | None,
    rotate_secret: bool,
) -> WebhookSaved:
    """Change a webhook's address, switch it on or off, or set a new secret (given, or
    generated with ``rotate_secret``). A new address starts its health afresh."""
    before = queue.webhook(connection, name)
    values: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    key = keys.of(connection)
    if url is not None:
        url = checked_url(url)
        values.update(url=key.encrypt(url), display_url=masked_url(url))
        values.update(consecutive_failures=0, last_delivery_failed=False, last_error=None)
        changes["url"] = {"before": before.url, "after": masked_url(url)}
    if active is not None and bool(active) != before.active:
        values["active"] = bool(active)
        changes["active"] = {"before": before.active, "after": bool(active)}
    if secret is not None or rotate_secret:
        secret = checked_secret(secret) if secret is not None else new_secret()
        values["secret"] = key.encrypt(secret)
        changes["secret"] = "replaced"
    if not values:
        return WebhookSaved(channel=before, secret=None)
    connection.execute(channels.update().where(channels.c.name == before.name).values(**values))
    _audit(connection, actor, AuditAction.CHANNEL_UPDATE, before.name, {"changes": changes})
    return WebhookSaved(channel=queue.webhook(connection, before.name), secret=secret)


def remove_webhook(connection: sa.engine.Connection, name: str, actor: str) -> None:
    """Remove a channel; its deliveries still queued fail when their turn comes."""
    gone = queue.webhook(connection, name)
    connection.execute(channels.delete().where(channels.c.name == gone.name))
    before = {"name": gone.name, "url": gone.url, "active": gone.active}
    _audit(connection, actor, AuditAction.CHANNEL_REMOVE, gone.name, {"before": before})


def webhook_target(connection: sa.engine.Connection, name: str) -> tuple[str, str] | None:
    """An active channel's real URL and secret, decrypted only to call it; else None."""
    row = queue.channel_row(connection, name, required=False)
    if row is None or not row.active:
        return None
    key = keys.of(connection)
    return key.decrypt(row.url), key.decrypt(row.secret)


def _audit(
    connection: sa.engine.Connection,
    actor: str,
    action: AuditAction,
    name: str,
    details: dict[str, Any],
) -> None:
    audit.append(connection, actor=actor, action=action, entity=f"webhook:{name}", details=details)


def health(connection: sa.engine.Connection) -> list[ChannelHealth]:
    """Every webhook channel's health, by name."""
    pending = queue.pending_counts(connection, queue.WEBHOOK)
    return [
        ChannelHealth(
            channel="webhook",
            name=channel.name,
            configured=True,
            active=channel.active,
            failing=channel.failing,
            detail=f"POST to {channel.url}",
            pending=pending.get(channel.name, 0),
            last_error=channel.last_error,
            last_failure_at=channel.last_failure_at,
            last_success_at=channel.last_success_at,
        )
        for channel in queue.all_webhooks(connection)
    ]


# -- calling ---------------------------------------------------------------------------------


def body(settings: Settings, event: NotificationEvent, notification_id: int) -> str:
    """The JSON a webhook receives: ``text`` (one line, what Slack and Teams show), the
    link to the run, and the whole event."""
    link = queue.run_link(event.run_id, settings.public_url)
    headline = f"{queue.KIND_WORDS[event.kind]}: {event.summary}"
    payload = {
        "text": f"{headline} {link}" if link else headline,
        "kind": event.kind,
        "notification_id": notification_id,
        "link": link,
        "event": event.model_dump(mode="json"),
    }
    return db.dumps(payload)


def signature(secret: str, timestamp: str, text: str) -> str:
    """``X-KPI-Desk-Signature``: HMAC-SHA256 of ``"{timestamp}.{body}"`` with the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{text}".encode(), hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not something to follow (a POST would turn into a GET)."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, secret: str, text: str, timeout_s: float) -> None:
    """POST ``text`` (JSON) signed with ``secret``; a 2xx answer is success, anything else
    raises ``Transient`` (5xx, 408, 429, no answer) or ``Permanent``."""
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=text.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "KPI-Desk",
            "X-KPI-Desk-Timestamp": timestamp,
            "X-KPI-Desk-Signature": signature(secret, timestamp, text),
        },
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as answer:
        raise _http_fault(answer.code, answer.reason, _excerpt(answer)) from None
    except urllib.error.URLError as error:
        raise Transient(f"cannot reach the webhook: {error.reason}") from None
    except TimeoutError:
        raise Transient(f"no answer from the webhook within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise Transient(f"the webhook call broke off: {error or type(error).__name__}") from None
    if not 200 <= status < 300:
        raise _http_fault(status, "", "")


def _http_fault(code: int, reason: Any, excerpt: str) -> Exception:
    said = f"the webhook answered HTTP {code} {reason or ''}".rstrip()
    said += f": {excerpt}" if excerpt else ""
    if 300 <= code < 400:
        return Permanent(f"{said} (a redirect: set the address it points to)")
    if code >= 500 or code in (408, 429):  # the server's trouble, or "later, please"
        return Transient(said)
    return Permanent(said)


def _excerpt(answer: urllib.error.HTTPError) -> str:
    """The start of an error answer's body (receivers often say there what is wrong)."""
    try:
        text = answer.read(200).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    return " ".join(text.split())
