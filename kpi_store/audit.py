"""The append-only, signed, hash-chained audit log.

Each entry carries a gap-free sequence number and an HMAC (keyed with the store's secret
key) over its content and the previous entry's hash: editing an entry, recomputing the
hashes without the key, or removing entries that later ones follow is detected. Cutting
the newest entries is caught against a checkpoint kept outside the database
(``integrity.py``). Appends happen inside the caller's write transaction: no change
without its entry, no entry without its change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from . import db, keys
from .errors import ValidationError
from .models import AuditEntry, AuditVerification
from .schema import kpi_audit_log as log
from .schema import people
from .vocabulary import AuditAction

GENESIS_HASH = "0" * 64

# Actions written to the log (module names kept for brevity at call sites).
CREATE, UPDATE, ARCHIVE = AuditAction.CREATE, AuditAction.UPDATE, AuditAction.ARCHIVE
UNARCHIVE, DELETE, RESTORE = AuditAction.UNARCHIVE, AuditAction.DELETE, AuditAction.RESTORE
DATA_SOURCE_ADD, DATA_SOURCE_REMOVE = AuditAction.DATA_SOURCE_ADD, AuditAction.DATA_SOURCE_REMOVE
EXECUTE, CANCEL, EXPORT = AuditAction.EXECUTE, AuditAction.CANCEL, AuditAction.EXPORT
PREVIEW = AuditAction.PREVIEW


def _payload(
    prev_hash: str,
    seq: int | None,
    occurred_at: dt.datetime,
    actor: str,
    action: str,
    kpi_id: int | None,
    entity: str | None,
    details_json: str,
) -> bytes:
    fields = [prev_hash, seq, occurred_at.isoformat(), actor, action, kpi_id, entity]
    return db.dumps([*fields, details_json]).encode()


def signed_hash(key: keys.SecretKey, row: Any, prev_hash: str) -> str:
    """The keyed hash an entry (any object with the log's columns) must carry."""
    return key.sign(
        _payload(
            prev_hash,
            row.seq,
            row.occurred_at,
            row.actor,
            row.action,
            row.kpi_id,
            row.entity,
            row.details,
        )
    )


def legacy_hash(row: Any) -> str:
    """The unkeyed SHA-256 that entries written before the chain was keyed carry."""
    payload = db.dumps(
        [
            row.prev_hash,
            row.occurred_at.isoformat(),
            row.actor,
            row.action,
            row.kpi_id,
            row.entity,
            row.details,
        ]
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
    last = connection.execute(
        sa.select(log.c.entry_hash, log.c.seq).order_by(log.c.id.desc()).limit(1)
    ).first()
    prev_hash = last.entry_hash if last else GENESIS_HASH
    values = dict(
        seq=(last.seq or 0) + 1 if last else 1,
        occurred_at=db.utcnow(),
        actor=actor,
        action=action,
        kpi_id=kpi_id,
        entity=entity,
        details=db.dumps(details or {}),
        prev_hash=prev_hash,
    )
    entry_hash = signed_hash(keys.of(connection), SimpleNamespace(**values), prev_hash)
    connection.execute(log.insert().values(**values, entry_hash=entry_hash))


def record(
    engine: sa.engine.Engine,
    *,
    actor: str,
    action: str,
    kpi_id: int | None = None,
    entity: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """One entry in a transaction of its own: for reads worth recording (exports, previews)."""
    with db.write_tx(engine) as connection:
        append(
            connection, actor=actor, action=action, kpi_id=kpi_id, entity=entity, details=details
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


def all_rows(connection: sa.engine.Connection, batch_size: int = 5_000) -> Iterator[sa.Row]:
    """Every entry in id order, read in batches."""
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(log).where(log.c.id > last_id).order_by(log.c.id).limit(batch_size)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def verify_chain(connection: sa.engine.Connection, key: keys.SecretKey) -> AuditVerification:
    """Walk the chain from the start; report the first entry that does not fit."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    for row in all_rows(connection):
        reason = _misfit(row, key, expected_prev, expected_seq)
        if reason:
            return AuditVerification(
                ok=False, checked=checked, first_broken_id=row.id, reason=reason
            )
        expected_prev, expected_seq, checked = row.entry_hash, expected_seq + 1, checked + 1
    return AuditVerification(ok=True, checked=checked)


def _misfit(row: sa.Row, key: keys.SecretKey, prev: str, seq: int) -> str:
    if row.seq != seq:
        if row.seq is not None and row.seq > seq:
            missing = (
                f"entry {seq} is" if row.seq == seq + 1 else f"entries {seq} to {row.seq - 1} are"
            )
            return f"{missing} missing: removed before entry {row.id}"
        return f"entry {row.id} is out of sequence (expected number {seq}, found {row.seq})"
    if row.prev_hash != prev:
        return (
            f"entry {row.id} does not follow the entry before it (an entry was removed or altered)"
        )
    if row.entry_hash != signed_hash(key, row, row.prev_hash):
        return f"entry {row.id} was altered after it was written (its signature does not match)"
    return ""


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
    person: str | None = None,
    action: str | None = None,
    since: dt.datetime | dt.date | None = None,
    until: dt.datetime | dt.date | None = None,
    limit: int | None = 100,
    kpis: sa.Select[Any] | None = None,
    kpi_entries_only: bool = False,
) -> list[AuditEntry]:
    """Entries matching every filter given, newest first; ``kpis`` (a subquery of KPI ids)
    and ``kpi_entries_only`` narrow them to what a person below admin may see."""
    query = sa.select(log).order_by(log.c.id.desc())
    if kpi_id is not None:
        query = query.where(log.c.kpi_id == kpi_id)
    if kpi_entries_only:
        query = query.where(log.c.kpi_id.is_not(None))
    if kpis is not None:
        query = query.where(log.c.kpi_id.in_(kpis))
    if person and person.strip():
        query = query.where(_by_person(person))
    if action:
        query = query.where(log.c.action == action.upper())
    if since is not None:
        query = query.where(log.c.occurred_at >= _as_datetime(since))
    if until is not None:
        query = query.where(log.c.occurred_at < _as_datetime(until, end_of_day=True))
    if limit is not None:
        query = query.limit(limit)
    return [_to_entry(row) for row in connection.execute(query)]


def _by_person(text: str) -> sa.ColumnElement[bool]:
    """Entries whose actor contains ``text``, or is a person whose name or email does
    (any case): "ana", "Lima" and "ana@example.com" all find Ana Lima's entries."""
    pattern = f"%{db.like_escaped(text.strip().casefold())}%"
    named = sa.select(people.c.email).where(people.c.search_key.like(pattern, escape="\\"))
    return sa.or_(sa.func.lower(log.c.actor).like(pattern, escape="\\"), log.c.actor.in_(named))


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
