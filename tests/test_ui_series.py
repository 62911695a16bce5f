"""The official number in the dashboard: cards from the official series only, "no data",
the History Trend tab (one line per parameter set, comparisons, backfill) and the KPI
form's official parameters and period."""

from __future__ import annotations

import sqlite3

from ui_helpers import clean_kpi_spec, metrics, no_exception, open_app, texts

from kpi_store import RAG, RunStatus

YEAR_2024 = {"start_date": "2024-01-01", "end_date": "2024-12-31"}


def kpi_named(store, name):
    return next(k for k in store.list_kpis() if k.name == name)


def test_a_future_official_period_is_no_data_on_the_card(demo_store):
    revenue = kpi_named(demo_store, "Revenue")
    demo_store.execute(revenue.id, {"start_date": "2030-01-01", "end_date": "2030-12-31"}, "t")
    at = open_app("overview")
    no_exception(at)
    assert metrics(at)["No data"] == "1"
    assert metrics(at)["Off target"] == "0"  # never read as 0, never off target
    assert any("-badge[:material/block: No data]" in m for m in texts(at.markdown))


def test_the_trend_tab_draws_the_official_series_first_and_compares_periods(demo_store):
    revenue = kpi_named(demo_store, "Revenue")
    latest = demo_store.execute(revenue.id, None, "t")
    demo_store.execute(revenue.id, {"region": "North"}, "t")
    at = open_app("history", query={"kpi": revenue.id})
    no_exception(at)
    picker = at.multiselect(key=f"hi_series_{revenue.id}")
    assert len(picker.options) == 2
    assert picker.value == [demo_store.series_list(revenue.id)[0].key]
    assert demo_store.series_list(revenue.id)[0].official
    assert len(at.get("vega_lite_chart")) == 1
    [points] = [d.value for d in at.dataframe if "compared with" in d.value]
    assert list(points["when"]) == ["2025"]
    assert list(points["compared with"]) == ["2024 (not run yet)"]

    at.button(key=f"hi_run_base_{revenue.id}").click().run()  # run 2024 to compare with
    no_exception(at)
    compared = demo_store.compare(latest.id, "previous_period")
    assert compared.base_run_id is not None and compared.change is not None
    [points] = [d.value for d in at.dataframe if "compared with" in d.value]
    assert list(points["when"]) == ["2025", "2024"]
    assert points["compared with"][0] == "2024"
    assert points["change %"][0] == f"{compared.change_pct:+.1f} %"

    at.multiselect(key=f"hi_series_{revenue.id}").select(picker.options[1]).run()
    no_exception(at)
    assert "North" in at.get("vega_lite_chart")[0].proto.spec


def test_backfill_from_the_trend_tab_queues_one_run_per_year(demo_store):
    revenue = kpi_named(demo_store, "Revenue")
    demo_store.execute(revenue.id, YEAR_2024, "t")
    at = open_app("history", query={"kpi": revenue.id})
    at.date_input(key=f"hi_bf_from_{revenue.id}").set_value("2023-06-01")
    at.date_input(key=f"hi_bf_to_{revenue.id}").set_value("2025-03-01").run()
    at.button(key=f"hi_bf_go_{revenue.id}").click().run()
    no_exception(at)
    assert any("Queued 2 of 3 periods" in s and "skipped 1" in s for s in texts(at.success))
    queued = demo_store.executions(kpi_id=revenue.id, status=RunStatus.PENDING)
    assert sorted(r.params["start_date"] for r in queued) == ["2023-01-01", "2025-01-01"]


def test_the_form_pins_official_parameters_and_declares_a_period(demo_store):
    revenue = kpi_named(demo_store, "Revenue")
    at = open_app("kpis", query={"kpi": revenue.id})
    keys = [w.key for w in at.selectbox if w.key and "_official_region" in w.key]
    assert keys, "the official parameter picker is on the form"
    at.selectbox(key=keys[0]).set_value("North").run()
    grain = [w.key for w in at.selectbox if w.key and w.key.endswith("_period_grain")]
    at.selectbox(key=grain[0]).set_value("quarter").run()
    save = [b.key for b in at.button if b.key and b.key.endswith("_save")]
    at.button(key=save[0]).click().run()
    no_exception(at)
    saved = demo_store.get_kpi(revenue.id)
    assert saved.official_params == {"region": "North"}
    assert saved.period is not None and saved.period.grain == "quarter"
    quarter = {"region": "North", "start_date": "2025-01-01", "end_date": "2025-03-31"}
    run = demo_store.execute(revenue.id, quarter, "t")
    assert demo_store.headlines([saved])[revenue.id].latest.run_id == run.id
    year = demo_store.execute(revenue.id, {"region": "North"}, "t")  # a year: 4 quarters
    assert demo_store.headlines([saved])[revenue.id].latest.run_id != year.id
    assert saved.rag_status(None) == RAG.NO_DATA


def test_an_unusual_latest_value_is_ringed_with_its_band(app_store, sales_db):
    app_store.add_data_source("src", f"sqlite:///{sales_db}", "setup")
    kpi = app_store.create_kpi(clean_kpi_spec(breakdown_column="region"), "setup")
    for _ in range(8):  # eight runs of 280.0: the usual range is 280 – 280
        app_store.execute(kpi.id, None, "setup")
    with sqlite3.connect(sales_db) as connection:
        connection.execute("UPDATE sales SET amount = amount * 10 WHERE region = 'North'")
    odd = app_store.execute(kpi.id, None, "setup")
    assert app_store.unusual(odd.id).unusual
    at = open_app("history", query={"kpi": kpi.id})
    no_exception(at)
    [warning] = [w for w in texts(at.warning) if "unusual" in w]
    assert "above the usual range" in warning and "8 comparable runs" in warning
    overview = open_app("overview")
    no_exception(overview)
    assert any("Unusual:" in c and "above its usual range" in c for c in texts(overview.caption))
    spec = at.get("vega_lite_chart")[0].proto.spec.replace(" ", "")
    assert '"color":"#dc2626"' in spec  # the ring around the unusual point
    assert '"type":"rect"' in spec  # the usual band behind the line


def test_what_changed_splits_the_change_by_the_breakdown_column(app_store, sales_db):
    app_store.add_data_source("src", f"sqlite:///{sales_db}", "setup")
    kpi = app_store.create_kpi(clean_kpi_spec(breakdown_column="region"), "setup")
    before = app_store.execute(kpi.id, None, "setup")
    with sqlite3.connect(sales_db) as connection:
        connection.execute("UPDATE sales SET amount = amount + 1.25 WHERE region = 'North'")
    after = app_store.execute(kpi.id, None, "setup")
    at = open_app("history", query={"kpi": kpi.id})
    no_exception(at)
    assert at.selectbox(key=f"hi_wc_column_{kpi.id}").value == "region"
    found = app_store.what_changed(before.id, after.id)
    assert found.total_change == 5.0 and [p.label for p in found.up] == ["North"]
    [up] = [d.value for d in at.dataframe if "share" in d.value][:1]
    assert list(up["value"]) == ["North"] and list(up["share"]) == ["100.0%"]
    assert any("adds up exactly" in c for c in texts(at.caption))
