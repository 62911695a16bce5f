"""``kpi_store/schema.py`` and the Alembic migrations describe the same database.

The tables are declared twice: as SQLAlchemy Core objects in ``schema.py`` (what the code
builds its statements from) and as the migrations in ``kpi_store/migrations`` (what
actually creates and changes a database). These tests migrate a fresh store database to
the newest revision with ``kpi_store.db.migrate`` and let Alembic's autogenerate compare it
with ``schema.metadata``: a column, table, index, foreign key, type or nullability in one
and not in the other is a failing test. Runs on SQLite and, when available, PostgreSQL
(the ``store_url`` fixture, see conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from kpi_store import db
from kpi_store.schema import metadata


def _migrated_engine(url: str) -> sa.engine.Engine:
    engine = db.create_store_engine(url)
    db.migrate(engine)
    return engine


def differences(engine: sa.engine.Engine, target: sa.MetaData = metadata) -> list[Any]:
    """Alembic's list of what a migration would have to change to reach ``target``."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "target_metadata": target}
        )
        return compare_metadata(context, target)


def _string_length_only(change: Any) -> bool:
    """A VARCHAR(n) -> VARCHAR(m) change: SQLite ignores lengths, so migrations skip it there
    (0002 widens ``name_key`` on PostgreSQL only)."""
    if not (isinstance(change, list) and len(change) == 1 and change[0][0] == "modify_type"):
        return False
    old, new = change[0][-2], change[0][-1]
    strings = all(isinstance(t, sa.String) and not isinstance(t, sa.Text) for t in (old, new))
    return strings and old.length != new.length


def test_the_migrations_create_exactly_the_declared_schema(store_url: str) -> None:
    engine = _migrated_engine(store_url)
    try:
        diff = differences(engine)
    finally:
        engine.dispose()
    if store_url.startswith("sqlite"):
        diff = [change for change in diff if not _string_length_only(change)]
    assert diff == [], (
        "schema.py and the migrations disagree; add a migration in kpi_store/migrations/"
        f"versions for: {diff}"
    )


def test_the_database_is_at_the_newest_revision(store_url: str) -> None:
    engine = _migrated_engine(store_url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    script = ScriptDirectory(str(db.MIGRATIONS_DIR))
    assert script.get_heads() == [current], "one line of migrations, and the store at its head"


@pytest.mark.sqlite_only
def test_a_column_declared_without_a_migration_is_caught(store_url: str) -> None:
    """The comparison is not vacuous: a column only in the metadata shows up, by name."""
    declared = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(declared)
    declared.tables["kpi_definitions"].append_column(sa.Column("undocumented", sa.Text))
    sa.Table("not_migrated", declared, sa.Column("id", sa.Integer, primary_key=True))

    engine = _migrated_engine(store_url)
    try:
        diff = differences(engine, declared)
    finally:
        engine.dispose()
    changes = {(d[0], getattr(d[-1], "name", None)) for d in diff if isinstance(d, tuple)}
    assert ("add_column", "undocumented") in changes, diff
    assert ("add_table", "not_migrated") in changes, diff
