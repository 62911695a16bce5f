"""DuckDB data sources: analysts' Parquet and CSV files behind a read-only wall.

The walls, each attacked on its own: the file must lie inside the allowed folders (never
the store); it is opened read-only; outside files are out of reach (external access off
except for the allowed folders, configuration locked); every statement must be a single
SELECT (by sqlglot at save, and by DuckDB's own parser on the connection); and a timeout
interrupts a running query.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from kpi_store import DataSourceError, ExecutionError, KPIStore, ValidationError, datasources
from kpi_store.config import Settings
from kpi_store.errors import UnsafeQueryError

AMOUNTS = {"north": 10.5, "south": 20.25, "east": 30.0, "west": 40.75}
TOTAL = sum(AMOUNTS.values())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _duckdb_file(path: Path) -> Path:
    """A DuckDB file with a ``sales`` table, written and closed (so it can be opened
    read-only by the store)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE sales (region VARCHAR, amount DOUBLE)")
        connection.executemany("INSERT INTO sales VALUES (?, ?)", list(AMOUNTS.items()))
    return path


@pytest.fixture()
def lake(tmp_path: Path) -> Path:
    """A folder of analysts' files, all written by DuckDB itself: ``sales.duckdb``,
    ``sales.parquet`` and ``sales.csv`` (in a sub-folder: files directly beside a SQLite
    store are never readable by a DuckDB query)."""
    folder = tmp_path / "lake"
    database = _duckdb_file(folder / "sales.duckdb")
    with duckdb.connect(str(database)) as connection:
        connection.execute(f"COPY sales TO '{folder / 'sales.parquet'}' (FORMAT parquet)")
        connection.execute(f"COPY sales TO '{folder / 'sales.csv'}' (HEADER)")
    return folder


@pytest.fixture()
def outside() -> Iterator[Path]:
    """A folder outside every allowed folder (the session allows pytest's base temp)."""
    with tempfile.TemporaryDirectory(prefix="kpi-duckdb-outside-") as name:
        folder = Path(name).resolve()
        (folder / "secret.csv").write_text("password\nhunter2\n")
        yield folder


@pytest.fixture()
def duck(store: KPIStore, lake: Path) -> Iterator[KPIStore]:
    """``store`` with the DuckDB source ``lake``; the DuckDB file's bytes are checked
    unchanged when the test ends, whatever it ran."""
    database = lake / "sales.duckdb"
    before = _sha256(database)
    store.add_data_source("lake", f"duckdb:///{database}", "admin")
    yield store
    store.source_engines.dispose()
    assert _sha256(database) == before, "the DuckDB file was written to"
    assert sorted(p.name for p in lake.iterdir()) == [
        "sales.csv",
        "sales.duckdb",
        "sales.parquet",
    ], "a file appeared in the folder"


def _run(store: KPIStore, sql: str, **fields: Any) -> Any:
    kpi = store.create_kpi(
        {"name": f"Probe {time.monotonic_ns()}", "data_source": "lake", "sql": sql, **fields},
        "analyst",
    )
    return store.execute(kpi.id, actor="analyst")


def _raw_engine(store: KPIStore) -> sa.engine.Engine:
    with store.engine.connect() as connection:
        return store.source_engines.get(datasources.connect_url(connection, "lake"))


# -- what works -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["sales", "read_parquet('{lake}/sales.parquet')", "read_csv('{lake}/sales.csv')"],
    ids=["table", "parquet", "csv"],
)
def test_a_kpi_reads_a_table_a_parquet_and_a_csv_file(
    duck: KPIStore, lake: Path, source: str
) -> None:
    sql = f"SELECT region, amount FROM {source.format(lake=lake)} ORDER BY region"

    run = _run(duck, sql, value_column="amount", aggregation="sum")

    assert run.status == "success", run.error
    assert run.row_count == 4 and run.value == pytest.approx(TOTAL)
    assert run.first_row_sample == {"region": "east", "amount": 30.0}
    columns, rows = duck.preview_query("lake", sql, actor="tester")
    assert [c.name for c in columns] == ["region", "amount"]
    assert rows == [[region, AMOUNTS[region]] for region in sorted(AMOUNTS)]


def test_parameters_bind_on_duckdb(duck: KPIStore) -> None:
    sql = "SELECT sum(amount) AS total FROM sales WHERE region = :region AND amount >= :least"
    parameters = [
        {"name": "region", "type": "str", "default": "south"},
        {"name": "least", "type": "float", "default": 1.0},
    ]

    run = _run(duck, sql, parameters=parameters)

    assert run.status == "success", run.error
    assert run.value == pytest.approx(AMOUNTS["south"])


def test_the_configuration_is_locked_with_external_access_off(duck: KPIStore) -> None:
    sql = (
        "SELECT current_setting('enable_external_access') AS external,"
        " current_setting('lock_configuration') AS locked,"
        " current_setting('autoload_known_extensions') AS autoload,"
        " current_setting('autoinstall_known_extensions') AS autoinstall, 1 AS n"
    )

    run = _run(duck, sql, value_column="n")

    assert run.status == "success", run.error
    assert run.first_row_sample == {
        "external": False,
        "locked": True,
        "autoload": False,
        "autoinstall": False,
        "n": 1,
    }


# -- registration ---------------------------------------------------------------------


@pytest.fixture()
def narrow(tmp_path: Path) -> Iterator[KPIStore]:
    """A store whose only allowed folder is ``tmp_path/app/sources``."""
    (tmp_path / "app" / "sources").mkdir(parents=True)
    settings = Settings(
        url=f"sqlite:///{tmp_path / 'app' / 'store.db'}",
        source_dirs=str(tmp_path / "app" / "sources"),
    )
    with KPIStore(settings=settings) as store:
        yield store


def test_a_duckdb_file_inside_the_folder_is_registered(narrow: KPIStore, tmp_path: Path) -> None:
    inside = _duckdb_file(tmp_path / "app" / "sources" / "ok.duckdb")

    added = narrow.add_data_source("ok", f"duckdb:///{inside}", "admin")

    assert added.name == "ok" and added.url == f"duckdb:///{inside}"


def test_a_duckdb_file_outside_the_folders_is_refused(narrow: KPIStore, tmp_path: Path) -> None:
    elsewhere = _duckdb_file(tmp_path / "elsewhere" / "secret.duckdb")

    with pytest.raises(ValidationError, match="inside the allowed folders"):
        narrow.add_data_source("sneaky", f"duckdb:///{elsewhere}", "mallory")
    assert narrow.data_sources() == []


def test_a_symlink_to_a_duckdb_file_outside_is_refused(narrow: KPIStore, tmp_path: Path) -> None:
    elsewhere = _duckdb_file(tmp_path / "elsewhere" / "secret.duckdb")
    link = tmp_path / "app" / "sources" / "innocent.duckdb"
    link.symlink_to(elsewhere)

    with pytest.raises(ValidationError, match="inside the allowed folders"):
        narrow.add_data_source("innocent", f"duckdb:///{link}", "mallory")


def test_the_store_itself_is_never_a_duckdb_source(tmp_path: Path) -> None:
    settings = Settings(url=f"sqlite:///{tmp_path / 'store.db'}", source_dirs=str(tmp_path))
    refused = pytest.raises(ValidationError, match="cannot be the KPI store's own database")
    with KPIStore(settings=settings) as store, refused:
        store.add_data_source("self", f"duckdb:///{tmp_path / 'store.db'}", "mallory")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("sqlite", "Cannot connect to data source"),
        ("text", "Cannot connect to data source"),
        ("missing", "Cannot connect to data source"),
        ("memory", "must be a database file"),
        ("options", "takes no options"),
    ],
)
def test_only_an_existing_duckdb_file_is_a_duckdb_source(
    narrow: KPIStore, tmp_path: Path, make: str, message: str
) -> None:
    folder = tmp_path / "app" / "sources"
    url = f"duckdb:///{folder / 'file.duckdb'}"
    if make == "sqlite":
        import sqlite3

        with sqlite3.connect(folder / "file.duckdb") as connection:
            connection.execute("CREATE TABLE t (n INTEGER)")
    elif make == "text":
        (folder / "file.duckdb").write_text("region,amount\nnorth,1\n")
    elif make == "memory":
        url = "duckdb:///:memory:"
    elif make == "options":
        _duckdb_file(folder / "file.duckdb")
        url += "?access_mode=read_write"

    with pytest.raises((DataSourceError, ValidationError), match=message):
        narrow.add_data_source("odd", url, "admin")
    assert narrow.data_sources() == []
    assert not (folder / "file.duckdb.wal").exists()


# -- reading outside the folders --------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd', header = false)",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM '{outside}/secret.csv'",
        "SELECT * FROM read_csv('{outside}/secret.csv')",
        "SELECT * FROM read_csv('{lake}/../../../../../../../../etc/passwd')",
        "SELECT * FROM read_text('{lake}/link/passwd')",
        "SELECT * FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_json('https://example.com/data.json')",
    ],
    ids=[
        "read_csv",
        "read_csv_auto",
        "read_text",
        "read_blob",
        "glob",
        "sniff_csv",
        "bare-path",
        "outside-folder",
        "dot-dot",
        "symlinked-dir",
        "environ",
        "http",
    ],
)
def test_files_outside_the_folders_are_out_of_reach(
    duck: KPIStore, lake: Path, outside: Path, sql: str
) -> None:
    (lake / "link").symlink_to("/etc")
    try:
        sql = sql.format(lake=lake, outside=outside)

        run = _run(duck, sql)

        assert run.status == "failed"
        error = run.error or ""
        assert "disabled by configuration" in error or "Permission" in error, error
        for leaked in ("root:", "hunter2", "PATH="):
            assert leaked not in error
        with pytest.raises(ExecutionError, match="disabled by configuration|Permission"):
            duck.preview_query("lake", sql, actor="tester")
    finally:
        (lake / "link").unlink()


def test_sqlite_the_store_beside_an_allowed_folder_is_out_of_reach(
    duck: KPIStore, lake: Path, tmp_path: Path
) -> None:
    """The session allows pytest's whole temp folder, which holds the SQLite store: the
    files beside the store stay unreadable, the folders below it readable."""
    for sql in (
        f"SELECT * FROM read_blob('{tmp_path / 'store.db'}')",
        f"SELECT * FROM glob('{tmp_path}/*')",
    ):
        run = _run(duck, sql)
        assert run.status == "failed" and "disabled by configuration" in (run.error or "")
    run = _run(duck, f"SELECT count(*) AS n FROM glob('{lake}/*')")
    assert run.status == "success" and run.value == 3


def test_extensions_cannot_be_loaded_or_installed(duck: KPIStore) -> None:
    # httpfs would be auto-installed and loaded for an s3:// path; both are off.
    run = _run(duck, "SELECT * FROM read_parquet('s3://bucket/data.parquet')")

    assert run.status == "failed"
    assert "disabled" in (run.error or "") or "not loaded" in (run.error or ""), run.error


# -- statements other than one SELECT ----------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS one; SET enable_external_access = true",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "RESET lock_configuration",
        "COPY sales TO '{lake}/copy.csv'",
        "COPY (SELECT 1) TO '{lake}/copy.parquet' (FORMAT parquet)",
        "EXPORT DATABASE '{lake}/export'",
        "ATTACH '{lake}/new.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "CREATE TEMP TABLE t AS SELECT 1",
        "INSERT INTO sales VALUES ('x', 1)",
        "CHECKPOINT",
    ],
)
def test_anything_but_one_select_is_refused_at_save(duck: KPIStore, lake: Path, sql: str) -> None:
    spec = {"name": "Smuggler", "data_source": "lake", "sql": sql.format(lake=lake)}

    with pytest.raises(UnsafeQueryError):
        duck.create_kpi(spec, "mallory")
    with pytest.raises(UnsafeQueryError):
        duck.preview_query("lake", sql.format(lake=lake), actor="tester")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS one; SET enable_external_access = true",
        "SELECT 1 AS one; COPY sales TO '{lake}/copy.csv'",
        "COPY sales TO '{lake}/copy.csv'",
        "EXPORT DATABASE '{lake}/export'",
        "ATTACH '{lake}/new.duckdb' AS other",
        "LOAD json",
        "CREATE TEMP TABLE t AS SELECT 1",
        "SET lock_configuration = false",
    ],
)
def test_the_connection_runs_only_single_selects(duck: KPIStore, lake: Path, sql: str) -> None:
    """Past validation (a parser difference, a bug): DuckDB's own parser stops it, and
    query(), which runs SQL from a string, takes only a SELECT."""
    sql = sql.format(lake=lake)
    engine = _raw_engine(duck)
    with engine.connect() as connection:
        with pytest.raises(UnsafeQueryError, match="Only one read-only query"):
            connection.exec_driver_sql(sql)
        quoted = sql.replace("'", "''")
        with pytest.raises(sa.exc.DBAPIError, match="Expected a single SELECT"):
            connection.exec_driver_sql(f"SELECT * FROM query('{quoted}')")


@pytest.mark.parametrize(
    "statement",
    [
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "SET allowed_paths = ['/etc/passwd']",
        "RESET allowed_directories",
        "SET GLOBAL lock_configuration = false",
        "SET autoload_known_extensions = true",
    ],
)
def test_the_configuration_lock_holds_on_the_driver_itself(duck: KPIStore, statement: str) -> None:
    """Under the statement wall, the lock: even the driver connection cannot loosen it."""
    engine = _raw_engine(duck)
    raw = engine.raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    try:
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            driver.execute(statement)
        with pytest.raises(duckdb.Error, match="read-only mode"):
            driver.execute("INSERT INTO sales VALUES ('x', 1)")
    finally:
        raw.close()


# -- time limits ------------------------------------------------------------------------

LONG_QUERY = "SELECT count(*) AS n FROM range(100000000000000) AS a(x) WHERE x % 7 = 3"


def test_a_timeout_stops_a_long_duckdb_query(duck: KPIStore) -> None:
    started = time.monotonic()

    run = _run(duck, LONG_QUERY, timeout_s=1)

    elapsed = time.monotonic() - started
    assert run.status == "timeout", run.error
    assert elapsed < 3.0, f"stopped after {elapsed:.1f} s"


def test_a_preview_timeout_stops_a_long_duckdb_query(duck: KPIStore) -> None:
    started = time.monotonic()

    with pytest.raises(ExecutionError, match="preview limit"):
        duck.preview_query("lake", LONG_QUERY, timeout_s=1, actor="tester")

    assert time.monotonic() - started < 3.0
    assert duck.preview_query("lake", "SELECT 42 AS answer", actor="tester")[1] == [[42]]


def test_a_run_that_slipped_past_validation_fails_cleanly(
    duck: KPIStore, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If sqlglot were fooled, the run still stops at the connection, with a clear error."""
    import sqlglot

    from kpi_store import definitions

    monkeypatch.setattr(
        definitions, "check_read_only_sql", lambda *_args: sqlglot.parse_one("SELECT 1")
    )
    sql = f"SELECT 1 AS one; COPY sales TO '{lake}/stolen.csv'"

    run = _run(duck, sql)

    assert run.status == "failed"
    assert "Only one read-only query (SELECT) may run on a DuckDB source" in (run.error or "")
    with pytest.raises(UnsafeQueryError, match="Only one read-only query"):
        duck.preview_query("lake", sql, actor="tester")


def test_environment_variables_are_out_of_reach(duck: KPIStore) -> None:
    run = _run(duck, "SELECT getenv('HOME') AS home")

    assert run.status == "failed" and "getenv does not exist" in (run.error or "")


def test_the_key_file_and_checkpoints_are_out_of_reach_even_inside_an_allowed_folder(
    duck: KPIStore,
) -> None:
    """In tests the key file sits at the top of the allowed temp folder (KPI_SECRET_KEY_FILE)."""
    key_file = Path(os.environ["KPI_SECRET_KEY_FILE"])
    assert key_file.exists() and any(
        key_file.is_relative_to(f) for f in duck.source_folders.folders
    )
    duck.checkpoints.write_if_due()
    for secret in (key_file, duck.checkpoints.path):
        run = _run(duck, f"SELECT * FROM read_blob('{secret}')")
        assert run.status == "failed" and "disabled by configuration" in (run.error or "")
        assert key_file.read_text().strip() not in (run.error or "")
    with pytest.raises(ValidationError, match="own database or one of its key files"):
        duck.add_data_source("key", f"sqlite:///{key_file}", "mallory")
