"""Proving the store was not quietly changed: the keyed audit chain, signed checkpoints kept
outside the database, and definitions that must match their history and their audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pathlib
import threading
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from . import audit, db, keys
from .definitions import to_kpi
from .models import KPI, AuditCheckpoint, AuditVerification
from .schema import kpi_audit_log as audit_table
from .schema import kpi_definition_history as history
from .schema import kpi_definitions as definitions_table
from .schema import kpi_store_meta as meta

log = logging.getLogger(__name__)

CHAIN_KIND, KEYED = "audit_chain", "hmac-sha256"
LEGACY_BREAK = "audit_legacy_break"
CHECKPOINT_EVERY_ENTRIES = 1_000
CHECKPOINT_EVERY_S = 3_600.0


# -- keying the chain -------------------------------------------------------------------


def key_the_chain(engine: sa.engine.Engine, key: keys.SecretKey) -> None:
    """Once per store: re-sign a chain written before it was keyed (SHA-256 only).

    A legacy chain that was already broken is re-signed all the same (so new entries can
    follow it), but the break is recorded and every later verification reports it.
    """
    with db.read_tx(engine) as connection:
        if _meta(connection, CHAIN_KIND) == KEYED:
            return
    with db.write_tx(engine) as connection:
        db.lock_audit_chain(connection)
        if _meta(connection, CHAIN_KIND) == KEYED:
            return
        prev = legacy_prev = audit.GENESIS_HASH
        count = 0
        for row in list(audit.all_rows(connection)):
            broken = row.prev_hash != legacy_prev or row.entry_hash != audit.legacy_hash(row)
            if broken and _meta(connection, LEGACY_BREAK) is None:
                reason = f"before the chain was keyed, entry {row.id} did not fit the chain"
                _set_meta(connection, LEGACY_BREAK, reason)
            legacy_prev = row.entry_hash
            count += 1
            signed = audit.signed_hash(key, _with(row, seq=count), prev)
            connection.execute(
                audit_table.update()
                .where(audit_table.c.id == row.id)
                .values(seq=count, prev_hash=prev, entry_hash=signed)
            )
            prev = signed
        _set_meta(connection, CHAIN_KIND, KEYED)
    log.info("audit chain keyed (%s entries re-signed)", count)


def _with(row: sa.Row, **changes: Any) -> Any:
    return SimpleNamespace(**{**row._mapping, **changes})


def _meta(connection: sa.engine.Connection, name: str) -> str | None:
    return connection.execute(
        sa.select(meta.c.value).where(meta.c.key == name)
    ).scalar_one_or_none()


def _set_meta(connection: sa.engine.Connection, name: str, value: str) -> None:
    if connection.execute(meta.update().where(meta.c.key == name).values(value=value)).rowcount:
        return
    connection.execute(meta.insert().values(key=name, value=value))


# -- checkpoints --------------------------------------------------------------------------


def _checkpoint_payload(count: int, head_hash: str, created_at: dt.datetime) -> bytes:
    return db.dumps([count, head_hash, created_at.isoformat()]).encode()


def make_checkpoint(connection: sa.engine.Connection, key: keys.SecretKey) -> AuditCheckpoint:
    """The chain's length and newest hash now, signed."""
    head = connection.execute(
        sa.select(audit_table.c.seq, audit_table.c.entry_hash)
        .order_by(audit_table.c.id.desc())
        .limit(1)
    ).first()
    count, head_hash = (head.seq or 0, head.entry_hash) if head else (0, audit.GENESIS_HASH)
    created_at = db.utcnow()
    signature = key.sign(_checkpoint_payload(count, head_hash, created_at))
    return AuditCheckpoint(
        count=count, head_hash=head_hash, created_at=created_at, signature=signature
    )


def append_checkpoint(path: pathlib.Path, checkpoint: AuditCheckpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(checkpoint.model_dump_json() + "\n")


def newest_checkpoint(path: pathlib.Path) -> AuditCheckpoint | None:
    """The last well-formed line of a checkpoint file (signatures are checked by verify)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return AuditCheckpoint.model_validate(json.loads(line))
        except ValueError:
            continue
    return None


class CheckpointWriter:
    """Appends a checkpoint when the last is an hour old or 1,000 entries behind."""

    def __init__(self, engine: sa.engine.Engine, key: keys.SecretKey, path: pathlib.Path):
        self.engine, self.key, self.path = engine, key, path
        self._lock = threading.Lock()
        self._last = newest_checkpoint(path)

    def write_if_due(self) -> AuditCheckpoint | None:
        with self._lock, db.read_tx(self.engine) as connection:
            current = make_checkpoint(connection, self.key)
            last = self._last
            if last is not None:
                age = (current.created_at - last.created_at).total_seconds()
                fresh = age < CHECKPOINT_EVERY_S
                if fresh and current.count - last.count < CHECKPOINT_EVERY_ENTRIES:
                    return None
            append_checkpoint(self.path, current)
            self._last = current
            return current


# -- verification -------------------------------------------------------------------------


def verify(
    connection: sa.engine.Connection,
    key: keys.SecretKey,
    checkpoint: AuditCheckpoint | None = None,
) -> AuditVerification:
    """The chain, the recorded legacy break, the checkpoint and the definitions, together."""
    chain = audit.verify_chain(connection, key)
    problems = [chain.reason] if not chain.ok else []
    if legacy := _meta(connection, LEGACY_BREAK):
        problems.append(legacy)
    if checkpoint is not None:
        problems += _against_checkpoint(connection, key, checkpoint)
    problems += definition_mismatches(connection)
    return AuditVerification(
        ok=not problems,
        checked=chain.checked,
        first_broken_id=chain.first_broken_id,
        reason=problems[0] if problems else "",
        problems=problems,
        checkpoint_count=checkpoint.count if checkpoint else None,
    )


def _against_checkpoint(
    connection: sa.engine.Connection, key: keys.SecretKey, checkpoint: AuditCheckpoint
) -> list[str]:
    payload = _checkpoint_payload(checkpoint.count, checkpoint.head_hash, checkpoint.created_at)
    if not key.verify(payload, checkpoint.signature):
        return ["the checkpoint's signature does not match this store's key"]
    if checkpoint.count == 0:
        return []
    present = connection.execute(sa.select(sa.func.max(audit_table.c.seq))).scalar() or 0
    when = checkpoint.created_at.strftime("%Y-%m-%d %H:%M UTC")
    if present < checkpoint.count:
        missing = (
            f"entry {checkpoint.count} of the audit log is"
            if present + 1 == checkpoint.count
            else f"entries {present + 1} to {checkpoint.count} of the audit log are"
        )
        return [
            f"{missing} missing: the checkpoint of {when} "
            f"vouches for {checkpoint.count} entries, the log ends at {present}"
        ]
    head = connection.execute(
        sa.select(audit_table.c.entry_hash).where(audit_table.c.seq == checkpoint.count)
    ).scalar_one_or_none()
    if head != checkpoint.head_hash:
        return [f"entry {checkpoint.count} differs from the one the checkpoint of {when} saw"]
    return []


def definition_mismatches(connection: sa.engine.Connection) -> list[str]:
    """Current definitions that differ from their newest version or their audited state."""
    audited = _audited_states(connection)
    problems = []
    rows = connection.execute(sa.select(definitions_table).order_by(definitions_table.c.id))
    for row in rows:
        kpi = to_kpi(row)
        problems += _mismatches_of(connection, kpi, audited.pop(kpi.id, None))
    for kpi_id in audited:
        problems.append(f"KPI {kpi_id} is gone without a DELETE entry in the audit log")
    return problems


def _mismatches_of(
    connection: sa.engine.Connection, kpi: KPI, audited: dict[str, Any] | None
) -> list[str]:
    spec = kpi.spec().model_dump(mode="json")
    newest = connection.execute(
        sa.select(history.c.version, history.c.definition)
        .where(history.c.kpi_id == kpi.id)
        .order_by(history.c.version.desc())
        .limit(1)
    ).first()
    found = []
    if newest is None or newest.version != kpi.version or db.loads(newest.definition) != spec:
        found.append(f"KPI {kpi.id}: its current definition differs from its newest saved version")
    if audited is None:
        found.append(f"KPI {kpi.id}: it has no CREATE entry in the audit log")
    elif (audited["version"], audited["spec"], audited["status"]) != (
        kpi.version,
        spec,
        kpi.status,
    ):
        found.append(
            f"KPI {kpi.id}: its current definition differs from what the audit log recorded "
            "(changed outside KPI Desk?)"
        )
    return found


def _audited_states(connection: sa.engine.Connection) -> dict[int, dict[str, Any]]:
    """Each KPI's definition as the audit log tells it, replayed from CREATE onwards."""
    states: dict[int, dict[str, Any]] = {}
    for row in audit.all_rows(connection):
        if row.kpi_id is None:
            continue
        details = db.loads(row.details) or {}
        state = states.get(row.kpi_id)
        if row.action == audit.CREATE:
            states[row.kpi_id] = {
                "version": details.get("version"),
                "spec": dict(details.get("after") or {}),
                "status": "active",
            }
        elif state is None:
            continue
        elif row.action in (audit.UPDATE, audit.RESTORE):
            state["version"] = details.get("version")
            for name, change in (details.get("changes") or {}).items():
                state["spec"][name] = change.get("after")
        elif row.action in (audit.ARCHIVE, audit.UNARCHIVE):
            state["status"] = details["changes"]["status"]["after"]
        elif row.action == audit.DELETE:
            states.pop(row.kpi_id)
    return states
