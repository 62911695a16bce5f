"""The schema browser: ``KPIStore.source_schema`` on SQLite, DuckDB and PostgreSQL sources
(tables, views, columns and types, row counts where cheap), who may read it, the panel
beside the SQL editor, and CSV uploads that show their table and may replace one."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import duckdb
import pydantic
import pytest
import sqlalchemy as sa
from ui_helpers import no_exception, open_app, shown, sqlite_url, texts

from kpi_store import DataSourceError, KPIStore, PermissionDeniedError, Role, ValidationError
from kpi_store import source_schema as schema_module
from kpi_store.config import Settings
from kpi_store.source_schema import ColumnInfo, TableInfo, quote_name

NEW = "kf_new_0"


def shapes(tables: list[TableInfo]) -> dict[str, tuple[str, list[tuple[str, str]], int | None]]:
    return {
        t.sql_name: (t.kind, [(c.name, c.type) for c in t.columns], t.row_count) for t in tables
    }


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    """A SQLite file with declared types of every kind, a view and an awkward name."""
    path = tmp_path / "shop.db"
    connection = sqlite3.connect(path)
    connection.executescript(
        """
        CREATE TABLE sales (
            id INTEGER PRIMARY KEY,
            sold_on DATE NOT NULL,
            amount NUMERIC(10,2) DEFAULT 0 CHECK (amount >= 0),
            note,
            "Region Name" varchar(20) COLLATE NOCASE,
            CONSTRAINT positive CHECK (id > 0)
        );
        CREATE TABLE "Order Lines" (line_id INT, qty double precision);
        CREATE VIEW daily AS SELECT sold_on, SUM(amount) AS total FROM sales GROUP BY sold_on;
        """
    )
    connection.executemany(
        "INSERT INTO sales (sold_on, amount, note) VALUES (?, ?, ?)",
        [(f"2025-01-0{i}", i * 1.5, None) for i in range(1, 6)],
    )
    connection.commit()
    connection.close()
    return path


def test_sqlite_tables_views_columns_and_counts(store: KPIStore, shop: Path) -> None:
    store.add_data_source("s", sqlite_url(shop), "setup")
    tables = store.source_schema("s", actor="ann")
    assert shapes(tables) == {
        "daily": ("view", [("sold_on", ""), ("total", "")], None),  # views: never counted
        '"Order Lines"': ("table", [("line_id", "INT"), ("qty", "double precision")], 0),
        "sales": (
            "table",
            [
                ("id", "INTEGER"),
                ("sold_on", "DATE"),
                ("amount", "NUMERIC(10,2)"),
                ("note", ""),
                ("Region Name", "varchar(20)"),
            ],
            5,
        ),
    }
    assert all(not t.row_count_estimated for t in tables)
    # Reading the schema wrote nothing and left no audit entry behind.
    assert store.audit_log(action="PREVIEW") == []


def test_sqlite_counts_stop_at_their_limits(
    store: KPIStore, shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_data_source("s", sqlite_url(shop), "setup")
    monkeypatch.setattr(schema_module, "COUNTED_TABLES", 1)
    counts = {t.name: t.row_count for t in store.source_schema("s", actor="ann")}
    assert counts == {"Order Lines": 0, "daily": None, "sales": None}
    monkeypatch.setattr(schema_module, "COUNTED_TABLES", 50)
    monkeypatch.setattr(schema_module, "COUNT_BUDGET_S", 0.0)  # no time left to count
    counts = {t.name: t.row_count for t in store.source_schema("s", actor="ann")}
    assert counts == {"Order Lines": None, "daily": None, "sales": None}


def test_names_are_quoted_where_sql_needs_it() -> None:
    assert [quote_name(n) for n in ("sales", "Sales", "order lines", 'a"b', "_x1")] == [
        "sales",
        '"Sales"',
        '"order lines"',
        '"a""b"',
        "_x1",
    ]
    table = TableInfo(name="Daily", kind="view", columns=(), schema_name="mart")
    assert table.sql_name == 'mart."Daily"'
    with pytest.raises(pydantic.ValidationError, match="frozen"):  # records are frozen
        table.columns = (ColumnInfo(name="x", type=""),)  # type: ignore[misc]


def test_duckdb_schema_with_estimated_counts(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "lake" / "lake.duckdb"
    path.parent.mkdir()
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE sales (region VARCHAR, amount DECIMAL(10,2))")
        connection.execute("INSERT INTO sales VALUES ('north', 1.5), ('south', 2)")
        connection.execute("CREATE SCHEMA mart")
        connection.execute(
            "CREATE VIEW mart.totals AS SELECT region, sum(amount) s FROM sales GROUP BY region"
        )
    store.add_data_source("lake", f"duckdb:///{path}", "setup")
    tables = store.source_schema("lake", actor="ann")
    assert shapes(tables) == {
        "sales": ("table", [("region", "VARCHAR"), ("amount", "DECIMAL(10,2)")], 2),
        "mart.totals": ("view", [("region", "VARCHAR"), ("s", "DECIMAL(38,2)")], None),
    }
    assert next(t for t in tables if t.name == "sales").row_count_estimated


def test_postgres_schema_across_schemas(store: KPIStore, postgres_server) -> None:
    with postgres_server.database("schema") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE sales (id integer, amount numeric(12, 2))")
            connection.exec_driver_sql(
                "INSERT INTO sales SELECT g, g FROM generate_series(1, 40) g"
            )
            connection.exec_driver_sql("ANALYZE sales")
            connection.exec_driver_sql("CREATE TABLE never_analyzed (x text)")
            connection.exec_driver_sql("CREATE VIEW big AS SELECT * FROM sales WHERE amount > 5")
            connection.exec_driver_sql("CREATE SCHEMA mart")
            connection.exec_driver_sql('CREATE TABLE mart."Daily" (d date)')
        engine.dispose()
        store.add_data_source("wh", url, "setup")
        try:
            tables = shapes(store.source_schema("wh", actor="ann"))
        finally:
            store.source_engines.dispose()
    assert tables == {
        "big": ("view", [("id", "INTEGER"), ("amount", "NUMERIC(12, 2)")], None),
        "never_analyzed": ("table", [("x", "TEXT")], None),  # no estimate before ANALYZE
        "sales": ("table", [("id", "INTEGER"), ("amount", "NUMERIC(12, 2)")], 40),
        'mart."Daily"': ("table", [("d", "DATE")], None),
    }


def test_an_unreadable_source_is_a_plain_error(store: KPIStore, shop: Path) -> None:
    store.add_data_source("s", sqlite_url(shop), "setup")
    shop.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataSourceError, match="Could not list the tables"):
        store.source_schema("s", actor="ann")


def test_a_slow_schema_read_is_cut_short(
    store: KPIStore, shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    store.add_data_source("s", sqlite_url(shop), "setup")
    monkeypatch.setattr(schema_module, "_sqlite_schema", lambda connection: time.sleep(3))
    started = time.monotonic()
    with pytest.raises(DataSourceError, match="did not answer within 0.5 s"):
        schema_module.read_schema(store.source_engines.get(sqlite_url(shop)), timeout_s=0.5)
    assert time.monotonic() - started < 2


def test_editors_read_the_schema_of_their_sources_only(
    store_url: str, shop: Path, tmp_path: Path
) -> None:
    boss = "boss@example.com"
    settings = Settings.from_env().replace(url=store_url, auth="oidc", admins=boss)
    store = KPIStore(store_url, settings=settings)
    try:
        other = tmp_path / "other.db"
        other.write_bytes(shop.read_bytes())
        store.add_data_source("shop", sqlite_url(shop), boss)
        store.add_data_source("other", sqlite_url(other), boss)
        store.add_person("runner@example.com", boss, role=Role.RUNNER)
        store.add_person("scoped@example.com", boss, role=Role.EDITOR, data_sources=["other"])
        assert store.source_schema("other", actor="scoped@example.com")
        with pytest.raises(PermissionDeniedError, match="may not use the data source shop"):
            store.source_schema("shop", actor="scoped@example.com")
        with pytest.raises(PermissionDeniedError, match="editor role"):
            store.source_schema("shop", actor="runner@example.com")
    finally:
        store.close()


# -- the panel beside the SQL editor ----------------------------------------------------------


def test_the_panel_lists_tables_and_adds_a_name_to_the_sql(app_store: KPIStore, shop: Path):
    app_store.add_data_source("src", sqlite_url(shop), "setup")
    at = open_app("kpis")
    assert at.expander  # closed: nothing read yet
    assert not any(b.key == f"{NEW}_schema_add_table" for b in at.button)
    at.session_state[f"{NEW}_schema"] = True  # the person opens the panel
    at.run()
    no_exception(at)
    box = at.selectbox(key=f"{NEW}_schema_table")
    assert box.options == ["daily · view", '"Order Lines" · 0 rows', "sales · 5 rows"]
    box.set_value("sales").run()
    columns = next(d.value for d in at.dataframe if list(d.value.columns) == ["Column", "Type"])
    assert list(columns["Column"]) == ["id", "sold_on", "amount", "note", "Region Name"]
    assert list(columns["Type"])[:3] == ["INTEGER", "DATE", "NUMERIC(10,2)"]
    at.text_area(key=f"{NEW}_sql").input("SELECT SUM(amount) AS total FROM")
    at.button(key=f"{NEW}_schema_add_table").click().run()
    assert at.text_area(key=f"{NEW}_sql").value == "SELECT SUM(amount) AS total FROM sales"
    at.selectbox(key=f"{NEW}_schema_column").set_value("Region Name").run()
    at.button(key=f"{NEW}_schema_add_column").click().run()
    assert at.text_area(key=f"{NEW}_sql").value.endswith('FROM sales "Region Name"')
    assert any("cannot type at the cursor" in c for c in texts(at.caption))
    assert 'sales."Region Name"' in texts(at.code)


# -- uploads: the new table's columns, and replace ------------------------------------------------


def test_replace_drops_and_rewrites_the_table_in_one_transaction(store: KPIStore, shop: Path):
    store.add_data_source("s", sqlite_url(shop), "setup")
    with pytest.raises(ValidationError, match="already exists"):
        store.import_csv("s", "SALES", io.BytesIO(b"a\n1\n"), "ann")
    with pytest.raises(ValidationError, match="not a valid CSV"):  # a bad file: nothing changes
        store.import_csv("s", "sales", io.BytesIO(b"a,b\n1,2\n3,4,5\n"), "ann", replace=True)
    assert (
        next(t for t in store.source_schema("s", actor="ann") if t.name == "sales").row_count == 5
    )
    written = store.import_csv("s", "sales", io.BytesIO(b"region,total\nN,1.5\n"), "ann", True)
    assert written == 1
    sales = next(t for t in store.source_schema("s", actor="ann") if t.name == "sales")
    assert [(c.name, c.type) for c in sales.columns] == [("region", "TEXT"), ("total", "REAL")]
    entry = store.audit_log(action="DATA_UPLOAD", limit=1)[0]
    assert entry.details == {"table": "sales", "rows": 1, "replace": True}
    daily = next(t for t in store.source_schema("s", actor="ann") if t.name == "daily")
    assert daily.columns == ()  # the view no longer reads: listed, without columns
    with pytest.raises(ValidationError, match="is a view"):
        store.import_csv("s", "daily", io.BytesIO(b"a\n1\n"), "ann", replace=True)


def test_the_upload_page_offers_replace_and_shows_the_table(app_store: KPIStore, sales_db):
    app_store.add_data_source("sales", sqlite_url(sales_db), "setup")
    at = open_app("data_sources")
    at.file_uploader(key="up_file").upload("sales.csv", b"team,budget\nN,1.5\n", "text/csv").run()
    no_exception(at)
    assert any(
        "Table 'sales' already exists in 'sales' (7 rows" in shown(w) for w in texts(at.warning)
    )
    existing = next(d.value for d in at.dataframe if list(d.value.columns) == ["Column", "Type"])
    assert list(existing["Column"]) == ["day", "region", "amount"]
    at.checkbox(key="up_replace_sales_sales").check().run()
    assert at.button(key="up_go").label == "Replace and upload"
    at.button(key="up_go").click().run()
    no_exception(at)
    assert "Replaced table 'sales' of 'sales' with 1 rows." in texts(at.success)
    shown_tables = [d.value for d in at.dataframe if list(d.value.columns) == ["Column", "Type"]]
    assert list(shown_tables[-1]["Column"]) == ["team", "budget"]
    assert list(shown_tables[-1]["Type"]) == ["TEXT", "REAL"]
    entry = app_store.audit_log(action="DATA_UPLOAD")[0]
    assert entry.details == {"table": "sales", "rows": 1, "replace": True}


def test_a_new_upload_shows_its_columns_and_types(app_store: KPIStore, sales_db):
    app_store.add_data_source("sales", sqlite_url(sales_db), "setup")
    at = open_app("data_sources")
    content = b"team,quarter,budget\nNorth,2025-Q1,1200\n"
    at.file_uploader(key="up_file").upload("budget.csv", content, "text/csv").run()
    assert not at.warning
    at.button(key="up_go").click().run()
    no_exception(at)
    assert any("Table 'budget' in 'sales'" in shown(m) for m in texts(at.markdown))
    frame = next(d.value for d in at.dataframe if list(d.value.columns) == ["Column", "Type"])
    assert list(zip(frame["Column"], frame["Type"], strict=True)) == [
        ("team", "TEXT"),
        ("quarter", "TEXT"),
        ("budget", "INTEGER"),
    ]
    assert "budget" in texts(at.code)
