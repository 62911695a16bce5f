"""Every link between pages: page paths, ``?kpi=`` / ``?execution=`` deep links, and the
widgets that follow them. One builder, :func:`page_url` / :func:`link`, makes them all."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import streamlit as st


class Page(StrEnum):
    """The app's pages, by their file under ``pages/`` (also their URL path)."""

    OVERVIEW = "overview"
    KPIS = "kpis"
    RUN = "run"
    DRILLDOWN = "drilldown"
    HISTORY = "history"
    AUDIT = "audit"
    DATA_SOURCES = "data_sources"
    PEOPLE = "people"
    STORAGE = "storage"
    ALERTS = "alerts"
    INBOX = "inbox"

    @property
    def path(self) -> str:
        return f"pages/{self.value}.py"


PAGES: dict[str, str] = {page.value: page.path for page in Page}
KPI_PARAM, RUN_PARAM = "kpi", "execution"


def _target(kpi: int | None, execution: int | None) -> dict[str, str]:
    params = {}
    if kpi is not None:
        params[KPI_PARAM] = str(kpi)
    if execution is not None:
        params[RUN_PARAM] = str(execution)
    return params


def page_url(page: Page, *, kpi: int | None = None, execution: int | None = None) -> str:
    """A relative URL, e.g. for a ``LinkColumn``: ``drilldown?execution=7``."""
    query = "&".join(f"{k}={v}" for k, v in _target(kpi, execution).items())
    return f"{page.value}?{query}" if query else page.value


def run_url(execution_id: int) -> str:
    return page_url(Page.DRILLDOWN, execution=execution_id)


def link(
    page: Page,
    label: str,
    icon: str | None = None,
    *,
    kpi: int | None = None,
    execution: int | None = None,
) -> None:
    """A link to ``page`` (with ``?kpi=`` or ``?execution=``); ``label`` is Markdown."""
    st.page_link(page.path, label=label, icon=icon, query_params=_target(kpi, execution))


def kpi_link(kpi_id: int, label: str, page: Page = Page.HISTORY, icon: str | None = None) -> None:
    link(page, label, icon, kpi=kpi_id)


def run_link(execution_id: int, label: str | None = None) -> None:
    link(
        Page.DRILLDOWN,
        label or f"Open run #{execution_id} in the drill-down",
        ":material/table_view:",
        execution=execution_id,
    )


def switch_to(page: Page, *, kpi: int | None = None, execution: int | None = None) -> None:
    st.switch_page(page.path, query_params=_target(kpi, execution))


# -- widgets that follow the URL -------------------------------------------------------------


def query_int(name: str) -> int | None:
    raw = st.query_params.get(name)
    try:
        value = int(str(raw)) if raw not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or 1 <= value < 2**63 else None


def follow_query_param(key: str, name: str, options: Sequence[Any], as_list: bool = False) -> None:
    """Let the widget ``key`` follow ``?name=`` whenever the URL changes.

    Call before the widget is created. A shared link or a ``page_link`` with
    ``query_params`` sets the widget; choices made in the widget are written back with
    :func:`set_query_param`. ``None`` in ``options`` is chosen when the URL has no value.
    """
    raw = st.query_params.get(name)
    seen_key = f"_url_seen_{name}"
    unchanged = seen_key in st.session_state and raw == st.session_state[seen_key]
    if unchanged and key in st.session_state:
        return
    st.session_state[seen_key] = raw
    value = query_int(name)
    if value in options:
        st.session_state[key] = [value] if as_list and value is not None else value


def set_query_param(name: str, value: Any) -> None:
    """Write the current choice into the URL, so it can be shared."""
    text = None if value is None else str(value)
    if text is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != text:
        st.query_params[name] = text
    st.session_state[f"_url_seen_{name}"] = text


def open_on_rerun(name: str, value: Any) -> None:
    """Point ``?name=`` at ``value`` so the widget following it switches on the next run."""
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = str(value)
    st.session_state.pop(f"_url_seen_{name}", None)
