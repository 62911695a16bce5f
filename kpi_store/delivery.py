"""Sending queued notifications: emails over SMTP and signed webhook calls.

A worker claims one due delivery at a time with a conditional update of its
``next_attempt_at`` (the "lease": compare-and-set on the value it read, so with several
workers on SQLite or PostgreSQL exactly one wins), sends it outside any transaction, then
records every try. Transient faults (5xx, timeouts, refused connections, SMTP 4xx) are
tried again at once a couple of times with tenacity, then across chore runs with a wait
doubling from ``KPI_NOTIFY_RETRY_WAIT_S``; permanent ones (4xx, SMTP 5xx) and the
``KPI_NOTIFY_MAX_ATTEMPTS``-th try end the delivery as failed. A worker that dies while
sending loses its lease when it runs out, and the delivery is tried again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import tenacity

from . import db, mail, webhooks
from . import notifications as queue
from .config import Settings
from .errors import KPIStoreError
from .notification_records import DeliveryReport, NotificationEvent
from .notifications import Permanent, Transient
from .schema import notification_attempts as tries_log
from .schema import notification_deliveries as deliveries
from .schema import notifications
from .schema import webhook_channels as channels

log = logging.getLogger(__name__)

IN_CALL_TRIES = 2  # quick tries within one chore run, before waiting for the next
QUICK_WAIT_S = 0.25  # the most a quick retry waits
MAX_BACKOFF_S = 3_600.0
BUDGET_S = 15.0  # no new delivery is claimed after this long in one call
MAX_PER_CALL = 200
ERROR_CHARS = 500


@dataclass(frozen=True)
class Claimed:
    """A delivery one worker holds until ``lease_until`` (its claim token)."""

    id: int
    notification_id: int
    channel: str
    target: str
    attempts: int
    lease_until: dt.datetime
    event: NotificationEvent


@dataclass(frozen=True)
class Try:
    attempted_at: dt.datetime
    ok: bool
    error: str | None
    duration_ms: float


def deliver_due(
    engine: sa.engine.Engine, settings: Settings, now: dt.datetime | None = None
) -> DeliveryReport:
    """Send every delivery due at ``now`` (default: the clock), one at a time."""
    now = now or db.utcnow()
    started, done = time.monotonic(), set[int]()
    outcomes = {queue.SENT: 0, queue.PENDING: 0, queue.FAILED: 0}
    while len(done) < MAX_PER_CALL and time.monotonic() - started < BUDGET_S:
        claimed = claim_next(engine, settings, now, done)
        if claimed is None:
            break
        done.add(claimed.id)
        tries, fault = send(engine, settings, claimed)
        outcomes[record(engine, settings, claimed, tries, fault, now)] += 1
    return DeliveryReport(
        claimed=len(done),
        sent=outcomes[queue.SENT],
        retrying=outcomes[queue.PENDING],
        failed=outcomes[queue.FAILED],
    )


def lease_s(settings: Settings) -> float:
    """How long a claim holds: every quick try timing out, with room to spare."""
    return 60.0 + 4 * IN_CALL_TRIES * (settings.notify_timeout_s + QUICK_WAIT_S)


def claim_next(
    engine: sa.engine.Engine, settings: Settings, now: dt.datetime, skip: set[int]
) -> Claimed | None:
    """Take the next due delivery (not in ``skip``), or None. Looking is a read, so an
    idle worker takes no write lock; taking is a compare-and-set on ``next_attempt_at``."""
    lost: set[int] = set()
    while True:
        with db.read_tx(engine) as connection:
            due = connection.execute(
                sa.select(deliveries.c.id, deliveries.c.next_attempt_at)
                .where(
                    deliveries.c.status == queue.PENDING,
                    deliveries.c.next_attempt_at <= now,
                    deliveries.c.id.not_in(skip | lost),
                )
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                .limit(1)
            ).first()
        if due is None:
            return None
        lease = now + dt.timedelta(seconds=lease_s(settings))
        with db.write_tx(engine) as connection:
            won = connection.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == due.id,
                    deliveries.c.status == queue.PENDING,
                    deliveries.c.next_attempt_at == due.next_attempt_at,
                )
                .values(next_attempt_at=lease)
            ).rowcount
            if won == 1:
                return _claimed(connection, due.id, lease)
        lost.add(due.id)  # another worker took it


def _claimed(connection: sa.engine.Connection, delivery_id: int, lease: dt.datetime) -> Claimed:
    row = connection.execute(
        sa.select(deliveries, notifications.c.event)
        .join(notifications, notifications.c.id == deliveries.c.notification_id)
        .where(deliveries.c.id == delivery_id)
    ).one()
    return Claimed(
        id=row.id,
        notification_id=row.notification_id,
        channel=row.channel,
        target=row.target,
        attempts=row.attempts,
        lease_until=lease,
        event=NotificationEvent.model_validate_json(row.event),
    )


# -- sending ---------------------------------------------------------------------------------


def send(
    engine: sa.engine.Engine, settings: Settings, claimed: Claimed
) -> tuple[list[Try], Exception | None]:
    """Try a claimed delivery (outside any transaction): the tries and the last fault."""
    try:
        action = _action(engine, settings, claimed)
    except Permanent as refused:
        return [Try(db.utcnow(), False, str(refused), 0.0)], refused
    left = max(1, settings.notify_max_attempts - claimed.attempts)
    return attempt(
        action, min(IN_CALL_TRIES, left), min(settings.notify_retry_wait_s, QUICK_WAIT_S)
    )


def _action(engine: sa.engine.Engine, settings: Settings, claimed: Claimed) -> Callable[[], None]:
    if claimed.channel == queue.EMAIL:
        if not settings.smtp_host:
            raise Permanent("email is off here (KPI_SMTP_HOST is empty)")
        email = mail.message(settings, claimed.event, claimed.target, claimed.notification_id)
        return lambda: mail.send(settings, email)
    try:
        with db.read_tx(engine) as connection:
            target = webhooks.webhook_target(connection, claimed.target)
    except KPIStoreError:
        raise Permanent("the webhook's address cannot be decrypted with this secret key") from None
    if target is None:
        raise Permanent(f"the webhook channel '{claimed.target}' was removed or paused")
    url, secret = target
    body = webhooks.body(settings, claimed.event, claimed.notification_id)
    return lambda: webhooks.post(url, secret, body, settings.notify_timeout_s)


def attempt(
    action: Callable[[], None], tries: int, wait_s: float
) -> tuple[list[Try], Exception | None]:
    """Run ``action`` up to ``tries`` times while it fails transiently; log each try."""
    done: list[Try] = []

    def once() -> None:
        at, started = db.utcnow(), time.monotonic()
        try:
            action()
        except Exception as error:
            fault = _classified(error)
            done.append(Try(at, False, str(fault)[:ERROR_CHARS], _ms_since(started)))
            raise fault from error
        done.append(Try(at, True, None, _ms_since(started)))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(tries),
        wait=tenacity.wait_fixed(wait_s),
        retry=tenacity.retry_if_exception_type(Transient),
        reraise=True,
    )
    try:
        retrying(once)
    except (Transient, Permanent) as fault:
        return done, fault
    return done, None


def _classified(error: Exception) -> Exception:
    if isinstance(error, (Transient, Permanent)):
        return error
    log.exception("unexpected error while delivering a notification")
    return Permanent(f"unexpected error: {type(error).__name__}: {error}")


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# -- recording -------------------------------------------------------------------------------


def record(
    engine: sa.engine.Engine,
    settings: Settings,
    claimed: Claimed,
    tries: list[Try],
    fault: Exception | None,
    now: dt.datetime,
) -> str:
    """Log the tries and settle the delivery: sent, failed, or pending again later.
    Returns that status. Written only while the claim is still this worker's."""
    attempts = claimed.attempts + len(tries)
    status, values = _outcome(settings, fault, attempts, now)
    with db.write_tx(engine) as connection:
        if tries:
            connection.execute(
                tries_log.insert(),
                [dict(delivery_id=claimed.id, **t.__dict__) for t in tries],
            )
        kept = connection.execute(
            deliveries.update()
            .where(
                deliveries.c.id == claimed.id,
                deliveries.c.status == queue.PENDING,
                deliveries.c.next_attempt_at == claimed.lease_until,
            )
            .values(attempts=deliveries.c.attempts + len(tries), **values)
        ).rowcount
        if kept != 1:
            log.warning("delivery %s: its claim ran out while sending", claimed.id)
        if claimed.channel == queue.WEBHOOK:
            _channel_health(connection, claimed.target, tries, status)
    return status


def _outcome(
    settings: Settings, fault: Exception | None, attempts: int, now: dt.datetime
) -> tuple[str, dict[str, Any]]:
    if fault is None:
        return queue.SENT, dict(
            status=queue.SENT, sent_at=db.utcnow(), next_attempt_at=None, last_error=None
        )
    error = str(fault)[:ERROR_CHARS]
    if isinstance(fault, Permanent) or attempts >= settings.notify_max_attempts:
        return queue.FAILED, dict(
            status=queue.FAILED, failed_at=db.utcnow(), next_attempt_at=None, last_error=error
        )
    later = now + dt.timedelta(seconds=backoff_s(settings, attempts))
    return queue.PENDING, dict(next_attempt_at=later, last_error=error)


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait before the next round: doubling from ``KPI_NOTIFY_RETRY_WAIT_S`` each
    round of quick tries, with up to 10% jitter so workers do not call in step."""
    round_number = max(1, -(-attempts // IN_CALL_TRIES))
    wait = settings.notify_retry_wait_s * 2 ** min(round_number - 1, 30)
    return min(MAX_BACKOFF_S, wait) * (1 + random.random() / 10)


def _channel_health(
    connection: sa.engine.Connection, name: str, tries: list[Try], status: str
) -> None:
    values: dict[str, Any] = {}
    failures = [t for t in tries if not t.ok]
    if failures:
        values.update(last_error=failures[-1].error, last_failure_at=failures[-1].attempted_at)
    if any(t.ok for t in tries):
        values.update(consecutive_failures=0, last_success_at=tries[-1].attempted_at)
    elif failures:
        values["consecutive_failures"] = channels.c.consecutive_failures + len(failures)
    if status != queue.PENDING:
        values["last_delivery_failed"] = status == queue.FAILED
    if values:
        connection.execute(channels.update().where(channels.c.name == name).values(**values))
