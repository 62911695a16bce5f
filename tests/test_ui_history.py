"""The History page: runs over time, versions with diff and restore, compare two runs."""

from __future__ import annotations

import pytest
from ui_helpers import RECORDED, metrics, no_exception, open_app, texts


@pytest.fixture()
def orders(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    demo_store.execute(kpi.id, {"region": "North"}, actor="setup")
    demo_store.update_kpi(
        kpi.id,
        {"target": 20_000.0, "sql": kpi.sql + "\n  AND 1 = 1"},
        "editor",
        expected_version=1,
        note="Stretch goal",
    )
    demo_store.execute(kpi.id, actor="setup")
    return demo_store.get_kpi(kpi.id)


def frames_with(at, column: str) -> list:
    """The tables on the page that have ``column``."""
    return [d.value for d in at.dataframe if column in d.value]


def test_runs_tab_lists_runs_with_links_to_the_drilldown(demo_store, orders):
    at = open_app("history", query={"kpi": orders.id})
    assert at.selectbox(key="hi_kpi").value == orders.id
    runs = demo_store.executions(kpi_id=orders.id)
    [table] = frames_with(at, "run")  # the Runs tab's table
    assert list(table["run"]) == [r.id for r in runs]
    assert list(table["open"]) == [f"drilldown?execution={r.id}" for r in runs]
    assert list(table["version"]) == [2, 1]
    assert len(at.get("vega_lite_chart")) == 1
    links = [p.label for p in at.get("page_link")]
    assert f"Open run #{runs[0].id} in the drill-down" in links


def test_versions_tab_shows_timeline_and_diff(demo_store, orders):
    at = open_app("history", query={"kpi": orders.id})
    timeline = [m for m in texts(at.markdown) if " by **" in m]
    assert timeline[0].startswith("Changed by **editor**") and "_Stretch goal_" in timeline[0]
    assert timeline[1].startswith("Created by **demo**")
    [diff] = frames_with(at, "Field")
    assert set(diff["Field"]) == {"Target", "SQL"}
    assert diff.set_index("Field").loc["Target", "Version 2"] == "20,000 orders"
    assert diff.set_index("Field").loc["Target", "Version 1"] == "18,500 orders"
    assert any("+  AND 1 = 1" in c for c in texts(at.code))


def test_restore_asks_then_saves_a_new_version(demo_store, orders):
    at = open_app("history", query={"kpi": orders.id})
    at.button(key="hi_restore_btn").click().run()
    assert any("Restore version 1?" in w for w in texts(at.warning))
    assert demo_store.get_kpi(orders.id).version == 2
    at.button(key="hi_restore_yes").click().run()
    no_exception(at)
    restored = demo_store.get_kpi(orders.id)
    assert (restored.version, restored.target) == (3, 18_500.0)
    assert "Version 1 restored as version 3." in texts(at.success)
    assert demo_store.kpi_versions(orders.id)[0].changed_by == RECORDED


def test_compare_two_runs_side_by_side(demo_store, orders):
    at = open_app("history", query={"kpi": orders.id})
    runs = demo_store.executions(kpi_id=orders.id)
    [table] = [t.set_index("") for t in frames_with(at, "Differs")]
    newer, older = runs
    assert table.loc["KPI version", f"Run #{older.id}"] == "1"
    assert table.loc["KPI version", f"Run #{newer.id}"] == "2"
    assert table.loc["Parameter region", f"Run #{older.id}"] == "North"
    assert table.loc["Parameter region", "Differs"] == "●"
    assert table.loc["Requested by", "Differs"] == ""
    assert f"Run #{newer.id} vs run #{older.id}" in metrics(at)
    assert any("different series" in w for w in texts(at.warning))  # North vs All


def test_a_kpi_without_runs(demo_store):
    kpi = demo_store.list_kpis()[0]
    at = open_app("history", query={"kpi": kpi.id})
    assert "This KPI has not been run yet." in texts(at.info)
    assert any("Only one version so far" in c for c in texts(at.caption))
    assert any("at least two runs" in c for c in texts(at.caption))
