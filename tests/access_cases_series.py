"""Access cases for the official number: series, headlines, comparisons and backfill."""

from __future__ import annotations

from access_world import BOSS, Case, World


def _run_with_period(w: World) -> int:
    """A run of a period KPI (``start`` .. ``end``, monthly) on the world's source."""
    if "period_kpi" not in w.extra:
        spec = {
            "name": "Sales by period",
            "data_source": "shop",
            "sql": "SELECT SUM(amount) AS revenue FROM sales WHERE sold_on BETWEEN :start AND :end",
            "parameters": [
                {"name": "start", "type": "date", "default": "2024-02-01"},
                {"name": "end", "type": "date", "default": "2024-02-29"},
            ],
            "value_column": "revenue",
            "period": {"start": "start", "end": "end", "grain": "month"},
        }
        w.extra["period_kpi"] = w.store.create_kpi(spec, BOSS).id
    return w.store.execute(w.extra["period_kpi"], actor=BOSS).id


CASES: dict[str, Case] = {
    "series": Case(lambda w, a, _: w.store.series(w.kpi, actor=a)),
    "series_list": Case(lambda w, a, _: w.store.series_list(w.kpi, actor=a)),
    "headlines": Case(
        lambda w, a, _: w.store.headlines([w.store.get_kpi(w.kpi, actor=BOSS)], actor=a)
    ),
    "compare": Case(lambda w, a, _: w.store.compare(w.run, "previous_period", actor=a)),
    "run_comparison": Case(
        lambda w, a, run: w.store.run_comparison(run, "previous_period", a), _run_with_period
    ),
    "backfill": Case(
        lambda w, a, _: w.store.backfill(_period_kpi(w), "2024-01-01", "2024-01-31", a, rerun=True)
    ),
}


def _period_kpi(w: World) -> int:
    _run_with_period(w)
    return int(w.extra["period_kpi"])
