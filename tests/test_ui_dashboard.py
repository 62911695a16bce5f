"""The dashboard shell: navigation, identity, deep links, empty states, no tracebacks."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import DASHBOARD, TIMEOUT_S, all_text, no_exception, open_app, texts

import kpi_ui

PAGES = ["overview", "kpis", "run", "drilldown", "history", "audit", "data_sources"]
TITLES = {
    "overview": "Overview",
    "kpis": "KPIs",
    "run": "Run KPIs",
    "drilldown": "Drill-down",
    "history": "History",
    "audit": "Audit log",
    "data_sources": "Data sources",
}


def test_home_is_the_overview_with_navigation_and_identity(app_url):
    at = open_app(actor=None)
    assert texts(at.title) == ["Overview"]
    assert at.sidebar.text_input(key="actor").value == ""
    assert "Enter your name" in all_text(at)
    assert "Background worker off" in all_text(at)


def test_identity_is_remembered_across_pages(app_url):
    at = open_app(actor=None)
    at.sidebar.text_input(key="actor").input("Dana").run()
    at.switch_page("pages/audit.py").run()
    no_exception(at)
    assert at.sidebar.text_input(key="actor").value == "Dana"
    assert "Enter your name" not in "\n".join(texts(at.sidebar.caption))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_a_friendly_empty_state(app_url, page):
    at = open_app(page)
    assert texts(at.title) == [TITLES[page]]
    assert not at.error, texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_demo_data(demo_store, page):
    kpi = demo_store.list_kpis()[0]
    demo_store.execute(kpi.id, actor="setup")
    at = open_app(page)
    assert texts(at.title) == [TITLES[page]]
    assert not at.error, texts(at.error)


def test_home_link_with_execution_opens_the_drilldown(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    run = demo_store.execute(kpi.id, actor="setup")
    at = open_app(query={"execution": run.id})
    assert texts(at.title) == ["Drill-down"]
    assert at.selectbox(key="dd_run").value == run.id
    assert "Orders · version 1" in texts(at.header)


def test_home_link_with_kpi_opens_that_kpi(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Revenue")
    at = open_app(query={"kpi": kpi.id})
    assert texts(at.title) == ["KPIs"]
    assert at.selectbox(key="kp_open").value == kpi.id
    assert "Revenue" in texts(at.header)


def test_a_missing_store_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KPI_STORE_URL", f"sqlite:///{blocker}/sub/app_store.db")
    monkeypatch.setenv("KPI_EMBEDDED_WORKER", "0")
    kpi_ui._store_for.clear()
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert any("KPI store cannot be opened" in e for e in texts(at.error))


def test_format_helpers():
    assert kpi_ui.format_value(5506100.5, "$") == "$5,506,100.50"
    assert kpi_ui.format_value(-12, "$") == "-$12"
    assert kpi_ui.format_value(8.0, "%") == "8%"
    assert kpi_ui.format_value(19117, "orders") == "19,117 orders"
    assert kpi_ui.format_value(None, "$") == "—"
    assert kpi_ui.format_duration(535) == "535 ms"
    assert kpi_ui.format_duration(61_000) == "1 min 1 s"


def test_rag_status_follows_direction_and_tolerance(demo_store):
    kpis = {k.name: k for k in demo_store.list_kpis()}
    revenue, returns = kpis["Revenue"], kpis["Return Rate"]  # targets 5.25M / 6.5 %
    assert revenue.rag_status(5_300_000) == "green"
    assert revenue.rag_status(5_000_000) == "amber"
    assert revenue.rag_status(4_000_000) == "red"
    assert returns.rag_status(6.0) == "green"
    assert returns.rag_status(7.0) == "amber"
    assert returns.rag_status(8.0) == "red"
    assert returns.rag_status(None) == "no_data"  # no rows or NULL: no data, never red
