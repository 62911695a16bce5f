"""The drill-down grid: AgGrid showing one page, whose own column sort and filters are
read back and handed to the store, which sorts and filters every stored row.

streamlit-aggrid has no server-side row model, so the grid holds one page at a time. Its
sort and filter state (``gridState``) comes back as the component's value; ``grid_view``
turns it into the store's ``sort`` and ``filters``. The grid keeps one key for a run, so
a page flip updates its rows in place instead of mounting it again. Its own sorting is
made a no-op (the rows arrive in the store's order, empty values last) and its filters
offer only what the store does, with the same meaning, so re-applying them to a page the
store filtered changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from kpi_store import Execution
from kpi_store.result_views import NUMERIC_TYPES, unique_names

from .widgets import grid_frame

KEEP_SERVER_ORDER = "function(a, b) { return 0; }"
# ISO dates ("2024-03-05", or with a time) against the date picked in the filter.
ISO_DATE_COMPARATOR = """
function(filterDate, cellValue) {
  if (cellValue == null || cellValue === '') { return -1; }
  const day = String(cellValue).slice(0, 10);
  const picked = filterDate.getFullYear() + '-' +
    String(filterDate.getMonth() + 1).padStart(2, '0') + '-' +
    String(filterDate.getDate()).padStart(2, '0');
  return day < picked ? -1 : (day > picked ? 1 : 0);
}
"""
TEXT_OPS = {
    "contains": "contains",
    "equals": "equals",
    "startsWith": "starts_with",
    "blank": "is_empty",
    "notBlank": "not_empty",
}
RANGE_OPS = ("equals", "inRange", "greaterThanOrEqual", "lessThanOrEqual", "blank", "notBlank")
DATE_TYPES = frozenset({"date", "datetime"})


@dataclass(frozen=True)
class GridView:
    """The store's view of a run as the grid asks for it."""

    sort: tuple[tuple[str, str], ...] = ()
    filters: tuple[tuple[tuple[str, Any], ...], ...] = field(default=())

    @property
    def active(self) -> bool:
        return bool(self.sort or self.filters)

    def filter_dicts(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.filters]

    def sort_list(self) -> list[tuple[str, str]]:
        return list(self.sort)

    def describe(self) -> str:
        """ "filtered, sorted", "filtered" or "sorted" (or "" for every row as run)."""
        return ", ".join(w for w, on in (("filtered", self.filters), ("sorted", self.sort)) if on)


def column_types(run: Execution) -> dict[str, str]:
    """Each column's type by the name the grid shows it under (``a``, ``a_2``…)."""
    names = unique_names([c.name for c in run.columns])
    return {name: column.type for name, column in zip(names, run.columns, strict=True)}


def grid_view(key: str, column_types: dict[str, str]) -> GridView:
    """The sort and filters the grid ``key`` reported last (its component value)."""
    response = st.session_state.get(key)
    state = response.get("gridState") if isinstance(response, dict) else None
    if not isinstance(state, dict):
        return GridView()
    sort_model = (state.get("sort") or {}).get("sortModel") or []
    sort = tuple(
        (str(item["colId"]), "desc" if item.get("sort") == "desc" else "asc")
        for item in sort_model
        if isinstance(item, dict) and item.get("colId") in column_types
    )
    filter_model = (state.get("filter") or {}).get("filterModel") or {}
    filters = []
    for column, model in filter_model.items():
        if column in column_types and isinstance(model, dict):
            converted = _store_filter(column, model, column_types[column])
            if converted is not None:
                filters.append(tuple(sorted(converted.items())))
    return GridView(sort, tuple(filters))


def _store_filter(column: str, model: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """One AG Grid column filter as the store's filter (None when it is incomplete)."""
    op = model.get("type")
    if op in ("blank", "notBlank"):
        return {"column": column, "op": TEXT_OPS[op]}
    if model.get("filterType") == "text":
        value = model.get("filter")
        if op not in TEXT_OPS or value in (None, ""):
            return None
        return {"column": column, "op": TEXT_OPS[op], "value": str(value)}
    if model.get("filterType") == "date":
        low, high = _day(model.get("dateFrom")), _day(model.get("dateTo"))
    else:
        low, high = model.get("filter"), model.get("filterTo")
    bounds = {
        "equals": (low, low),
        "inRange": (low, high),
        "greaterThanOrEqual": (low, None),
        "lessThanOrEqual": (None, low),
    }.get(str(op))
    if bounds is None or (bounds[0] is None and bounds[1] is None):
        return None
    return {"column": column, "op": "between", "min": bounds[0], "max": bounds[1]}


def _day(value: Any) -> str | None:
    return str(value)[:10] if value else None


def result_grid(frame: pd.DataFrame, key: str, column_types: dict[str, str]) -> None:
    """One page of rows in an AgGrid whose sort and filters the store applies to every
    row (read them back with ``grid_view(key, ...)`` before drawing the next page)."""
    from st_aggrid import AgGrid, DataReturnMode, GridOptionsBuilder, JsCode

    shown = grid_frame(frame)
    builder = GridOptionsBuilder.from_dataframe(shown)
    builder.configure_default_column(
        sortable=True,
        resizable=True,
        minWidth=90,
        floatingFilter=False,
        comparator=JsCode(KEEP_SERVER_ORDER),
        filter="agTextColumnFilter",
        filterParams={
            "filterOptions": list(TEXT_OPS),
            "maxNumConditions": 1,
            "caseSensitive": False,
            "buttons": ["reset"],
        },
    )
    for column in shown.columns:
        kind = column_types.get(column, "str")
        if kind in NUMERIC_TYPES:
            builder.configure_column(
                column,
                type=["numericColumn"],
                filter="agNumberColumnFilter",
                filterParams=_range_params(),
            )
        elif kind in DATE_TYPES:
            params = {**_range_params(), "comparator": JsCode(ISO_DATE_COMPARATOR)}
            builder.configure_column(column, filter="agDateColumnFilter", filterParams=params)
    strategy = "fitGridWidth" if len(shown.columns) <= 8 else "fitCellContents"
    builder.configure_grid_options(
        enableCellTextSelection=True,
        autoSizeStrategy={"type": strategy},
        suppressFieldDotNotation=True,  # a column named "a.b" is that column, not a path
        suppressMultiSort=False,
    )
    AgGrid(
        shown,
        gridOptions=builder.build(),
        height=min(560, 48 + 34 * max(len(shown), 3)),
        theme="streamlit",
        key=key,
        update_on=["sortChanged", "filterChanged"],
        data_return_mode=DataReturnMode.MINIMAL,
        allow_unsafe_jscode=True,  # our own comparators above, never user input
        show_toolbar=False,
        show_download_button=False,
        show_search=False,
    )


def _range_params() -> dict[str, Any]:
    return {
        "filterOptions": list(RANGE_OPS),
        "maxNumConditions": 1,
        "inRangeInclusive": True,
        "includeBlanksInEquals": False,
        "buttons": ["reset"],
    }
