"""Registered data sources and read-only connections to them.

A data source is any SQLAlchemy URL. KPI queries reach it only through
``read_only_engine``: SQLite files are opened with ``mode=ro`` and ``PRAGMA query_only``,
PostgreSQL sessions default to read-only transactions, so even a statement that slipped
past validation cannot write.
"""

from __future__ import annotations

import os
import pathlib
import re
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import audit, db, keys, sqlite_wall
from .config import Settings
from .errors import DataSourceError, NotFoundError, ValidationError
from .models import DataSource, mask_url
from .schema import data_sources as table
from .schema import kpi_definitions

# Short, so a locked source is retried with backoff (and logged) rather than waited on.
SQLITE_SOURCE_BUSY_S = 1.0
DEFAULT_FOLDER_NAME = "sources"
SUPPORTED_DIALECTS = frozenset({"sqlite", "postgresql", "duckdb"})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PG_READ_ONLY = "-c default_transaction_read_only=on"


@dataclass(frozen=True)
class SourceFolders:
    """Where file data sources (SQLite, DuckDB) may live, and the one file that never may:
    the store's own database. Paths are resolved (symlinks, ``..``) before any check."""

    folders: tuple[pathlib.Path, ...]
    store_file: pathlib.Path | None
    beside_store: pathlib.Path  # the sources/ folder beside the store (or under ./data)
    secrets: tuple[pathlib.Path, ...] = ()  # the key file and audit checkpoints

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceFolders:
        store_url = sa.engine.make_url(settings.url)
        store_file = None
        if store_url.get_backend_name() == "sqlite" and store_url.database:
            store_file = pathlib.Path(store_url.database).expanduser().resolve()
        beside = keys.default_beside_store(settings, DEFAULT_FOLDER_NAME)
        secrets = tuple(
            path.resolve() for path in (keys.key_file(settings), keys.checkpoint_file(settings))
        )
        listed = [f.strip() for f in settings.source_dirs.split(os.pathsep) if f.strip()]
        folders = tuple(pathlib.Path(f).expanduser().resolve() for f in listed) or (beside,)
        return cls(folders=folders, store_file=store_file, beside_store=beside, secrets=secrets)

    @property
    def default(self) -> pathlib.Path:
        """Where the demo warehouse goes: ``sources/`` beside the store when that is
        allowed, else the first allowed folder."""
        if any(self.beside_store.is_relative_to(folder) for folder in self.folders):
            return self.beside_store
        return self.folders[0]

    def check(self, path: pathlib.Path, name: str = "") -> pathlib.Path:
        """``path`` resolved, if it lies inside an allowed folder and is not the store."""
        resolved = path.expanduser().resolve()
        what = f"Data source '{name}'" if name else "A data source"
        if self._is_store(resolved):
            raise ValidationError(
                f"{what} cannot be the KPI store's own database or one of its key files.",
                {"url": "the store itself"},
            )
        if not any(resolved.is_relative_to(folder) for folder in self.folders):
            shown = ", ".join(str(f) for f in self.folders)
            message = (
                f"{what} must be a file inside the allowed folders ({shown}); "
                f"{resolved} is not. An administrator can add folders with KPI_SOURCE_DIRS."
            )
            raise ValidationError(message, {"url": "outside the allowed folders"})
        return resolved

    def guarded_dirs(self) -> set[pathlib.Path]:
        """Folders whose own files no query may read: the store's and its secrets'."""
        files = [*self.secrets, *([self.store_file] if self.store_file else [])]
        return {f.parent for f in files}

    def _is_store(self, path: pathlib.Path) -> bool:
        if path in self.secrets:
            return True
        if self.store_file is None:
            return False
        if path == self.store_file:
            return True
        try:  # a hard link names the same file under another path
            return path.exists() and os.path.samefile(path, self.store_file)
        except OSError:
            return False


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
        return _duckdb_engine(parsed, folders)
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


# -- DuckDB: analysts' Parquet/CSV files -------------------------------------------------

# Fixed when the database starts (they cannot be changed afterwards): no extension is
# installed or loaded behind a query's back, no community extensions, no secrets from disk.
_DUCKDB_START_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
}


def _duckdb_engine(url: sa.engine.URL, folders: SourceFolders | None) -> sa.engine.Engine:
    """A DuckDB file opened read-only, reading outside files only inside ``folders``.

    Three walls: the file is opened ``read_only``; external access is switched off except
    for the allowed folders (``allowed_directories``), and the configuration is then locked,
    so no query can ``SET`` its way out; and every statement must be a single SELECT by
    DuckDB's own parser (``COPY … TO``, ``EXPORT``, ``ATTACH``, ``LOAD``, ``SET``,
    ``CREATE TEMP`` … are refused even if they slipped past validation).
    """
    try:
        import duckdb
        from duckdb_engine import ConnectionWrapper
    except ImportError:
        raise DataSourceError(
            "DuckDB data sources need the 'duckdb' and 'duckdb-engine' packages installed."
        ) from None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith(("md:", "motherduck:")):
        raise DataSourceError("A DuckDB data source must be a database file.")
    if url.query:
        raise DataSourceError(
            "A DuckDB data source URL takes no options: KPI Desk opens the file read-only."
        )
    path = pathlib.Path(database).expanduser().resolve()
    if folders is not None:
        path = folders.check(path)

    def connect() -> Any:
        connection = duckdb.connect(str(path), read_only=True, config=dict(_DUCKDB_START_CONFIG))
        try:
            _duckdb_lock_down(connection, folders)
        except BaseException:
            connection.close()
            raise
        return ConnectionWrapper(connection)

    engine = sa.create_engine("duckdb://", creator=connect, poolclass=sa.pool.NullPool)
    _duckdb_single_selects(engine)
    return engine


def _duckdb_lock_down(connection: Any, folders: SourceFolders | None) -> None:
    """Limit file access to the allowed folders, then lock the configuration.

    Connections to one file in one process share a database instance: a later connection
    finds it locked already, and checks the walls are up instead of raising them again.
    """

    def setting(name: str) -> Any:
        return connection.execute("SELECT current_setting($1)", [name]).fetchone()[0]

    if not setting("lock_configuration"):
        directories, files = _duckdb_readable(folders)
        connection.execute("SET allowed_directories = $1", [directories])
        connection.execute("SET allowed_paths = $1", [files])
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")  # last: nothing changes after
    if setting("enable_external_access") or not setting("lock_configuration"):
        raise DataSourceError("The DuckDB file could not be opened with its walls up.")


def _duckdb_readable(folders: SourceFolders | None) -> tuple[list[str], list[str]]:
    """The directories and files a DuckDB query may read: the allowed folders, except the
    files directly beside the store's own database and its secrets (the store, its journal,
    the key file, the audit checkpoints).

    A folder holding one of those is opened level by level around it instead of as a
    whole. Symbolic links are left out (an allowed link would lead anywhere). Without
    ``folders``, no outside file at all.
    """
    if folders is None:
        return [], []
    directories: list[str] = []
    files: list[str] = []
    for folder in folders.folders:
        _open_around(folder, folders.guarded_dirs(), directories, files)
    return directories, files


def _open_around(
    level: pathlib.Path, guarded: set[pathlib.Path], directories: list[str], files: list[str]
) -> None:
    if not any(g.is_relative_to(level) for g in guarded):
        directories.append(f"{level}{os.sep}")
        return
    try:
        entries = sorted(level.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir():
            _open_around(entry, guarded, directories, files)
        elif level not in guarded:
            files.append(str(entry))


def _duckdb_single_selects(engine: sa.engine.Engine) -> None:
    """Every statement sent to DuckDB is one SELECT, as DuckDB itself parses it.

    The KPI's SQL was checked with sqlglot when it was saved; DuckDB runs every statement
    of a string, so a parser difference must not smuggle a second statement through.
    """
    import duckdb

    from .errors import UnsafeQueryError

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _only_select(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        try:
            kinds = [s.type for s in duckdb.extract_statements(statement)]
        except duckdb.Error as error:
            reason = str(error).strip().splitlines()
            raise UnsafeQueryError(
                f"The SQL could not be read: {reason[0] if reason else 'unreadable SQL'}"
            ) from None
        if kinds != [duckdb.StatementType.SELECT]:
            shown = ", ".join(kind.name for kind in kinds) or "nothing"
            raise UnsafeQueryError(
                f"Only one read-only query (SELECT) may run on a DuckDB source, not {shown}."
            )


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
        users = (
            connection.execute(
                sa.select(kpi_definitions.c.name)
                .where(kpi_definitions.c.data_source == name)
                .order_by(kpi_definitions.c.name)
            )
            .scalars()
            .all()
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
