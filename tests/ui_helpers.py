"""Fixtures and helpers shared by the AppTest UI tests (``tests/test_ui_*.py``).

Each test gets a real store in its own temporary folder (``KPI_STORE_URL``) and no
embedded worker (``KPI_EMBEDDED_WORKER=0``). The demo store is built once per session
and copied, so a test with eight KPIs and a 40,000-order warehouse starts in
milliseconds. This module is loaded as a plugin (``pytest_plugins`` in ``conftest.py``), so
its fixtures are there in every test module; import the helper functions by name
(``from ui_helpers import open_app, texts``). The fixture names
differ from ``conftest.py``'s (``store``, ``store_url``, ``source_db``), whose stores
are parametrised over SQLite and PostgreSQL; the app tests run on SQLite files.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from kpi_store import KPIStore  # noqa: E402

DASHBOARD = str(ROOT / "dashboard.py")
ACTOR = "Tess Tester"  # the name typed in the demo mode's sidebar box
RECORDED = "Tess Tester (unverified)"  # how the store records it: not a verified identity
TIMEOUT_S = 60


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the demo installed, built once; tests get copies of ``store.db``."""
    folder = tmp_path_factory.mktemp("demo-template")
    store = KPIStore(sqlite_url(folder / "store.db"))
    store.install_demo(actor="demo")
    store.close()
    return folder


def _clean_caches() -> None:
    import kpi_ui

    kpi_ui._worker_for.clear()
    kpi_ui._store_for.clear()
    kpi_ui.app._OPEN_STORES.clear()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture()
def app_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty store in a temporary folder, wired to the app through the environment."""
    url = sqlite_url(tmp_path / "store.db")
    monkeypatch.setenv("KPI_STORE_URL", url)
    monkeypatch.setenv("KPI_EMBEDDED_WORKER", "0")
    monkeypatch.chdir(ROOT)
    _clean_caches()
    yield url
    _clean_caches()


@pytest.fixture()
def app_store(app_url: str) -> Iterator[KPIStore]:
    """The test's own handle on the app's empty store (setup and assertions)."""
    handle = KPIStore(app_url)
    yield handle
    handle.close()


@pytest.fixture()
def demo_store(
    demo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KPIStore]:
    """A copy of the demo store (8 KPIs, data source ``demo``), wired to the app."""
    shutil.copy(demo_template / "store.db", tmp_path / "store.db")
    url = sqlite_url(tmp_path / "store.db")
    monkeypatch.setenv("KPI_STORE_URL", url)
    monkeypatch.setenv("KPI_EMBEDDED_WORKER", "0")
    monkeypatch.chdir(ROOT)
    _clean_caches()
    handle = KPIStore(url)
    yield handle
    handle.close()
    _clean_caches()


@pytest.fixture()
def sales_db(tmp_path: Path) -> Path:
    """A small SQLite data file with a ``sales`` table (7 rows, amounts 10..70)."""
    path = tmp_path / "source.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE sales (day TEXT, region TEXT, amount REAL)")
    connection.executemany(
        "INSERT INTO sales VALUES (?, ?, ?)",
        [(f"2025-01-0{i}", "North" if i % 2 else "South", i * 10.0) for i in range(1, 8)],
    )
    connection.commit()
    connection.close()
    return path


def open_app(
    page: str | None = None,
    actor: str | None = ACTOR,
    query: dict[str, Any] | None = None,
) -> AppTest:
    """Run the dashboard (as a signed-in user unless ``actor`` is None), then ``page``."""
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    if actor:
        at.session_state["actor"] = actor
    for name, value in (query or {}).items():
        at.query_params[name] = str(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def all_text(at: AppTest) -> str:
    """Every message, heading, caption and markdown on the page, one per line."""
    parts: list[str] = []
    for kind in (
        "title",
        "header",
        "subheader",
        "markdown",
        "caption",
        "info",
        "success",
        "warning",
        "error",
        "text",
    ):
        parts += texts(getattr(at, kind))
    return "\n".join(parts)


_ESCAPED = re.compile(r"\\([\\`*\[\]<>$~|#{}&!_\-+=.)])")


def shown(markdown: str) -> str:
    """What a person reads where the pages put user text through ``kpi_ui.md``."""
    return _ESCAPED.sub(r"\1", markdown.replace("\u2060", "").replace("&#58;", ":"))


def metrics(at: AppTest) -> dict[str, str]:
    """Each metric's value as shown, by label."""
    return {shown(m.label): shown(str(m.value)) for m in at.metric}


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def clean_kpi_spec(data_source: str = "src", **changes: Any) -> dict[str, Any]:
    """A valid KPI over :func:`sales_db`'s ``sales`` table (sum of amounts since a date)."""
    spec: dict[str, Any] = {
        "name": "Sales since",
        "data_source": data_source,
        "sql": "SELECT day, region, amount FROM sales WHERE day >= :since ORDER BY day",
        "parameters": [{"name": "since", "type": "date", "default": "2025-01-01"}],
        "value_column": "amount",
        "aggregation": "sum",
        "unit": "$",
        "target": 250.0,
        "owner": "Finance",
        "tags": ["sales"],
    }
    spec.update(changes)
    return spec
