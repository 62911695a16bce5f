"""The KPI form's "official number" section: the pinned parameter set, targets per
parameter value, the period (two date parameters and a grain) and the breakdown column.

It works on the parameters as they are being edited (plain dicts), so a parameter added a
moment ago can be pinned, targeted or made a period date before the first save.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from kpi_store import KPI, Aggregation, Grain, ParamType

from .messages import field_error, md

DEFAULT = "(default)"
NO_PERIOD = "(no period)"
GRAIN_LABELS = {
    Grain.DAY: "Day",
    Grain.WEEK: "Week (Monday to Sunday)",
    Grain.MONTH: "Month",
    Grain.QUARTER: "Quarter",
    Grain.YEAR: "Year",
}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def official_and_period_section(
    prefix: str,
    kpi: KPI | None,
    parameters: list[dict[str, Any]],
    aggregation: str,
    errors: dict[str, str],
) -> dict[str, Any]:
    """The fields of a KPI's official number; returns them as a partial spec."""
    named = [p for p in parameters if p.get("name")]
    with st.expander("Official number, targets per value and period", icon=":material/flag:"):
        st.caption(
            "The official number is the KPI's runs with its official parameters: cards, "
            "status and trend use only those. Runs with other parameters are explorations."
        )
        spec: dict[str, Any] = {"official_params": _official_params(prefix, kpi, named)}
        field_error(errors, "official_params")
        spec["targets"] = _targets(prefix, kpi, named)
        field_error(errors, "targets")
        spec["period"] = _period(prefix, kpi, named)
        field_error(errors, "period")
        spec["breakdown_column"] = _breakdown(prefix, kpi, aggregation)
        field_error(errors, "breakdown_column")
    return spec


def _official_params(prefix: str, kpi: KPI | None, named: list[dict[str, Any]]) -> dict[str, Any]:
    st.markdown("**Official parameters** (leave a value at its default to follow it)")
    pinned = dict(kpi.official_params or {}) if kpi else {}
    chosen: dict[str, Any] = {}
    if not named:
        st.caption("This KPI has no parameters: every run is official.")
        return chosen
    columns = st.columns(min(3, len(named)))
    for index, param in enumerate(named):
        name = param["name"]
        label = md(param.get("label") or name)  # a widget label is Markdown: keep it inert
        current = _text(pinned.get(name))
        with columns[index % len(columns)]:
            if param.get("choices"):
                options = [DEFAULT, *[_text(c) for c in param["choices"]]]
                picked = st.selectbox(
                    label,
                    options,
                    index=options.index(current) if current in options else 0,
                    key=f"{prefix}_official_{name}",
                )
                value = "" if picked == DEFAULT else picked
            else:
                value = st.text_input(
                    label,
                    value=current,
                    key=f"{prefix}_official_{name}",
                    placeholder=f"default: {_text(param.get('default')) or 'none'}",
                )
        if value.strip():
            chosen[name] = value.strip()
    return chosen


def _targets(prefix: str, kpi: KPI | None, named: list[dict[str, Any]]) -> list[dict[str, Any]]:
    st.markdown("**Targets per parameter value** (the KPI's target applies to the rest)")
    names = [p["name"] for p in named]
    rows = [
        {"Parameter": t.parameter, "Value": _text(t.value), "Target": t.target}
        for t in (kpi.targets if kpi else [])
    ]
    frame = pd.DataFrame(rows, columns=["Parameter", "Value", "Target"])
    edited = st.data_editor(
        frame,
        num_rows="dynamic",
        hide_index=True,
        key=f"{prefix}_targets",
        column_config={
            "Parameter": st.column_config.SelectboxColumn(options=names, required=True),
            "Value": st.column_config.TextColumn(required=True),
            "Target": st.column_config.NumberColumn(required=True),
        },
        disabled=not names,
    )
    return [
        {"parameter": row["Parameter"], "value": row["Value"], "target": row["Target"]}
        for row in edited.to_dict("records")
        if row.get("Parameter") and _text(row.get("Value")).strip() and pd.notna(row.get("Target"))
    ]


def _period(prefix: str, kpi: KPI | None, named: list[dict[str, Any]]) -> dict[str, Any] | None:
    st.markdown("**Period** (two date parameters: the series gets one point per period)")
    dates = [p["name"] for p in named if p.get("type") == ParamType.DATE]
    if len(dates) < 2:
        st.caption("A period needs two date parameters (from and to, both inclusive).")
        return None
    current = kpi.period if kpi else None
    c1, c2, c3 = st.columns(3)
    starts = [NO_PERIOD, *dates]
    start = c1.selectbox(
        "Starts at",
        starts,
        index=starts.index(current.start) if current and current.start in starts else 0,
        key=f"{prefix}_period_start",
    )
    end = c2.selectbox(
        "Ends at",
        dates,
        index=dates.index(current.end) if current and current.end in dates else len(dates) - 1,
        key=f"{prefix}_period_end",
        disabled=start == NO_PERIOD,
    )
    grains = list(Grain)
    grain = c3.selectbox(
        "Grain",
        grains,
        index=grains.index(current.grain) if current else grains.index(Grain.MONTH),
        format_func=lambda g: GRAIN_LABELS[g],
        key=f"{prefix}_period_grain",
        disabled=start == NO_PERIOD,
    )
    if start == NO_PERIOD:
        return None
    return {"start": start, "end": end, "grain": grain}


def _breakdown(prefix: str, kpi: KPI | None, aggregation: str) -> str | None:
    additive = aggregation in (Aggregation.SUM, Aggregation.COUNT)
    value = st.text_input(
        "Breakdown column (for “What changed?”)",
        value=(kpi.breakdown_column or "") if kpi else "",
        key=f"{prefix}_breakdown",
        disabled=not additive,
        help="A result column such as region or category: the change between two runs is "
        "split by its values. Only for sums and counts."
        if additive
        else "Only sums and counts can be split by a column.",
    )
    return value.strip() or None if additive else None
