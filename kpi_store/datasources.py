"""Registered data sources and read-only connections to them.

A data source is any SQLAlchemy URL. KPI queries reach it only through
``read_only_engine``: SQLite files are opened with ``mode=ro`` and ``PRAGMA query_only``,
PostgreSQL sessions default to read-only transactions, so even a statement that slipped
past validation cannot write.
"""

from __future__ import annotations

import pathlib
import re
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa

from . import audit, db, duckdb_wall, keys, sqlite_wall
from .config import Settings
from .errors import DataSourceError, NotFoundError, ValidationError
from .models import DataSource, mask_url
from .schema import data_sources as table
from .schema import kpi_definitions
from .source_folders import SourceFolders

# Short, so a locked source is retried with backoff (and logged) rather than waited on.
SQLITE_SOURCE_BUSY_S = 1.0
SUPPORTED_DIALECTS = frozenset({"sqlite", "postgresql", "duckdb"})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PG_READ_ONLY = "-c default_transaction_read_only=on"


def sqlite_path(url: sa.engine.URL) -> pathlib.Path:
    database = url.database or ""
    if database in ("", ":memory:"):
        raise DataSourceError("A SQLite data source must be a file, not an in-memory database.")
    return pathlib.Path(database).expanduser().resolve()


def parse_url(url: str) -> sa.engine.URL:
    try:
        return sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise DataSourceError(
            f"'{mask_url(url)}' is not a database URL (e.g. sqlite:///path/file.db)."
        ) from None


def check_dialect(url: sa.engine.URL) -> str:
    """The URL's database kind, if KPI Desk has a tested read-only wall for it."""
    backend = url.get_backend_name()
    if backend not in SUPPORTED_DIALECTS:
        shown = ", ".join(sorted(SUPPORTED_DIALECTS))
        raise DataSourceError(
            f"'{backend}' data sources are not supported: KPI Desk opens only databases it "
            f"can hold read-only ({shown})."
        )
    return backend


def read_only_engine(url: str, folders: SourceFolders | None = None) -> sa.engine.Engine:
    """An engine whose every connection refuses writes; file sources only inside
    ``folders`` (when given) and never the store itself."""
    parsed = parse_url(url)
    backend = check_dialect(parsed)
    if backend == "duckdb":
        return duckdb_wall.engine(parsed, folders)
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if folders is not None:
            path = folders.check(path)
        uri = path.as_uri() + "?mode=ro"

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(
                uri, uri=True, check_same_thread=False, timeout=SQLITE_SOURCE_BUSY_S
            )
            connection.execute("PRAGMA query_only=ON")
            # No value bigger than the default limit; a run or preview sets its own.
            sqlite_wall.limit_values(connection, Settings.value_max_bytes)
            sqlite_wall.harden(connection)  # after our PRAGMA: no more pragmas from here
            return connection

        return sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)
    try:
        if backend == "postgresql":
            options = parsed.query.get("options")
            engine = sa.create_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                pool_reset_on_return=None,  # _read_only_sessions resets more thoroughly
                connect_args={
                    "options": f"{options} {_PG_READ_ONLY}" if options else _PG_READ_ONLY,
                    # DISCARD ALL drops prepared statements behind psycopg's back.
                    "prepare_threshold": None,
                },
            )
            _read_only_sessions(engine)
            return engine
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as error:
        raise DataSourceError(f"Cannot use data source URL '{mask_url(url)}': {error}") from None


def _read_only_sessions(engine: sa.engine.Engine) -> None:
    """PostgreSQL: every transaction read-only, every pooled session reset on check-in.

    The session default alone is not a wall: a KPI may run the read-only statement
    ``SELECT set_config('default_transaction_read_only', 'off', false)`` (or move
    ``search_path``), and the pooled session would keep that for the next KPI or preview.
    So each transaction is made read-only explicitly, and a connection going back to the
    pool is rolled back and ``DISCARD ALL``-ed (settings, advisory locks, temporary tables,
    prepared statements: which is why psycopg must not prepare any).
    """

    @sa.event.listens_for(engine, "begin")
    def _begin_read_only(connection: sa.engine.Connection) -> None:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    @sa.event.listens_for(engine, "reset")
    def _reset_session(dbapi_connection: Any, _record: Any, reset_state: Any) -> None:
        if reset_state.terminate_only:
            return  # about to be closed: nothing to reset
        dbapi_connection.rollback()
        dbapi_connection.autocommit = True  # DISCARD ALL cannot run inside a transaction
        try:
            dbapi_connection.execute("DISCARD ALL")
        finally:
            dbapi_connection.autocommit = False


def test_connection(engine: sa.engine.Engine, name: str) -> None:
    """Open a connection and run a trivial query, or raise DataSourceError."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1")).scalar()
            if engine.dialect.name == "sqlite":
                # mode=ro opens a missing file lazily; reading the schema proves it is a database.
                connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
            elif engine.dialect.name == "duckdb":
                # Opening refuses anything but a DuckDB file; its catalog must read too.
                connection.exec_driver_sql("SELECT count(*) FROM duckdb_tables()").scalar()
    except sa.exc.DBAPIError as error:
        reason = str(error.orig).splitlines()[0] if error.orig else str(error)
        raise DataSourceError(f"Cannot connect to data source '{name}': {reason}") from None


class SourceEngines:
    """One read-only engine per data source URL, shared by every thread of the process."""

    def __init__(self, folders: SourceFolders | None = None) -> None:
        self.folders = folders
        self._engines: dict[str, sa.engine.Engine] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> sa.engine.Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = self._engines[url] = read_only_engine(url, self.folders)
            return engine

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


def _to_record(row: sa.Row) -> DataSource:
    """The record pages see: the URL with its password masked, never the credentials."""
    shown = row.display_url if row.display_url is not None else mask_url(row.url)
    return DataSource(
        name=row.name, url=shown, created_at=row.created_at, created_by=row.created_by
    )


def connect_url(connection: sa.engine.Connection, name: str) -> str:
    """The real URL of a source, decrypted only to connect to it."""
    stored = connection.execute(
        sa.select(table.c.url).where(table.c.name == name)
    ).scalar_one_or_none()
    if stored is None:
        raise NotFoundError(f"There is no data source named '{name}'.")
    return keys.of(connection).decrypt(stored)


def seal_credentials(engine: sa.engine.Engine, key: keys.SecretKey) -> int:
    """Encrypt every source URL still stored in clear (sources added before encryption)."""
    with db.read_tx(engine) as connection:
        plain = [
            (row.name, row.url)
            for row in connection.execute(sa.select(table.c.name, table.c.url))
            if not keys.is_encrypted(row.url)
        ]
    if not plain:
        return 0
    with db.write_tx(engine) as connection:
        for name, url in plain:
            connection.execute(
                table.update()
                .where(table.c.name == name, table.c.url == url)
                .values(url=key.encrypt(url), display_url=mask_url(url))
            )
    return len(plain)


def get(connection: sa.engine.Connection, name: str) -> DataSource:
    row = connection.execute(sa.select(table).where(table.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"There is no data source named '{name}'.")
    return _to_record(row)


def all_sources(connection: sa.engine.Connection) -> list[DataSource]:
    """Every source by name, code point by code point (not by the database's collation)."""
    records = [_to_record(r) for r in connection.execute(sa.select(table))]
    return sorted(records, key=lambda source: source.name)


def add(
    engine: sa.engine.Engine,
    name: str,
    url: str,
    actor: str,
    folders: SourceFolders | None = None,
) -> DataSource:
    name = (name or "").strip()
    if not NAME.match(name):
        raise ValidationError(
            "A data source name must start with a letter or digit and hold only letters, "
            "digits, '_', '-' and '.' (at most 100).",
            {"name": "letters, digits, '_', '-' and '.' only"},
        )
    url = (url or "").strip()
    probe = read_only_engine(url, folders)
    try:
        test_connection(probe, name)
    finally:
        probe.dispose()
    with db.write_tx(engine) as connection:
        if connection.execute(sa.select(table.c.name).where(table.c.name == name)).first():
            raise ValidationError(
                f"A data source named '{name}' already exists.", {"name": "already exists"}
            )
        now = db.utcnow()
        connection.execute(
            table.insert().values(
                name=name,
                url=keys.of(connection).encrypt(url),
                display_url=mask_url(url),
                created_at=now,
                created_by=actor,
            )
        )
        audit.append(
            connection,
            actor=actor,
            action=audit.DATA_SOURCE_ADD,
            entity=f"data_source:{name}",
            details={"after": {"name": name, "url": mask_url(url)}},
        )
        return get(connection, name)


def remove(engine: sa.engine.Engine, name: str, actor: str) -> None:
    with db.write_tx(engine) as connection:
        source = get(connection, name)
        users: list[str] = list(
            connection.execute(
                sa.select(kpi_definitions.c.name)
                .where(kpi_definitions.c.data_source == name)
                .order_by(kpi_definitions.c.name)
            ).scalars()
        )
        if users:
            shown = ", ".join(f"'{u}'" for u in users[:5]) + (" …" if len(users) > 5 else "")
            raise ValidationError(
                f"Data source '{name}' is used by {len(users)} KPI(s) ({shown}); "
                "delete or move them first.",
                {"name": "in use"},
            )
        connection.execute(table.delete().where(table.c.name == name))
        audit.append(
            connection,
            actor=actor,
            action=audit.DATA_SOURCE_REMOVE,
            entity=f"data_source:{name}",
            details={"before": {"name": name, "url": source.display_url}},
        )


def dialect_of(url: str) -> str:
    return parse_url(url).get_backend_name()
