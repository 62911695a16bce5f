"""The KPIs page: catalog, create / edit form, test query, field errors, conflicts."""

from __future__ import annotations

from ui_helpers import RECORDED, all_text, no_exception, open_app, sqlite_url, texts

NEW = "kf_new_0"


def with_source(store, db) -> None:
    store.add_data_source("src", sqlite_url(db), "setup")


def fill_new_kpi(at, name="Sales since", sql=None) -> None:
    at.text_input(key=f"{NEW}_name").input(name)
    at.text_input(key=f"{NEW}_owner").input("Finance")
    at.text_input(key=f"{NEW}_tags").input("sales, weekly")
    at.text_area(key=f"{NEW}_sql").input(
        sql or "SELECT day, amount FROM sales WHERE day >= :since ORDER BY day"
    )
    at.text_input(key=f"{NEW}_value_column").input("amount")
    at.text_input(key=f"{NEW}_unit").input("$")
    at.number_input(key=f"{NEW}_target").set_value(250.0)


def add_parameter(at, index, name, ptype, default) -> None:
    at.button(key=f"{NEW}_add").click().run()
    at.text_input(key=f"{NEW}_p{index}_name").input(name)
    at.selectbox(key=f"{NEW}_p{index}_type").set_value(ptype)
    at.text_input(key=f"{NEW}_p{index}_default").input(default)


def test_empty_catalog_invites_to_create(app_store):
    at = open_app("kpis")
    assert "No KPIs yet" in all_text(at)
    assert "There are no data sources yet." in texts(at.warning)


def test_create_a_kpi_through_the_form(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis")
    fill_new_kpi(at)
    add_parameter(at, 0, "since", "date", "2025-01-03")
    at.button(key=f"{NEW}_save").click().run()
    no_exception(at)
    assert "KPI 'Sales since' created (version 1)." in texts(at.success)
    [kpi] = app_store.list_kpis()
    assert kpi.created_by == RECORDED
    assert kpi.tags == ["sales", "weekly"]
    assert kpi.parameters[0].type == "date" and str(kpi.parameters[0].default) == "2025-01-03"
    assert kpi.target == 250.0 and kpi.unit == "$"
    # The page now shows the new KPI and its URL names it.
    assert at.selectbox(key="kp_open").value == kpi.id
    assert at.query_params["kpi"] == str(kpi.id)
    assert "Sales since" in texts(at.header)


def test_test_query_previews_rows_before_saving(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis")
    fill_new_kpi(at)
    add_parameter(at, 0, "since", "date", "2025-01-05")
    at.button(key=f"{NEW}_test").click().run()
    no_exception(at)
    assert any("first 3 row(s)" in s for s in texts(at.success))
    [preview] = [d.value for d in at.dataframe if "amount" in d.value]  # not the targets table
    assert list(preview["amount"]) == [50.0, 60.0, 70.0]
    assert app_store.list_kpis() == []  # nothing saved


def test_unsafe_sql_is_refused_next_to_the_sql_field(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis")
    fill_new_kpi(at, sql="DELETE FROM sales")
    at.button(key=f"{NEW}_save").click().run()
    no_exception(at)
    assert any("read-only" in m and ":red[" in m for m in texts(at.markdown))
    assert any("read-only" in e for e in texts(at.error))
    assert app_store.list_kpis() == []


def test_missing_parameter_declaration_is_a_field_error(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis")
    fill_new_kpi(at)  # uses :since but declares nothing
    at.button(key=f"{NEW}_save").click().run()
    assert any("not declared" in m for m in texts(at.markdown))
    assert app_store.list_kpis() == []


def test_bad_parameter_default_is_shown_on_its_row(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis")
    fill_new_kpi(at)
    add_parameter(at, 0, "since", "date", "not a date")
    at.button(key=f"{NEW}_save").click().run()
    no_exception(at)
    assert any("not a valid date" in m and ":red[" in m for m in texts(at.markdown))


def test_nothing_is_saved_without_a_name(app_store, sales_db):
    with_source(app_store, sales_db)
    at = open_app("kpis", actor=None)
    fill_new_kpi(at)
    add_parameter(at, 0, "since", "date", "2025-01-01")
    at.button(key=f"{NEW}_save").click().run()
    assert any("Enter your name" in w for w in texts(at.warning))
    assert app_store.list_kpis() == []


def test_search_and_tag_filter_the_catalog(demo_store):
    at = open_app("kpis")
    assert len(at.dataframe[0].value) == 8
    at.text_input(key="kp_search").input("margin").run()
    assert list(at.dataframe[0].value["Name"]) == ["Gross Margin"]
    at.text_input(key="kp_search").input("").run()
    at.selectbox(key="kp_tag").set_value("customers").run()
    assert list(at.dataframe[0].value["Name"]) == ["New Customers by Month"]


def test_edit_saves_a_new_version_with_a_note(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    prefix = f"kf_{kpi.id}_v1"
    at.number_input(key=f"{prefix}_target").set_value(20000.0)
    at.text_input(key=f"{prefix}_note").input("New yearly goal")
    at.button(key=f"{prefix}_save").click().run()
    no_exception(at)
    assert "Saved version 2 of 'Orders'." in texts(at.success)
    latest = demo_store.kpi_versions(kpi.id)[0]
    assert (latest.version, latest.note, latest.changed_by) == (2, "New yearly goal", RECORDED)
    assert demo_store.get_kpi(kpi.id).target == 20000.0
    # The form now edits version 2.
    assert at.number_input(key=f"kf_{kpi.id}_v2_target").value == 20000.0


def test_saving_without_changes_makes_no_version(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    at.button(key=f"kf_{kpi.id}_v1_save").click().run()
    no_exception(at)
    assert any("Nothing changed" in i for i in texts(at.info))
    assert demo_store.get_kpi(kpi.id).version == 1


def test_concurrent_edit_shows_both_versions_and_overwrites_nothing(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    prefix = f"kf_{kpi.id}_v1"
    # Someone else saves version 2 while this form is open at version 1.
    demo_store.update_kpi(kpi.id, {"owner": "Bob's team"}, "bob", expected_version=1)
    at.text_input(key=f"{prefix}_unit").input("sales")
    at.button(key=f"{prefix}_save").click().run()
    no_exception(at)
    assert any("Not saved: bob saved version 2" in e for e in texts(at.error))
    table = at.dataframe[-1].value
    assert set(table["Field"]) == {"Owner", "Unit"}
    assert list(table.columns) == [
        "Field",
        "Version 1 (you opened)",
        "Your edit",
        "Version 2 (saved)",
    ]
    row = table.set_index("Field").loc["Unit"]
    assert (row["Your edit"], row["Version 2 (saved)"]) == ("sales", "orders")
    current = demo_store.get_kpi(kpi.id)
    assert (current.version, current.owner, current.unit) == (2, "Bob's team", "orders")
    # Loading their version discards the edit and opens version 2.
    at.button(key=f"{prefix}_reload").click().run()
    assert at.text_input(key=f"kf_{kpi.id}_v2_owner").value == "Bob's team"
    assert at.text_input(key=f"kf_{kpi.id}_v2_unit").value == "orders"


def test_archive_asks_for_confirmation(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    at.button(key="kp_archive").click().run()
    assert any("Archive 'Orders'?" in w for w in texts(at.warning))
    assert demo_store.get_kpi(kpi.id).status == "active"
    at.button(key="kp_confirm_no").click().run()
    assert not any("Archive 'Orders'?" in w for w in texts(at.warning))
    at.button(key="kp_archive").click().run()
    at.button(key="kp_confirm_yes").click().run()
    no_exception(at)
    assert demo_store.get_kpi(kpi.id).status == "archived"
    assert "KPI 'Orders' archived." in texts(at.success)
    assert any("archived" in i for i in texts(at.info))


def test_delete_asks_for_confirmation_then_returns_to_new(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    at.button(key="kp_delete").click().run()
    assert any("cannot be undone" in w for w in texts(at.warning))
    at.button(key="kp_confirm_yes").click().run()
    no_exception(at)
    assert "KPI 'Orders' deleted." in texts(at.success)
    assert "Orders" not in {k.name for k in demo_store.list_kpis(include_archived=True)}
    assert at.selectbox(key="kp_open").value is None
    assert "kpi" not in at.query_params
