"""Unusual values: is a run's value outside the usual range of the runs before it?

A successful run's value is unusual when it lies outside median ± 3 × 1.4826 × MAD (the
median absolute deviation, scaled to match a standard deviation for normal data) of the
previous comparable runs. Comparable runs are successful runs with a value, of the same
KPI and series (parameter set), whose KPI version belongs to the same *family* as the
run's: the same SQL, value column and aggregation, so the number means the same thing
(a version that only changed a description or a target stays comparable). "Previous"
is by run id; for a period KPI it is by period (earlier ``period_start``), counting one
run per period, the newest. At most the 30 latest are used; fewer than 8 means no flag.

The median and MAD resist the outliers they are looking for, where a mean and standard
deviation would be dragged by them. With MAD = 0 (half the previous values or more are
equal) the band is that one value and any other value is unusual; a value within a
billionth of the band (float noise: the same data summed in another order) is inside.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import db
from .formats import format_number
from .models import Execution
from .schema import kpi_definition_history as history
from .schema import kpi_execution_results as executions
from .story_records import Band, UnusualCheck
from .vocabulary import RunStatus

MIN_COMPARABLE = 8
MAX_COMPARABLE = 30
SPREAD = 3.0  # band half-width in (scaled) MADs
MAD_SCALE = 1.4826  # MAD × this estimates the standard deviation of normal data
NOISE = 1e-9  # relative slack at the band's edges

# (sql, value_column, aggregation): versions with equal families give comparable numbers
Family = tuple[str, str | None, str]


def robust_band(values: Sequence[float]) -> Band | None:
    """The band of ``values`` (None with fewer than ``MIN_COMPARABLE`` of them)."""
    if len(values) < MIN_COMPARABLE:
        return None
    median = statistics.median(values)
    mad = statistics.median([abs(v - median) for v in values])
    half = SPREAD * MAD_SCALE * mad
    return Band(median=median, mad=mad, low=median - half, high=median + half, count=len(values))


def outside(value: float, band: Band) -> bool:
    """Whether ``value`` lies outside ``band`` by more than float noise."""
    slack = NOISE * max(1.0, abs(band.median))
    return value < band.low - slack or value > band.high + slack


# -- judging one run against the points before it ----------------------------------------------


@dataclass(frozen=True)
class Point:
    """A comparable candidate: a successful run with a value."""

    run_id: int
    value: float
    period: Any  # period_start (a date) for a period KPI's run, else None


def judge(run: Execution, previous: Sequence[Point]) -> UnusualCheck:
    """Judge ``run`` against ``previous`` (its comparable runs, oldest first, at most
    ``MAX_COMPARABLE``): a pure function of the two."""
    base: dict[str, Any] = {"run_id": run.id, "kpi_id": run.kpi_id, "value": run.value}
    if run.status != RunStatus.SUCCESS:
        state = "has not finished" if not run.finished else f"ended {run.status}"
        return UnusualCheck(
            **base,
            unusual=None,
            reason=f"Not judged: run {run.id} {state}; only successful runs are judged.",
        )
    if run.value is None:
        return UnusualCheck(
            **base, unusual=None, reason=f"Not judged: run {run.id} has no value (no data)."
        )
    ids = [p.run_id for p in previous]
    what = "periods" if run.period_start is not None else "runs"
    band = robust_band([p.value for p in previous])
    if band is None:
        count = len(previous)
        noun = "run" if count == 1 else "runs"
        return UnusualCheck(
            **base,
            unusual=None,
            comparable_run_ids=ids,
            reason=f"Not judged: {count} previous comparable {noun}; at least "
            f"{MIN_COMPARABLE} are needed.",
        )
    unusual = outside(run.value, band)
    shown = format_number(run.value)
    where = (
        f"{'above' if run.value > band.high else 'below'} the usual range"
        if unusual
        else "within the usual range"
    )
    return UnusualCheck(
        **base,
        unusual=unusual,
        median=band.median,
        mad=band.mad,
        low=band.low,
        high=band.high,
        comparable_run_ids=ids,
        reason=f"{'Unusual: ' if unusual else ''}{shown} is {where} "
        f"{format_number(band.low)} to {format_number(band.high)} (median "
        f"{format_number(band.median)} of the {band.count} previous comparable {what}).",
    )


class Series:
    """The candidates of one (KPI, series key, family), ordered so that each run finds
    the ones before it by bisection."""

    def __init__(self, points: Iterable[Point], by_period: bool):
        self.by_period = by_period
        if by_period:
            newest: dict[Any, Point] = {}
            for point in points:
                if point.period is None:
                    continue
                kept = newest.get(point.period)
                if kept is None or point.run_id > kept.run_id:
                    newest[point.period] = point
            self.points = sorted(newest.values(), key=lambda p: p.period)
            self.keys: list[Any] = [p.period for p in self.points]
        else:
            self.points = sorted((p for p in points if p.period is None), key=lambda p: p.run_id)
            self.keys = [p.run_id for p in self.points]

    def before(self, run: Execution) -> list[Point]:
        """The at most ``MAX_COMPARABLE`` latest points before ``run``, oldest first."""
        key = run.period_start if self.by_period else run.id
        end = bisect.bisect_left(self.keys, key)
        return self.points[max(0, end - MAX_COMPARABLE) : end]


# -- reading what is needed, in a few queries ---------------------------------------------------


def check_run(connection: sa.engine.Connection, run: Execution) -> UnusualCheck:
    """Whether ``run``'s value is unusual among its previous comparable runs."""
    return check_runs(connection, [run])[run.id]


def check_runs(
    connection: sa.engine.Connection, runs: Sequence[Execution]
) -> dict[int, UnusualCheck]:
    """``check_run`` for many runs at once: one query for the KPIs' versions and one per
    KPI for the candidates, however many runs are asked."""
    families = _families(connection, {r.kpi_id for r in runs})
    checks: dict[int, UnusualCheck] = {}
    by_kpi: dict[int, list[Execution]] = {}
    for run in runs:
        by_kpi.setdefault(run.kpi_id, []).append(run)
    for kpi_id, asked in by_kpi.items():
        series = _series(connection, kpi_id, asked, families)
        for run in asked:
            key = _series_id(run, families)
            found = series.get(key)
            checks[run.id] = judge(run, found.before(run) if found else [])
    return {run.id: checks[run.id] for run in runs}  # in the order asked


def _families(connection: sa.engine.Connection, kpi_ids: set[int]) -> dict[tuple[int, int], Family]:
    """The family of every version of the KPIs: (kpi_id, version) -> family."""
    if not kpi_ids:
        return {}
    rows = connection.execute(
        sa.select(history.c.kpi_id, history.c.version, history.c.definition).where(
            history.c.kpi_id.in_(sorted(kpi_ids))
        )
    )
    families: dict[tuple[int, int], Family] = {}
    for row in rows:
        spec = db.loads(row.definition) or {}
        aggregation = str(spec.get("aggregation") or "sum")
        value_column = None if aggregation == "count" else spec.get("value_column") or None
        families[(row.kpi_id, row.version)] = (str(spec.get("sql", "")), value_column, aggregation)
    return families


SeriesId = tuple[str | None, Family | None, bool]


def _series_id(run: Execution, families: dict[tuple[int, int], Family]) -> SeriesId:
    return (
        run.series_key,
        families.get((run.kpi_id, run.kpi_version)),
        run.period_start is not None,
    )


def _series(
    connection: sa.engine.Connection,
    kpi_id: int,
    asked: Sequence[Execution],
    families: dict[tuple[int, int], Family],
) -> dict[SeriesId, Series]:
    """The candidates of the asked runs' series in one query, split by series id. Only
    candidates that can come before an asked run are read."""
    keys = {r.series_key for r in asked}
    named = sorted(k for k in keys if k is not None)
    in_series: sa.ColumnElement[bool] = executions.c.series_key.in_(named)
    if None in keys:
        in_series = sa.or_(in_series, executions.c.series_key.is_(None))
    periods = [r.period_start for r in asked if r.period_start is not None]
    earlier = []
    if len(periods) < len(asked):
        earlier.append(executions.c.id < max(r.id for r in asked if r.period_start is None))
    if periods:
        earlier.append(executions.c.period_start < max(periods))
    rows = connection.execute(
        sa.select(
            executions.c.id,
            executions.c.kpi_version,
            executions.c.series_key,
            executions.c.period_start,
            executions.c.value,
        ).where(
            executions.c.kpi_id == kpi_id,
            executions.c.status == RunStatus.SUCCESS,
            executions.c.value.is_not(None),
            in_series,
            sa.or_(*earlier),
        )
    )
    grouped: dict[SeriesId, list[Point]] = {}
    for row in rows:
        family = families.get((kpi_id, row.kpi_version))
        by_period = row.period_start is not None
        point = Point(row.id, float(row.value), row.period_start)
        grouped.setdefault((row.series_key, family, by_period), []).append(point)
    return {key: Series(points, by_period=key[2]) for key, points in grouped.items()}
