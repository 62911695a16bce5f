"""Retention: which runs lose their stored rows, and removing them without a long lock.

A finished, successful run loses its rows when it is older than ``KPI_KEEP_ROWS_DAYS`` or
beyond the newest ``KPI_KEEP_ROWS_RUNS`` successful runs of its series (its KPI and
parameter set); the newest successful run of each KPI's official series keeps them at
any age. Its record, value, parameters and audit entries stay; ``rows_pruned_at`` says
when the rows went.

A prune first marks the runs and writes its PRUNE audit entry in one short transaction
(from then on they read as removed), then deletes their rows and sorted views at most
``CHUNK_ROWS`` rows per transaction. A prune cut short leaves marked runs with rows, which
the next prune finishes. Giving the space back to the system is ``retention_space.py``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from . import audit, db, definitions, retention_space, series
from .errors import RowsRemovedError
from .models import Execution
from .schema import kpi_audit_log as log
from .schema import kpi_execution_result_rows as rows_table
from .schema import kpi_execution_results as executions
from .schema import kpi_result_view_rows as view_rows
from .schema import kpi_result_views as views
from .vocabulary import AuditAction, RunStatus

CHUNK_ROWS = 20_000  # most rows (or view positions) one delete transaction removes
_IDS_PER_STATEMENT = 500  # an IN list well under SQLite's limit on bound values
_FIND_ENTRY_WITHIN = dt.timedelta(hours=1)  # a prune's entry follows its mark this closely
Reason = Literal["age", "count"]


@dataclass(frozen=True)
class Policy:
    """The limits a prune applies, as of one moment (0: no limit)."""

    keep_days: int
    keep_runs: int
    as_of: dt.datetime

    @property
    def limited(self) -> bool:
        return self.keep_days > 0 or self.keep_runs > 0

    @property
    def cutoff(self) -> dt.datetime | None:
        """Runs finished before this lose their rows (None: no age limit)."""
        return self.as_of - dt.timedelta(days=self.keep_days) if self.keep_days > 0 else None

    def reason(self, finished: dt.datetime | None) -> Reason:
        cutoff = self.cutoff
        return (
            "age" if cutoff is not None and finished is not None and finished < cutoff else "count"
        )

    def why(self, reason: Reason) -> str:
        """The limit behind ``reason``, in words ("runs older than 30 days")."""
        if reason == "age":
            return f"runs older than {_plural(self.keep_days, 'day')}"
        return f"beyond the newest {_plural(self.keep_runs, 'run')} of its KPI and parameter set"

    def describe(self) -> str:
        """The whole policy in words, for reports."""
        parts = []
        if self.keep_days > 0:
            parts.append(f"runs older than {_plural(self.keep_days, 'day')}")
        if self.keep_runs > 0:
            parts.append(f"runs beyond the newest {self.keep_runs} per KPI and parameter set")
        if not parts:
            return "no limit (KPI_KEEP_ROWS_DAYS and KPI_KEEP_ROWS_RUNS are 0): rows are kept"
        return " or ".join(parts) + " lose their rows; the newest official run keeps them"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class PrunedRun(BaseModel):
    """A run that lost (or, in a dry run, would lose) its stored rows, and why."""

    model_config = ConfigDict(frozen=True)

    execution_id: int
    kpi_id: int
    series_key: str | None
    rows: int  # the rows it stored
    finished_at: dt.datetime | None
    reason: Reason


# -- which runs -------------------------------------------------------------------------------


def plan(connection: sa.engine.Connection, policy: Policy) -> list[PrunedRun]:
    """The runs whose rows the policy removes now, oldest first."""
    if not policy.limited:
        return []
    rank = sa.func.row_number().over(
        partition_by=(executions.c.kpi_id, executions.c.series_key),
        order_by=executions.c.id.desc(),
    )
    ranked = (
        sa.select(
            executions.c.id,
            executions.c.kpi_id,
            executions.c.series_key,
            executions.c.row_count,
            executions.c.rows_pruned_at,
            sa.func.coalesce(executions.c.finished_at, executions.c.created_at).label("done"),
            rank.label("rank"),
        )
        .where(executions.c.status == RunStatus.SUCCESS)
        .subquery()
    )
    past: list[sa.ColumnElement[bool]] = []
    if policy.cutoff is not None:
        past.append(ranked.c.done < policy.cutoff)
    if policy.keep_runs > 0:
        past.append(ranked.c.rank > policy.keep_runs)
    query = (
        sa.select(ranked)
        .where(ranked.c.rows_pruned_at.is_(None), ranked.c.row_count > 0, sa.or_(*past))
        .order_by(ranked.c.id)
    )
    kept = official_newest(connection)
    return [
        PrunedRun(
            execution_id=row.id,
            kpi_id=row.kpi_id,
            series_key=row.series_key,
            rows=row.row_count,
            finished_at=row.done,
            reason=policy.reason(row.done),
        )
        for row in connection.execute(query)
        if row.id not in kept
    ]


def official_newest(connection: sa.engine.Connection) -> set[int]:
    """The newest successful run of each KPI's official series (by its current version's
    official parameters); a KPI with no official parameter set has none to keep."""
    official = {
        kpi.id: key
        for kpi in definitions.list_kpis(connection, None, None, include_archived=True)
        if (key := series.official_key(kpi)) is not None
    }
    if not official:
        return set()
    newest = (
        sa.select(executions.c.kpi_id, executions.c.series_key, sa.func.max(executions.c.id))
        .where(
            executions.c.status == RunStatus.SUCCESS,
            executions.c.series_key.in_(sorted(set(official.values()))),
        )
        .group_by(executions.c.kpi_id, executions.c.series_key)
    )
    return {int(row[2]) for row in connection.execute(newest) if official.get(row[0]) == row[1]}


# -- marking them (one transaction, audited) -----------------------------------------------


def mark(
    connection: sa.engine.Connection, policy: Policy, actor: str, details: dict[str, Any]
) -> list[PrunedRun]:
    """Plan and mark the runs whose rows go, with one PRUNE entry, in the caller's write
    transaction; returns the runs this call marked (none that another prune took)."""
    planned = plan(connection, policy)
    if not planned:
        return []
    at = db.utcnow()
    marked: set[int] = set()
    ids = [run.execution_id for run in planned]
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        result = connection.execute(
            executions.update()
            .where(
                executions.c.id.in_(ids[start : start + _IDS_PER_STATEMENT]),
                executions.c.rows_pruned_at.is_(None),
                executions.c.status == RunStatus.SUCCESS,
            )
            .values(rows_pruned_at=at)
            .returning(executions.c.id)
        )
        marked.update(result.scalars())
    taken = [run for run in planned if run.execution_id in marked]
    if taken:
        audit.append(
            connection,
            actor=actor,
            action=AuditAction.PRUNE,
            entity=_entity(at),
            details={**details, **_summary(policy, taken, at)},
        )
    return taken


def _entity(at: dt.datetime) -> str:
    return f"prune:{at.isoformat()}"


def _summary(policy: Policy, taken: list[PrunedRun], at: dt.datetime) -> dict[str, Any]:
    return {
        "runs": len(taken),
        "rows": sum(run.rows for run in taken),
        "by_age": sum(run.reason == "age" for run in taken),
        "by_count": sum(run.reason == "count" for run in taken),
        "kpis": sorted({run.kpi_id for run in taken}),
        "keep_rows_days": policy.keep_days,
        "keep_rows_runs": policy.keep_runs,
        "as_of": policy.as_of.isoformat(),
        "pruned_at": at.isoformat(),
    }


# -- removing their rows (short transactions) ------------------------------------------------


def unswept(connection: sa.engine.Connection) -> list[tuple[int, int]]:
    """(run, rows) of every marked run that still has stored rows or views."""
    has_rows = sa.exists().where(rows_table.c.execution_id == executions.c.id)
    has_views = sa.exists().where(views.c.execution_id == executions.c.id)
    query = (
        sa.select(executions.c.id, sa.func.coalesce(executions.c.row_count, 0))
        .where(executions.c.rows_pruned_at.is_not(None), sa.or_(has_rows, has_views))
        .order_by(executions.c.id)
    )
    return [(int(row[0]), int(row[1])) for row in connection.execute(query)]


def sweep(engine: sa.engine.Engine, runs: Sequence[tuple[int, int]]) -> int:
    """Delete the stored rows and views of ``runs`` ((id, rows) pairs); returns the rows
    deleted. Small runs go several to a transaction, a big one in row-number ranges."""
    removed = 0
    for group in _packed(runs):
        if len(group) == 1 and group[0][1] > CHUNK_ROWS:
            removed += _sweep_big(engine, group[0][0])
            continue
        with db.write_tx(engine) as connection:
            removed += _drop_all(connection, [run_id for run_id, _rows in group])
    return removed


def _packed(runs: Sequence[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """Runs in groups of at most CHUNK_ROWS rows (a bigger run alone)."""
    group: list[tuple[int, int]] = []
    size = 0
    for run in runs:
        if group and (size + run[1] > CHUNK_ROWS or len(group) >= _IDS_PER_STATEMENT):
            yield group
            group, size = [], 0
        group.append(run)
        size += run[1]
    if group:
        yield group


def _drop_all(connection: sa.engine.Connection, run_ids: list[int]) -> int:
    """Every stored row and view of these runs, in the caller's transaction."""
    of_runs = sa.select(views.c.id).where(views.c.execution_id.in_(run_ids))
    connection.execute(view_rows.delete().where(view_rows.c.view_id.in_(of_runs)))
    connection.execute(views.delete().where(views.c.execution_id.in_(run_ids)))
    deleted = connection.execute(rows_table.delete().where(rows_table.c.execution_id.in_(run_ids)))
    return int(deleted.rowcount)


def _sweep_big(engine: sa.engine.Engine, run_id: int) -> int:
    """A big run's rows and views, CHUNK_ROWS at a time, each range its own transaction."""
    with db.read_tx(engine) as connection:
        last_row = connection.execute(
            sa.select(sa.func.max(rows_table.c.row_number)).where(
                rows_table.c.execution_id == run_id
            )
        ).scalar()
        query = sa.select(views.c.id, views.c.row_count).where(views.c.execution_id == run_id)
        kept_views = [(int(row.id), int(row.row_count)) for row in connection.execute(query)]
    removed = 0
    for low in range(0, last_row or 0, CHUNK_ROWS):
        in_range = rows_table.c.row_number.between(low + 1, low + CHUNK_ROWS)
        with db.write_tx(engine) as connection:
            deleted = connection.execute(
                rows_table.delete().where(rows_table.c.execution_id == run_id, in_range)
            )
            removed += int(deleted.rowcount)
    for view_id, positions in kept_views:
        for low in range(0, positions, CHUNK_ROWS):
            in_range = view_rows.c.position.between(low + 1, low + CHUNK_ROWS)
            with db.write_tx(engine) as connection:
                connection.execute(
                    view_rows.delete().where(view_rows.c.view_id == view_id, in_range)
                )
    with db.write_tx(engine) as connection:  # and whatever was kept meanwhile
        removed += _drop_all(connection, [run_id])
    return removed


# -- why a run has no rows ------------------------------------------------------------------------


def removed_error(connection: sa.engine.Connection, execution: Execution) -> RowsRemovedError:
    """The error that says when and by which limit a run's rows were removed."""
    at = execution.rows_pruned_at
    if at is None:
        raise ValueError(f"run {execution.id} still has its rows")
    entry = connection.execute(
        sa.select(log.c.details)
        .where(
            log.c.occurred_at.between(at, at + _FIND_ENTRY_WITHIN),
            log.c.action == AuditAction.PRUNE,
            log.c.entity == _entity(at),
        )
        .order_by(log.c.id)
        .limit(1)
    ).scalar()
    if entry is None:
        return RowsRemovedError(execution.id, at)
    details = db.loads(entry)
    policy = Policy(
        int(details.get("keep_rows_days") or 0),
        int(details.get("keep_rows_runs") or 0),
        dt.datetime.fromisoformat(details.get("as_of") or at.isoformat()),
    )
    finished = execution.finished_at or execution.created_at
    return RowsRemovedError(execution.id, at, policy.why(policy.reason(finished)))


# -- a prune, end to end ------------------------------------------------------------------------


class PruneReport(BaseModel):
    """What a prune removed (a dry run: would remove) and the room it gave back."""

    model_config = ConfigDict(frozen=True)

    dry_run: bool
    as_of: dt.datetime
    keep_rows_days: int
    keep_rows_runs: int
    policy: str  # the limits in words
    runs: list[PrunedRun]  # the runs that lost their rows now (would lose, in a dry run)
    runs_pruned: int
    rows_removed: int  # rows deleted (a dry run: the rows those runs store)
    runs_finished: int  # runs an interrupted prune had marked whose rows went now
    bytes_before: int  # SQLite: the file's pages; PostgreSQL: the rows tables
    bytes_after: int
    bytes_freed: int  # given back to the system (0 in a dry run)
    bytes_free: int | None  # SQLite: free pages left inside the file, reused by new rows
    auto_vacuum: str  # SQLite's auto_vacuum mode; "" on PostgreSQL
    vacuumed: bool  # a full VACUUM ran
    note: str  # how the room came back, or how to get it back


def prune(
    engine: sa.engine.Engine,
    policy: Policy,
    actor: str,
    *,
    dry_run: bool = False,
    vacuum: bool = False,
) -> PruneReport:
    """Remove the rows the policy says (mark and audit, then delete in short
    transactions, then give the room back); a dry run only plans."""
    before = retention_space.measure(engine)
    if dry_run:
        with db.read_tx(engine) as connection:
            planned = plan(connection, policy)
        rows = sum(run.rows for run in planned)
        note = "A dry run: nothing was changed."
        return _report(policy, planned, rows, 0, before, before, note, dry_run=True)
    with db.write_tx(engine) as connection:
        taken = mark(connection, policy, actor, {"vacuum": vacuum})
    with db.read_tx(engine) as connection:
        marked = unswept(connection)
    removed = sweep(engine, marked)
    note = retention_space.give_back(engine, full=vacuum)
    after = retention_space.measure(engine)
    finished = len({run_id for run_id, _rows in marked} - {r.execution_id for r in taken})
    return _report(policy, taken, removed, finished, before, after, note, vacuumed=vacuum)


def _report(
    policy: Policy,
    runs: list[PrunedRun],
    rows: int,
    finished: int,
    before: retention_space.Space,
    after: retention_space.Space,
    note: str,
    *,
    dry_run: bool = False,
    vacuumed: bool = False,
) -> PruneReport:
    return PruneReport(
        dry_run=dry_run,
        as_of=policy.as_of,
        keep_rows_days=policy.keep_days,
        keep_rows_runs=policy.keep_runs,
        policy=policy.describe(),
        runs=runs,
        runs_pruned=len(runs),
        rows_removed=rows,
        runs_finished=finished,
        bytes_before=before.used,
        bytes_after=after.used,
        bytes_freed=max(0, before.used - after.used),
        bytes_free=after.free,
        auto_vacuum=after.mode,
        vacuumed=vacuumed,
        note=note,
    )
