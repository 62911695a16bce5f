"""The Data sources page: list, add (tested), remove with confirmation, CSV upload."""

from __future__ import annotations

import sqlite3

from ui_helpers import RECORDED, no_exception, open_app, sqlite_url, texts


def test_empty_state(app_store):
    at = open_app("data_sources")
    assert any("No data sources yet" in i for i in texts(at.info))
    assert "Uploads go into a local SQLite data source; add one first." in texts(at.info)


def test_add_a_data_source_after_testing_it(app_store, sales_db):
    at = open_app("data_sources")
    at.text_input(key="ds_name").input("sales")
    at.text_input(key="ds_url").input(sqlite_url(sales_db))
    at.button(key="FormSubmitter:ds_add-Test and add").click().run()
    no_exception(at)
    assert "Data source 'sales' added: connection works." in texts(at.success)
    assert [s.name for s in app_store.data_sources()] == ["sales"]
    assert list(at.dataframe[0].value["Name"]) == ["sales"]
    assert app_store.data_sources()[0].created_by == RECORDED


def test_unreachable_source_is_refused_with_the_reason(app_store, tmp_path):
    at = open_app("data_sources")
    at.text_input(key="ds_name").input("nowhere")
    at.text_input(key="ds_url").input(f"sqlite:///{tmp_path}/missing/none.db")
    at.button(key="FormSubmitter:ds_add-Test and add").click().run()
    no_exception(at)
    assert any("Cannot connect to data source 'nowhere'" in e for e in texts(at.error))
    assert app_store.data_sources() == []


def test_bad_name_is_shown_next_to_the_field(app_store, sales_db):
    at = open_app("data_sources")
    at.text_input(key="ds_name").input("bad name!")
    at.text_input(key="ds_url").input(sqlite_url(sales_db))
    at.button(key="FormSubmitter:ds_add-Test and add").click().run()
    at.run()  # the field message shows on the form's next run
    assert any(":red[" in m and "letters, digits" in m for m in texts(at.markdown))


def test_remove_asks_for_confirmation(app_store, sales_db):
    app_store.add_data_source("sales", sqlite_url(sales_db), "setup")
    at = open_app("data_sources")
    at.button(key="ds_remove").click().run()
    assert any("Remove data source 'sales'?" in w for w in texts(at.warning))
    assert len(app_store.data_sources()) == 1
    at.button(key="ds_remove_yes").click().run()
    no_exception(at)
    assert app_store.data_sources() == []
    assert "Data source 'sales' removed." in texts(at.success)


def test_a_source_in_use_cannot_be_removed(demo_store):
    at = open_app("data_sources")
    at.button(key="ds_remove").click().run()
    at.button(key="ds_remove_yes").click().run()
    no_exception(at)
    assert any("is used by 8 KPI(s)" in e for e in texts(at.error))


def test_upload_a_csv_into_a_new_table(app_store, sales_db):
    app_store.add_data_source("sales", sqlite_url(sales_db), "setup")
    at = open_app("data_sources")
    content = b"team,quarter,budget\nNorth,2025-Q1,1200.5\nSouth,2025-Q1,980\n"
    at.file_uploader(key="up_file").upload("Budget 2025.csv", content, "text/csv").run()
    no_exception(at)
    table_input = next(t for t in at.text_input if t.key and t.key.startswith("up_table_"))
    assert table_input.value == "budget_2025"
    at.button(key="up_go").click().run()
    no_exception(at)
    assert "Uploaded 2 rows into table 'budget_2025' of 'sales'." in texts(at.success)
    connection = sqlite3.connect(sales_db)
    rows = connection.execute("SELECT team, budget FROM budget_2025 ORDER BY team").fetchall()
    connection.close()
    assert rows == [("North", 1200.5), ("South", 980.0)]
    entry = app_store.audit_log(action="DATA_UPLOAD")[0]
    assert entry.actor == RECORDED and entry.details == {"table": "budget_2025", "rows": 2}


def test_upload_into_an_existing_table_is_refused(app_store, sales_db):
    app_store.add_data_source("sales", sqlite_url(sales_db), "setup")
    at = open_app("data_sources")
    at.file_uploader(key="up_file").upload("sales.csv", b"a,b\n1,2\n", "text/csv").run()
    at.button(key="up_go").click().run()
    no_exception(at)
    assert any("Table 'sales' already exists" in e for e in texts(at.error))
