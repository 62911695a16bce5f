"""The run diff checked against a diff computed directly in SQL on the source, at 1,000
rows (both store databases) and at 1,000,000 rows (SQLite store), with a duplicate key
refused at both sizes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kpi_store import DuplicateKeyError, KPIStore
from kpi_store.config import Settings

ACTOR = "tester"

# Version 2 of the rows: every 500th id deleted, every 333rd amount and every 777th region
# changed, and one new id per thousand after the last.
BUILD = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
INSERT INTO t (v, id, region, amount)
SELECT 1, i, 'r' || (i % 7), i * 0.25 FROM n
UNION ALL
SELECT 2, i,
       CASE WHEN i % 777 = 0 THEN 'moved' ELSE 'r' || (i % 7) END,
       CASE WHEN i % 333 = 0 THEN i * 0.25 + 1 ELSE i * 0.25 END
FROM n WHERE i % 500 != 0
UNION ALL
SELECT 2, :rows + i, 'new', 1.0 FROM n WHERE i <= :rows / 1000
"""

EXPECTED = """
SELECT
  (SELECT COUNT(*) FROM a WHERE id NOT IN (SELECT id FROM b)),
  (SELECT COUNT(*) FROM b WHERE id NOT IN (SELECT id FROM a)),
  (SELECT COUNT(*) FROM a JOIN b USING (id)
    WHERE a.region IS NOT b.region OR a.amount IS NOT b.amount),
  (SELECT COUNT(*) FROM a JOIN b USING (id)
    WHERE a.region IS b.region AND a.amount IS b.amount),
  (SELECT COUNT(*) FROM a JOIN b USING (id) WHERE a.region IS b.region),
  (SELECT COUNT(*) FROM a JOIN b USING (id) WHERE a.amount IS b.amount)
"""


def build_source(path: Path, rows: int) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE t (v INTEGER, id INTEGER, region TEXT, amount REAL)")
        connection.execute(BUILD, {"rows": rows})
        connection.execute("CREATE INDEX t_v ON t (v, id)")
        connection.execute("CREATE VIEW a AS SELECT id, region, amount FROM t WHERE v = 1")
        connection.execute("CREATE VIEW b AS SELECT id, region, amount FROM t WHERE v = 2")
    connection.close()


def in_sql(path: Path) -> tuple[int, ...]:
    with sqlite3.connect(path) as connection:
        return tuple(connection.execute(EXPECTED).fetchone())


def diff_against_sql(store: KPIStore, path: Path) -> None:
    store.add_data_source("big", f"sqlite:///{path}", ACTOR)
    kpi = store.create_kpi(
        {
            "name": "Rows",
            "data_source": "big",
            "sql": "SELECT id, region, amount FROM t WHERE v = :v ORDER BY id",
            "parameters": [{"name": "v", "type": "int", "default": 1}],
            "value_column": "amount",
            "aggregation": "sum",
            "timeout_s": 600,
        },
        ACTOR,
    )
    a, b = (store.execute(kpi.id, {"v": v}, ACTOR) for v in (1, 2))
    assert a.status == b.status == "success", (a.error, b.error)
    only_a, only_b, changed, unchanged, region_same, amount_same = in_sql(path)

    diff = store.diff_runs(a.id, b.id, ["id"], actor=ACTOR)

    assert (diff.only_in_a, diff.only_in_b, diff.changed, diff.unchanged) == (
        only_a,
        only_b,
        changed,
        unchanged,
    )
    assert changed > 0 and only_a > 0 and only_b > 0
    matched = {c.column: c.matched for c in diff.columns}
    assert matched == {"id": changed + unchanged, "region": region_same, "amount": amount_same}


def add_duplicate_and_refuse(store: KPIStore, path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO t VALUES (3, 42, 'twin', 1.0), (3, 42, 'twin', 2.0)")
    kpi = store.list_kpis()[0]
    twin = store.execute(kpi.id, {"v": 3}, ACTOR)
    first = store.executions(kpi_id=kpi.id, limit=None)[-1]
    with pytest.raises(DuplicateKeyError, match="42"):
        store.diff_runs(first.id, twin.id, ["id"], actor=ACTOR)


def test_a_thousand_rows_match_the_diff_computed_in_sql(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "thousand.db"
    build_source(path, 1_000)
    store = KPIStore(store_url)
    try:
        diff_against_sql(store, path)
        add_duplicate_and_refuse(store, path)
    finally:
        store.close()


def test_sqlite_a_million_rows_match_the_diff_computed_in_sql(tmp_path: Path) -> None:
    path = tmp_path / "million.db"
    build_source(path, 1_000_000)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = KPIStore(url, settings=Settings.from_env().replace(row_cap=1_100_000))
    try:
        diff_against_sql(store, path)
        add_duplicate_and_refuse(store, path)
    finally:
        store.close()
