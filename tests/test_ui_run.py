"""The Run page: typed parameter widgets, run now, background runs, monitor, batches."""

from __future__ import annotations

import datetime as dt

from ui_helpers import (
    RECORDED,
    clean_kpi_spec,
    metrics,
    no_exception,
    open_app,
    sqlite_url,
    texts,
)


def kpi_named(store, name):
    return next(k for k in store.list_kpis(include_archived=True) if k.name == name)


def test_no_kpis_is_an_empty_state(app_store):
    at = open_app("run")
    assert "There are no active KPIs to run yet." in texts(at.info)


def test_parameters_get_widgets_of_their_types(demo_store):
    detail = kpi_named(demo_store, "Order Line Detail")
    at = open_app("run", query={"kpi": detail.id})
    assert at.multiselect(key="rn_kpis").value == [detail.id]
    assert at.date_input(key="rn_param_start_date_date").value == dt.date(2025, 1, 1)
    assert at.selectbox(key="rn_param_region_str").options == [
        "All",
        "North",
        "South",
        "East",
        "West",
        "Central",
    ]
    # Numbers are typed as text: a value out of a number widget's range is not lost.
    assert at.text_input(key="rn_param_min_quantity_int").value == "1"
    assert at.text_input(key="rn_param_min_amount_float").value == "0"
    assert at.toggle(key="rn_param_completed_only_bool").value is False


def test_run_now_shows_the_result_and_a_drilldown_link(demo_store):
    orders = kpi_named(demo_store, "Orders")
    at = open_app("run", query={"kpi": orders.id})
    at.selectbox(key="rn_param_region_str").set_value("North")
    at.button(key="rn_now").click().run()
    no_exception(at)
    [run] = demo_store.executions(kpi_id=orders.id)
    assert run.status == "success" and run.params["region"] == "North"
    assert run.requested_by == RECORDED
    values = metrics(at)
    assert values["Value"] == f"{run.value:,.0f} orders"
    assert values["Rows"] == "1"
    links = [(p.label, p.proto.page) for p in at.get("page_link")]
    assert any(label == f"Open run #{run.id} in the drill-down" for label, _ in links)


def test_bad_parameter_value_is_a_message(app_store, sales_db):
    # A required parameter (no default) left empty: the store refuses the run with a
    # message, shown above and next to the field; nothing runs, no traceback.
    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    spec = clean_kpi_spec(parameters=[{"name": "since", "type": "date"}])
    kpi = app_store.create_kpi(spec, "setup")
    at = open_app("run", query={"kpi": kpi.id})
    assert at.date_input(key="rn_param_since_date").value is None
    at.button(key="rn_now").click().run()
    no_exception(at)
    assert any("a value for 'since' is required" in e for e in texts(at.error))
    assert any(":red[" in m and "is required" in m for m in texts(at.markdown))
    assert app_store.executions() == []
    # Given a value, the same KPI runs and the message is gone.
    at.date_input(key="rn_param_since_date").set_value(dt.date(2025, 1, 3))
    at.button(key="rn_now").click().run()
    no_exception(at)
    [run] = app_store.executions(kpi_id=kpi.id)
    assert run.status == "success" and run.params == {"since": "2025-01-03"}
    assert not any("is required" in e for e in texts(at.error))


def test_an_empty_optional_parameter_takes_its_default(demo_store):
    orders = kpi_named(demo_store, "Orders")
    at = open_app("run", query={"kpi": orders.id})
    at.date_input(key="rn_param_start_date_date").set_value(None)
    at.date_input(key="rn_param_end_date_date").set_value(dt.date(2025, 3, 1))
    at.button(key="rn_now").click().run()
    no_exception(at)
    # The store fills the missing start date with its default; nothing fails.
    [run] = demo_store.executions(kpi_id=orders.id)
    assert run.status == "success"
    assert run.params["start_date"] == "2025-01-01" and run.params["end_date"] == "2025-03-01"


def test_failed_run_shows_its_error(app_store, sales_db):
    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    kpi = app_store.create_kpi(clean_kpi_spec(), "setup")
    # The table disappears after the KPI was saved: the run fails, the page explains.
    import sqlite3

    connection = sqlite3.connect(sales_db)
    connection.execute("DROP TABLE sales")
    connection.commit()
    connection.close()
    at = open_app("run", query={"kpi": kpi.id})
    at.button(key="rn_now").click().run()
    no_exception(at)
    assert any("sales" in e for e in texts(at.error))


def test_background_run_is_queued_and_can_be_cancelled(demo_store):
    orders = kpi_named(demo_store, "Orders")
    at = open_app("run", query={"kpi": orders.id})
    at.button(key="rn_bg").click().run()
    no_exception(at)
    [run] = demo_store.executions(kpi_id=orders.id)
    assert run.status == "pending" and run.mode == "background"
    assert any(f"Queued run #{run.id}" in i for i in texts(at.info))
    assert "Job monitor" in texts(at.header)
    assert any("No background worker" in c for c in texts(at.caption))
    at.button(key=f"rn_cancel_{run.id}").click().run()
    no_exception(at)
    assert demo_store.execution(run.id).status == "cancelled"
    assert f"rn_cancel_{run.id}" not in [b.key for b in at.button]


def test_run_several_now_shows_each_outcome(demo_store):
    ids = [kpi_named(demo_store, n).id for n in ("Orders", "Revenue", "Gross Margin")]
    at = open_app("run")
    at.multiselect(key="rn_kpis").set_value(ids).run()
    # Shared parameters appear once.
    assert at.selectbox(key="rn_param_region_str").value == "All"
    at.selectbox(key="rn_param_region_str").set_value("East")
    at.button(key="rn_now").click().run()
    no_exception(at)
    runs = demo_store.executions(limit=None)
    assert len(runs) == 3 and {r.status for r in runs} == {"success"}
    assert {r.params["region"] for r in runs} == {"East"}
    assert any(
        "3 of 3 finished · 3 succeeded · 0 failed" in p.proto.text for p in at.get("progress")
    )
    table = at.dataframe[0].value
    assert set(table["KPI"]) == {"Orders", "Revenue", "Gross Margin"}


def test_rerun_the_failed_ones_of_a_batch(app_store, sales_db):
    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    good = app_store.create_kpi(clean_kpi_spec(), "setup")
    bad = app_store.create_kpi(
        clean_kpi_spec(
            name="Broken",
            sql="SELECT amount FROM sales WHERE day >= :since AND amount / 0 IS NULL "
            "AND abs(-9223372036854775808) > 0",
        ),
        "setup",
    )
    at = open_app("run")
    at.multiselect(key="rn_kpis").set_value([good.id, bad.id]).run()
    at.button(key="rn_now").click().run()
    no_exception(at)
    assert demo_status(app_store, bad.id) == "failed"
    at.button(key="rn_batch_rerun").click().run()
    no_exception(at)
    queued = app_store.executions(kpi_id=bad.id, status="pending")
    assert len(queued) == 1 and queued[0].batch_id is not None
    assert app_store.executions(kpi_id=good.id, status="pending") == []
    assert any("Queued 1 failed KPI(s) again." in i for i in texts(at.info))


def demo_status(store, kpi_id):
    return store.executions(kpi_id=kpi_id)[0].status


def test_running_needs_a_name(demo_store):
    orders = kpi_named(demo_store, "Orders")
    at = open_app("run", actor=None, query={"kpi": orders.id})
    at.button(key="rn_now").click().run()
    assert any("Enter your name" in w for w in texts(at.warning))
    assert demo_store.executions() == []
