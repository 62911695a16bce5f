"""Reading runs: one, a filtered list, the newest per KPI, or several by id."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import db
from .errors import NotFoundError
from .models import Execution
from .schema import kpi_execution_results as executions


def to_execution(row: sa.Row) -> Execution:
    values = dict(row._mapping)
    values["params"] = db.loads(values["params"]) or {}
    values["columns"] = db.loads(values["columns"]) or []
    values["first_row_sample"] = db.loads(values["first_row_sample"])
    return Execution.model_validate(values)


def get(connection: sa.engine.Connection, execution_id: int) -> Execution:
    if not db.is_valid_id(execution_id):
        raise NotFoundError(f"There is no run with id {execution_id!r}.")
    row = connection.execute(sa.select(executions).where(executions.c.id == execution_id)).first()
    if row is None:
        raise NotFoundError(f"There is no run with id {execution_id}.")
    return to_execution(row)


def many(connection: sa.engine.Connection, execution_ids: Iterable[int]) -> list[Execution]:
    """The runs with these ids that exist, in the order asked (one query)."""
    wanted = [i for i in execution_ids if db.is_valid_id(i)]
    if not wanted:
        return []
    rows = connection.execute(sa.select(executions).where(executions.c.id.in_(wanted)))
    found = {row.id: to_execution(row) for row in rows}
    return [found[i] for i in wanted if i in found]


def listed(
    connection: sa.engine.Connection,
    kpi_id: int | None = None,
    status: str | Iterable[str] | None = None,
    limit: int | None = 100,
    batch_id: str | None = None,
    requested_by: str | None = None,
    kpis: sa.Select[Any] | None = None,
) -> list[Execution]:
    """Runs matching every filter given, newest first; ``kpis`` is a subquery of the KPI
    ids the reader may see."""
    query = sa.select(executions).order_by(executions.c.id.desc())
    if requested_by:
        query = query.where(executions.c.requested_by == requested_by)
    if kpis is not None:
        query = query.where(executions.c.kpi_id.in_(kpis))
    if kpi_id is not None:
        query = query.where(executions.c.kpi_id == kpi_id)
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(executions.c.status.in_(statuses))
    if batch_id:
        query = query.where(executions.c.batch_id == batch_id)
    if limit is not None:
        query = query.limit(limit)
    return [to_execution(row) for row in connection.execute(query)]


def latest(
    connection: sa.engine.Connection,
    kpi_ids: Iterable[int] | None,
    per_kpi: int,
    kpis: sa.Select[Any] | None = None,
) -> dict[int, list[Execution]]:
    """The newest ``per_kpi`` runs of each KPI, newest first, in one query."""
    rank = (
        sa.func.row_number()
        .over(partition_by=executions.c.kpi_id, order_by=executions.c.id.desc())
        .label("rank")
    )
    ranked = sa.select(executions, rank)
    if kpi_ids is not None:
        ranked = ranked.where(executions.c.kpi_id.in_(list(kpi_ids)))
    if kpis is not None:
        ranked = ranked.where(executions.c.kpi_id.in_(kpis))
    subquery = ranked.subquery()
    query = (
        sa.select(*(subquery.c[c.name] for c in executions.columns))
        .where(subquery.c.rank <= per_kpi)
        .order_by(subquery.c.kpi_id, subquery.c.id.desc())
    )
    runs: dict[int, list[Execution]] = {}
    for row in connection.execute(query):
        runs.setdefault(row.kpi_id, []).append(to_execution(row))
    return runs
