"""Records of notifications: the event an alert rule raises, inbox items, deliveries and
their attempts, webhook channels and their health (notifications.py, delivery.py)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict

# -- notifications (alerts.py raises them, notifications.py delivers them) -------------------

NotificationKind = Literal["firing", "renotify", "recovered", "no_data", "error", "test"]


class NotificationEvent(BaseModel):
    """Something an alert rule has to tell people: what happened, to which KPI and run,
    with the figures an email or a webhook shows. ``summary`` is one line of plain text."""

    model_config = ConfigDict(frozen=True)

    kind: NotificationKind
    rule_id: int
    rule_name: str
    kpi_id: int
    kpi_name: str
    run_id: int | None
    state: str  # the rule's state after the evaluation
    value: float | None
    target: float | None
    change_pct: float | None
    unit: str
    summary: str
    occurred_at: dt.datetime


# -- notifications: inbox, deliveries, webhook channels (notifications.py, delivery.py) -------

DeliveryChannel = Literal["inbox", "email", "webhook"]
DeliveryStatus = Literal["pending", "sent", "failed"]


class InboxItem(BaseModel):
    """One notification in a person's in-app inbox; ``link`` opens its run (relative to
    the dashboard, e.g. ``drilldown?execution=7``)."""

    model_config = ConfigDict(frozen=True)

    id: int
    notification_id: int
    event: NotificationEvent
    link: str | None
    created_at: dt.datetime
    read_at: dt.datetime | None

    @property
    def unread(self) -> bool:
        return self.read_at is None


class DeliveryAttempt(BaseModel):
    """One try to send a delivery: when, whether it worked, and why not."""

    model_config = ConfigDict(frozen=True)

    attempted_at: dt.datetime
    ok: bool
    error: str | None
    duration_ms: float


class Delivery(BaseModel):
    """A notification on its way to one target over one channel, with every try."""

    model_config = ConfigDict(frozen=True)

    id: int
    notification_id: int
    kind: NotificationKind
    summary: str
    channel: DeliveryChannel
    target: str  # a person, or a webhook channel's name
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    failed_at: dt.datetime | None
    read_at: dt.datetime | None
    tries: list[DeliveryAttempt]


class WebhookChannel(BaseModel):
    """A named webhook as anyone may see it: the address masked, never the secret;
    ``failing`` when it keeps failing (3 tries in a row, or its last delivery failed)."""

    model_config = ConfigDict(frozen=True)

    name: str
    url: str  # scheme and host; the path, which often holds a token, masked
    active: bool
    created_by: str
    created_at: dt.datetime
    consecutive_failures: int
    last_error: str | None
    last_failure_at: dt.datetime | None
    last_success_at: dt.datetime | None
    failing: bool


class WebhookSaved(BaseModel):
    """A webhook just added or changed; ``secret`` is shown this once when it was set
    (given or generated), else None."""

    model_config = ConfigDict(frozen=True)

    channel: WebhookChannel
    secret: str | None


class ChannelHealth(BaseModel):
    """How one delivery channel is doing: set up at all, failing, its last error."""

    model_config = ConfigDict(frozen=True)

    channel: DeliveryChannel
    name: str  # "email", or the webhook's name
    configured: bool
    active: bool
    failing: bool
    detail: str  # where it sends, in words
    pending: int
    last_error: str | None
    last_failure_at: dt.datetime | None
    last_success_at: dt.datetime | None


class DeliveryReport(BaseModel):
    """What one ``deliver_due`` call did: deliveries taken, sent, to be retried, failed."""

    model_config = ConfigDict(frozen=True)

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
