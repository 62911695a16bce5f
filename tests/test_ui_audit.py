"""The Audit page: chain check, filters, timeline, entry details, CSV export."""

from __future__ import annotations

import datetime as dt
import sqlite3

from ui_helpers import no_exception, open_app, texts


def test_chain_check_and_entries(demo_store):
    at = open_app("audit")
    count = len(demo_store.audit_log(limit=None))
    assert f"Audit chain intact: {count:,} entries checked." in texts(at.success)
    assert f"{count:,} entries" in texts(at.header)
    table = at.dataframe[0].value
    assert len(table) == count
    assert set(table["action"]) == {"CREATE", "DATA_SOURCE_ADD"}
    assert len(at.get("vega_lite_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["Export these entries as CSV"]


def test_filters_by_action_actor_and_kpi(demo_store):
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    demo_store.update_kpi(orders.id, {"unit": "sales"}, "bob", expected_version=1)
    at = open_app("audit")
    at.selectbox(key="au_action").set_value("UPDATE").run()
    table = at.dataframe[0].value
    assert list(table["actor"]) == ["bob"] and list(table["kpi"]) == ["Orders"]
    at.selectbox(key="au_action").set_value("Any").run()
    at.text_input(key="au_actor").input("bob").run()
    assert len(at.dataframe[0].value) == 1
    at.text_input(key="au_actor").input("").run()
    at.selectbox(key="au_kpi").set_value(orders.id).run()
    assert set(at.dataframe[0].value["action"]) == {"CREATE", "UPDATE"}
    assert at.query_params["kpi"] == str(orders.id)


def test_date_range_filter(demo_store):
    at = open_app("audit")
    yesterday = dt.date.today() - dt.timedelta(days=1)
    at.date_input(key="au_dates").set_value((yesterday - dt.timedelta(days=5), yesterday)).run()
    assert "No audit entries match these filters." in texts(at.info)


def test_entry_details_show_before_and_after(demo_store):
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    demo_store.update_kpi(orders.id, {"unit": "sales"}, "bob", expected_version=1, note="why")
    at = open_app("audit")
    newest = demo_store.audit_log(limit=1)[0]
    assert at.selectbox(key="au_entry").value == newest.id
    changes = at.dataframe[1].value
    assert changes.to_dict("records") == [{"field": "unit", "before": "orders", "after": "sales"}]


def test_a_tampered_log_is_reported(demo_store, tmp_path):
    connection = sqlite3.connect(tmp_path / "store.db")
    connection.execute("UPDATE kpi_audit_log SET actor = 'mallory' WHERE id = 3")
    connection.commit()
    connection.close()
    at = open_app("audit")
    no_exception(at)
    assert any("Audit chain broken at entry 3" in e for e in texts(at.error))
