"""Which series a run belongs to, and which series is a KPI's official number.

A KPI's runs form one series per parameter set: the bound values, defaults filled in,
without the period dates of a period KPI (those are the series' x axis). The official
series is the one for the KPI's pinned ``official_params`` (defaults for the rest); every
other run is an exploration, never mixed into the official number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from . import periods, run_records
from .models import KPI, Execution, KPISpec
from .schema import kpi_execution_results as executions
from .story_records import SeriesPoint
from .values import to_json_value
from .vocabulary import Grain, RunStatus


def _period_names(spec: KPISpec) -> tuple[str, ...]:
    return (spec.period.start, spec.period.end) if spec.period else ()


def series_params(spec: KPISpec, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that name a run's series: all but the period dates, when they make
    one period (whole, or to date); a run over any other range is a series of its own,
    an exploration (a two-year run of a monthly KPI is not one of its months)."""
    if not in_one_period(spec, params):
        return dict(params)
    dropped = _period_names(spec)
    return {name: value for name, value in params.items() if name not in dropped}


def in_one_period(spec: KPISpec, params: dict[str, Any]) -> bool:
    """A period KPI's run covers one period: from its first day to its last, or to a day
    inside it ("to date"). True for a KPI without a period."""
    if spec.period is None:
        return True
    start, end = period_of(spec, params)
    if start is None or end is None:
        return False
    grain = spec.period.grain
    return periods.period_start(start, grain) == start and end <= periods.period_end(start, grain)


def key_of(params: dict[str, Any]) -> str:
    """sha256 of the parameters' canonical JSON (the form runs store them in)."""
    canonical = orjson.dumps(
        params, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return hashlib.sha256(canonical).hexdigest()


def series_key(spec: KPISpec, params: dict[str, Any]) -> str:
    """The series key of a run of ``spec`` with ``params`` (in their stored JSON form)."""
    return key_of(series_params(spec, params))


def period_of(spec: KPISpec, params: dict[str, Any]) -> tuple[dt.date | None, dt.date | None]:
    """A period KPI's run's start and end dates; (None, None) for other KPIs."""
    if spec.period is None:
        return None, None
    return _date(params.get(spec.period.start)), _date(params.get(spec.period.end))


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def official_params(spec: KPISpec) -> dict[str, Any] | None:
    """The official parameter set in stored JSON form, without period dates: the pinned
    values, defaults for the rest. None when a parameter has neither (nothing official)."""
    pinned = spec.official_params or {}
    chosen: dict[str, Any] = {}
    for param in spec.parameters:
        if param.name in _period_names(spec):
            continue
        value = pinned.get(param.name, param.default)
        if value is None:
            return None
        chosen[param.name] = to_json_value(value)
    return chosen


def official_key(spec: KPISpec) -> str | None:
    """The key of the official series (None when the KPI has no official parameter set)."""
    chosen = official_params(spec)
    return None if chosen is None else key_of(chosen)


# -- reading series from the store ----------------------------------------------------------


def _successes(kpi_ids: Sequence[int]) -> sa.ColumnElement[bool]:
    return sa.and_(executions.c.kpi_id.in_(list(kpi_ids)), executions.c.status == RunStatus.SUCCESS)


def label_of(kpi: KPISpec, params: dict[str, Any], official: bool) -> str:
    """How a parameter set reads on screen: "Official" plus its values, or its values."""
    shown = ", ".join(f"{_label(kpi, name)} = {value}" for name, value in params.items())
    if official:
        return f"Official ({shown})" if shown else "Official"
    return shown or "No parameters"


def _label(kpi: KPISpec, name: str) -> str:
    param = kpi.parameter(name)
    return (param.label if param else None) or name


def point_of(kpi: KPI, run: Execution) -> SeriesPoint:
    """A successful run as a point of its series, judged by its own parameters' target."""
    label = None
    if kpi.period is not None and run.period_start and run.period_end:
        label = period_label(run.period_start, run.period_end, kpi.period.grain)
    return SeriesPoint(
        run_id=run.id,
        kpi_version=run.kpi_version,
        finished_at=run.finished_at,
        params=run.params,
        value=run.value,
        target=kpi.target_for(run.params),
        rag=kpi.rag_status(run.value, run.params),
        period_start=run.period_start,
        period_end=run.period_end,
        period_label=label,
    )


def period_label(start: dt.date, end: dt.date, grain: Grain) -> str:
    """ "2025-03" for a whole period, else "2025-03-01 – 2025-03-15"."""
    period = periods.period_of(start, grain)
    if period.start == start and period.end == end:
        return period.label
    return f"{start.isoformat()} – {end.isoformat()}"


def one_per_period(kpi: KPI, runs: list[Execution]) -> list[Execution]:
    """Runs oldest first; for a period KPI one per period (its newest run), by period."""
    if kpi.period is None:
        return sorted(runs, key=lambda r: r.id)
    newest: dict[tuple[Any, Any], Execution] = {}
    for run in runs:
        slot = (run.period_start, run.period_end)
        if slot not in newest or run.id > newest[slot].id:
            newest[slot] = run
    return sorted(newest.values(), key=lambda r: (r.period_start or dt.date.min, r.id))


def read_series(
    connection: sa.engine.Connection, kpi: KPI, key: str, limit: int = 200
) -> tuple[list[SeriesPoint], int]:
    """The newest ``limit`` points of one series (oldest first) and how many runs it has."""
    where = sa.and_(_successes([kpi.id]), executions.c.series_key == key)
    total = connection.execute(sa.select(sa.func.count()).where(where)).scalar_one()
    order = (
        [executions.c.period_start.desc(), executions.c.id.desc()]
        if kpi.period
        else [executions.c.id.desc()]
    )
    rows = connection.execute(sa.select(executions).where(where).order_by(*order).limit(limit * 4))
    runs = one_per_period(kpi, [run_records.to_execution(row) for row in rows])[-limit:]
    return [point_of(kpi, run) for run in runs], int(total)


def series_keys(connection: sa.engine.Connection, kpi_id: int) -> list[tuple[str, int, int]]:
    """(key, successful runs, newest run id) of each series of a KPI, newest first."""
    query = (
        sa.select(executions.c.series_key, sa.func.count(), sa.func.max(executions.c.id))
        .where(_successes([kpi_id]), executions.c.series_key.is_not(None))
        .group_by(executions.c.series_key)
        .order_by(sa.func.max(executions.c.id).desc())
    )
    return [(str(row[0]), int(row[1]), int(row[2])) for row in connection.execute(query)]


def newest_per_series(
    connection: sa.engine.Connection, kpi_ids: Sequence[int], per_series: int
) -> dict[int, dict[str, list[Execution]]]:
    """The newest successful runs of every series of these KPIs (newest first), one query."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(executions.c.kpi_id, executions.c.series_key),
            order_by=executions.c.id.desc(),
        )
        .label("rank")
    )
    ranked = sa.select(executions, rank).where(_successes(kpi_ids)).subquery()
    query = (
        sa.select(*(ranked.c[c.name] for c in executions.columns))
        .where(ranked.c.rank <= per_series)
        .order_by(ranked.c.id.desc())
    )
    found: dict[int, dict[str, list[Execution]]] = {}
    for row in connection.execute(query):
        run = run_records.to_execution(row)
        found.setdefault(run.kpi_id, {}).setdefault(run.series_key or "", []).append(run)
    return found
