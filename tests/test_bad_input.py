"""Bad input of every shape gets a KPIStoreError naming the problem, never a raw error."""

from __future__ import annotations

import io
import sqlite3

import pytest

from kpi_store import (
    DataSourceError,
    ExecutionError,
    NotFoundError,
    ValidationError,
)


def test_ids_no_database_can_hold_are_simply_not_found(store, kpi_spec):
    huge = 10**20
    with pytest.raises(NotFoundError):
        store.get_kpi(huge)
    with pytest.raises(NotFoundError):
        store.execution(huge)
    with pytest.raises(NotFoundError):
        store.execute(huge, actor="ann")
    with pytest.raises(NotFoundError):
        store.delete_kpi(huge, "ann")


def test_arguments_of_the_wrong_shape_are_refused_with_a_message(store, kpi_spec, tmp_path):
    kpi = store.create_kpi(kpi_spec(), "ann")
    with pytest.raises(ValidationError, match="time limit"):
        store.execute(kpi.id, actor="ann", timeout_s="abc")
    with pytest.raises(ValidationError, match="name = value"):
        store.execute(kpi.id, params=["north"], actor="ann")
    with pytest.raises(ValidationError, match="mapping"):
        store.update_kpi(kpi.id, ["sql"], "ann", expected_version=1)
    with pytest.raises(ValidationError, match="not a date"):
        store.audit_log(since="yesterday")
    run = store.execute(kpi.id, actor="ann")
    with pytest.raises(ValidationError, match="Cannot write the CSV file"):
        store.export_csv(run.id, tmp_path / "missing" / "x.csv", "ann")
    assert store.executions(kpi_id=kpi.id) == [run]  # the refused run was never recorded


def test_an_infinite_target_is_refused(store, kpi_spec):
    with pytest.raises(ValidationError) as error:
        store.create_kpi(kpi_spec(target=float("inf")), "ann")
    assert "target" in error.value.field_errors


def test_a_colon_word_inside_quotes_is_refused_before_it_breaks_every_run(store, kpi_spec):
    spec = kpi_spec(
        sql="SELECT 'opens at 10:30 :sharp' AS note, SUM(amount) AS revenue FROM sales "
        "WHERE sold_on >= :start AND region = :region",
    )
    with pytest.raises(ValidationError, match=":sharp"):
        store.create_kpi(spec, "ann")
    escaped = kpi_spec(
        sql="SELECT 'opens at 10\\:30' AS note, SUM(amount) AS revenue FROM sales "
        "WHERE sold_on >= :start AND region = :region",
    )
    run = store.execute(store.create_kpi(escaped, "ann").id, actor="ann")
    assert run.status == "success"
    assert run.first_row_sample["note"] == "opens at 10:30"


def test_a_bad_database_url_is_a_data_source_error(store):
    with pytest.raises(DataSourceError):
        store.add_data_source("pg", "postgresql+psycopg://u@h:notaport/db", "ann")
    assert [s.name for s in store.data_sources()] == ["shop"]


def test_a_column_of_mixed_types_still_makes_a_frame(store, kpi_spec, tmp_path):
    path = tmp_path / "mixed.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (v)")
        connection.executemany("INSERT INTO t VALUES (?)", [(1,), (2.5,), ("n/a",), (None,)])
    store.add_data_source("mixed", f"sqlite:///{path}", "ann")
    kpi = store.create_kpi(
        {"name": "Mixed", "data_source": "mixed", "sql": "SELECT v FROM t", "aggregation": "count"},
        "ann",
    )
    run = store.execute(kpi.id, actor="ann")

    frame = store.result_frame(run.id)

    assert list(frame["v"].iloc[:3]) == [1, 2.5, "n/a"]


def test_preview_of_a_query_that_cannot_bind_is_an_execution_error(store):
    with pytest.raises((ExecutionError, ValidationError)):
        store.preview_query("shop", "SELECT * FROM no_such_table", actor="tester")


def test_sqlite_upload_with_rows_longer_than_the_header_is_refused(tmp_path, store):
    target = tmp_path / "uploads.db"
    sqlite3.connect(target).close()
    store.add_data_source("uploads", f"sqlite:///{target}", "ann")

    with pytest.raises(ValidationError, match="header"):
        store.import_csv("uploads", "shifted", io.BytesIO(b"a,b\n1,2,3\n4,5,6\n"), "ann")

    with sqlite3.connect(target) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []
