"""The History page's "What changed?": the change between two runs of a sum or a count,
split by the values of a breakdown column, top contributors up and down."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kpi_store import KPI, Aggregation, Execution, KPIStore, RunStatus
from kpi_store.formats import format_value
from kpi_store.story_records import Contribution, Contributions

from .identity import Viewer
from .messages import friendly_errors, md

ADDITIVE = (Aggregation.SUM, Aggregation.COUNT)


def what_changed_panel(
    store: KPIStore, kpi: KPI, first: Execution, second: Execution, me: Viewer
) -> None:
    st.markdown("#### What changed?")
    if kpi.aggregation not in ADDITIVE:
        st.caption("Only a sum or a count splits into parts; this KPI's value is not one.")
        return
    if first.status != RunStatus.SUCCESS or second.status != RunStatus.SUCCESS:
        st.caption("Both runs must have succeeded to split the change between them.")
        return
    names = [c.name for c in first.columns if c.name in {c.name for c in second.columns}]
    if not names:
        st.caption("The two runs have no column in common to split the change by.")
        return
    preferred = kpi.breakdown_column if kpi.breakdown_column in names else names[0]
    column = st.selectbox(
        "Split the change by",
        names,
        index=names.index(preferred),
        key=f"hi_wc_column_{kpi.id}",
        help="The KPI's breakdown column, or any column both runs have.",
    )
    with friendly_errors():
        found = store.what_changed(first.id, second.id, column=column, actor=me.actor)
        _show(kpi, found)


def _show(kpi: KPI, found: Contributions) -> None:
    unit = kpi.unit
    change = format_value(found.total_change, unit)
    st.text(
        f"From run #{found.run_a} ({format_value(found.value_a, unit)}) to run #{found.run_b} "
        f"({format_value(found.value_b, unit)}): {change}, over {found.all_count} values of "
        f"{found.column}."
    )
    up, down = st.columns(2)
    with up:
        st.markdown(f"**Up** ({found.up_count})")
        _table(found.up, unit)
    with down:
        st.markdown(f"**Down** ({found.down_count})")
        _table(found.down, unit)
    rest = format_value(found.rest_change, unit)
    check = "adds up exactly" if found.exact and found.balanced else "adds up"
    if not found.balanced:
        check = "does not add up (rounding in the rows)"
    st.caption(
        f"The parts {check} to the total change; the values not listed change by {md(rest)}. "
        f"{md(found.note)}"
    )


def _table(parts: list[Contribution], unit: str) -> None:
    if not parts:
        st.caption("None.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "value": part.label,
                    "in A": format_value(part.a, unit),
                    "in B": format_value(part.b, unit),
                    "change": format_value(part.change, unit),
                    "share": f"{part.share:.1%}" if part.share is not None else "",
                }
                for part in parts
            ]
        ),
        hide_index=True,
        width="stretch",
    )
