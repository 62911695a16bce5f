"""Shared fixtures: a real SQLite source database and a fresh KPIStore per test.

Every test that uses ``store`` or ``store_url`` runs twice: on a SQLite store file
(``[sqlite]``) and on an empty PostgreSQL database of its own (``[postgresql]``, marked
``postgres``, so ``-m "not postgres"`` leaves it out). The PostgreSQL server comes from
``KPI_TEST_POSTGRES_URL``; without it the PostgreSQL half is skipped, unless
``KPI_TEST_REQUIRE_POSTGRES=1``, which turns that into a failure (see ``pg_helpers``).

A test that is about SQLite itself (it opens the store file with ``sqlite3``, say) runs
only on SQLite: mark it ``@pytest.mark.sqlite_only``, or name it ``test_sqlite_...``.

Helper modules with fixtures are loaded as plugins (``pytest_plugins`` below), so their
fixtures are defined once for the session: ``pg_helpers`` (the PostgreSQL server and its
throw-away databases) and ``ui_helpers`` (the AppTest fixtures). Test modules import the
plain helper functions they use by name.

At the end of a run, skipped tests are summarised one line per reason, with a count.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import KPIStore

pytest_plugins = ["pg_helpers", "ui_helpers"]

REGIONS = ("north", "south", "east", "west")
STORE_KINDS = ("sqlite", "postgresql")
SQLITE_ONLY_PREFIX = "test_sqlite_"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: run only on the SQLite store (the test uses SQLite itself)"
    )
    config.addinivalue_line("markers", "postgres: tests against a real PostgreSQL server")
    config.addinivalue_line("markers", "browser: end-to-end tests in headless Chromium")


def is_sqlite_only(definition: pytest.Function | Any) -> bool:
    return definition.get_closest_marker("sqlite_only") is not None or definition.name.startswith(
        SQLITE_ONLY_PREFIX
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a store on each kind of store database."""
    if "store_url" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "store_url" in names:
            return  # the test chose its stores itself
    kinds = ["sqlite"] if is_sqlite_only(metafunc.definition) else list(STORE_KINDS)
    metafunc.parametrize(
        "store_url",
        [
            pytest.param(kind, marks=[pytest.mark.postgres] if kind == "postgresql" else [])
            for kind in kinds
        ],
        indirect=True,
        ids=kinds,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever asks for the PostgreSQL server directly is a ``postgres`` test too."""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Skipped tests, one line per reason with a count (pytest alone prints one per test).

    ``addopts`` in pyproject.toml leaves ``s`` out of ``-r``, so this is the only list.
    """
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not skipped:
        return
    by_reason: dict[str, list[pytest.TestReport]] = {}
    for report in skipped:
        by_reason.setdefault(_skip_reason(report), []).append(report)
    terminalreporter.section("skipped, by reason", sep="-")
    for reason, reports in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        files = sorted({r.nodeid.split("::", 1)[0] for r in reports})
        where = files[0] if len(files) == 1 else f"{len(files)} files"
        noun = "test" if len(reports) == 1 else "tests"
        terminalreporter.write_line(f"SKIPPED {len(reports)} {noun} ({where}): {reason}")


@pytest.fixture(scope="session", autouse=True)
def _test_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Data-source files may live anywhere under this session's temporary folders (the
    default, a ``sources/`` folder beside the store, is tested on its own), and stores
    without a folder of their own (PostgreSQL) keep their key file there, not in ./data.
    Set in the environment, so subprocesses (CLI, workers, servers) inherit it."""
    base = tmp_path_factory.getbasetemp()
    patch = pytest.MonkeyPatch()
    patch.setenv("KPI_SOURCE_DIRS", str(base))
    patch.setenv("KPI_SECRET_KEY_FILE", str(base / "kpi_secret.key"))
    yield
    patch.undo()


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
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store database URL: a SQLite file in ``tmp_path``, or a fresh PostgreSQL database.

    Parametrised by ``pytest_generate_tests`` above (``[sqlite]`` / ``[postgresql]``).
    """
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    server = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


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
