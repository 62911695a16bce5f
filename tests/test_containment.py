"""Data sources stay in their place: allowed folders only, never the store's own database,
only dialects with a tested read-only wall."""

from __future__ import annotations

import io
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpi_store import DataSourceError, ExecutionError, KPIStore, ValidationError
from kpi_store.config import Settings


def _sqlite_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        connection.execute("INSERT INTO t VALUES (7)")
    return path


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A store folder laid out as a fresh install: store.db and an empty sources/ folder."""
    (tmp_path / "app" / "sources").mkdir(parents=True)
    return tmp_path / "app"


@pytest.fixture()
def contained(home: Path) -> Iterator[KPIStore]:
    """A store with default settings (not the test session's environment)."""
    with KPIStore(settings=Settings(url=f"sqlite:///{home / 'store.db'}")) as store:
        yield store


def test_the_default_folder_is_sources_beside_the_store(contained: KPIStore, home: Path) -> None:
    inside = _sqlite_file(home / "sources" / "sales.db")
    added = contained.add_data_source("sales", f"sqlite:///{inside}", "ann")
    assert added.name == "sales"
    assert contained.demo_warehouse_path() == (home / "sources" / "demo_warehouse.db").resolve()


@pytest.mark.parametrize(
    "where",
    ["beside-the-store", "dot-dot", "absolute-elsewhere"],
)
def test_a_file_outside_the_folders_is_refused_naming_them(
    contained: KPIStore, home: Path, tmp_path: Path, where: str
) -> None:
    outside = _sqlite_file(tmp_path / "elsewhere" / "secret.db")
    _sqlite_file(home / "beside.db")
    url = {
        "beside-the-store": f"sqlite:///{home / 'beside.db'}",
        "dot-dot": f"sqlite:///{home / 'sources' / '..' / 'beside.db'}",
        "absolute-elsewhere": f"sqlite:///{outside}",
    }[where]

    with pytest.raises(ValidationError, match="inside the allowed folders") as refused:
        contained.add_data_source("sneaky", url, "mallory")

    assert str((home / "sources").resolve()) in str(refused.value)
    assert "KPI_SOURCE_DIRS" in str(refused.value)
    assert contained.data_sources() == []


def test_a_symlink_inside_the_folder_to_a_file_outside_is_refused(
    contained: KPIStore, home: Path, tmp_path: Path
) -> None:
    outside = _sqlite_file(tmp_path / "elsewhere" / "secret.db")
    link = home / "sources" / "innocent.db"
    link.symlink_to(outside)

    with pytest.raises(ValidationError, match="inside the allowed folders"):
        contained.add_data_source("innocent", f"sqlite:///{link}", "mallory")


@pytest.mark.parametrize("how", ["its-path", "a-symlink", "a-hard-link"])
def test_the_store_itself_is_never_a_data_source(home: Path, how: str, tmp_path: Path) -> None:
    settings = Settings(url=f"sqlite:///{home / 'store.db'}", source_dirs=str(home))
    with KPIStore(settings=settings) as store:
        target = home / "sources" / "copy.db"
        if how == "its-path":
            target = home / "store.db"
        elif how == "a-symlink":
            target.symlink_to(home / "store.db")
        else:
            os.link(home / "store.db", target)

        with pytest.raises(ValidationError, match="cannot be the KPI store's own database"):
            store.add_data_source("self", f"sqlite:///{target}", "mallory")
        assert store.data_sources() == []


def test_a_source_outside_the_folders_now_cannot_run_or_take_uploads(
    home: Path, tmp_path: Path
) -> None:
    outside = _sqlite_file(tmp_path / "old" / "legacy.db")
    url = f"sqlite:///{home / 'store.db'}"
    with KPIStore(settings=Settings(url=url, source_dirs=str(tmp_path))) as wide:
        wide.add_data_source("legacy", f"sqlite:///{outside}", "admin")
        kpi = wide.create_kpi(
            {"name": "Legacy count", "data_source": "legacy", "sql": "SELECT n FROM t"}, "ann"
        )
        assert wide.execute(kpi.id, actor="ann").value == 7

    with KPIStore(settings=Settings(url=url)) as narrow:  # the folders were narrowed since
        run = narrow.execute(kpi.id, actor="ann")
        assert run.status == "failed" and "inside the allowed folders" in (run.error or "")
        with pytest.raises(ValidationError, match="inside the allowed folders"):
            narrow.import_csv("legacy", "more", io.BytesIO(b"a\n1\n"), "ann")
        with pytest.raises(ValidationError, match="inside the allowed folders"):
            narrow.preview_query("legacy", "SELECT 1 AS one", actor="tester")
    with sqlite3.connect(outside) as connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master")]
    assert tables == ["t"]


@pytest.mark.parametrize(
    "url",
    ["mysql://user:pw@localhost/db", "mssql+pyodbc://u:p@dsn", "oracle://u:p@host/x"],
)
def test_a_dialect_without_a_read_only_wall_is_refused(contained: KPIStore, url: str) -> None:
    with pytest.raises(DataSourceError, match="not supported") as refused:
        contained.add_data_source("other", url, "admin")
    assert "pw" not in str(refused.value) and "read-only" in str(refused.value)


# -- the SQLite authorizer ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT fts3_tokenizer('simple') AS address", "fts3_tokenizer"),
        ("SELECT load_extension('/tmp/evil.so') AS loaded", "load_extension"),
        ("SELECT file AS path FROM pragma_database_list", "not authorized"),
        ("SELECT name FROM pragma_table_list", "not authorized"),
        ("SELECT sqlite_compileoption_get(0) AS option", "sqlite_compileoption_get"),
    ],
    ids=["fts3-tokenizer", "load-extension", "database-list", "table-list", "compile-options"],
)
def test_a_query_cannot_reveal_or_load_through_sqlite_functions_or_pragmas(
    store: KPIStore, source_db: Path, sql: str, refused: str
) -> None:
    kpi = store.create_kpi({"name": "Probe", "data_source": "shop", "sql": sql}, "mallory")

    run = store.execute(kpi.id, actor="mallory")

    assert run.status == "failed" and "not authorized" in (run.error or "")
    assert refused in (run.error or "")
    assert str(source_db.parent) not in (run.error or "")
    with pytest.raises(ExecutionError, match="not authorized"):
        store.preview_query("shop", sql, actor="tester")


def test_ordinary_sql_still_works_under_the_authorizer(store: KPIStore) -> None:
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3)\n"
        "SELECT s.region, round(sum(s.amount), 2) AS total,\n"
        "  row_number() OVER (ORDER BY sum(s.amount) DESC) AS position,\n"
        "  (SELECT count(*) FROM json_each('[1, 2, 3]')) AS three,\n"
        "  strftime('%Y', max(s.sold_on)) AS last_year, (SELECT max(n) FROM r) AS depth\n"
        "FROM sales AS s GROUP BY s.region ORDER BY s.region"
    )
    kpi = store.create_kpi(
        {"name": "Ordinary", "data_source": "shop", "sql": sql, "value_column": "total"}, "ann"
    )

    run = store.execute(kpi.id, actor="ann")

    assert run.status == "success", run.error
    assert run.row_count == 4 and run.value == pytest.approx(sum(10.0 + i for i in range(1, 49)))


# -- spreadsheet-safe CSV -----------------------------------------------------------------


def test_header_cells_are_neutralised_like_data_cells_for_spreadsheets(
    store: KPIStore, tmp_path: Path
) -> None:
    sql = 'SELECT \'=HYPERLINK("http://x")\' AS "=cmd|\' /C calc\'!A0", 1 AS "+plus"'
    kpi = store.create_kpi({"name": "Formulas", "data_source": "shop", "sql": sql}, "ann")
    run = store.execute(kpi.id, actor="ann")
    safe, exact = tmp_path / "safe.csv", tmp_path / "exact.csv"

    store.export_csv(run.id, safe, "ann", excel=True)
    store.export_csv(run.id, exact, "ann")

    header = safe.read_text(encoding="utf-8-sig").splitlines()[0]
    assert header == "'=cmd|' /C calc'!A0,'+plus"
    assert exact.read_text().splitlines()[0] == "=cmd|' /C calc'!A0,+plus"  # exact is exact
    page = store.page_csv(run.id, excel=True, actor="tester").decode("utf-8-sig").splitlines()
    assert page[0] == header and page[1].startswith("\"'=HYPERLINK")


# -- every export and preview is recorded ---------------------------------------------------


def test_every_export_and_preview_is_audited_with_its_actor(
    store: KPIStore, tmp_path: Path
) -> None:
    kpi = store.create_kpi(
        {"name": "Sales", "data_source": "shop", "sql": "SELECT id, amount FROM sales"}, "ann"
    )
    run = store.execute(kpi.id, actor="ann")

    store.page_csv(run.id, 2, 10, actor="page-reader")
    store.export_csv(run.id, tmp_path / "all.csv", "full-exporter")
    store.audit_csv(store.audit_log(limit=5), actor="auditor")
    store.preview_query("shop", "SELECT count(*) AS n FROM sales", actor="tester")

    exports = store.audit_log(action="EXPORT")
    assert [(e.actor, e.details.get("rows")) for e in reversed(exports)] == [
        ("page-reader", 10),
        ("full-exporter", 48),
        ("auditor", 5),
    ]
    assert exports[2].entity == f"execution:{run.id}" and exports[2].details["page"] == 2
    [preview] = store.audit_log(action="PREVIEW")
    assert preview.actor == "tester" and preview.details["data_source"] == "shop"
    assert "count(*)" in preview.details["sql"]


@pytest.mark.parametrize("nobody", ["", "   "])
def test_exports_and_previews_need_a_name(store: KPIStore, nobody: str) -> None:
    kpi = store.create_kpi(
        {"name": "Sales", "data_source": "shop", "sql": "SELECT id FROM sales"}, "ann"
    )
    run = store.execute(kpi.id, actor="ann")
    before = len(store.audit_log(limit=None))

    for attempt in (
        lambda: store.page_csv(run.id, actor=nobody),
        lambda: store.audit_csv([], actor=nobody),
        lambda: store.preview_query("shop", "SELECT 1 AS one", actor=nobody),
    ):
        with pytest.raises(ValidationError, match="Say who you are"):
            attempt()
    assert len(store.audit_log(limit=None)) == before
