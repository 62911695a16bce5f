"""DuckDB data sources (analysts' Parquet and CSV files) behind their read-only walls."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import sqlalchemy as sa

from .errors import DataSourceError
from .source_folders import SourceFolders

# Fixed when the database starts (they cannot be changed afterwards): no extension is
# installed or loaded behind a query's back, no community extensions, no secrets from disk.
_DUCKDB_START_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
}


def engine(url: sa.engine.URL, folders: SourceFolders | None) -> sa.engine.Engine:
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
