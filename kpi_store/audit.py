"""The append-only, hash-chained audit log.

Each entry's hash covers its own content and the previous entry's hash, so editing or
deleting any entry but the newest breaks the chain at that point. Appends happen inside
the caller's write transaction: no change without its entry, no entry without its change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import db
from .errors import ValidationError
from .models import AuditEntry, AuditVerification
from .schema import kpi_audit_log as log
from .vocabulary import AuditAction

GENESIS_HASH = "0" * 64

# Actions written to the log (module names kept for brevity at call sites).
CREATE, UPDATE, ARCHIVE = AuditAction.CREATE, AuditAction.UPDATE, AuditAction.ARCHIVE
UNARCHIVE, DELETE, RESTORE = AuditAction.UNARCHIVE, AuditAction.DELETE, AuditAction.RESTORE
DATA_SOURCE_ADD, DATA_SOURCE_REMOVE = AuditAction.DATA_SOURCE_ADD, AuditAction.DATA_SOURCE_REMOVE
EXECUTE, CANCEL, EXPORT = AuditAction.EXECUTE, AuditAction.CANCEL, AuditAction.EXPORT


def _entry_hash(
    prev_hash: str,
    occurred_at: dt.datetime,
    actor: str,
    action: str,
    kpi_id: int | None,
    entity: str | None,
    details_json: str,
) -> str:
    payload = db.dumps(
        [prev_hash, occurred_at.isoformat(), actor, action, kpi_id, entity, details_json]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def append(
    connection: sa.engine.Connection,
    *,
    actor: str,
    action: str,
    kpi_id: int | None = None,
    entity: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one entry to the chain inside the caller's transaction."""
    db.lock_audit_chain(connection)
    prev_hash = connection.execute(
        sa.select(log.c.entry_hash).order_by(log.c.id.desc()).limit(1)
    ).scalar_one_or_none()
    prev_hash = prev_hash or GENESIS_HASH
    occurred_at = db.utcnow()
    details_json = db.dumps(details or {})
    connection.execute(
        log.insert().values(
            occurred_at=occurred_at,
            actor=actor,
            action=action,
            kpi_id=kpi_id,
            entity=entity,
            details=details_json,
            prev_hash=prev_hash,
            entry_hash=_entry_hash(
                prev_hash, occurred_at, actor, action, kpi_id, entity, details_json
            ),
        )
    )


def append_run(
    connection: sa.engine.Connection,
    *,
    actor: str,
    kpi_id: int,
    execution_id: int,
    details: dict[str, Any],
) -> None:
    """The EXECUTE entry of a finished run, whoever finished it (its runner or recovery)."""
    append(
        connection,
        actor=actor,
        action=EXECUTE,
        kpi_id=kpi_id,
        entity=f"execution:{execution_id}",
        details={"execution_id": execution_id, **details},
    )


CSV_HEADER = ["id", "occurred_at", "actor", "action", "kpi_id", "entity", "details"]


def csv_rows(entries: Iterable[AuditEntry]) -> list[list[Any]]:
    """Entries as rows under ``CSV_HEADER`` (details as JSON text)."""
    return [
        [
            e.id,
            e.occurred_at.isoformat(),
            e.actor,
            e.action,
            e.kpi_id,
            e.entity,
            db.dumps(e.details),
        ]
        for e in entries
    ]


def entries(
    connection: sa.engine.Connection,
    *,
    kpi_id: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | dt.date | None = None,
    until: dt.datetime | dt.date | None = None,
    limit: int | None = 100,
) -> list[AuditEntry]:
    """Entries matching every filter given, newest first."""
    query = sa.select(log).order_by(log.c.id.desc())
    if kpi_id is not None:
        query = query.where(log.c.kpi_id == kpi_id)
    if actor:
        query = query.where(log.c.actor == actor)
    if action:
        query = query.where(log.c.action == action.upper())
    if since is not None:
        query = query.where(log.c.occurred_at >= _as_datetime(since))
    if until is not None:
        query = query.where(log.c.occurred_at < _as_datetime(until, end_of_day=True))
    if limit is not None:
        query = query.limit(limit)
    return [_to_entry(row) for row in connection.execute(query)]


def _as_datetime(value: dt.datetime | dt.date, end_of_day: bool = False) -> dt.datetime:
    if not isinstance(value, dt.date):
        raise ValidationError(f"{value!r} is not a date or a date and time.")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    start = dt.datetime.combine(value, dt.time())
    return start + dt.timedelta(days=1) if end_of_day else start


def _to_entry(row: sa.Row) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        kpi_id=row.kpi_id,
        entity=row.entity,
        details=db.loads(row.details) or {},
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def verify(connection: sa.engine.Connection, batch_size: int = 5_000) -> AuditVerification:
    """Recompute the chain from the start; report the first entry that does not fit."""
    expected_prev = GENESIS_HASH
    checked = 0
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(log).where(log.c.id > last_id).order_by(log.c.id).limit(batch_size)
        ).all()
        if not rows:
            return AuditVerification(ok=True, checked=checked)
        for row in rows:
            if row.prev_hash != expected_prev:
                return AuditVerification(
                    ok=False,
                    checked=checked,
                    first_broken_id=row.id,
                    reason=f"entry {row.id} does not follow the entry before it "
                    "(an entry was removed or altered)",
                )
            recomputed = _entry_hash(
                row.prev_hash,
                row.occurred_at,
                row.actor,
                row.action,
                row.kpi_id,
                row.entity,
                row.details,
            )
            if recomputed != row.entry_hash:
                return AuditVerification(
                    ok=False,
                    checked=checked,
                    first_broken_id=row.id,
                    reason=f"entry {row.id} was altered after it was written",
                )
            expected_prev = row.entry_hash
            checked += 1
            last_id = row.id
