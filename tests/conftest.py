"""Shared fixtures: a real SQLite source database and a fresh KPIStore per test."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import KPIStore

REGIONS = ("north", "south", "east", "west")


@pytest.fixture()
def source_db(tmp_path: Path) -> Path:
    """A SQLite file with a small, deterministic ``sales`` table (48 rows)."""
    path = tmp_path / "source.db"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, sold_on TEXT, region TEXT, amount REAL)"
        )
        start = dt.date(2024, 1, 1)
        connection.executemany(
            "INSERT INTO sales (id, sold_on, region, amount) VALUES (?, ?, ?, ?)",
            [
                (i, (start + dt.timedelta(days=7 * i)).isoformat(), REGIONS[i % 4], 10.0 + i)
                for i in range(1, 49)
            ],
        )
    connection.close()
    return path


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    """The store database URL; parametrise this fixture to run against another server."""
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture()
def store(store_url: str, source_db: Path) -> Iterator[KPIStore]:
    kpi_store = KPIStore(store_url)
    kpi_store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
    try:
        yield kpi_store
    finally:
        kpi_store.close()


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A valid KPI definition with a date and a region-choice parameter."""
    spec: dict[str, Any] = {
        "name": "Revenue",
        "description": "Total sales amount",
        "nl_definition": "The sum of all sale amounts since the start date in one region.",
        "data_source": "shop",
        "sql": "SELECT SUM(amount) AS revenue FROM sales\n"
        "WHERE sold_on >= :start AND region = :region",
        "parameters": [
            {"name": "start", "type": "date", "default": "2024-01-01", "label": "From"},
            {
                "name": "region",
                "type": "str",
                "default": "north",
                "choices": list(REGIONS),
                "label": "Region",
            },
        ],
        "value_column": "revenue",
        "aggregation": "sum",
        "unit": "EUR",
        "target": 1000.0,
        "owner": "finance",
        "tags": ["finance", "sales"],
    }
    spec.update(overrides)
    return spec


@pytest.fixture()
def kpi_spec() -> Callable[..., dict[str, Any]]:
    """``kpi_spec(**overrides)`` builds a fresh valid spec dict."""
    return make_spec


COUNTED_TABLES = ("kpi_definitions", "kpi_definition_history", "kpi_audit_log", "data_sources")


@pytest.fixture()
def table_counts(store: KPIStore) -> Callable[[], dict[str, int]]:
    """``table_counts()`` returns the row count of each store table, read portably."""

    def counts() -> dict[str, int]:
        with store.engine.connect() as connection:
            return {
                name: connection.execute(
                    sa.select(sa.func.count()).select_from(sa.table(name))
                ).scalar_one()
                for name in COUNTED_TABLES
            }

    return counts
