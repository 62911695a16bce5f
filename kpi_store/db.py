"""Engine creation, transactions and migrations: the one place that knows the dialects.

SQLite gets WAL, foreign keys, a busy timeout, and explicit ``BEGIN`` statements so a
writer takes the write lock up front (``BEGIN IMMEDIATE``) instead of failing on a lock
upgrade half-way through. PostgreSQL gets a pre-pinged pool. Everything else in the
package writes portable Core statements and asks this module for transactions.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = pathlib.Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "kpi_write"
_AUDIT_LOCK_KEY = 7_300_451  # any constant: PostgreSQL advisory lock serialising the chain
_MIGRATION_LOCK_KEY = 7_300_452


def utcnow() -> dt.datetime:
    """Naive UTC, as every timestamp is stored (portable across both dialects)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


MAX_ID = 2**63 - 1


def is_valid_id(value: Any) -> bool:
    """Whether ``value`` can be a row id at all (a whole number both databases can hold)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=json_default).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    # Decimal, UUID, intervals and the like: their exact text form.
    return str(value)


def like_escaped(text: str) -> str:
    """``text`` for a LIKE pattern with ``escape="\\"``: its own % and _ match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def is_sqlite(bind: sa.engine.Connection | sa.engine.Engine) -> bool:
    return bind.dialect.name == "sqlite"


def create_store_engine(url: str) -> sa.engine.Engine:
    """An engine for the store database, tuned for its dialect."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    # READ COMMITTED whatever the server's default: each statement must see what committed
    # before it (the newest audit entry once the chain's lock is held, a job's status).
    return sa.create_engine(
        parsed,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
    )


def _sqlite_engine(url: sa.engine.URL) -> sa.engine.Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise ValueError(
            "the KPI store needs a SQLite file (an in-memory database is private to one "
            "thread and would lose every job); use sqlite:///path/to/store.db"
        )
    pathlib.Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; transactions are begun explicitly below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Before anything creates the file's first table (WAL mode writes its header):
        # a new store returns removed rows' pages with incremental vacuum (retention).
        # An older store keeps its mode until a VACUUM (``prune --vacuum``).
        cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.engine.Connection) -> None:
        writing = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    return engine


@contextmanager
def write_tx(engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def read_tx(engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A read transaction: one consistent snapshot for several statements."""
    with engine.connect() as connection, connection.begin():
        yield connection


def lock_audit_chain(connection: sa.engine.Connection) -> None:
    """Serialise appends to the audit hash chain for the rest of this transaction.

    On SQLite the ``BEGIN IMMEDIATE`` of every writer already does this.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _AUDIT_LOCK_KEY})


def _alembic_config(connection: sa.engine.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(engine: sa.engine.Engine) -> None:
    """Create or upgrade the schema to the newest migration; a no-op when already there."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
    with write_tx(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
            )
        command.upgrade(_alembic_config(connection), "head")


def driver(connection: sa.engine.Connection) -> Any:
    """The DB-API connection under a SQLAlchemy connection that is checked out."""
    raw = connection.connection.driver_connection
    if raw is None:  # only after the connection was invalidated
        raise sa.exc.InvalidRequestError("the database connection is closed")
    return raw


def inserted_id(result: sa.engine.CursorResult[Any]) -> int:
    """The primary key of the row a single-row INSERT wrote."""
    key = result.inserted_primary_key
    if key is None:
        raise sa.exc.InvalidRequestError("the INSERT reported no primary key")
    return int(key[0])
