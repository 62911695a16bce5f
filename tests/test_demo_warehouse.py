"""Tests of the demo warehouse generator and the sample KPIs, on real SQLite files."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from kpi_store.demo import DEMO_KPIS, build_demo_warehouse

TABLES = {
    "regions": "region_id",
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_lines": "line_id",
}
PARAM_TYPES = {"str", "int", "float", "date", "bool"}
AGGREGATIONS = {"sum", "avg", "count", "min", "max", "first"}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "warehouse.db"
    build_demo_warehouse(path)
    return path


@pytest.fixture()
def conn(warehouse: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"file:{warehouse}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def table_digests(path: Path) -> dict[str, str]:
    connection = sqlite3.connect(path)
    try:
        digests = {}
        for table, key in TABLES.items():
            digest = hashlib.sha256()
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                digest.update(repr(row).encode())
            digests[table] = digest.hexdigest()
        return digests
    finally:
        connection.close()


def defaults(kpi: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["default"] for p in kpi.get("parameters", [])}


def run_kpi(conn: sqlite3.Connection, kpi: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(kpi["sql"], defaults(kpi))
    rows = cursor.fetchall()
    return [d[0] for d in cursor.description], rows


def headline(kpi: dict[str, Any], columns: list[str], rows: list[tuple]) -> float:
    values = [row[columns.index(kpi["value_column"])] for row in rows]
    values = [v for v in values if v is not None]
    combine = {
        "sum": sum,
        "avg": lambda v: sum(v) / len(v),
        "count": len,
        "min": min,
        "max": max,
        "first": lambda v: v[0],
    }[kpi["aggregation"]]
    return float(combine(values))


def status(kpi: dict[str, Any], value: float) -> str:
    """green on the right side of target, amber within tolerance_pct, else red."""
    target = kpi["target"]
    slack = abs(target) * kpi["tolerance_pct"] / 100
    if kpi["direction"] == "higher_is_better":
        return "green" if value >= target else "amber" if value >= target - slack else "red"
    return "green" if value <= target else "amber" if value <= target + slack else "red"


def placeholders(sql: str) -> set[str]:
    return {
        node.name
        for statement in sqlglot.parse(sql, read="sqlite")
        if statement is not None
        for node in statement.find_all(exp.Placeholder)
    }


# ------------------------------------------------------------------------ warehouse


def test_build_is_deterministic(tmp_path: Path, warehouse: Path) -> None:
    again = tmp_path / "again.db"
    build_demo_warehouse(again)
    assert table_digests(again) == table_digests(warehouse)


def test_rebuild_replaces_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "demo.db"
    path.parent.mkdir()
    path.write_bytes(b"not a database")
    (tmp_path / "nested" / "demo.db.tmp").write_bytes(b"stale leftover")

    build_demo_warehouse(str(path))

    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.db"]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_row_counts(conn: sqlite3.Connection) -> None:
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    assert 4 <= counts["regions"] <= 5
    assert 4_500 <= counts["customers"] <= 5_500
    assert 180 <= counts["products"] <= 220
    assert 36_000 <= counts["orders"] <= 44_000
    assert 95_000 <= counts["order_lines"] <= 110_000


def test_values_are_consistent(conn: sqlite3.Connection) -> None:
    def scalar(sql: str) -> Any:
        return conn.execute(sql).fetchone()[0]

    assert scalar("SELECT MIN(order_date) FROM orders") >= "2024-01-01"
    assert scalar("SELECT MAX(order_date) FROM orders") <= "2025-12-31"
    assert scalar("SELECT MIN(signup_date) FROM customers") >= "2024-01-01"
    assert scalar("SELECT MAX(signup_date) FROM customers") <= "2025-12-31"
    assert scalar("SELECT COUNT(DISTINCT segment) FROM customers") == 3
    assert scalar("SELECT COUNT(DISTINCT category) FROM products") >= 4
    assert scalar("SELECT COUNT(DISTINCT status) FROM orders") == 3
    assert scalar("SELECT COUNT(DISTINCT channel) FROM orders") == 2
    ordered_before_signup = """
        SELECT COUNT(*) FROM orders o JOIN customers c USING (customer_id)
        WHERE o.order_date < c.signup_date"""
    assert scalar(ordered_before_signup) == 0
    lines = conn.execute(
        "SELECT quantity, unit_price, discount, line_amount FROM order_lines"
    ).fetchall()
    assert all(round(q * p * (1 - d), 2) == amount for q, p, d, amount in lines)
    orphans = """
        SELECT COUNT(*) FROM order_lines ol
        LEFT JOIN orders o USING (order_id) LEFT JOIN products p USING (product_id)
        WHERE o.order_id IS NULL OR p.product_id IS NULL"""
    assert scalar(orphans) == 0
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_has_awkward_text_for_csv_export(conn: sqlite3.Connection) -> None:
    names = [row[0] for row in conn.execute("SELECT name FROM customers")]
    assert "O'Brien, Ltd." in names
    assert 'Zoë "Z" Müller' in names
    assert any("," in n and '"' in n for n in names)
    assert any(not n.isascii() for n in names)
    products = [row[0] for row in conn.execute("SELECT name FROM products")]
    assert any("," in n for n in products) and any('"' in n for n in products)
    assert any(not n.isascii() for n in products)


def test_foreign_keys_and_dates_are_indexed(conn: sqlite3.Connection) -> None:
    indexed = {
        (table, row[2])
        for table in TABLES
        for index in conn.execute(f"PRAGMA index_list({table})").fetchall()
        for row in conn.execute(f"PRAGMA index_info({index[1]})").fetchall()
    }
    for column in [
        ("customers", "region_id"),
        ("customers", "signup_date"),
        ("orders", "customer_id"),
        ("orders", "order_date"),
        ("order_lines", "order_id"),
        ("order_lines", "product_id"),
    ]:
        assert column in indexed


# ----------------------------------------------------------------------------- KPIs


def test_kpi_specs_are_well_formed() -> None:
    assert 6 <= len(DEMO_KPIS) <= 8
    assert len({k["name"] for k in DEMO_KPIS}) == len(DEMO_KPIS)
    for kpi in DEMO_KPIS:
        assert kpi["data_source"] == "demo"
        assert kpi["aggregation"] in AGGREGATIONS
        assert kpi["direction"] in {"higher_is_better", "lower_is_better"}
        assert isinstance(kpi["target"], float)
        assert kpi["tags"] and all(isinstance(t, str) for t in kpi["tags"])
        for param in kpi["parameters"]:
            assert param["type"] in PARAM_TYPES
            assert param.get("label")
            if "choices" in param:
                assert param["default"] in param["choices"]


@pytest.mark.parametrize("kpi", DEMO_KPIS, ids=lambda k: k["name"])
def test_kpi_sql_is_one_query_with_declared_placeholders(kpi: dict[str, Any]) -> None:
    sql = kpi["sql"]
    assert not sql.rstrip().endswith(";")
    assert "--" not in sql and "/*" not in sql
    statements = sqlglot.parse(sql, read="sqlite")
    assert len(statements) == 1
    assert isinstance(statements[0], exp.Query)
    declared = [p["name"] for p in kpi["parameters"]]
    assert len(declared) == len(set(declared))
    assert placeholders(sql) == set(declared)


@pytest.mark.parametrize("kpi", DEMO_KPIS, ids=lambda k: k["name"])
def test_kpi_runs_with_defaults(conn: sqlite3.Connection, kpi: dict[str, Any]) -> None:
    columns, rows = run_kpi(conn, kpi)
    assert rows
    assert kpi["value_column"] in columns
    assert headline(kpi, columns, rows) > 0


def test_kpi_region_parameter_filters(conn: sqlite3.Connection) -> None:
    revenue = next(k for k in DEMO_KPIS if k["name"] == "Revenue")
    params = defaults(revenue)
    total = conn.execute(revenue["sql"], params).fetchone()[0]
    region_param = next(p for p in revenue["parameters"] if p["name"] == "region")
    by_region = [
        conn.execute(revenue["sql"], {**params, "region": region}).fetchone()[0]
        for region in region_param["choices"]
        if region != "All"
    ]
    assert all(value > 0 for value in by_region)
    assert sum(by_region) == pytest.approx(total)


def test_kpis_cover_single_row_and_drill_down(conn: sqlite3.Connection) -> None:
    sizes = {kpi["name"]: len(run_kpi(conn, kpi)[1]) for kpi in DEMO_KPIS}
    assert 1 in sizes.values()
    assert max(sizes.values()) > 10_000
    drill_down = max(DEMO_KPIS, key=lambda k: sizes[k["name"]])
    assert drill_down["aggregation"] == "sum"
    columns, rows = run_kpi(conn, drill_down)
    assert all(isinstance(r[columns.index(drill_down["value_column"])], float) for r in rows)
    customers = {r[columns.index("customer")] for r in rows}
    assert "O'Brien, Ltd." in customers and 'Zoë "Z" Müller' in customers


def test_targets_give_a_mix_of_statuses(conn: sqlite3.Connection) -> None:
    statuses = [status(k, headline(k, *run_kpi(conn, k))) for k in DEMO_KPIS]
    assert statuses.count("amber") == 1
    assert statuses.count("red") == 1
    assert statuses.count("green") == len(DEMO_KPIS) - 2
