"""Notifications: what alert rules tell people, queued in the store for the workers.

``enqueue`` is called inside the transaction that decides to notify (an alert rule's
evaluation): it stores the event once and one delivery per channel and target, and sends
nothing, so delivery can never delay or fail a run. An in-app inbox entry is delivered by
being written; emails (``mail.py``) and webhook calls (``webhooks.py``) wait for
``delivery.deliver_due`` in a worker. Also here: the inbox, and what became of deliveries.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from . import db
from .config import Settings
from .errors import NotFoundError, ValidationError
from .notification_records import (
    Delivery,
    DeliveryAttempt,
    InboxItem,
    NotificationEvent,
    WebhookChannel,
)
from .schema import notification_attempts as tries_log
from .schema import notification_deliveries as deliveries
from .schema import notifications
from .schema import webhook_channels as channels
from .validation import MAX_ACTOR_CHARS

log = logging.getLogger(__name__)

INBOX, EMAIL, WEBHOOK = "inbox", "email", "webhook"
PENDING, SENT, FAILED = "pending", "sent", "failed"
STATUSES = (PENDING, SENT, FAILED)
RUN_LINK = "drilldown?execution={run_id}"  # the shape of kpi_ui.links.run_url
FAILING_AFTER = 3  # failed tries in a row that make a channel "failing"
KIND_WORDS = {  # each kind of event in a subject line or a chat message
    "firing": "Alert",
    "renotify": "Still alerting",
    "recovered": "Recovered",
    "no_data": "No data",
    "error": "Run failed",
    "test": "Test",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_SETTINGS: weakref.WeakKeyDictionary[sa.engine.Engine, Settings] = weakref.WeakKeyDictionary()


def attach(engine: sa.engine.Engine, settings: Settings) -> None:
    """Make ``settings`` the ones ``enqueue`` reads for ``engine`` (the store's engine):
    whether email is on decides which deliveries an event gets."""
    _SETTINGS[engine] = settings


def settings_of(connection: sa.engine.Connection) -> Settings:
    """The settings attached to the connection's store, else the environment's."""
    return _SETTINGS.get(connection.engine) or Settings.from_env()


def run_link(run_id: int | None, public_url: str = "") -> str | None:
    """The drill-down of a run: relative, or absolute under ``public_url``."""
    if run_id is None:
        return None
    relative = RUN_LINK.format(run_id=run_id)
    return f"{public_url.rstrip('/')}/{relative}" if public_url else relative


def person_key(person: Any) -> str | None:
    """A person as inboxes are keyed: stripped, an email case-folded; None when unusable."""
    text = person.strip() if isinstance(person, str) else ""
    if not text or len(text) > MAX_ACTOR_CHARS or "\x00" in text:
        return None
    return text.casefold() if "@" in text else text


def is_email(person: str) -> bool:
    return bool(_EMAIL.match(person))


# -- queuing ---------------------------------------------------------------------------------


def enqueue(
    connection: sa.engine.Connection,
    event: NotificationEvent,
    *,
    people: Sequence[str],
    webhooks: Sequence[str],
) -> int:
    """Store ``event`` and its deliveries in the caller's transaction; return its id.

    Each person gets an inbox entry, and an email when ``KPI_SMTP_HOST`` is set and they
    are an email address; each named webhook channel that is active gets a call. Unknown
    or paused webhooks are skipped with a logged reason (a rule may outlive its channel).
    """
    now = db.utcnow()
    notification_id = db.inserted_id(
        connection.execute(
            notifications.insert().values(
                kind=event.kind,
                kpi_id=event.kpi_id or None,
                rule_id=event.rule_id or None,
                run_id=event.run_id,
                event=event.model_dump_json(),
                created_at=now,
            )
        )
    )
    persons = _distinct_people(people, notification_id)
    rows = [_delivery(notification_id, INBOX, p, now, status=SENT, sent_at=now) for p in persons]
    if settings_of(connection).smtp_host:
        rows += [_delivery(notification_id, EMAIL, p, now) for p in persons if is_email(p)]
    for name in _active_webhooks(connection, webhooks, notification_id):
        rows.append(_delivery(notification_id, WEBHOOK, name, now))
    if rows:
        connection.execute(deliveries.insert(), rows)
    return notification_id


def _delivery(
    notification_id: int,
    channel: str,
    target: str,
    now: Any,
    status: str = PENDING,
    sent_at: Any = None,
) -> dict[str, Any]:
    return dict(
        notification_id=notification_id,
        channel=channel,
        target=target,
        status=status,
        attempts=0,
        next_attempt_at=now if status == PENDING else None,
        last_error=None,
        created_at=now,
        sent_at=sent_at,
        failed_at=None,
        read_at=None,
    )


def _distinct_people(people: Iterable[Any], notification_id: int) -> list[str]:
    keyed: dict[str, None] = {}
    for person in people:
        key = person_key(person)
        if key is None:
            log.warning("notification %s: %r is not a person; skipped", notification_id, person)
        else:
            keyed[key] = None
    return list(keyed)


def _active_webhooks(
    connection: sa.engine.Connection, names: Iterable[str], notification_id: int
) -> list[str]:
    wanted = list(dict.fromkeys(n for n in names if isinstance(n, str)))
    found = {
        row.name: row.active
        for row in connection.execute(
            sa.select(channels.c.name, channels.c.active).where(channels.c.name.in_(wanted))
        )
    }
    for name in wanted:
        if name not in found:
            log.warning(
                "notification %s: there is no webhook channel named %r (removed?); skipped",
                notification_id,
                name,
            )
        elif not found[name]:
            log.info("notification %s: webhook %r is paused; skipped", notification_id, name)
    return [name for name in wanted if found.get(name)]


# -- the inbox -------------------------------------------------------------------------------


def inbox(
    connection: sa.engine.Connection,
    person: str,
    *,
    unread_only: bool = False,
    limit: int = 50,
    kpis: sa.Select[Any] | None = None,
) -> list[InboxItem]:
    """A person's inbox, newest first; ``kpis`` (a subquery of ids) hides other KPIs'."""
    query = (
        sa.select(deliveries, notifications.c.event)
        .join(notifications, notifications.c.id == deliveries.c.notification_id)
        .where(*_mine(person, kpis))
        .order_by(deliveries.c.id.desc())
        .limit(_checked_limit(limit))
    )
    if unread_only:
        query = query.where(deliveries.c.read_at.is_(None))
    items = []
    for row in connection.execute(query):
        event = NotificationEvent.model_validate_json(row.event)
        items.append(
            InboxItem(
                id=row.id,
                notification_id=row.notification_id,
                event=event,
                link=run_link(event.run_id),
                created_at=row.created_at,
                read_at=row.read_at,
            )
        )
    return items


def unread_count(
    connection: sa.engine.Connection, person: str, kpis: sa.Select[Any] | None = None
) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(deliveries.join(notifications))
        .where(*_mine(person, kpis), deliveries.c.read_at.is_(None))
    )
    return int(connection.execute(query).scalar_one())


def mark_read(connection: sa.engine.Connection, person: str, item_ids: Iterable[int]) -> int:
    """Mark some of a person's own inbox items read; another's (or an unknown id) is
    refused naming it, and nothing changes. Returns how many were unread."""
    ids = list(dict.fromkeys(item_ids))
    bad = [i for i in ids if not db.is_valid_id(i)]
    if bad:
        raise ValidationError(f"Inbox item ids are whole numbers; {bad[0]!r} is not one.")
    owned = set(connection.execute(sa.select(deliveries.c.id).where(*_mine(person), _in(ids))))
    strangers = [i for i in ids if (i,) not in owned]
    if strangers:
        shown = ", ".join(str(i) for i in strangers[:5])
        raise NotFoundError(f"Not in the inbox of {person}: item(s) {shown}.")
    return _set_read(connection, person, _in(ids))


def mark_all_read(connection: sa.engine.Connection, person: str) -> int:
    return _set_read(connection, person, sa.true())


def _set_read(connection: sa.engine.Connection, person: str, which: Any) -> int:
    result = connection.execute(
        deliveries.update()
        .where(*_mine(person), which, deliveries.c.read_at.is_(None))
        .values(read_at=db.utcnow())
    )
    return int(result.rowcount)


def _in(ids: list[int]) -> Any:
    return deliveries.c.id.in_(ids)


def _mine(person: str, kpis: sa.Select[Any] | None = None) -> list[Any]:
    clauses = [deliveries.c.channel == INBOX, deliveries.c.target == person_key(person)]
    if kpis is not None:
        visible = sa.select(notifications.c.id).where(
            sa.or_(notifications.c.kpi_id.is_(None), notifications.c.kpi_id.in_(kpis))
        )
        clauses.append(deliveries.c.notification_id.in_(visible))
    return clauses


def _checked_limit(limit: Any) -> int:
    if not db.is_valid_id(limit):
        raise ValidationError(f"The limit must be a whole number of at least 1, not {limit!r}.")
    return int(limit)


# -- webhook channels, as rules and pages read them --------------------------------------


def webhook(connection: sa.engine.Connection, name: str) -> WebhookChannel:
    row = channel_row(connection, name)
    assert row is not None  # _row raised otherwise
    return _to_channel(row)


def all_webhooks(connection: sa.engine.Connection) -> list[WebhookChannel]:
    rows = connection.execute(sa.select(channels))
    return sorted((_to_channel(r) for r in rows), key=lambda channel: channel.name)


def channel_row(
    connection: sa.engine.Connection, name: Any, required: bool = True
) -> sa.Row | None:
    text = name.strip() if isinstance(name, str) else ""
    row = connection.execute(sa.select(channels).where(channels.c.name == text)).first()
    if row is None and required:
        raise NotFoundError(f"There is no webhook channel named '{text}'.")
    return row


def _to_channel(row: sa.Row) -> WebhookChannel:
    return WebhookChannel(
        name=row.name,
        url=row.display_url,
        active=row.active,
        created_by=row.created_by,
        created_at=row.created_at,
        consecutive_failures=row.consecutive_failures,
        last_error=row.last_error,
        last_failure_at=row.last_failure_at,
        last_success_at=row.last_success_at,
        failing=row.consecutive_failures >= FAILING_AFTER or row.last_delivery_failed,
    )


# -- what became of deliveries ---------------------------------------------------------------


class Transient(Exception):
    """A delivery fault worth trying again: the server was busy, down or slow."""


class Permanent(Exception):
    """A delivery fault no retry will mend: refused, a wrong address, a misconfiguration."""


def delivery_list(
    connection: sa.engine.Connection,
    *,
    notification_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries newest first, each with its tries; inbox entries included."""
    query = (
        sa.select(deliveries, notifications.c.event)
        .join(notifications, notifications.c.id == deliveries.c.notification_id)
        .order_by(deliveries.c.id.desc())
        .limit(_checked_limit(limit))
    )
    if notification_id is not None:
        query = query.where(deliveries.c.notification_id == notification_id)
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(
                f"{status!r} is not a delivery status: choose one of {', '.join(STATUSES)}."
            )
        query = query.where(deliveries.c.status == status)
    rows = connection.execute(query).all()
    tries = attempts_of(connection, [row.id for row in rows])
    return [_to_delivery(row, tries[row.id]) for row in rows]


def _to_delivery(row: sa.Row, tries: list[DeliveryAttempt]) -> Delivery:
    event = NotificationEvent.model_validate_json(row.event)
    fields = {name: getattr(row, name) for name in Delivery.model_fields if hasattr(row, name)}
    return Delivery(**{**fields, "kind": event.kind, "summary": event.summary, "tries": tries})


def attempts_of(
    connection: sa.engine.Connection, delivery_ids: list[int]
) -> dict[int, list[DeliveryAttempt]]:
    """Every try of these deliveries, oldest first, by delivery id."""
    found: dict[int, list[DeliveryAttempt]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return found
    query = sa.select(tries_log).where(tries_log.c.delivery_id.in_(delivery_ids))
    for row in connection.execute(query.order_by(tries_log.c.id)):
        found[row.delivery_id].append(
            DeliveryAttempt(
                attempted_at=row.attempted_at,
                ok=row.ok,
                error=row.error,
                duration_ms=row.duration_ms,
            )
        )
    return found


def pending_counts(connection: sa.engine.Connection, channel: str) -> dict[str, int]:
    """Deliveries still to send over ``channel``, by target."""
    query = (
        sa.select(deliveries.c.target, sa.func.count().label("n"))
        .where(deliveries.c.channel == channel, deliveries.c.status == PENDING)
        .group_by(deliveries.c.target)
    )
    return {row.target: int(row.n) for row in connection.execute(query)}
