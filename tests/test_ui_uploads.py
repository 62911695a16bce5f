"""``kpi_store.uploads.import_csv``: CSV files into new tables of SQLite data sources."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from kpi_store import DataSourceError, KPIStore, ValidationError
from kpi_store.uploads import import_csv


@pytest.fixture()
def upload_store(tmp_path: Path) -> KPIStore:
    store = KPIStore(f"sqlite:///{tmp_path / 'store.db'}")
    target = tmp_path / "target.db"
    connection = sqlite3.connect(target)
    connection.execute("CREATE TABLE existing (x INTEGER)")
    connection.commit()
    connection.close()
    store.add_data_source("target", f"sqlite:///{target}", "setup")
    yield store
    store.close()


def rows_of(store: KPIStore, table: str, order: str = "rowid") -> list[tuple]:
    path = store.data_source("target").url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()
    finally:
        connection.close()


def column_types(store: KPIStore, table: str) -> dict[str, str]:
    path = store.data_source("target").url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    try:
        return {r[1]: r[2] for r in connection.execute(f'PRAGMA table_info("{table}")')}
    finally:
        connection.close()


def tables(store: KPIStore) -> set[str]:
    path = store.data_source("target").url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    try:
        return {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()


def test_a_file_on_disk_becomes_a_typed_table(upload_store, tmp_path):
    csv_path = tmp_path / "budget.csv"
    csv_path.write_text(
        "team,year,budget,active,note\n"
        "North,2025,1200.5,true,\n"
        'Süd,2025,980,false,"comma, inside"\n',
        encoding="utf-8",
    )
    written = upload_store.import_csv("target", "budget", csv_path, actor="ana")
    assert written == 2
    assert rows_of(upload_store, "budget") == [
        ("North", 2025, 1200.5, 1, None),
        ("Süd", 2025, 980.0, 0, "comma, inside"),
    ]
    assert column_types(upload_store, "budget") == {
        "team": "TEXT",
        "year": "INTEGER",
        "budget": "REAL",
        "active": "INTEGER",
        "note": "TEXT",
    }
    entry = upload_store.audit_log(action="DATA_UPLOAD")[0]
    assert entry.actor == "ana" and entry.entity == "data_source:target"
    assert entry.details == {"table": "budget", "rows": 2}
    assert upload_store.verify_audit().ok


def test_binary_and_text_file_objects_with_a_bom(upload_store):
    data = "\ufeffname,amount\nA,1\nB,2\n".encode()
    assert upload_store.import_csv("target", "from_bytes", io.BytesIO(data), "ana") == 2
    assert column_types(upload_store, "from_bytes") == {"name": "TEXT", "amount": "INTEGER"}
    text = io.StringIO("name,amount\nC,3\n")
    assert upload_store.import_csv("target", "from_text", text, "ana") == 1
    assert rows_of(upload_store, "from_text") == [("C", 3)]


def test_many_chunks_are_one_table(upload_store, tmp_path):
    csv_path = tmp_path / "big.csv"
    with csv_path.open("w") as handle:
        handle.write("n,square\n")
        for n in range(25_000):
            handle.write(f"{n},{n * n}\n")
    engine = upload_store.engine
    source = upload_store.data_source("target")
    folders = upload_store.source_folders
    assert import_csv(engine, folders, source, "big", csv_path, "ana", chunk_rows=4_000) == 25_000
    rows = rows_of(upload_store, "big", order="n")
    assert len(rows) == 25_000 and rows[-1] == (24_999, 24_999**2)


def test_the_new_table_can_be_queried_by_a_kpi(upload_store):
    upload_store.import_csv("target", "sales", io.BytesIO(b"region,amount\nN,5\nS,7\n"), "ana")
    columns, rows = upload_store.preview_query(
        "target", "SELECT SUM(amount) AS total FROM sales", actor="tester"
    )
    assert [c.name for c in columns] == ["total"] and rows == [[12]]


def test_a_bad_row_leaves_no_table_and_no_audit_entry(upload_store, tmp_path):
    csv_path = tmp_path / "broken.csv"
    lines = ["a,b"] + [f"{n},{n}" for n in range(10)] + ["1,2,3,4"]
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationError, match="not a valid CSV"):
        import_csv(
            upload_store.engine,
            upload_store.source_folders,
            upload_store.data_source("target"),
            "broken",
            csv_path,
            "ana",
            chunk_rows=4,
        )
    assert "broken" not in tables(upload_store)
    assert upload_store.audit_log(action="DATA_UPLOAD") == []


@pytest.mark.parametrize(
    "table", ["1st", "has space", "semi;colon", "sqlite_master2", "", "x" * 65, 'q"uote']
)
def test_table_names_must_be_plain_identifiers(upload_store, table):
    with pytest.raises(ValidationError) as caught:
        upload_store.import_csv("target", table, io.BytesIO(b"a\n1\n"), "ana")
    assert "table" in caught.value.field_errors


@pytest.mark.parametrize("table", ["existing", "EXISTING"])
def test_an_existing_table_is_refused_and_kept(upload_store, table):
    with pytest.raises(ValidationError, match="already exists"):
        upload_store.import_csv("target", table, io.BytesIO(b"a\n1\n"), "ana")
    assert rows_of(upload_store, "existing") == []
    assert column_types(upload_store, "existing") == {"x": "INTEGER"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"a,a\n1,2\n", "unique"),
        (b"a,\n1,2\n", "needs a name"),
        (b"name\n\xff\xfe\x00bad\n", "UTF-8"),
    ],
)
def test_unreadable_files_are_refused(upload_store, content, message):
    with pytest.raises(ValidationError, match=message):
        upload_store.import_csv("target", "t", io.BytesIO(content), "ana")
    assert "t" not in tables(upload_store)


def test_only_sqlite_sources(upload_store, monkeypatch):
    from kpi_store.models import DataSource

    source = DataSource(
        name="pg",
        url="postgresql+psycopg://u@localhost/db",
        created_at=upload_store.data_source("target").created_at,
        created_by="x",
    )
    with pytest.raises(ValidationError, match="not a local SQLite file"):
        import_csv(
            upload_store.engine,
            upload_store.source_folders,
            source,
            "t",
            io.BytesIO(b"a\n1\n"),
            "ana",
        )


def test_not_into_the_store_itself(upload_store, tmp_path):
    from kpi_store.models import DataSource

    source = DataSource(
        name="self",
        url=f"sqlite:///{tmp_path / 'store.db'}",
        created_at=upload_store.data_source("target").created_at,
        created_by="x",
    )
    with pytest.raises(ValidationError, match="store's own database"):
        import_csv(
            upload_store.engine,
            upload_store.source_folders,
            source,
            "t",
            io.BytesIO(b"a\n1\n"),
            "ana",
        )


def test_a_missing_file_and_a_missing_name(upload_store, tmp_path):
    with pytest.raises(ValidationError, match="no file"):
        upload_store.import_csv("target", "t", tmp_path / "nope.csv", "ana")
    with pytest.raises(ValidationError, match="who you are"):
        upload_store.import_csv("target", "t", io.BytesIO(b"a\n1\n"), "  ")
    assert "t" not in tables(upload_store)


def test_a_vanished_source_file(upload_store, tmp_path):
    (tmp_path / "target.db").unlink()
    with pytest.raises(DataSourceError, match="does not exist"):
        upload_store.import_csv("target", "t", io.BytesIO(b"a\n1\n"), "ana")
