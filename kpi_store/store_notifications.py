"""The part of ``KPIStore`` for Notifications: the inbox, email and webhooks, sent by workers.

Alert rules queue notifications with ``notifications.enqueue`` inside their own
transaction; the workers send them (``deliver_due``). Here: each person's inbox (their own
only), the webhook channels (admins, audited), what became of deliveries, and a test
notification to see a channel work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import db, delivery, mail, notifications
from . import webhooks as hooks
from .access import Guard, Rule, allowed, unguarded, visible_kpis
from .config import Settings
from .errors import ValidationError
from .notification_records import (
    ChannelHealth,
    Delivery,
    DeliveryReport,
    InboxItem,
    NotificationEvent,
    WebhookChannel,
    WebhookSaved,
)
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    import datetime as dt

    import sqlalchemy as sa

_ADMIN_RULE = Rule(Role.ADMIN)


class NotificationDesk:
    """Notifications: the in-app inbox, email and webhooks, delivered by the workers."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        settings: Settings
        _guard: Guard

    def _visible_kpis(self, actor: str, operation: str) -> sa.Select[Any] | None:
        """The KPIs whose notifications ``actor`` may read (None: all)."""
        if not self.settings.auth_on:
            return None
        return visible_kpis(self._guard.sources(actor, operation))

    # -- the inbox: everyone's own -------------------------------------------------------------

    @allowed(Role.VIEWER)
    def inbox(
        self, *, actor: str | None = None, unread_only: bool = False, limit: int = 50
    ) -> list[InboxItem]:
        """The acting person's notifications, newest first (with sign-in off, the actor's
        name is the person); those about KPIs on data sources they may not use are left out."""
        person = checked_actor(actor)
        kpis = self._visible_kpis(person, "inbox")
        with db.read_tx(self.engine) as connection:
            return notifications.inbox(
                connection, person, unread_only=unread_only, limit=limit, kpis=kpis
            )

    @allowed(Role.VIEWER)
    def unread_count(self, *, actor: str | None = None) -> int:
        """How many of the acting person's notifications are unread (the sidebar badge)."""
        person = checked_actor(actor)
        kpis = self._visible_kpis(person, "unread_count")
        with db.read_tx(self.engine) as connection:
            return notifications.unread_count(connection, person, kpis)

    @allowed(Role.VIEWER)
    def mark_read(self, item_ids: Iterable[int], *, actor: str) -> int:
        """Mark some of your own inbox items read; an id not in your inbox is refused
        (NotFoundError naming it) and nothing changes. Returns how many were unread."""
        person = checked_actor(actor)
        with db.write_tx(self.engine) as connection:
            return notifications.mark_read(connection, person, item_ids)

    @allowed(Role.VIEWER)
    def mark_all_read(self, *, actor: str) -> int:
        """Mark every item of your own inbox read; returns how many were unread."""
        person = checked_actor(actor)
        with db.write_tx(self.engine) as connection:
            return notifications.mark_all_read(connection, person)

    @allowed(Role.VIEWER)
    def send_test_notification(self, actor: str, *, webhook: str | None = None) -> int:
        """Queue a "test" notification to your own inbox (and email, when it is on), and
        to the webhook named, which only an admin may test. Returns its id."""
        person = checked_actor(actor)
        if webhook is not None and self.settings.auth_on:
            self._guard.check(_ADMIN_RULE, "send_test_notification", {"actor": person})
        with db.write_tx(self.engine) as connection:
            if webhook is not None and not notifications.webhook(connection, webhook).active:
                raise ValidationError(f"The webhook '{webhook}' is paused; switch it on first.")
            return notifications.enqueue(
                connection,
                _test_event(person),
                people=[person],
                webhooks=[webhook.strip()] if webhook is not None else [],
            )

    # -- webhook channels: admins ----------------------------------------------------------

    @allowed(Role.ADMIN)
    def add_webhook(
        self, name: str, url: str, actor: str, *, secret: str | None = None
    ) -> WebhookSaved:
        """Add a named webhook (http or https only). Its signing secret is generated when
        not given, and returned this once; audited as CHANNEL_ADD."""
        actor = checked_actor(actor)
        with db.write_tx(self.engine) as connection:
            return hooks.add_webhook(connection, name, url, actor, secret)

    @allowed(Role.ADMIN)
    def update_webhook(
        self,
        name: str,
        actor: str,
        *,
        url: str | None = None,
        active: bool | None = None,
        secret: str | None = None,
        rotate_secret: bool = False,
    ) -> WebhookSaved:
        """Change a webhook's address, pause or resume it, or replace its secret (given,
        or generated with ``rotate_secret``: returned this once); audited as CHANNEL_UPDATE."""
        actor = checked_actor(actor)
        with db.write_tx(self.engine) as connection:
            return hooks.update_webhook(
                connection,
                name,
                actor,
                url=url,
                active=active,
                secret=secret,
                rotate_secret=rotate_secret,
            )

    @allowed(Role.ADMIN)
    def remove_webhook(self, name: str, actor: str) -> None:
        """Remove a webhook; rules naming it skip it from now on; audited as CHANNEL_REMOVE."""
        actor = checked_actor(actor)
        with db.write_tx(self.engine) as connection:
            hooks.remove_webhook(connection, name, actor)

    @allowed(Role.VIEWER)
    def webhooks(self, *, actor: str | None = None) -> list[WebhookChannel]:
        """Every webhook by name, its address masked and never its secret, with its health."""
        with db.read_tx(self.engine) as connection:
            return notifications.all_webhooks(connection)

    # -- delivery ----------------------------------------------------------------------------

    @allowed(Role.ADMIN)
    def deliveries(
        self,
        *,
        notification_id: int | None = None,
        status: str | None = None,
        limit: int = 100,
        actor: str | None = None,
    ) -> list[Delivery]:
        """Deliveries newest first (inbox entries, emails, webhook calls), each with every
        try and its error; filtered by notification and status (pending, sent, failed)."""
        with db.read_tx(self.engine) as connection:
            return notifications.delivery_list(
                connection, notification_id=notification_id, status=status, limit=limit
            )

    @allowed(Role.VIEWER)
    def channel_health(self, *, actor: str | None = None) -> list[ChannelHealth]:
        """Email (set up or not) and each webhook: failing or not, the last error."""
        with db.read_tx(self.engine) as connection:
            return [mail.health(connection, self.settings), *hooks.health(connection)]

    @unguarded("the workers' chore: sends what alert rules already queued, as nobody")
    def deliver_due(self, now: dt.datetime | None = None) -> DeliveryReport:
        """Send the emails and webhook calls due at ``now`` (default: the clock), retrying
        transient faults; what a worker does every ``KPI_WORKER_POLL_S``."""
        return delivery.deliver_due(self.engine, self.settings, now)


def _test_event(person: str) -> NotificationEvent:
    return NotificationEvent(
        kind="test",
        rule_id=0,
        rule_name="Test notification",
        kpi_id=0,
        kpi_name="KPI Desk",
        run_id=None,
        state="test",
        value=None,
        target=None,
        change_pct=None,
        unit="",
        summary=f"A test notification asked for by {person}: this channel works.",
        occurred_at=db.utcnow(),
    )
