"""The PostgreSQL half of the test suite: finding the server and making throw-away databases.

The server is named by ``KPI_TEST_POSTGRES_URL`` (any SQLAlchemy PostgreSQL URL; the
driver is always psycopg 3). Every test that asks for a PostgreSQL store gets a database
of its own, created empty from the server's maintenance database and dropped
``WITH (FORCE)`` afterwards (about 50 ms for both on a throw-away cluster, migration
included), so tests never see each other's rows, sequences or advisory locks held open.

The databases sort text like a typical production server (ICU ``en-US``: ``"a b" < "ab"
< "B"``), not by code point as SQLite and the throw-away cluster's ``C.UTF-8`` do, so an
ordering that only holds under one collation shows up as a failing test. On a server
built without ICU they fall back to the server's default.

Without the variable, or when the server does not answer, PostgreSQL tests are skipped;
with ``KPI_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) they fail instead. ``make test``
sets the variable itself when PostgreSQL's server binaries are installed: it starts a
throw-away cluster with ``scripts/postgres-test-server.sh`` (and stops it afterwards).

``conftest.py`` loads this module as a plugin (``pytest_plugins``): it provides the
``postgres_server`` and ``postgres_url`` fixtures and drops leftover databases at the end.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

URL_ENV = "KPI_TEST_POSTGRES_URL"
REQUIRE_ENV = "KPI_TEST_REQUIRE_POSTGRES"
DATABASE_PREFIX = "kpi_t_"
CONNECT_TIMEOUT_S = 3
LINGUISTIC_LOCALE = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_OURS = re.compile(rf"^{DATABASE_PREFIX}{_HOST}_(\d+)_")


PG_BINARIES = "/usr/lib/postgresql/*/bin/initdb"


def server_binaries() -> list[str]:
    """The installed PostgreSQL ``initdb`` programs (what scripts/postgres-test-server.sh uses)."""
    return sorted(glob.glob(PG_BINARIES))


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def url_string(url: sa.engine.URL) -> str:
    """A URL as a string a KPIStore accepts, password included."""
    return url.render_as_string(hide_password=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresServer:
    """One reachable server: creates and drops the databases the tests use."""

    def __init__(self, base: sa.engine.URL, admin: sa.engine.Engine):
        self.base = base
        self._admin = admin
        # kpi_t_<host>_<pid>_...: lets a later session on this host drop what a killed one left.
        self._session = f"{_HOST}_{os.getpid()}"
        self._created: set[str] = set()
        self._lock = threading.Lock()
        self._locale_clause: str | None = LINGUISTIC_LOCALE

    @classmethod
    def connect(cls, raw_url: str) -> PostgresServer:
        """Raise ``ConnectionError`` (with a reason) when the server cannot be used."""
        try:
            base = sa.engine.make_url(raw_url)
        except sa.exc.ArgumentError as error:
            raise ConnectionError(f"{URL_ENV}={raw_url!r} is not a database URL") from error
        if base.get_backend_name() != "postgresql":
            raise ConnectionError(f"{URL_ENV} must be a postgresql:// URL, got {raw_url!r}")
        base = base.set(drivername="postgresql+psycopg")
        reasons = []
        # Prefer the maintenance database, so the URL's own database is never in use while
        # we CREATE DATABASE (the template must have no other sessions).
        for maintenance in dict.fromkeys(("postgres", base.database or "postgres")):
            admin = sa.create_engine(
                base.set(database=maintenance),
                isolation_level="AUTOCOMMIT",
                poolclass=sa.pool.NullPool,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            )
            try:
                with admin.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
                server = cls(base, admin)
                server.drop_orphans()
                return server
            except sa.exc.DBAPIError as error:
                reasons.append(
                    str(error.orig).strip().splitlines()[0] if error.orig else str(error)
                )
                admin.dispose()
        shown = base.render_as_string(hide_password=True)
        raise ConnectionError(f"cannot connect to {shown}: {'; '.join(reasons)}")

    def create_database(self, label: str = "") -> str:
        """A new empty database; returns its URL (a string, password included)."""
        suffix = f"{label[:16]}_" if label else ""
        name = f"{DATABASE_PREFIX}{self._session}_{suffix}{uuid.uuid4().hex[:10]}".lower()
        with self._admin.connect() as connection:
            create = f'CREATE DATABASE "{name}" TEMPLATE template0'
            if self._locale_clause:
                try:
                    connection.exec_driver_sql(f"{create} {self._locale_clause}")
                except sa.exc.DBAPIError:  # no ICU (or PostgreSQL < 15): the default locale
                    self._locale_clause = None
            if not self._locale_clause:
                connection.exec_driver_sql(create)
        with self._lock:
            self._created.add(name)
        return url_string(self.base.set(database=name))

    def drop_database(self, url_or_name: str) -> None:
        """Drop a database made by ``create_database``, ending any session still in it."""
        name = sa.engine.make_url(url_or_name).database if "://" in url_or_name else url_or_name
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self._lock:
            self._created.discard(name)

    @contextmanager
    def database(self, label: str = "") -> Iterator[str]:
        url = self.create_database(label)
        try:
            yield url
        finally:
            self.drop_database(url)

    def drop_orphans(self) -> None:
        """Drop test databases that sessions killed on this host left behind (unused ones)."""
        with self._admin.connect() as connection:
            names = connection.exec_driver_sql(
                "SELECT datname FROM pg_database d WHERE NOT EXISTS "
                "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"
            ).scalars()
            orphans = [n for n in names if (m := _OURS.match(n)) and not _alive(int(m[1]))]
        for name in orphans:
            with contextlib.suppress(sa.exc.DBAPIError):  # already gone
                self.drop_database(name)

    def drop_leftovers(self) -> None:
        """Drop whatever this session created and did not drop (end of the session)."""
        with self._lock:
            names = sorted(self._created)
        for name in names:
            self.drop_database(name)

    def admin_connection(self) -> sa.engine.Connection:
        """An autocommit connection to the maintenance database (pg_stat_activity etc.)."""
        return self._admin.connect()

    def dispose(self) -> None:
        self._admin.dispose()


class ServerProbe:
    """Finds the server once per session and remembers the answer (or why not)."""

    def __init__(self) -> None:
        self._server: PostgresServer | None = None
        self._problem: str | None = None
        self._probed = False
        self._lock = threading.Lock()

    def get(self) -> PostgresServer:
        """The server, or ``pytest.skip`` / ``pytest.fail`` with the reason."""
        with self._lock:
            if not self._probed:
                self._probed = True
                raw = os.environ.get(URL_ENV, "").strip()
                if not raw:
                    self._problem = f"{URL_ENV} is not set" + (
                        " (`make test` starts a throw-away server)"
                        if server_binaries()
                        else f" and no PostgreSQL server binaries are installed ({PG_BINARIES};"
                        " apt-get install postgresql, then `make test` starts a throw-away one)"
                    )
                else:
                    try:
                        self._server = PostgresServer.connect(raw)
                    except ConnectionError as error:
                        self._problem = str(error)
        if self._server is not None:
            return self._server
        if required():
            pytest.fail(
                f"PostgreSQL is required ({REQUIRE_ENV}=1) but unavailable: {self._problem}. "
                "Start one with `bash scripts/postgres-test-server.sh` and export "
                f"{URL_ENV}=<the URL it prints>.",
                pytrace=False,
            )
        pytest.skip(f"PostgreSQL tests skipped: {self._problem}")

    def close(self) -> None:
        if self._server is not None:
            self._server.drop_leftovers()
            self._server.dispose()


def running_queries(server: PostgresServer, database_url: str) -> list[str]:
    """Statements now active in ``database_url``'s database (other sessions than ours).

    Matched by database rather than by text: a KPI query read through a server-side cursor
    shows in ``pg_stat_activity`` as ``FETCH FORWARD ...``, not as its own SQL.
    """
    database = sa.engine.make_url(database_url).database
    with server.admin_connection() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT query FROM pg_stat_activity WHERE datname = :d "
                    "AND state = 'active' AND pid <> pg_backend_pid()"
                ),
                {"d": database},
            ).scalars()
        )


# -- the plugin: fixtures and the end-of-session clean-up --------------------------------

_PROBE = ServerProbe()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL test server (skips, or fails when required, if there is none)."""
    return _PROBE.get()


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test alone, dropped afterwards."""
    with postgres_server.database() as url:
        yield url


def pytest_sessionfinish(session: pytest.Session) -> None:
    _PROBE.close()
