"""How much room the store takes, what it holds per KPI, and giving removed rows' room back.

SQLite: the store is page_count × page_size bytes; removed rows leave free pages inside
the file. A store created with ``auto_vacuum = INCREMENTAL`` (every new store, see
``db.py``) gives them back with ``PRAGMA incremental_vacuum``, a few thousand pages per
transaction, and a WAL checkpoint then shortens the file. An older store keeps them for
new rows until one full VACUUM (``prune --vacuum``), which also switches it to incremental.
PostgreSQL: measured as the rows tables' total size; a DELETE leaves the room in the
tables, reusable once (auto)vacuum has passed; ``prune --vacuum`` runs a plain VACUUM.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from . import db
from .schema import kpi_definitions as kpis
from .schema import kpi_execution_results as executions
from .vocabulary import RunStatus

VACUUM_STEP_PAGES = 2_048  # pages one incremental-vacuum transaction returns (8 MB of 4 KB)
ROW_TABLES = ("kpi_execution_result_rows", "kpi_result_view_rows", "kpi_result_views")
AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}
OLD_STORE = (
    "This SQLite store was created without incremental auto-vacuum: the removed rows' pages "
    "stay in the file and are reused by new rows, but the file does not shrink. Run "
    "`python -m kpi_store prune --vacuum` once (a full VACUUM: it rewrites the file and "
    "holds writers back meanwhile) to switch it to incremental."
)
NOTES = {
    "incremental": "Free pages were returned to the operating system (incremental vacuum).",
    "full": "This SQLite store returns free pages at every commit (auto_vacuum = FULL).",
    "vacuumed": "A full VACUUM rewrote the store; from now on each prune returns free pages "
    "to the operating system (incremental auto-vacuum).",
    "postgresql": "PostgreSQL keeps the removed rows' room inside the tables and reuses it for "
    "new rows once (auto)vacuum has passed; the tables do not shrink. `prune --vacuum` runs "
    "VACUUM now; only VACUUM FULL (which locks the tables) gives room back to the system.",
    "pg_vacuumed": "VACUUM made the removed rows' room reusable (empty pages at the end of a "
    "table go back to the system); only VACUUM FULL, which locks the tables, shrinks them.",
}


@dataclass(frozen=True)
class Space:
    """The room measured at one moment."""

    used: int  # SQLite: the whole file's pages; PostgreSQL: the rows tables
    free: int | None  # SQLite: free pages inside the file, in bytes
    mode: str  # SQLite's auto_vacuum ("incremental", "full", "none"); "" on PostgreSQL


def measure(engine: sa.engine.Engine) -> Space:
    with db.read_tx(engine) as connection:
        return measure_in(connection)


def measure_in(connection: sa.engine.Connection) -> Space:
    """``measure`` inside the caller's transaction."""
    if not db.is_sqlite(connection):
        return Space(_pg_rows_bytes(connection), None, "")
    size = _pragma(connection, "page_size")
    return Space(
        _pragma(connection, "page_count") * size,
        _pragma(connection, "freelist_count") * size,
        AUTO_VACUUM.get(_pragma(connection, "auto_vacuum"), "none"),
    )


def _pragma(connection: sa.engine.Connection, name: str) -> int:
    return int(connection.exec_driver_sql(f"PRAGMA {name}").scalar_one())


def _pg_rows_bytes(connection: sa.engine.Connection) -> int:
    sizes = " + ".join(
        f"COALESCE(pg_total_relation_size(to_regclass('{t}')), 0)" for t in ROW_TABLES
    )
    return int(connection.exec_driver_sql(f"SELECT {sizes}").scalar_one())


def _store_bytes(connection: sa.engine.Connection) -> int:
    if db.is_sqlite(connection):
        return _pragma(connection, "page_count") * _pragma(connection, "page_size")
    query = "SELECT pg_database_size(current_database())"
    return int(connection.exec_driver_sql(query).scalar_one())


# -- giving room back ------------------------------------------------------------------------------


def give_back(engine: sa.engine.Engine, full: bool) -> str:
    """Return free room to the system as far as the store allows (``full``: a VACUUM);
    the sentence saying what happened, or how to get it back."""
    if engine.dialect.name != "sqlite":
        if not full:
            return NOTES["postgresql"]
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("VACUUM (ANALYZE) " + ", ".join(ROW_TABLES))
        return NOTES["pg_vacuumed"]
    raw = engine.raw_connection()
    try:  # the driver itself: VACUUM and checkpoints run outside any transaction
        driver: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        if full:
            driver.execute("PRAGMA auto_vacuum = INCREMENTAL")
            driver.execute("VACUUM")
            note = NOTES["vacuumed"]
        else:
            mode = AUTO_VACUUM.get(driver.execute("PRAGMA auto_vacuum").fetchone()[0], "none")
            if mode == "incremental":
                _incremental_vacuum(driver)
            note = NOTES.get(mode, OLD_STORE)
        driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # the file shrinks here
    finally:
        raw.close()
    return note


def _incremental_vacuum(driver: sqlite3.Connection) -> None:
    """Free pages back to the system, VACUUM_STEP_PAGES per write transaction."""
    free = _free_pages(driver)
    while free > 0:
        try:  # a script: the pragma steps to its end (one step frees one page)
            driver.executescript(
                f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({VACUUM_STEP_PAGES}); COMMIT;"
            )
        except sqlite3.Error:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        left = _free_pages(driver)
        if left >= free:  # others free pages as fast as this returns them: enough
            return
        free = left


def _free_pages(driver: sqlite3.Connection) -> int:
    return int(driver.execute("PRAGMA freelist_count").fetchone()[0])


# -- what the store holds ------------------------------------------------------------------------


class KPIStorage(BaseModel):
    """A KPI's runs and the rows they keep or lost (the rows each run stored)."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    name: str
    runs: int
    runs_with_rows: int
    runs_pruned: int
    rows_kept: int
    rows_removed: int


class RunStorage(BaseModel):
    """One run that keeps its rows, for the list of the biggest."""

    model_config = ConfigDict(frozen=True)

    execution_id: int
    kpi_id: int
    kpi_name: str
    rows: int
    finished_at: dt.datetime | None


class StorageReport(BaseModel):
    """The store's size and what takes it, for the admin's Storage page."""

    model_config = ConfigDict(frozen=True)

    dialect: str
    store_bytes: int  # SQLite: the file's pages; PostgreSQL: the whole database
    free_bytes: int | None  # SQLite: free pages inside the file
    auto_vacuum: str  # SQLite's mode; "" on PostgreSQL
    keep_rows_days: int
    keep_rows_runs: int
    policy: str
    rows_kept: int
    rows_removed: int
    runs_with_rows: int
    runs_pruned: int
    kpis: list[KPIStorage]
    biggest_runs: list[RunStorage]


def storage_report(
    connection: sa.engine.Connection, keep_days: int, keep_runs: int, policy: str
) -> StorageReport:
    found = per_kpi(connection)
    space = measure_in(connection)
    return StorageReport(
        dialect=connection.dialect.name,
        store_bytes=_store_bytes(connection),
        free_bytes=space.free,
        auto_vacuum=space.mode,
        keep_rows_days=keep_days,
        keep_rows_runs=keep_runs,
        policy=policy,
        rows_kept=sum(k.rows_kept for k in found),
        rows_removed=sum(k.rows_removed for k in found),
        runs_with_rows=sum(k.runs_with_rows for k in found),
        runs_pruned=sum(k.runs_pruned for k in found),
        kpis=found,
        biggest_runs=biggest_runs(connection),
    )


def per_kpi(connection: sa.engine.Connection) -> list[KPIStorage]:
    """Every KPI with runs, the most rows kept first."""
    kept = sa.and_(
        executions.c.status == RunStatus.SUCCESS,
        executions.c.rows_pruned_at.is_(None),
        executions.c.row_count > 0,
    )
    pruned = executions.c.rows_pruned_at.is_not(None)
    rows = sa.func.coalesce(executions.c.row_count, 0)

    def total(condition: sa.ColumnElement[bool], value: Any = 1) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=0)), 0)

    rows_kept = total(kept, rows).label("rows_kept")
    query = (
        sa.select(
            kpis.c.id,
            kpis.c.name,
            sa.func.count(executions.c.id).label("runs"),
            total(kept).label("with_rows"),
            total(pruned).label("pruned"),
            rows_kept,
            total(pruned, rows).label("rows_removed"),
        )
        .join(executions, executions.c.kpi_id == kpis.c.id)
        .group_by(kpis.c.id, kpis.c.name)
        .order_by(rows_kept.desc(), kpis.c.id)
    )
    return [
        KPIStorage(
            kpi_id=row.id,
            name=row.name,
            runs=row.runs,
            runs_with_rows=row.with_rows,
            runs_pruned=row.pruned,
            rows_kept=row.rows_kept,
            rows_removed=row.rows_removed,
        )
        for row in connection.execute(query)
    ]


def biggest_runs(connection: sa.engine.Connection, limit: int = 10) -> list[RunStorage]:
    """The runs that keep the most rows."""
    query = (
        sa.select(
            executions.c.id,
            executions.c.kpi_id,
            kpis.c.name,
            executions.c.row_count,
            executions.c.finished_at,
        )
        .join(kpis, kpis.c.id == executions.c.kpi_id)
        .where(
            executions.c.status == RunStatus.SUCCESS,
            executions.c.rows_pruned_at.is_(None),
            executions.c.row_count > 0,
        )
        .order_by(executions.c.row_count.desc(), executions.c.id.desc())
        .limit(limit)
    )
    return [
        RunStorage(
            execution_id=row.id,
            kpi_id=row.kpi_id,
            kpi_name=row.name,
            rows=row.row_count,
            finished_at=row.finished_at,
        )
        for row in connection.execute(query)
    ]


def human_bytes(count: int | None) -> str:
    """A byte count for people: 812 B, 4.2 MB, 1.3 GB (powers of 1,000)."""
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{count} B"
