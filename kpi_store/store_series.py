"""The part of ``KPIStore`` for a KPI's official number and its story over time: one
series per parameter set (the official one first), the cards' headlines, period
comparisons (previous period, the same period last year, the target, "to date"), and
backfill of a period KPI's history as one batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import audit, db, definitions, periods, run_records, series
from .access import Guard, allowed, visible_kpis
from .errors import KPIStoreError, ValidationError
from .models import KPI, BatchError, Execution
from .runs import RunLedger, new_batch_id
from .schema import kpi_execution_results as executions
from .story_records import BackfillResult, Comparison, Headline, Series, SeriesPoint
from .validation import bind_parameters, checked_actor
from .values import to_json_value
from .vocabulary import ACTIVE_STATUSES, AuditAction, CompareTo, Role, RunMode, RunStatus


class SeriesDesk:
    """``series``, ``series_list``, ``headlines``, ``compare``, ``run_comparison``,
    ``backfill``."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        ledger: RunLedger
        _guard: Guard

        def _execution(self, execution_id: int) -> Execution: ...

        def execute(
            self,
            kpi_id: int,
            params: dict[str, Any] | None = None,
            actor: str = "",
            timeout_s: float | None = None,
        ) -> Execution: ...

    # -- series ---------------------------------------------------------------------------

    @allowed(Role.VIEWER, kpi="kpi_id")
    def series(
        self,
        kpi_id: int,
        params: dict[str, Any] | None = None,
        *,
        limit: int = 200,
        actor: str | None = None,
    ) -> Series:
        """The series of one parameter set (default: the official one), oldest first; a
        period KPI's series has one point per period, its dates left out of ``params``."""
        with db.read_tx(self.engine) as connection:
            kpi = definitions.get(connection, kpi_id)
            chosen = _series_params_given(kpi, params)
            key = series.key_of(chosen)
            points, total = series.read_series(connection, kpi, key, limit)
        return _series(kpi, key, chosen, points, total)

    @allowed(Role.VIEWER, kpi="kpi_id")
    def series_list(
        self, kpi_id: int, *, limit: int = 200, actor: str | None = None
    ) -> list[Series]:
        """Every series a KPI has runs in: the official one first (even with no runs yet,
        when the KPI has an official parameter set), then the others, newest first."""
        with db.read_tx(self.engine) as connection:
            kpi = definitions.get(connection, kpi_id)
            official = series.official_key(kpi)
            found: list[Series] = []
            keys = [k for k, _, _ in series.series_keys(connection, kpi_id)]
            if official is not None:
                keys = [official, *(k for k in keys if k != official)]
            for key in keys:
                points, total = series.read_series(connection, kpi, key, limit)
                if points:
                    chosen = series.series_params(kpi, points[-1].params)
                else:
                    chosen = series.official_params(kpi) or {}
                found.append(_series(kpi, key, chosen, points, total))
        return found

    @allowed(Role.VIEWER)
    def headlines(
        self, kpis: Iterable[KPI], *, trend: int = 20, actor: str | None = None
    ) -> dict[int, Headline]:
        """What each KPI's card shows, from its official series only (a few queries)."""
        shown = list(kpis)
        visible = visible_kpis(self._guard.sources(actor, "headlines"))
        with db.read_tx(self.engine) as connection:
            ids = [k.id for k in shown]
            if visible is not None:
                allowed_ids: set[int] = set(connection.execute(visible).scalars())
                ids = [i for i in ids if i in allowed_ids]
            runs = series.newest_per_series(connection, ids, per_series=trend * 2)
            last = run_records.latest(connection, ids, per_kpi=1)
        return {
            kpi.id: _headline(kpi, runs.get(kpi.id, {}), last.get(kpi.id, []), trend)
            for kpi in shown
            if kpi.id in ids
        }

    # -- comparisons ----------------------------------------------------------------------

    @allowed(Role.VIEWER, run="run_id")
    def compare(
        self,
        run_id: int,
        compare_to: CompareTo | str = CompareTo.PREVIOUS_PERIOD,
        *,
        to_date: bool = False,
        actor: str | None = None,
    ) -> Comparison:
        """A successful run's value against the previous period, the same period last
        year or its target. For a period KPI the base is a run of the same KPI version and
        parameter set over the shifted dates (``missing`` when nobody ran it yet:
        ``run_comparison`` runs it); other KPIs compare with the previous run of their
        series. A zero or missing base gives no % change, never infinity."""
        compare_to = _compare_to(compare_to)
        with db.read_tx(self.engine) as connection:
            run = run_records.get(connection, run_id)
            kpi = definitions.get(connection, run.kpi_id, run.kpi_version)
            _check_comparable(run, kpi, compare_to)
            if compare_to == CompareTo.TARGET:
                target = kpi.target_for(run.params)
                return _comparison(run, compare_to, to_date, target, None, "target", None)
            if kpi.period is None or run.period_start is None or run.period_end is None:
                base = _previous_in_series(connection, run)
                label = "previous run"
                return _comparison(run, compare_to, False, _value(base), base, label, None)
            first, last = _shifted(kpi, run, compare_to, to_date)
            base = _run_over(connection, run, first, last)
            base_params = dict(run.params)
            base_params[kpi.period.start] = first.isoformat()
            base_params[kpi.period.end] = last.isoformat()
            label = series.period_label(first, last, kpi.period.grain)
            return _comparison(run, compare_to, to_date, _value(base), base, label, base_params)

    @allowed(Role.RUNNER, run="run_id")
    def run_comparison(
        self,
        run_id: int,
        compare_to: CompareTo | str = CompareTo.PREVIOUS_PERIOD,
        actor: str = "",
        *,
        to_date: bool = False,
    ) -> Comparison:
        """Run the missing base of ``compare`` now (the KPI must still be at the run's
        version, so both use the same SQL), then compare again."""
        comparison = self.compare(run_id, compare_to, to_date=to_date, actor=actor)
        if not comparison.missing:
            return comparison
        run = self._execution(run_id)
        with db.read_tx(self.engine) as connection:
            current = definitions.get(connection, run.kpi_id)
        if current.version != run.kpi_version:
            raise ValidationError(
                f"Run {run_id} used version {run.kpi_version} of the KPI, which is now at "
                f"version {current.version}: run it again, then compare, so both use the "
                "same SQL."
            )
        self.execute(run.kpi_id, comparison.base_params, actor)
        return self.compare(run_id, compare_to, to_date=to_date, actor=actor)

    # -- backfill -------------------------------------------------------------------------

    @allowed(Role.RUNNER, kpi="kpi_id")
    def backfill(
        self,
        kpi_id: int,
        start: dt.date | str,
        end: dt.date | str,
        actor: str,
        *,
        params: dict[str, Any] | None = None,
        rerun: bool = False,
    ) -> BackfillResult:
        """Queue one run per period from ``start`` to ``end`` as one batch, with the
        official parameter set unless ``params`` name another. Periods already run (or
        queued) for the KPI's current version and that parameter set are skipped unless
        ``rerun``; a period the queue refuses is reported, not raised."""
        actor = checked_actor(actor)
        with db.read_tx(self.engine) as connection:
            kpi = definitions.runnable(connection, kpi_id)
        if kpi.period is None:
            raise ValidationError(
                f"KPI '{kpi.name}' has no period (two date parameters and a grain), so "
                "there is nothing to backfill; declare one in its definition."
            )
        try:
            wanted = periods.periods_between(
                _day(start, "start"), _day(end, "end"), kpi.period.grain
            )
        except ValueError as error:  # the range is backwards or holds too many periods
            raise ValidationError(f"Cannot backfill: {error}.") from None
        chosen = _series_params_given(kpi, params)
        done = set() if rerun else self._periods_done(kpi, series.key_of(chosen))
        batch_id = new_batch_id()
        queued: list[int] = []
        skipped: list[str] = []
        errors: list[BatchError] = []
        for period in wanted:
            if (period.start, period.end) in done:
                skipped.append(period.label)
                continue
            run_params = {
                **chosen,
                kpi.period.start: period.start.isoformat(),
                kpi.period.end: period.end.isoformat(),
            }
            try:
                queued.append(
                    self.ledger.create(
                        kpi_id, run_params, actor, mode=RunMode.BACKGROUND, batch_id=batch_id
                    )
                )
            except KPIStoreError as error:
                errors.append(BatchError(kpi_id=period.label, message=str(error)))
        audit.record(
            self.engine,
            actor=actor,
            action=AuditAction.BACKFILL,
            kpi_id=kpi_id,
            entity=batch_id,
            details={
                "from": wanted[0].start.isoformat() if wanted else None,
                "to": wanted[-1].end.isoformat() if wanted else None,
                "grain": str(kpi.period.grain),
                "queued": len(queued),
                "skipped": len(skipped),
                "refused": len(errors),
                "params": chosen,
            },
        )
        with db.read_tx(self.engine) as connection:
            runs = run_records.many(connection, queued)
        return BackfillResult(
            kpi_id=kpi_id,
            batch_id=batch_id,
            periods=len(wanted),
            queued=runs,
            skipped=skipped,
            errors=errors,
        )

    def _periods_done(self, kpi: KPI, key: str) -> set[tuple[dt.date, dt.date]]:
        """(start, end) of the periods with a successful or active run of this version."""
        statuses = [RunStatus.SUCCESS, *ACTIVE_STATUSES]
        with db.read_tx(self.engine) as connection:
            rows = connection.execute(_periods_query(kpi.id, kpi.version, key, statuses)).all()
        return {(row.period_start, row.period_end) for row in rows if row.period_start}


# -- helpers ----------------------------------------------------------------------------------


def _periods_query(
    kpi_id: int, version: int, key: str, statuses: list[RunStatus]
) -> sa.Select[Any]:
    """The periods of a version's runs in one series with one of ``statuses``."""
    return sa.select(executions.c.period_start, executions.c.period_end).where(
        executions.c.kpi_id == kpi_id,
        executions.c.kpi_version == version,
        executions.c.series_key == key,
        executions.c.status.in_([str(s) for s in statuses]),
    )


def _series_params_given(kpi: KPI, params: dict[str, Any] | None) -> dict[str, Any]:
    """The series parameters of ``params`` (official ones when None), checked like a run's:
    period dates are filled in only to satisfy the check, then left out."""
    if params is None:
        official = series.official_params(kpi)
        if official is None:
            raise ValidationError(
                f"KPI '{kpi.name}' has a parameter without a default, so it has no official "
                "parameter set yet: pin one in its definition, or name the parameters."
            )
        params = official
    given = dict(params)
    if kpi.period is not None:  # this period's dates, unless the set names a range itself
        current = periods.period_of(dt.date.today(), kpi.period.grain)
        given.setdefault(kpi.period.start, current.start.isoformat())
        given.setdefault(kpi.period.end, current.end.isoformat())
    bound = bind_parameters(kpi, given)
    return series.series_params(kpi, bound.json)


def _series(
    kpi: KPI, key: str, params: dict[str, Any], points: list[SeriesPoint], total: int
) -> Series:
    official = key == series.official_key(kpi)
    return Series(
        kpi_id=kpi.id,
        key=key,
        params=params,
        official=official,
        label=series.label_of(kpi, params, official),
        points=points,
        runs=total,
    )


def _headline(
    kpi: KPI, by_series: dict[str, list[Execution]], last: list[Execution], trend: int
) -> Headline:
    official = series.official_key(kpi)
    runs = by_series.get(official or "", [])  # newest first
    points = [series.point_of(kpi, r) for r in series.one_per_period(kpi, runs)][-trend:]
    latest = points[-1] if points else None
    previous = points[-2] if len(points) > 1 else None
    change = pct = None
    label = ""
    if latest and previous and latest.value is not None and previous.value is not None:
        change = latest.value - previous.value
        pct = change / abs(previous.value) * 100 if previous.value else None
        label = f"vs {previous.period_label}" if previous.period_label else "vs previous run"
    explorations = sum(len(v) for k, v in by_series.items() if k != official)
    return Headline(
        kpi_id=kpi.id,
        official_params=series.official_params(kpi),
        latest=latest,
        rag=latest.rag if latest else None,
        change=change,
        change_pct=pct,
        change_label=label,
        trend=[p.value for p in points if p.value is not None],
        last_run=last[0] if last else None,
        exploration_runs=explorations,
    )


def _compare_to(value: CompareTo | str) -> CompareTo:
    try:
        return CompareTo(value)
    except ValueError:
        listed = ", ".join(c.value for c in CompareTo)
        raise ValidationError(f"compare_to must be one of {listed}, not {value!r}.") from None


def _check_comparable(run: Execution, kpi: KPI, compare_to: CompareTo) -> None:
    if run.status != RunStatus.SUCCESS:
        raise ValidationError(f"Run {run.id} did not succeed ({run.status}), so it has no value.")
    if compare_to == CompareTo.LAST_YEAR and (kpi.period is None or run.period_start is None):
        raise ValidationError(
            f"KPI '{kpi.name}' has no period, so its runs cannot be compared with the same "
            "period last year; compare with the previous run or the target."
        )


def _shifted(
    kpi: KPI, run: Execution, compare_to: CompareTo, to_date: bool
) -> tuple[dt.date, dt.date]:
    assert kpi.period is not None and run.period_start and run.period_end
    shifted = periods.comparison_range(
        run.period_start, run.period_end, kpi.period.grain, compare_to, to_date=to_date
    )
    assert shifted is not None  # only the target has no range, handled before
    return shifted


def _run_over(
    connection: sa.engine.Connection, run: Execution, first: dt.date, last: dt.date
) -> Execution | None:
    """The newest successful run of the same KPI version and series over these dates."""
    row = connection.execute(
        sa.select(executions)
        .where(
            executions.c.kpi_id == run.kpi_id,
            executions.c.kpi_version == run.kpi_version,
            executions.c.series_key == run.series_key,
            executions.c.period_start == first,
            executions.c.period_end == last,
            executions.c.status == RunStatus.SUCCESS,
        )
        .order_by(executions.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else run_records.to_execution(row)


def _previous_in_series(connection: sa.engine.Connection, run: Execution) -> Execution | None:
    row = connection.execute(
        sa.select(executions)
        .where(
            executions.c.kpi_id == run.kpi_id,
            executions.c.series_key == run.series_key,
            executions.c.status == RunStatus.SUCCESS,
            executions.c.id < run.id,
        )
        .order_by(executions.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else run_records.to_execution(row)


def _value(run: Execution | None) -> float | None:
    return None if run is None else run.value


def _comparison(
    run: Execution,
    compare_to: CompareTo,
    to_date: bool,
    base_value: float | None,
    base: Execution | None,
    label: str,
    base_params: dict[str, Any] | None,
) -> Comparison:
    change = pct = None
    if run.value is not None and base_value is not None:
        change = run.value - base_value
        pct = change / abs(base_value) * 100 if base_value != 0 else None
    return Comparison(
        run_id=run.id,
        compare_to=str(compare_to),
        to_date=to_date,
        value=run.value,
        base_value=base_value,
        base_run_id=None if base is None else base.id,
        base_label=label,
        base_params=None if base is not None else base_params,
        change=change,
        change_pct=pct,
    )


def _day(value: dt.date | str, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError(
            f"The backfill {what} {to_json_value(value)!r} is not a date (YYYY-MM-DD)."
        ) from None
