"""The History page's Trend tab: a KPI's series (official first, others picked), the
official points with their comparisons, and backfill for a period KPI."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from kpi_store import KPI, CompareTo, Comparison, KPIStore, Role, Series
from kpi_store.formats import format_value
from kpi_store.story_records import UnusualCheck

from .actions import act
from .identity import Viewer
from .links import run_url
from .look import rag_label
from .messages import friendly_errors, md, md_delta
from .series_view import default_backfill_range, series_chart

COMPARE_LABELS = {
    CompareTo.PREVIOUS_PERIOD: "Previous period",
    CompareTo.LAST_YEAR: "Same period last year",
    CompareTo.TARGET: "Target",
}
TABLE_POINTS = 12  # newest points of the table, each compared


def trend_tab(store: KPIStore, kpi: KPI, me: Viewer) -> None:
    lines: list[Series] = []
    with friendly_errors():
        lines = store.series_list(kpi.id, actor=me.actor)
    if not any(line.points for line in lines):
        st.info("No successful runs of this KPI yet.", icon=":material/show_chart:")
    else:
        chosen = _pick_series(kpi, lines)
        checks = _unusual_checks(store, chosen, me)
        latest = chosen[0].latest
        judged = checks.get(latest.run_id) if latest else None
        band = _band(judged)
        series_chart(kpi, chosen, {i: bool(c.unusual) for i, c in checks.items()}, band)
        _unusual_caption(kpi, judged)
        _points_table(store, kpi, chosen[0], me)
    if kpi.period is not None:
        _backfill_form(store, kpi, me)


def _pick_series(kpi: KPI, lines: list[Series]) -> list[Series]:
    labels = {
        line.key: f"{line.label} · {line.runs} run{'s' if line.runs != 1 else ''}" for line in lines
    }
    picked = st.multiselect(
        "Parameter sets",
        list(labels),
        default=[lines[0].key],
        format_func=lambda key: labels[key],
        key=f"hi_series_{kpi.id}",
        help="The official parameter set is the KPI's number; the others are explorations.",
    )
    if not lines[0].official:
        st.caption(
            "This KPI has no official parameter set (a parameter has no default): pin one "
            "in its definition to give it an official number."
        )
    return [line for line in lines if line.key in picked] or lines[:1]


def _unusual_checks(store: KPIStore, chosen: list[Series], me: Viewer) -> dict[int, UnusualCheck]:
    ids = [p.run_id for line in chosen for p in line.points]
    with friendly_errors():
        return store.unusual_flags(ids, actor=me.actor)
    return {}


def _band(check: UnusualCheck | None) -> tuple[float, float] | None:
    if check is None or check.low is None or check.high is None:
        return None
    return check.low, check.high


def _unusual_caption(kpi: KPI, check: UnusualCheck | None) -> None:
    """Whether the newest point of the first series is unusual, and against what."""
    if check is None:
        return
    if check.unusual is None:
        st.caption(f":material/query_stats: Unusual values: {md(check.reason)}")
        return
    low, high = format_value(check.low, kpi.unit), format_value(check.high, kpi.unit)
    runs = ", ".join(f"#{i}" for i in check.comparable_run_ids)
    if check.unusual:
        st.warning(
            f"The latest value is unusual: {check.side} the usual range {md(low)} – {md(high)} "
            f"(median ± 3 scaled MADs of {len(check.comparable_run_ids)} comparable runs: "
            f"{runs}).",
            icon=":material/priority_high:",
        )
    else:
        st.caption(
            f":material/query_stats: The latest value is within the usual range {md(low)} – "
            f"{md(high)} of {len(check.comparable_run_ids)} comparable runs ({runs})."
        )


def _compare_choice(kpi: KPI) -> tuple[CompareTo, bool]:
    options = list(COMPARE_LABELS) if kpi.period else [CompareTo.PREVIOUS_PERIOD, CompareTo.TARGET]
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    compare_to = c1.selectbox(
        "Compare with",
        options,
        format_func=lambda c: COMPARE_LABELS[c] if kpi.period else _plain_label(c),
        key=f"hi_compare_to_{kpi.id}",
    )
    to_date = c2.toggle(
        "To date",
        key=f"hi_to_date_{kpi.id}",
        disabled=kpi.period is None or compare_to == CompareTo.TARGET,
        help="Compare a period so far with the same days of the one it is compared with.",
    )
    return compare_to, bool(to_date)


def _plain_label(compare_to: CompareTo) -> str:
    return "Previous run" if compare_to == CompareTo.PREVIOUS_PERIOD else "Target"


def _points_table(store: KPIStore, kpi: KPI, line: Series, me: Viewer) -> None:
    st.markdown(f"**{md(line.label)}**: the newest {min(TABLE_POINTS, len(line.points))} points")
    compare_to, to_date = _compare_choice(kpi)
    newest = line.points[-TABLE_POINTS:][::-1]
    compared: dict[int, Comparison] = {}
    with friendly_errors():
        for point in newest:
            compared[point.run_id] = store.compare(
                point.run_id, compare_to, to_date=to_date, actor=me.actor
            )
    rows = []
    for point in newest:
        c = compared.get(point.run_id)
        rows.append(
            {
                "when": point.period_label or point.finished_at,
                "value": format_value(point.value, kpi.unit),
                "status": rag_label(point.rag) if point.rag else "No target",
                "compared with": (c.base_label if c else "")
                + (" (not run yet)" if c and c.missing else ""),
                "base": format_value(c.base_value, kpi.unit) if c else "",
                "change": format_value(c.change, kpi.unit) if c and c.change is not None else "",
                "change %": f"{c.change_pct:+.1f} %" if c and c.change_pct is not None else "",
                "open": run_url(point.run_id),
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"open": st.column_config.LinkColumn("Drill-down", display_text="Open")},
    )
    latest = compared.get(newest[0].run_id) if newest else None
    if latest is not None:
        _latest_comparison(store, kpi, latest, me)


def _latest_comparison(store: KPIStore, kpi: KPI, c: Comparison, me: Viewer) -> None:
    if c.change is not None:
        pct = f" ({c.change_pct:+.1f} %)" if c.change_pct is not None else " (no % change: base 0)"
        st.metric(
            f"Latest vs {c.base_label}",
            md(format_value(c.value, kpi.unit)),
            delta=md_delta(
                f"{'+' if c.change >= 0 else ''}{format_value(c.change, kpi.unit)}{pct}"
            ),
            delta_color="normal" if kpi.direction == "higher_is_better" else "inverse",
        )
    if c.missing and st.button(
        f"Run {c.base_label} to compare",
        icon=":material/play_arrow:",
        key=f"hi_run_base_{kpi.id}",
        disabled=not me.may(Role.RUNNER),
        help=me.refusal(Role.RUNNER, "run KPIs"),
    ):
        act(
            "run the comparison",
            lambda actor: store.run_comparison(c.run_id, c.compare_to, actor, to_date=c.to_date),
            spinner=f"Running {c.base_label}…",
            done=f"Ran {md(c.base_label)} to compare with.",
        )


def _backfill_form(store: KPIStore, kpi: KPI, me: Viewer) -> None:
    assert kpi.period is not None
    with st.expander("Backfill: one run per period", icon=":material/event_repeat:"):
        first, last = default_backfill_range(kpi)
        c1, c2, c3 = st.columns([2, 2, 2], vertical_alignment="bottom")
        start = c1.date_input("From", value=first, key=f"hi_bf_from_{kpi.id}")
        end = c2.date_input("To", value=last, key=f"hi_bf_to_{kpi.id}")
        rerun = c3.checkbox("Run again periods already run", key=f"hi_bf_rerun_{kpi.id}")
        st.caption(
            f"Queues one background run per {kpi.period.grain} from the first to the last "
            "period these dates touch, with the official parameters, as one batch."
        )
        if st.button(
            "Backfill",
            icon=":material/event_repeat:",
            key=f"hi_bf_go_{kpi.id}",
            disabled=not me.may(Role.RUNNER),
            help=me.refusal(Role.RUNNER, "run KPIs"),
        ):
            act(
                "backfill",
                lambda actor: store.backfill(
                    kpi.id, _as_date(start), _as_date(end), actor, rerun=rerun
                ),
                done=lambda r: (
                    f"Queued {len(r.queued)} of {r.periods} periods as one batch; "
                    f"skipped {len(r.skipped)} already run"
                    + (f"; {len(r.errors)} refused: {md(r.errors[0].message)}" if r.errors else ".")
                ),
            )


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    raise TypeError("a date input gave no date")
