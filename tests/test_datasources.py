"""Data sources: registering, refusing unreachable ones, removing, read-only access."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from kpi_store import DataSourceError, NotFoundError, ValidationError
from kpi_store.datasources import read_only_engine
from kpi_store.models import mask_url


def test_add_returns_a_record_and_lists_it(store, source_db):
    url = f"sqlite:///{source_db}"
    added = store.add_data_source("copy", url, "dana")
    assert (added.name, added.url, added.created_by) == ("copy", url, "dana")
    assert [s.name for s in store.data_sources()] == ["copy", "shop"]
    assert store.data_source("copy") == added


def test_duplicate_name_is_refused(store, source_db, table_counts):
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.add_data_source("shop", f"sqlite:///{source_db}", "dana")
    assert "name" in caught.value.field_errors
    assert table_counts() == before


@pytest.mark.parametrize("name", ["", "  ", "has space", "-dash-first", "x" * 101, "semi;colon"])
def test_bad_name_is_refused(store, source_db, table_counts, name):
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.add_data_source(name, f"sqlite:///{source_db}", "dana")
    assert "name" in caught.value.field_errors
    assert table_counts() == before


def test_missing_sqlite_file_is_refused_and_not_created(store, tmp_path, table_counts):
    missing = tmp_path / "nowhere" / "missing.db"
    before = table_counts()
    with pytest.raises(DataSourceError, match="missing"):
        store.add_data_source("missing", f"sqlite:///{missing}", "dana")
    assert not missing.exists() and not missing.parent.exists()
    assert table_counts() == before
    with pytest.raises(NotFoundError):
        store.data_source("missing")


def test_missing_file_in_existing_folder_is_not_created(store, tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(DataSourceError):
        store.add_data_source("missing", f"sqlite:///{missing}", "dana")
    assert not missing.exists()


def test_file_that_is_not_a_database_is_refused(store, tmp_path, table_counts):
    junk = tmp_path / "notes.db"
    junk.write_text("these are meeting notes, not a database\n" * 50)
    before = table_counts()
    with pytest.raises(DataSourceError, match="junk"):
        store.add_data_source("junk", f"sqlite:///{junk}", "dana")
    assert table_counts() == before


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "nosuchdialect://host/db", "sqlite://", "sqlite:///:memory:"],
    ids=["empty", "prose", "unknown-dialect", "sqlite-no-file", "sqlite-memory"],
)
def test_bad_url_is_refused(store, table_counts, url):
    before = table_counts()
    with pytest.raises(DataSourceError):
        store.add_data_source("bad", url, "dana")
    assert table_counts() == before


def test_refusal_message_does_not_reveal_the_password(store):
    with pytest.raises(DataSourceError) as caught:
        store.add_data_source("bad", "nosuchdialect://user:s3cret@host/db", "dana")
    assert "s3cret" not in str(caught.value)


def test_remove_is_refused_while_a_kpi_uses_it(store, kpi_spec, table_counts):
    store.create_kpi(kpi_spec(name="Weekly revenue"), "alice")
    before = table_counts()
    with pytest.raises(ValidationError, match="Weekly revenue"):
        store.remove_data_source("shop", "dana")
    assert table_counts() == before


def test_remove_is_refused_while_an_archived_kpi_uses_it(store, kpi_spec):
    kpi = store.create_kpi(kpi_spec(name="Old revenue"), "alice")
    store.archive_kpi(kpi.id, "alice")
    with pytest.raises(ValidationError, match="Old revenue"):
        store.remove_data_source("shop", "dana")


def test_remove_works_when_unused(store, kpi_spec):
    kpi = store.create_kpi(kpi_spec(), "alice")
    store.delete_kpi(kpi.id, "alice")
    store.remove_data_source("shop", "dana")
    assert store.data_sources() == []
    with pytest.raises(NotFoundError):
        store.data_source("shop")


def test_remove_unknown_source_raises_not_found(store, table_counts):
    before = table_counts()
    with pytest.raises(NotFoundError):
        store.remove_data_source("nowhere", "dana")
    assert table_counts() == before


def test_kpi_cannot_use_a_removed_source(store, kpi_spec):
    store.remove_data_source("shop", "dana")
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(kpi_spec(), "alice")
    assert "data_source" in caught.value.field_errors


def test_read_only_engine_reads(source_db):
    engine = read_only_engine(f"sqlite:///{source_db}")
    try:
        with engine.connect() as connection:
            count = connection.execute(sa.text("SELECT count(*) FROM sales")).scalar_one()
        assert count == 48
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO sales (id, sold_on, region, amount) VALUES (999, '2030-01-01', 'x', 1)",
        "UPDATE sales SET amount = 0",
        "DELETE FROM sales",
        "CREATE TABLE intruder (x INTEGER)",
    ],
    ids=["insert", "update", "delete", "create"],
)
def test_read_only_engine_refuses_writes(source_db, sql):
    engine = read_only_engine(f"sqlite:///{source_db}")
    try:
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError):
            connection.execute(sa.text(sql))
            connection.commit()
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT count(*), sum(amount) FROM sales")).one()
            tables = connection.execute(sa.text("SELECT name FROM sqlite_master")).scalars()
            assert tuple(rows) == (48, sum(10.0 + i for i in range(1, 49)))
            assert list(tables) == ["sales"]
    finally:
        engine.dispose()


def test_a_password_is_never_shown_and_never_stored_in_clear(store, source_db):
    source = store.add_data_source("secret", f"sqlite://u:s3cret@/{source_db}", "dana")
    assert source.display_url == f"sqlite://u:***@/{source_db}"
    assert "s3cret" not in source.url + repr(store.data_sources()) + repr(
        store.data_source("secret")
    )
    with store.engine.connect() as connection:  # what the store's database holds
        stored = connection.execute(sa.text("SELECT url FROM data_sources WHERE name = 'secret'"))
        assert "s3cret" not in stored.scalar_one()
    entries = store.audit_log(action="DATA_SOURCE_ADD")
    assert "s3cret" not in repr(entries)
    kpi = store.create_kpi(
        {"name": "Via secret", "data_source": "secret", "sql": "SELECT count(*) AS n FROM sales"},
        "dana",
    )
    assert store.execute(kpi.id, actor="dana").value == 48  # decrypted only to connect


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql+psycopg://kpi:pa:ss@db.example:5432/sales", "kpi:***@db.example"),
        ("postgresql://kpi@db.example/sales", "postgresql://kpi@db.example/sales"),
        ("sqlite:///data/x.db", "sqlite:///data/x.db"),
    ],
)
def test_mask_url(url, shown):
    masked = mask_url(url)
    assert shown in masked and "pa:ss" not in masked


def test_mask_url_hides_a_password_without_a_user_name():
    """libpq accepts ``postgresql://:password@host/db``; the password must not show."""
    assert "s3cret" not in mask_url("postgresql://:s3cret@db.example/sales")
