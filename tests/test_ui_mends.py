"""Mends from issue 12, each pinned by a test: parameter values a widget cannot hold, errors
that belong to their attempt, the conflict view's "keep my edit on top", an unknown
``?kpi=``, the value column and date ranges checked by the store, plain-word messages,
values with their unit, the clickable catalogue and the History page's KPI."""

from __future__ import annotations

import datetime as dt

import pytest
from ui_helpers import (
    RECORDED,
    clean_kpi_spec,
    no_exception,
    open_app,
    shown,
    sqlite_url,
    texts,
)

from kpi_store import KPIStore, ValidationError

NEW = "kf_new_0"


def red(at) -> list[str]:
    """The field errors on the page (``:red[…]`` markdown), as a person reads them."""
    prefix = ":red[:material/error: "
    return [
        shown(m.removeprefix(prefix).removesuffix("]")) for m in texts(at.markdown) if prefix in m
    ]


@pytest.fixture()
def sales(app_store: KPIStore, sales_db) -> KPIStore:
    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    return app_store


def counted_kpi(store: KPIStore) -> int:
    """A KPI with a whole-number and a number parameter (both with defaults)."""
    spec = clean_kpi_spec(
        name="Big sales",
        sql="SELECT day, amount FROM sales WHERE amount >= :at_least AND amount < :below",
        parameters=[
            {"name": "at_least", "type": "int", "default": 20},
            {"name": "below", "type": "float", "default": 65.5},
        ],
    )
    return store.create_kpi(spec, "setup").id


# -- a value the widget cannot hold is an error at the field, and nothing runs --------------


def test_an_out_of_range_number_is_an_error_at_its_field_and_nothing_runs(sales):
    kpi_id = counted_kpi(sales)
    at = open_app("run", query={"kpi": kpi_id})
    field = at.text_input(key="rn_param_at_least_int")
    assert field.value == "20"  # text: a number widget would quietly keep its default
    field.input("99999999999999999999999").run()  # past 64 bits, and a JS number's range
    no_exception(at)
    assert any("outside the range of whole numbers" in m for m in red(at))
    at.button(key="rn_now").click().run()
    no_exception(at)
    assert sales.executions() == []  # nothing ran: no run "succeeded" with the default
    assert any("outside the range of whole numbers" in e for e in texts(at.error))
    assert sum("outside the range" in m for m in red(at)) == 1  # once, at the field
    # A number that is not one at all is refused the same way.
    at.text_input(key="rn_param_below_float").input("lots").run()
    at.button(key="rn_now").click().run()
    assert sales.executions() == []
    assert any("'lots' is not a valid number" in m for m in red(at))
    # Corrected, the run uses the values typed.
    at.text_input(key="rn_param_at_least_int").input("30")
    at.text_input(key="rn_param_below_float").input("60.5")
    at.button(key="rn_now").click().run()
    no_exception(at)
    [run] = sales.executions()
    assert run.status == "success" and run.params == {"at_least": 30, "below": 60.5}


def test_a_date_far_from_today_can_be_picked(sales):
    kpi = sales.create_kpi(clean_kpi_spec(), "setup")
    at = open_app("run", query={"kpi": kpi.id})
    picker = at.date_input(key="rn_param_since_date")
    assert picker.min <= dt.date(1900, 1, 1) and picker.max >= dt.date(2199, 12, 31)
    picker.set_value(dt.date(1990, 5, 17))
    at.button(key="rn_now").click().run()
    [run] = sales.executions()
    assert run.params == {"since": "1990-05-17"}


# -- messages belong to the attempt that caused them ---------------------------------------


def test_an_error_goes_once_the_input_is_corrected_on_the_kpis_form(sales):
    at = open_app("kpis")
    at.text_input(key=f"{NEW}_name").input("Sales")
    at.text_area(key=f"{NEW}_sql").input("DELETE FROM sales")
    at.button(key=f"{NEW}_save").click().run()
    assert any("read-only" in e for e in texts(at.error))
    assert any("read-only" in m for m in red(at))
    at.run()  # an unrelated rerun keeps the attempt's message: nothing changed
    assert any("read-only" in e for e in texts(at.error))
    at.text_area(key=f"{NEW}_sql").input("SELECT SUM(amount) AS total FROM sales").run()
    no_exception(at)
    assert not any("read-only" in e for e in texts(at.error))
    assert not any("read-only" in m for m in red(at))
    assert sales.list_kpis() == []  # corrected, not saved yet


def test_an_error_goes_once_the_input_is_corrected_on_the_run_page(sales):
    spec = clean_kpi_spec(parameters=[{"name": "since", "type": "date"}])
    kpi = sales.create_kpi(spec, "setup")
    at = open_app("run", query={"kpi": kpi.id})
    at.button(key="rn_now").click().run()
    assert any("is required" in e for e in texts(at.error))
    at.date_input(key="rn_param_since_date").set_value(dt.date(2025, 1, 3)).run()
    no_exception(at)
    assert not any("is required" in e for e in texts(at.error))
    assert not any("is required" in m for m in red(at))
    assert sales.executions() == []


# -- the conflict view: keep my edit on top, labels and formatted values --------------------


def test_keep_my_edit_on_top_of_theirs(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    prefix = f"kf_{kpi.id}_v1"
    demo_store.update_kpi(kpi.id, {"owner": "Bob's team"}, "bob", expected_version=1)
    at.number_input(key=f"{prefix}_target").set_value(25_000.0)
    at.text_input(key=f"{prefix}_note").input("Higher goal")
    at.button(key=f"{prefix}_save").click().run()
    no_exception(at)
    table = at.dataframe[-1].value.set_index("Field")
    assert set(table.index) == {"Owner", "Target"}  # labels, not field names
    assert table.loc["Target", "Your edit"] == "25,000 orders"  # with the KPI's unit
    assert table.loc["Target", "Version 1 (you opened)"] == "18,500 orders"
    assert table.loc["Owner", "Version 2 (saved)"] == "Bob's team"
    at.button(key=f"{prefix}_on_top").click().run()
    no_exception(at)
    saved = demo_store.get_kpi(kpi.id)
    assert (saved.version, saved.owner, saved.target) == (3, "Bob's team", 25_000.0)
    latest = demo_store.kpi_versions(kpi.id)[0]
    assert (latest.note, latest.changed_by) == ("Higher goal", RECORDED)
    assert any("on top of version 2" in s for s in texts(at.success))
    assert at.number_input(key=f"kf_{kpi.id}_v3_target").value == 25_000.0


def test_overlapping_edits_cannot_go_on_top(demo_store):
    kpi = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": kpi.id})
    prefix = f"kf_{kpi.id}_v1"
    demo_store.update_kpi(kpi.id, {"target": 19_000.0}, "bob", expected_version=1)
    at.number_input(key=f"{prefix}_target").set_value(25_000.0)
    at.button(key=f"{prefix}_save").click().run()
    on_top = at.button(key=f"{prefix}_on_top")
    assert on_top.disabled
    assert any("You both changed Target" in c for c in texts(at.caption))
    assert demo_store.get_kpi(kpi.id).target == 19_000.0


# -- an unknown id in the link says so and stays ---------------------------------------------


def test_an_unknown_kpi_in_the_link_says_so_and_stays(demo_store):
    at = open_app(query={"kpi": 9999})
    no_exception(at)
    assert texts(at.title) == ["KPIs"]
    assert any("There is no KPI with id 9999" in e for e in texts(at.error))
    assert at.query_params["kpi"] == "9999"  # the link is kept as it was
    assert "New KPI" not in texts(at.header)  # not the new-KPI form
    at.run()
    assert any("There is no KPI with id 9999" in e for e in texts(at.error))
    # Choosing a KPI moves on.
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at.selectbox(key="kp_open_instead").set_value(orders.id).run()
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="kp_open").value == orders.id
    assert at.query_params["kpi"] == str(orders.id)


def test_new_kpi_from_an_unknown_link(demo_store):
    at = open_app("kpis", query={"kpi": "abc"})
    assert any("There is no KPI with id abc" in e for e in texts(at.error))
    at.button(key="kp_new_instead").click().run()
    no_exception(at)
    assert "New KPI" in texts(at.header) and "kpi" not in at.query_params


# -- the value column and date ranges, checked by the store ---------------------------------


def test_a_value_column_not_in_the_result_is_refused_at_save(sales):
    with pytest.raises(ValidationError) as refused:
        sales.create_kpi(clean_kpi_spec(value_column="amout"), "ann")
    assert "'amout' is not in the query's result (its columns: day, region, amount)" in str(
        refused.value
    )
    assert "value_column" in refused.value.field_errors
    kpi = sales.create_kpi(clean_kpi_spec(), "ann")
    with pytest.raises(ValidationError, match="not in the query's result"):
        narrower = "SELECT day FROM sales WHERE day >= :since"
        sales.update_kpi(kpi.id, {"sql": narrower}, "ann", expected_version=1)
    # A change that leaves the query alone is not checked again.
    assert sales.update_kpi(kpi.id, {"owner": "Ops"}, "ann", expected_version=1).version == 2
    assert sales.list_kpis()[0].version == 2


def test_the_form_shows_the_value_column_error_at_its_field(sales):
    at = open_app("kpis")
    at.text_input(key=f"{NEW}_name").input("Sales")
    at.text_area(key=f"{NEW}_sql").input("SELECT SUM(amount) AS total FROM sales")
    at.text_input(key=f"{NEW}_value_column").input("amount")
    at.button(key=f"{NEW}_save").click().run()
    no_exception(at)
    assert any("'amount' is not in the query's result (its columns: total)" in m for m in red(at))
    assert sales.list_kpis() == []


def test_a_query_that_fails_is_refused_saying_why(sales):
    with pytest.raises(ValidationError) as refused:
        broken = "SELECT day, amount FROM salez WHERE day >= :since"
        sales.create_kpi(clean_kpi_spec(sql=broken), "ann")
    message = str(refused.value)
    assert "could not be checked" in message and "no such table: salez" in message
    assert "sql" in refused.value.field_errors
    # Without a value column there is nothing to check: the definition is saved.
    spec = clean_kpi_spec(sql="SELECT day, amount FROM salez", parameters=[], value_column=None)
    assert sales.create_kpi(spec, "ann").version == 1


def test_a_slow_source_does_not_hold_the_save_for_long(sales, monkeypatch):
    from kpi_store import source_schema

    monkeypatch.setattr(source_schema, "PROBE_TIMEOUT_S", 0.5)

    def stalls(*_args, **_kwargs):
        import time

        time.sleep(5)

    monkeypatch.setattr(source_schema, "preview_rows", stalls)
    import time

    started = time.monotonic()
    with pytest.raises(ValidationError) as refused:
        from kpi_store import definitions

        definitions.check_value_column(
            sales.engine, definitions.parse_spec(clean_kpi_spec()), sales.source_engines, 0.5
        )
    assert time.monotonic() - started < 3
    assert "did not answer within" in str(refused.value)


def test_an_end_date_before_the_start_date_is_refused(sales):
    spec = clean_kpi_spec(
        name="Between",
        sql="SELECT day, amount FROM sales WHERE day BETWEEN :start_date AND :end_date",
        parameters=[
            {"name": "start_date", "type": "date", "default": "2025-01-02", "label": "From"},
            {"name": "end_date", "type": "date", "default": "2025-01-05", "label": "To"},
        ],
    )
    kpi = sales.create_kpi(spec, "ann")
    with pytest.raises(ValidationError) as refused:
        sales.execute(kpi.id, {"start_date": "2025-01-06"}, actor="ann")
    assert str(refused.value) == (
        "The end date 'To' (2025-01-05) is before the start date 'From' (2025-01-06)."
    )
    assert set(refused.value.field_errors) == {"end_date"}
    assert sales.executions() == []
    same_day = sales.execute(kpi.id, {"end_date": "2025-01-02"}, actor="ann")
    assert same_day.status == "success" and same_day.value == 20.0
    # Defaults the wrong way round are refused when the KPI is saved.
    backwards = {**spec, "name": "Backwards"}
    backwards["parameters"] = [
        {**spec["parameters"][0], "default": "2025-02-01"},
        spec["parameters"][1],
    ]
    with pytest.raises(ValidationError, match="wrong way round: the end date 'To'"):
        sales.create_kpi(backwards, "ann")


# -- plain words, units, the clickable catalogue, the History page's KPI ----------------------


def test_validation_messages_are_plain_words(sales):
    with pytest.raises(ValidationError) as refused:
        sales.create_kpi({"data_source": "src", "sql": "SELECT 1 AS n", "name": " "}, "ann")
    assert str(refused.value) == "Name is required."
    assert refused.value.field_errors == {"name": "Name is required"}
    spec = clean_kpi_spec(tolerance_pct=-5, target="lots", unit="u" * 51)
    with pytest.raises(ValidationError) as refused:
        sales.create_kpi(spec, "ann")
    assert refused.value.field_errors == {
        "unit": "Unit must be at most 50 characters",
        "target": "Target must be a number",
        "tolerance_pct": "Tolerance (%) must be at least 0",
    }
    for word in ("String should", "Input should", "valid number, unable"):
        assert word not in str(refused.value)


def test_the_form_shows_plain_words_under_the_field(sales):
    at = open_app("kpis")
    at.text_area(key=f"{NEW}_sql").input("SELECT 1 AS n")
    at.button(key=f"{NEW}_save").click().run()
    assert "Name is required" in red(at)


def test_the_catalogue_row_opens_the_kpi(demo_store):
    at = open_app("kpis")
    names = list(at.dataframe[0].value["Name"])
    row = names.index("Orders")
    at.session_state["kp_catalog"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    no_exception(at)
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    assert at.selectbox(key="kp_open").value == orders.id
    assert at.query_params["kpi"] == str(orders.id)
    assert "Orders" in texts(at.header)
    # The selection stays; choosing another KPI in the box is not overridden by it.
    revenue = next(k for k in demo_store.list_kpis() if k.name == "Revenue")
    at.selectbox(key="kp_open").set_value(revenue.id).run()
    assert at.selectbox(key="kp_open").value == revenue.id


def test_history_opens_on_the_kpi_chosen_on_the_kpis_page(demo_store):
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app("kpis", query={"kpi": orders.id})
    at.switch_page("pages/history.py").run()  # by the sidebar: no ?kpi= in the link
    no_exception(at)
    assert at.selectbox(key="hi_kpi").value == orders.id
    # A link naming a KPI still wins.
    revenue = next(k for k in demo_store.list_kpis() if k.name == "Revenue")
    at = open_app("history", query={"kpi": revenue.id})
    assert at.selectbox(key="hi_kpi").value == revenue.id
