"""PostgreSQL for real: a PostgreSQL warehouse as a data source, the queue and the store
under concurrency, worker processes killed mid-way, and answers that must not depend on
which database holds the store.

Tests marked ``postgres`` need the server named by ``KPI_TEST_POSTGRES_URL`` (see
``pg_helpers``); the parity tests at the end run on both stores through ``store``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg_helpers import PostgresServer, running_queries, url_string

from kpi_store import (
    ExecutionError,
    KPIStore,
    UnsafeQueryError,
    ValidationError,
    VersionConflictError,
)
from kpi_store.datasources import read_only_engine
from kpi_store.schema import kpi_execution_results as executions
from kpi_store.schema import metadata

postgres = pytest.mark.postgres

READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction
LOCK_NOT_AVAILABLE = "55P03"


# -- fixtures -------------------------------------------------------------------------------


def _sales_rows() -> list[dict[str, Any]]:
    start = dt.date(2024, 1, 1)
    regions = ("north", "south", "east", "west")
    return [
        {
            "id": i,
            "sold_on": start + dt.timedelta(days=7 * i),
            "region": regions[i % 4],
            "amount": decimal.Decimal(f"{10 + i}.25"),
            "paid": i % 3 != 0,
        }
        for i in range(1, 49)
    ]


@pytest.fixture()
def warehouse_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A PostgreSQL data source: its own database, filled through an ordinary connection.

    ``sales`` (48 rows), an empty ``tally`` table, a ``ticket`` sequence and ``bump()``,
    a function that writes: what a read-only KPI must never manage to call.
    """
    with postgres_server.database("wh") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE sales (id integer PRIMARY KEY, sold_on date NOT NULL, "
                "region text NOT NULL, amount numeric(12, 2) NOT NULL, paid boolean NOT NULL)"
            )
            connection.execute(
                sa.text(
                    "INSERT INTO sales (id, sold_on, region, amount, paid) "
                    "VALUES (:id, :sold_on, :region, :amount, :paid)"
                ),
                _sales_rows(),
            )
            connection.exec_driver_sql("CREATE TABLE tally (n integer)")
            connection.exec_driver_sql("CREATE SEQUENCE ticket")
            connection.exec_driver_sql(
                "CREATE FUNCTION bump() RETURNS integer LANGUAGE sql "
                "AS $$ INSERT INTO tally VALUES (1) RETURNING n $$"
            )
        engine.dispose()
        yield url


def warehouse_state(url: str) -> tuple[int, bool]:
    """(rows in ``tally``, whether ``ticket`` was ever advanced), read read-write."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            tally = connection.exec_driver_sql("SELECT count(*) FROM tally").scalar_one()
            called = connection.exec_driver_sql("SELECT is_called FROM ticket").scalar_one()
        return tally, called
    finally:
        engine.dispose()


@pytest.fixture()
def pg_store(postgres_url: str, warehouse_url: str, source_db: Path) -> Iterator[KPIStore]:
    """A store in PostgreSQL with the warehouse as ``wh`` (and the SQLite ``shop``)."""
    store = KPIStore(postgres_url)
    store.add_data_source("wh", warehouse_url, "setup")
    store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture()
def wh_kpi(pg_store: KPIStore) -> Callable[..., int]:
    """``wh_kpi(sql, **fields)`` creates a KPI on the PostgreSQL warehouse; returns its id."""
    counter = iter(range(1, 10_000))

    def add(sql: str, **fields: Any) -> int:
        spec = {"name": f"WH {next(counter)}", "data_source": "wh", "sql": sql, **fields}
        return pg_store.create_kpi(spec, "tester").id

    return add


def _in_thread(function: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            box["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            box["error"] = error
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- a PostgreSQL data source: read-only -------------------------------------------------------


@postgres
def test_a_kpi_on_a_postgres_source_reads_its_types_in_a_read_only_transaction(
    pg_store: KPIStore, wh_kpi: Callable[..., int]
) -> None:
    kpi_id = wh_kpi(
        "SELECT current_setting('transaction_read_only') AS read_only, region, "
        "min(sold_on) AS first_sale, sum(amount) AS revenue, bool_and(paid) AS all_paid, "
        "max(sold_on)::timestamp AS last_sale FROM sales WHERE sold_on >= :start "
        "GROUP BY region ORDER BY region",
        parameters=[{"name": "start", "type": "date", "default": "2024-03-01"}],
        value_column="revenue",
    )
    run = pg_store.execute(kpi_id, actor="tester")
    assert run.status == "success", run.error
    expected = {}
    for row in _sales_rows():
        if row["sold_on"] >= dt.date(2024, 3, 1):
            expected[row["region"]] = expected.get(row["region"], 0) + row["amount"]
    assert run.row_count == 4
    assert run.value == pytest.approx(float(sum(expected.values())))
    assert [(c.name, c.type) for c in run.columns] == [
        ("read_only", "str"),
        ("region", "str"),
        ("first_sale", "date"),
        ("revenue", "decimal"),
        ("all_paid", "bool"),
        ("last_sale", "datetime"),
    ]
    rows = pg_store.result_page(run.id).rows
    assert {row[0] for row in rows} == {"on"}  # the transaction itself was read-only
    assert [row[1] for row in rows] == ["east", "north", "south", "west"]
    assert [decimal.Decimal(row[3]) for row in rows] == [expected[r[1]] for r in rows]
    frame = pg_store.result_frame(run.id)
    assert str(frame["all_paid"].dtype) == "boolean"
    assert frame["first_sale"].dt.year.tolist() == [2024] * 4


@postgres
@pytest.mark.parametrize(
    "sql",
    ["SELECT bump() AS n", "SELECT nextval('ticket') AS n"],
    ids=["writing-function", "sequence"],
)
def test_a_query_that_would_write_is_stopped_by_the_read_only_transaction(
    pg_store: KPIStore, wh_kpi: Callable[..., int], warehouse_url: str, sql: str
) -> None:
    kpi_id = wh_kpi(sql)  # a parser cannot see what a function does: validation lets it by
    run = pg_store.execute(kpi_id, actor="tester")
    assert run.status == "failed"
    assert "read-only transaction" in run.error
    assert run.attempts == 1  # a refusal is not a transient fault
    assert run.row_count is None
    with pytest.raises(ExecutionError, match="read-only transaction"):
        pg_store.preview_query("wh", sql, actor="tester")
    assert warehouse_state(warehouse_url) == (0, False)


@postgres
def test_select_for_update_is_refused_by_validation_and_by_the_connection(
    pg_store: KPIStore, wh_kpi: Callable[..., int], warehouse_url: str
) -> None:
    with pytest.raises(UnsafeQueryError):
        wh_kpi("SELECT * FROM sales FOR UPDATE")
    engine = read_only_engine(warehouse_url)  # the second wall, without the parser in front
    try:
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError) as caught:
            connection.exec_driver_sql("SELECT * FROM sales WHERE id = 1 FOR UPDATE").all()
        assert caught.value.orig.sqlstate == READ_ONLY_SQLSTATE
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError) as caught:
            connection.exec_driver_sql("INSERT INTO tally VALUES (2)")
        assert caught.value.orig.sqlstate == READ_ONLY_SQLSTATE
    finally:
        engine.dispose()
    assert warehouse_state(warehouse_url) == (0, False)


@postgres
def test_a_kpi_cannot_leave_its_pooled_connection_read_write_for_the_next_query(
    pg_store: KPIStore, wh_kpi: Callable[..., int], warehouse_url: str
) -> None:
    """Session settings are per connection and connections are pooled: a KPI that turns
    the session's read-only default off must not hand a writable session to the next
    KPI or preview that gets the same connection."""
    flip = wh_kpi(
        "SELECT set_config('default_transaction_read_only', 'off', false) AS a, "
        "set_config('search_path', 'pg_catalog', false) AS b"
    )
    assert pg_store.execute(flip, actor="mallory").status == "success"
    # One pooled connection is all this store has used so far: the next ones reuse it.
    for _ in range(3):
        with pytest.raises(ExecutionError, match="read-only transaction"):
            pg_store.preview_query("wh", "SELECT nextval('ticket') AS n", actor="tester")
        run = pg_store.execute(wh_kpi("SELECT bump() AS n"), actor="tester")
        assert run.status == "failed" and "read-only transaction" in run.error
    settings = pg_store.execute(
        wh_kpi(
            "SELECT current_setting('default_transaction_read_only') AS a, "
            "current_setting('search_path') AS b, count(*) AS n FROM sales"
        ),
        actor="tester",
    )
    assert settings.status == "success", settings.error
    assert settings.first_row_sample == {"a": "on", "b": '"$user", public', "n": 48}
    assert warehouse_state(warehouse_url) == (0, False)


@postgres
def test_connection_options_in_a_source_url_are_kept_alongside_read_only(
    pg_store: KPIStore, warehouse_url: str
) -> None:
    """``?options=-csearch_path=mart`` in the URL survives, also across session resets."""
    engine = sa.create_engine(warehouse_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA mart")
        connection.exec_driver_sql("CREATE TABLE mart.daily AS SELECT generate_series(1, 7) AS d")
    engine.dispose()
    url = sa.engine.make_url(warehouse_url).update_query_dict({"options": "-csearch_path=mart"})
    pg_store.add_data_source("mart", url_string(url), "setup")
    kpi_id = pg_store.create_kpi(
        {
            "name": "Days",
            "data_source": "mart",
            "sql": "SELECT count(*) AS n, current_setting('transaction_read_only') AS ro "
            "FROM daily",
        },
        "t",
    ).id
    for _ in range(3):
        run = pg_store.execute(kpi_id, actor="t")
        assert run.status == "success", run.error
        assert run.first_row_sample == {"n": 7, "ro": "on"}


# -- timeouts and cancel stop the query on the server ------------------------------------------


SLEEPER = "SELECT pg_sleep(30) AS slept"
# In the select list the series streams; in FROM it would be materialised first.
COUNTER = "SELECT count(*) AS n FROM (SELECT generate_series(1, 10000000000)) AS s"


@postgres
@pytest.mark.parametrize("sql", [SLEEPER, COUNTER], ids=["pg_sleep", "generate_series"])
def test_a_slow_postgres_query_times_out_and_is_gone_from_the_server(
    pg_store: KPIStore,
    wh_kpi: Callable[..., int],
    postgres_server: PostgresServer,
    warehouse_url: str,
    sql: str,
) -> None:
    kpi_id = wh_kpi(sql, timeout_s=1)
    thread, box = _in_thread(lambda: pg_store.execute(kpi_id, actor="tester"))
    # The probe works: while the run lasts, the server lists the query as active.
    _wait_for(
        lambda: running_queries(postgres_server, warehouse_url),
        5,
        "the query to show in pg_stat_activity",
    )
    thread.join(10)
    assert not thread.is_alive()
    run = box["value"]
    assert run.status == "timeout" and "time limit" in run.error
    assert 1.0 <= box["seconds"] < 2.5
    assert run.attempts == 1 and run.row_count is None
    assert running_queries(postgres_server, warehouse_url) == []


@postgres
def test_the_server_stops_a_timed_out_query_even_when_the_cancel_never_arrives(
    pg_store: KPIStore,
    wh_kpi: Callable[..., int],
    postgres_server: PostgresServer,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``statement_timeout`` is the server's own deadline: it holds without the watchdog."""
    from kpi_store.watchdog import Watchdog

    def deaf_watchdog(cls: type[Watchdog], control: Any, _connection: Any) -> Watchdog:
        return cls(control, lambda: None)  # the cancel never reaches the server

    monkeypatch.setattr(Watchdog, "over", classmethod(deaf_watchdog))
    kpi_id = wh_kpi(SLEEPER, timeout_s=1)
    started = time.monotonic()
    run = pg_store.execute(kpi_id, actor="tester")
    assert run.status == "timeout", run.error
    assert 1.0 <= time.monotonic() - started < 2.5
    assert running_queries(postgres_server, warehouse_url) == []
    budget = pg_store.execute(
        wh_kpi("SELECT current_setting('statement_timeout') AS limit_ms", timeout_s=5),
        actor="tester",
    )
    limit = budget.first_row_sample["limit_ms"]
    assert limit.endswith("ms") and 4000 < int(limit[:-2]) <= 5000


@postgres
def test_a_preview_on_postgres_times_out_on_the_server_too(
    pg_store: KPIStore, postgres_server: PostgresServer, warehouse_url: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ExecutionError, match="preview limit"):
        pg_store.preview_query("wh", SLEEPER, timeout_s=1, actor="tester")
    assert time.monotonic() - started < 2.5
    assert running_queries(postgres_server, warehouse_url) == []


@postgres
def test_cancel_stops_a_running_postgres_query(
    pg_store: KPIStore,
    wh_kpi: Callable[..., int],
    postgres_server: PostgresServer,
    warehouse_url: str,
) -> None:
    kpi_id = wh_kpi(SLEEPER, timeout_s=120)
    thread, box = _in_thread(lambda: pg_store.execute(kpi_id, actor="tester"))
    _wait_for(
        lambda: running_queries(postgres_server, warehouse_url),
        5,
        "the query to start",
    )
    (running,) = pg_store.executions(status="running")
    asked = time.monotonic()
    pg_store.cancel(running.id, "boss")
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 1.5
    run = box["value"]
    assert (run.id, run.status, run.row_count) == (running.id, "cancelled", None)
    assert running_queries(postgres_server, warehouse_url) == []


# -- the store under concurrency -------------------------------------------------------------


@postgres
def test_jobs_are_claimed_with_skip_locked_without_waiting(pg_store: KPIStore) -> None:
    kpi_id = pg_store.create_kpi(
        {"name": "Count", "data_source": "wh", "sql": "SELECT count(*) AS n FROM sales"}, "t"
    ).id
    first, second = (pg_store.submit(kpi_id, actor="t").id for _ in range(2))
    with pg_store.engine.connect() as holder:
        holder_tx = holder.begin()  # worker A, half-way through claiming the oldest job
        held = holder.execute(
            sa.select(executions.c.id)
            .where(executions.c.status == "pending")
            .order_by(executions.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar_one()
        assert held == first
        holder.execute(executions.update().where(executions.c.id == first).values(status="running"))
        # The row really is locked: a plain FOR UPDATE NOWAIT on it is refused...
        with pg_store.engine.connect() as other, pytest.raises(sa.exc.DBAPIError) as caught:
            other.execute(
                sa.select(executions.c.id)
                .where(executions.c.id == first)
                .with_for_update(nowait=True)
            ).all()
        assert caught.value.orig.sqlstate == LOCK_NOT_AVAILABLE
        # ...while worker B skips it and takes the next job at once.
        thread, box = _in_thread(lambda: pg_store.ledger.claim_next("worker-b"))
        thread.join(5)
        blocked = thread.is_alive()
        if blocked:
            holder_tx.rollback()
            thread.join(5)
        assert not blocked, "claim_next waited for the row worker A holds"
        assert box["value"] == second and box["seconds"] < 0.5
        # Nothing else is free: the next claim returns at once with nothing.
        thread, box = _in_thread(lambda: pg_store.ledger.claim_next("worker-c"))
        thread.join(5)
        assert not thread.is_alive() and box["value"] is None
        holder_tx.rollback()  # worker A gives up: its job is pending again
    assert pg_store.ledger.claim_next("worker-c") == first
    claimed = {e.id: e.worker_id for e in pg_store.executions(status="running")}
    assert claimed == {first: "worker-c", second: "worker-b"}


@postgres
def test_stores_opened_at_once_on_an_empty_database_migrate_it_once(postgres_url: str) -> None:
    barrier = threading.Barrier(6)
    opened: list[KPIStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            opened.append(KPIStore(postgres_url))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == [] and len(opened) == 6
        with opened[0].engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            tables = connection.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).scalar_one()
        assert len(versions) == 1
        assert tables == len(metadata.tables) + 1  # every table of schema.py, alembic_version
    finally:
        for store in opened:
            store.close()


@postgres
def test_concurrent_changes_keep_one_unbroken_audit_chain(pg_store: KPIStore) -> None:
    """Appends are serialised by an advisory lock, so the chain stays linear."""
    barrier = threading.Barrier(6)

    def author(n: int) -> None:
        barrier.wait()
        for i in range(4):
            kpi = pg_store.create_kpi(
                {"name": f"K{n}-{i}", "data_source": "shop", "sql": "SELECT 1 AS one"}, f"u{n}"
            )
            pg_store.update_kpi(kpi.id, {"target": i}, f"u{n}", expected_version=1)

    threads = [threading.Thread(target=author, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    entries = pg_store.audit_log(limit=None)
    assert len(entries) == 2 + 6 * 4 * 2
    verification = pg_store.verify_audit()
    assert verification.ok, verification.reason
    assert verification.checked == len(entries)


@postgres
def test_concurrent_edits_from_one_version_save_exactly_one(pg_store: KPIStore) -> None:
    kpi = pg_store.create_kpi(
        {"name": "Edited", "data_source": "shop", "sql": "SELECT 1 AS one"}, "alice"
    )
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def edit(n: int) -> None:
        barrier.wait()
        try:
            pg_store.update_kpi(kpi.id, {"target": n}, f"editor{n}", expected_version=1)
            outcomes.append("saved")
        except VersionConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["conflict"] * 7 + ["saved"]
    assert [v.version for v in pg_store.kpi_versions(kpi.id)] == [2, 1]
    assert len(pg_store.audit_log(kpi_id=kpi.id, action="UPDATE")) == 1


@postgres
def test_concurrent_creates_of_one_name_keep_exactly_one(pg_store: KPIStore) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def create(n: int) -> None:
        barrier.wait()
        try:
            pg_store.create_kpi(
                {"name": "Twin" if n % 2 else "TWIN", "data_source": "shop", "sql": "SELECT 1"},
                f"u{n}",
            )
            outcomes.append("created")
        except ValidationError as error:
            assert "already exists" in str(error)
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created"] + ["refused"] * 7
    assert len(pg_store.list_kpis()) == 1
    assert pg_store.verify_audit().ok


# -- result rows through COPY ------------------------------------------------------------------


AWKWARD = (
    "SELECT g AS n, "
    "'tab' || chr(9) || 'new' || chr(10) || 'line' || chr(13) AS controls, "
    "'back\\slash \\N \\. end' AS backslashes, "
    "'quote '' \" , ; | ' || g AS punctuation, "
    "'héllo ☃ 𝄞 ' || repeat('x', g % 7) AS unicode, "
    "CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.5 END AS maybe, "
    "g % 2 = 0 AS even "
    "FROM generate_series(1, :rows) AS g ORDER BY g"
)


@postgres
def test_rows_written_with_copy_come_back_exactly_as_the_source_sent_them(
    pg_store: KPIStore, wh_kpi: Callable[..., int], warehouse_url: str, tmp_path: Path
) -> None:
    rows = 45_123  # more than two flushes of 20,000, and a ragged last page
    kpi_id = wh_kpi(AWKWARD, parameters=[{"name": "rows", "type": "int", "default": rows}])
    run = pg_store.execute(kpi_id, actor="tester")
    assert run.status == "success", run.error
    assert run.row_count == rows and not run.truncated
    source = sa.create_engine(warehouse_url, poolclass=sa.pool.NullPool)
    with source.connect() as connection:
        direct = connection.execute(sa.text(AWKWARD), {"rows": rows}).all()
    source.dispose()

    def plain(row: Any) -> list[Any]:
        return [str(v) if isinstance(v, decimal.Decimal) else v for v in row]

    for page_number in (1, 2, 451, 452):
        page = pg_store.result_page(run.id, page=page_number, page_size=100)
        first = (page_number - 1) * 100
        assert page.rows == [plain(r) for r in direct[first : first + 100]]
    with pg_store.engine.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT row_number), min(row_number), max(row_number) "
                "FROM kpi_execution_result_rows WHERE execution_id = :id"
            ),
            {"id": run.id},
        ).one()
    assert tuple(stored) == (rows, rows, 1, rows)
    assert pg_store.export_csv(run.id, tmp_path / "out.csv", "tester") == rows
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "back\\slash \\N \\. end" in text and "héllo ☃ 𝄞" in text


# -- worker processes -------------------------------------------------------------------------


JOBS = 200
WORKER_SQL = (
    "SELECT g AS n, g * :factor AS scaled "
    "FROM generate_series(1, :rows) AS g, pg_sleep(:pause) AS p"
)


def _queue_small_jobs(pg_store: KPIStore) -> dict[int, int]:
    """Queue JOBS small runs over five KPIs; returns run id -> the rows it must store."""
    kpi_ids = [
        pg_store.create_kpi(
            {
                "name": f"Small {k}",
                "data_source": "wh",
                "sql": WORKER_SQL,
                "aggregation": "count",
                "parameters": [
                    {"name": "rows", "type": "int", "default": 1},
                    {"name": "factor", "type": "int", "default": 1},
                    {"name": "pause", "type": "float", "default": 0.1},
                ],
            },
            "setup",
        ).id
        for k in range(5)
    ]
    expected_rows: dict[int, int] = {}
    for n in range(JOBS):
        rows = 1 + (n * 7) % 40
        # Five people queue them: one person may queue at most KPI_MAX_QUEUED_PER_USER (50).
        run = pg_store.submit(
            kpi_ids[n % 5], {"rows": rows, "factor": n, "pause": 0.1}, actor=f"load-{n % 5}"
        )
        expected_rows[run.id] = rows
    return expected_rows


def _kill_mid_run(pg_store: KPIStore, victim: Any) -> set[int]:
    """Kill ``victim`` once a quarter of the jobs are done and it holds some; returns the
    runs it held when it died."""
    from job_helpers import held_by

    def victim_mid_run() -> list[int]:
        done = len(pg_store.executions(status="success", limit=None))
        if done < JOBS // 4:
            return []
        return [
            e.id
            for e in pg_store.executions(status="running", limit=None)
            if held_by(e.worker_id, victim.worker_id)
        ]

    _wait_for(victim_mid_run, 60, "a quarter of the jobs done and the victim mid-run")
    victim.kill()
    with pg_store.engine.connect() as connection:
        return set(
            connection.execute(
                sa.select(executions.c.id).where(
                    executions.c.status == "running",
                    executions.c.worker_id.startswith(victim.worker_id + ":"),
                )
            ).scalars()
        )


def _assert_rows_and_audit_match(pg_store: KPIStore, expected_rows: dict[int, int]) -> None:
    runs = {e.id: e for e in pg_store.executions(limit=None)}
    with pg_store.engine.connect() as connection:
        stored = dict(
            connection.execute(
                sa.text(
                    "SELECT execution_id, count(*) FROM kpi_execution_result_rows "
                    "GROUP BY execution_id"
                )
            ).all()
        )
    assert stored == {i: runs[i].row_count for i in runs}
    assert all(runs[i].row_count == rows for i, rows in expected_rows.items())
    executed = Counter(
        e.details["execution_id"]
        for e in pg_store.audit_log(action="EXECUTE", limit=None)
        if e.details["status"] == "success"
    )
    assert executed == Counter(set(expected_rows))
    assert pg_store.verify_audit().ok


@postgres
@pytest.mark.slow
def test_three_worker_processes_run_200_jobs_exactly_once_with_one_killed_mid_way(
    pg_store: KPIStore, postgres_url: str, tmp_path: Path
) -> None:
    from job_helpers import WorkerProcess, held_by

    expected_rows = _queue_small_jobs(pg_store)
    timing = {"KPI_HEARTBEAT_TIMEOUT_S": "2", "KPI_HEARTBEAT_INTERVAL_S": "0.2"}
    workers = [
        WorkerProcess(
            postgres_url, tmp_path, f"w{i}", concurrency=2, recovery_interval_s=0.5, env=timing
        )
        for i in range(3)
    ]
    try:
        for worker in workers:
            worker.wait_ready(30)
        victim = workers[0]
        orphaned = _kill_mid_run(pg_store, victim)
        assert orphaned, "the victim finished its jobs before the kill landed"

        def all_finished() -> bool:
            return not pg_store.executions(status=["pending", "running"], limit=None)

        _wait_for(all_finished, 120, "every job to finish")
        survivors = [w.terminate(timeout=20)[0] for w in workers[1:]]
    finally:
        for worker in workers:
            worker.close()

    assert survivors == [0, 0]
    runs = {e.id: e for e in pg_store.executions(limit=None)}
    assert set(runs) == set(expected_rows)
    assert Counter(e.status for e in runs.values()) == {"success": JOBS}, Counter(
        e.error for e in runs.values()
    )
    ran = Counter(i for w in workers for i in (e["id"] for e in w.events("ran")))
    claimed = Counter(i for w in workers for i in w.claimed_ids())
    assert set(ran) == set(expected_rows) and set(ran.values()) == {1}, "a job ran twice"
    assert not orphaned & set(e["id"] for e in victim.events("ran"))
    for execution_id in expected_rows:
        assert claimed[execution_id] == (2 if execution_id in orphaned else 1)
    for execution_id in orphaned:
        assert runs[execution_id].requeue_count == 1
        assert not held_by(runs[execution_id].worker_id, victim.worker_id)
    _assert_rows_and_audit_match(pg_store, expected_rows)


# -- parity: the same answers from either store ---------------------------------------------------


def test_lists_sort_the_same_way_on_every_store(store: KPIStore, source_db: Path) -> None:
    """By code point, whatever the PostgreSQL server's collation (the test databases
    use ICU en-US, where "Zeta" < "éclair" would flip)."""
    for name in ["Shop2", "copy", "b-2", "b_1"]:
        store.add_data_source(name, f"sqlite:///{source_db}", "setup")
    assert [s.name for s in store.data_sources()] == ["Shop2", "b-2", "b_1", "copy", "shop"]
    for name in ["Zeta", "éclair", "apple", "a b", "ab", "Ab2", "_z", "a-c"]:
        store.create_kpi({"name": name, "data_source": "shop", "sql": "SELECT 1 AS one"}, "t")
    assert [k.name for k in store.list_kpis()] == [
        "_z",
        "a b",
        "a-c",
        "ab",
        "Ab2",
        "apple",
        "Zeta",
        "éclair",
    ]


@pytest.mark.parametrize(
    "overrides", [{"description": "a\x00b"}, {"name": "nul\x00name"}, {"sql": "SELECT 1\x00"}]
)
def test_text_with_a_nul_character_is_refused_on_every_store(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], overrides: dict[str, Any]
) -> None:
    """PostgreSQL cannot store U+0000 in text; SQLite can. Refuse it on both, by name."""
    before = store.audit_log(limit=None)
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(kpi_spec(**overrides), "alice")
    assert set(overrides) <= set(caught.value.field_errors)
    assert store.audit_log(limit=None) == before
    kpi = store.create_kpi(kpi_spec(), "alice")
    with pytest.raises(ValidationError):
        store.update_kpi(kpi.id, overrides, "alice", expected_version=1)
    with pytest.raises(ValidationError):
        store.update_kpi(kpi.id, {"target": 5}, "alice", expected_version=1, note="x\x00")
    with pytest.raises(ValidationError):
        store.create_kpi(kpi_spec(name="Other"), "ali\x00ce")
    assert store.get_kpi(kpi.id).version == 1


def test_a_name_that_grows_when_case_folded_is_stored_and_kept_unique_on_every_store(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    """``name_key`` is the case-folded name, up to three times longer than the name."""
    name = "ß" * 150 + "ΐ" * 50  # 200 characters, 450 once case-folded
    kpi = store.create_kpi(kpi_spec(name=name), "alice")
    assert store.get_kpi(kpi.id).name == name
    with pytest.raises(ValidationError, match="already exists"):
        store.create_kpi(kpi_spec(name="ẞ" * 150 + "ΐ" * 50), "bob")  # capital sharp s
    assert [k.id for k in store.list_kpis()] == [kpi.id]


def test_a_store_made_at_the_first_revision_upgrades_with_its_data(
    store_url: str, source_db: Path
) -> None:
    """Every migration after 0001 applies on open, to a store that already holds data."""
    from alembic import command

    from kpi_store import db

    engine = db.create_store_engine(store_url)
    try:
        with db.write_tx(engine) as connection:
            command.upgrade(db._alembic_config(connection), "0001")
            now = db.utcnow()
            connection.execute(
                sa.text(
                    "INSERT INTO data_sources (name, url, created_at, created_by) "
                    "VALUES ('shop', :url, :now, 'old')"
                ),
                {"url": f"sqlite:///{source_db}", "now": now},
            )
    finally:
        engine.dispose()
    with KPIStore(store_url) as store:
        assert [s.created_by for s in store.data_sources()] == ["old"]
        kpi = store.create_kpi(
            {"name": "ß" * 200, "data_source": "shop", "sql": "SELECT 1 AS one"}, "new"
        )
        assert store.get_kpi(kpi.id).name == "ß" * 200
        with store.engine.connect() as connection:
            head = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert len(head) == 1 and head[0][0] != "0001"


@postgres
def test_one_kpi_run_many_times_reuses_one_healthy_pooled_postgres_session(
    pg_store: KPIStore, wh_kpi: Callable[..., int]
) -> None:
    """Sessions are reset between uses, and nothing cached per session (psycopg's prepared
    statements) goes stale across that reset: the same session serves every run."""
    kpi_id = wh_kpi(
        "SELECT pg_backend_pid() AS pid, count(*) AS n FROM sales WHERE region = :r",
        parameters=[{"name": "r", "type": "str", "default": "north"}],
        value_column="n",
    )
    sessions = set()
    for _ in range(12):
        run = pg_store.execute(kpi_id, actor="tester")
        assert (run.status, run.value) == ("success", 12.0), run.error
        sessions.add(run.first_row_sample["pid"])
    for _ in range(12):
        _, rows = pg_store.preview_query("wh", "SELECT pg_backend_pid() AS pid", actor="tester")
        sessions.add(rows[0][0])
    assert len(sessions) == 1


@postgres
def test_the_store_runs_with_row_grants_only_and_cannot_rewrite_its_audit_log(
    postgres_server: PostgresServer, source_db: Path, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    """The deployment DEPLOYMENT.md describes: the schema owner migrates; the app's role
    may only read and write rows, and may only add to ``kpi_audit_log``."""
    role, password = f"kpi_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with postgres_server.admin_connection() as admin:
        try:
            admin.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        except sa.exc.DBAPIError as error:
            reason = f"cannot create a role on this server: {error.orig}"
            if os.environ.get("KPI_TEST_REQUIRE_POSTGRES") == "1":
                pytest.fail(reason)  # CI's throw-away server always allows it
            pytest.skip(reason)
    try:
        with postgres_server.database("grants") as owner_url:
            KPIStore(owner_url).close()  # migrated by the owner
            owner = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
            with owner.begin() as connection:
                for statement in (
                    f"GRANT USAGE ON SCHEMA public TO {role}",
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                    f"TO {role}",
                    f"REVOKE UPDATE, DELETE, TRUNCATE ON kpi_audit_log FROM {role}",
                    f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role}",
                    f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
                ):
                    connection.exec_driver_sql(statement)
            owner.dispose()
            app_url = url_string(
                sa.engine.make_url(owner_url).set(username=role, password=password)
            )
            with KPIStore(app_url) as store:
                store.add_data_source("shop", f"sqlite:///{source_db}", "ops")
                kpi = store.create_kpi(kpi_spec(), "alice")
                store.update_kpi(kpi.id, {"target": 5}, "bob", expected_version=1)
                run = store.execute(kpi.id, actor="alice")
                assert run.status == "success", run.error
                queued = store.submit(kpi.id, actor="alice")
                store.cancel(queued.id, "alice")
                store.delete_kpi(kpi.id, "alice")
                assert store.verify_audit().ok
                for statement in (
                    "UPDATE kpi_audit_log SET actor = 'mallory'",
                    "DELETE FROM kpi_audit_log",
                    "CREATE TABLE sneaky (x int)",
                ):
                    with (
                        store.engine.begin() as connection,
                        pytest.raises(sa.exc.DBAPIError) as caught,
                    ):
                        connection.exec_driver_sql(statement)
                    assert caught.value.orig.sqlstate == "42501"  # insufficient_privilege
    finally:
        with postgres_server.admin_connection() as admin:
            admin.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")


@postgres
def test_a_server_defaulting_to_repeatable_read_still_keeps_one_audit_chain(
    postgres_server: PostgresServer, source_db: Path
) -> None:
    """The store's locking assumes READ COMMITTED (each statement sees what committed
    before it, e.g. the newest audit entry once the chain's lock is held); it must not
    inherit a stricter default a DBA set on the database."""
    with postgres_server.database("rr") as url:
        with postgres_server.admin_connection() as admin:
            name = sa.engine.make_url(url).database
            admin.exec_driver_sql(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
            )
        with KPIStore(url) as store:
            store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
            barrier = threading.Barrier(6)
            errors: list[BaseException] = []

            def author(n: int) -> None:
                barrier.wait()
                try:
                    for i in range(4):
                        store.create_kpi(
                            {"name": f"K{n}-{i}", "data_source": "shop", "sql": "SELECT 1"},
                            f"u{n}",
                        )
                except BaseException as error:  # noqa: BLE001
                    errors.append(error)

            threads = [threading.Thread(target=author, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == []
            verification = store.verify_audit()
            assert verification.ok, verification.reason
            assert verification.checked == 1 + 6 * 4
