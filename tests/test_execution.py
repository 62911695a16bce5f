"""Running KPIs against real SQLite files: deadlines, retries, failures, binding, audit."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import Execution, ExecutionError, KPIStore, ValidationError

COUNT_TO_10_BILLION = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) "
    "SELECT count(*) AS n FROM c"
)
# Streams a row every twenty steps: batches fill in milliseconds, so rows are stored (a
# flush every half second) well before the deadline, even on a loaded machine.
STREAM_FOR_EVER = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) "
    "SELECT x FROM c WHERE x % 20 = 0"
)


@pytest.fixture()
def add_kpi(store: KPIStore) -> Callable[..., int]:
    """``add_kpi(sql, **fields)`` creates a KPI on the ``shop`` source and returns its id."""
    counter = iter(range(1, 1_000))

    def add(sql: str, **fields: Any) -> int:
        spec = {"name": f"KPI {next(counter)}", "data_source": "shop", "sql": sql, **fields}
        return store.create_kpi(spec, "tester").id

    return add


def retrying_every(store: KPIStore, wait_s: float) -> KPIStore:
    """The same store opened with a fixed retry wait (the KPI_RETRY_WAIT_S knobs)."""
    return KPIStore(
        store.url, settings=store.settings.replace(retry_wait_s=wait_s, retry_max_wait_s=wait_s)
    )


def stored_rows(store: KPIStore, execution_id: int) -> int:
    """Rows kept for a run: read from the store file with sqlite3, or via the engine."""
    query = "SELECT count(*) FROM kpi_execution_result_rows WHERE execution_id = "
    if store.engine.dialect.name != "sqlite":
        with store.engine.connect() as connection:
            return connection.execute(sa.text(query + ":id"), {"id": execution_id}).scalar_one()
    with sqlite3.connect(store.engine.url.database) as connection:
        return connection.execute(query + "?", (execution_id,)).fetchone()[0]


def sales_rows(source_db: Path) -> list[tuple]:
    with sqlite3.connect(source_db) as connection:
        return connection.execute("SELECT * FROM sales ORDER BY id").fetchall()


def cpu_seconds_over(seconds: float) -> float:
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


# -- deadlines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "kpi_timeout", "call_timeout"),
    [
        (COUNT_TO_10_BILLION, None, 1.0),  # one long statement, overridden per call
        (STREAM_FOR_EVER, 1.0, None),  # rows flowing and stored, the KPI's own limit
    ],
    ids=["count-per-call-limit", "streaming-kpi-limit"],
)
def test_slow_query_times_out_leaves_no_rows_and_stops_using_cpu(
    store: KPIStore, add_kpi: Callable[..., int], sql: str, kpi_timeout: Any, call_timeout: Any
) -> None:
    kpi_id = add_kpi(sql, timeout_s=kpi_timeout)

    started = time.monotonic()
    run = store.execute(kpi_id, actor="tester", timeout_s=call_timeout)
    elapsed = time.monotonic() - started

    assert run.status == "timeout"
    assert 1.0 <= elapsed < 2.0
    assert run.attempts == 1  # a timeout is never retried
    assert run.timeout_s == 1.0
    assert "time limit" in run.error
    assert run.row_count is None and run.value is None
    assert stored_rows(store, run.id) == 0
    if sql is STREAM_FOR_EVER:
        assert run.rows_read > 0  # rows were stored on the way, then removed
    assert cpu_seconds_over(1.0) < 0.2  # the interrupted query is not still running
    assert store.executions(status="running") == []


def test_timeout_works_off_the_main_thread(store: KPIStore, add_kpi: Callable[..., int]) -> None:
    kpi_id = add_kpi(COUNT_TO_10_BILLION)
    runs: list[Execution] = []
    thread = threading.Thread(
        target=lambda: runs.append(store.execute(kpi_id, actor="tester", timeout_s=0.5))
    )
    started = time.monotonic()
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.5
    assert runs[0].status == "timeout"


def test_a_fast_query_finishes_well_inside_its_limit(
    store: KPIStore, add_kpi: Callable[..., int]
) -> None:
    run = store.execute(add_kpi("SELECT count(*) AS n FROM sales"), actor="tester", timeout_s=1)
    assert run.status == "success"
    assert run.value == 48.0
    assert run.execution_time_ms is not None and run.execution_time_ms < 1_000


@pytest.mark.parametrize("timeout_s", [0, -1, 86_401])
def test_a_time_limit_out_of_range_is_refused(
    store: KPIStore, add_kpi: Callable[..., int], timeout_s: float
) -> None:
    kpi_id = add_kpi("SELECT count(*) AS n FROM sales")
    with pytest.raises(ValidationError):
        store.execute(kpi_id, actor="tester", timeout_s=timeout_s)
    assert store.executions() == []


# -- transient faults are retried, permanent ones are not -------------------------------------


def hold_exclusive_lock(path: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Lock ``path`` against readers from another connection for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(seconds)
            connection.execute("COMMIT")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(5)
    return thread, locked


def test_a_source_locked_for_two_seconds_is_survived_by_retrying(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path
) -> None:
    with sqlite3.connect(source_db) as connection:
        # The rollback journal (not WAL): an exclusive lock blocks readers too.
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    kpi_id = add_kpi("SELECT SUM(amount) AS total FROM sales", max_retries=3)

    holder, _ = hold_exclusive_lock(source_db, 2.0)
    run = retrying_every(store, 0.3).execute(kpi_id, actor="tester")
    holder.join()

    assert run.status == "success", run.error
    assert run.attempts > 1
    assert run.value == sum(10.0 + i for i in range(1, 49))
    (entry,) = store.audit_log(action="EXECUTE", kpi_id=kpi_id)
    assert entry.details["attempts"] == run.attempts
    assert all("locked" in reason for reason in entry.details["retries"])
    assert len(entry.details["retries"]) == run.attempts - 1


def test_a_lock_outlasting_every_retry_fails_with_the_reason(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path
) -> None:
    store = retrying_every(store, 0)
    kpi_id = add_kpi("SELECT SUM(amount) AS total FROM sales", max_retries=1)

    holder, _ = hold_exclusive_lock(source_db, 3.0)
    run = store.execute(kpi_id, actor="tester")
    holder.join()

    assert run.status == "failed"
    assert run.attempts == 2  # max_retries + 1
    assert "locked" in run.error


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT amount FROM sales WHERE region ILIKE 'n%'", "syntax error"),
        ("SELECT SUM(amount) AS total FROM no_such_table", "no such table: no_such_table"),
        ("SELECT no_such_function(amount) AS total FROM sales", "no such function"),
    ],
    ids=["syntax-error", "missing-table", "missing-function"],
)
def test_permanent_errors_fail_at_once_without_retrying(
    store: KPIStore, add_kpi: Callable[..., int], sql: str, message: str
) -> None:
    store = retrying_every(store, 5)  # a retry would show in the run time
    kpi_id = add_kpi(sql, max_retries=3)

    started = time.monotonic()
    run = store.execute(kpi_id, actor="tester")

    assert time.monotonic() - started < 3.0  # well under one 5 s retry wait
    assert run.status == "failed"
    assert run.attempts == 1
    assert message in run.error
    assert stored_rows(store, run.id) == 0
    (entry,) = store.audit_log(action="EXECUTE", kpi_id=kpi_id)
    assert entry.details["status"] == "failed" and entry.details["retries"] == []


# -- parameters: bound, never pasted; checked before anything runs ---------------------------


@pytest.mark.parametrize(
    "value", ["North'; DROP TABLE sales; --", "1 OR 1=1", "north' OR '1'='1", 'x"; DELETE']
)
def test_injection_in_parameter_values_is_bound_and_changes_nothing(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path, value: str
) -> None:
    before = sales_rows(source_db)
    kpi_id = add_kpi(
        "SELECT region, amount FROM sales WHERE region = :region",
        parameters=[{"name": "region", "type": "str", "default": "north"}],
        aggregation="count",
    )

    run = store.execute(kpi_id, {"region": value}, actor="tester")

    with sqlite3.connect(source_db) as connection:
        literal = connection.execute(
            "SELECT count(*) FROM sales WHERE region = ?", (value,)
        ).fetchone()[0]
    assert run.status == "success", run.error
    assert run.params == {"region": value}
    assert literal == 0
    assert run.row_count == literal and run.value is None  # no rows: no data, never 0
    assert sales_rows(source_db) == before  # table intact, every row unchanged


def test_injection_into_a_typed_parameter_is_refused(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path
) -> None:
    kpi_id = add_kpi(
        "SELECT amount FROM sales WHERE id = :id",
        parameters=[{"name": "id", "type": "int", "default": 1}],
    )
    with pytest.raises(ValidationError, match="whole number"):
        store.execute(kpi_id, {"id": "1 OR 1=1"}, actor="tester")
    assert len(sales_rows(source_db)) == 48


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS one; DROP TABLE sales",
        "DELETE FROM sales",
        "WITH gone AS (DELETE FROM sales RETURNING *) SELECT * FROM gone",
        "ATTACH DATABASE '/tmp/x.db' AS x",
    ],
)
def test_unsafe_sql_is_refused_at_create_and_the_source_is_untouched(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], source_db: Path, sql: str
) -> None:
    before = sales_rows(source_db)
    with pytest.raises(ValidationError):
        store.create_kpi(kpi_spec(sql=sql, parameters=[], value_column=None), "tester")
    assert store.list_kpis(include_archived=True) == []
    assert sales_rows(source_db) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "not a date"}, "start"),
        ({"start": 42}, "start"),
        ({"region": "atlantis"}, "region"),
        ({"regoin": "north"}, "regoin"),
    ],
    ids=["wrong-type-text", "wrong-type-number", "outside-choices", "unknown-name"],
)
def test_bad_parameters_are_refused_before_anything_runs(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], params: dict, field: str
) -> None:
    kpi = store.create_kpi(kpi_spec(), "tester")
    audit_before = len(store.audit_log(limit=None))

    with pytest.raises(ValidationError) as caught:
        store.execute(kpi.id, params, actor="tester")

    assert field in caught.value.field_errors
    assert store.executions() == []  # no execution row was created
    assert len(store.audit_log(limit=None)) == audit_before


def test_defaults_fill_in_and_values_are_coerced(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], source_db: Path
) -> None:
    kpi = store.create_kpi(kpi_spec(), "tester")
    run = store.execute(kpi.id, {"region": "south", "start": "2024-06-01"}, actor="tester")
    with sqlite3.connect(source_db) as connection:
        expected = connection.execute(
            "SELECT SUM(amount) FROM sales WHERE sold_on >= '2024-06-01' AND region = 'south'"
        ).fetchone()[0]
    assert run.status == "success"
    assert run.params == {"start": "2024-06-01", "region": "south"}
    assert run.value == pytest.approx(expected)

    default_run = store.execute(kpi.id, actor="tester")
    assert default_run.params == {"start": "2024-01-01", "region": "north"}


# -- the headline value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "expected_sql"),
    [
        ("sum", "SELECT SUM(amount) FROM sales"),
        ("avg", "SELECT AVG(amount) FROM sales"),
        ("count", "SELECT COUNT(*) FROM sales"),
        ("min", "SELECT MIN(amount) FROM sales"),
        ("max", "SELECT MAX(amount) FROM sales"),
        ("first", "SELECT amount FROM sales ORDER BY id DESC LIMIT 1"),
    ],
)
def test_value_aggregations(
    store: KPIStore,
    add_kpi: Callable[..., int],
    source_db: Path,
    aggregation: str,
    expected_sql: str,
) -> None:
    kpi_id = add_kpi(
        "SELECT region, amount FROM sales ORDER BY id DESC",
        value_column="amount",
        aggregation=aggregation,
    )
    run = store.execute(kpi_id, actor="tester")
    with sqlite3.connect(source_db) as connection:
        expected = connection.execute(expected_sql).fetchone()[0]
    assert run.status == "success"
    assert run.value == pytest.approx(expected)


def test_value_defaults_to_the_first_numeric_column(
    store: KPIStore, add_kpi: Callable[..., int]
) -> None:
    kpi_id = add_kpi("SELECT region, sold_on, id, amount FROM sales ORDER BY id")
    run = store.execute(kpi_id, actor="tester")
    assert run.value == sum(range(1, 49))  # id, the first numeric column, summed
    assert [c.name for c in run.columns] == ["region", "sold_on", "id", "amount"]
    assert [c.type for c in run.columns] == ["str", "str", "int", "float"]
    assert run.first_row_sample == {
        "region": "south",
        "sold_on": "2024-01-08",
        "id": 1,
        "amount": 11.0,
    }


def rename_amount(source_db: Path) -> None:
    """The source changes after the KPI was saved (saving checks the value column)."""
    with sqlite3.connect(source_db) as connection:
        connection.execute("ALTER TABLE sales RENAME COLUMN amount TO amount_eur")


def test_value_column_missing_from_the_result_fails_naming_it(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path
) -> None:
    kpi_id = add_kpi("SELECT * FROM sales", value_column="amount", max_retries=3)
    rename_amount(source_db)
    run = store.execute(kpi_id, actor="tester")
    assert run.status == "failed"
    assert run.attempts == 1
    assert "'amount'" in run.error and "amount_eur" in run.error
    assert stored_rows(store, run.id) == 0


def test_value_column_missing_fails_even_when_no_rows_come_back(
    store: KPIStore, add_kpi: Callable[..., int], source_db: Path
) -> None:
    kpi_id = add_kpi("SELECT * FROM sales WHERE id < 0", value_column="amount")
    rename_amount(source_db)
    run = store.execute(kpi_id, actor="tester")
    assert run.status == "failed"
    assert "'amount'" in run.error


def test_an_empty_result_succeeds_with_no_value(
    store: KPIStore, add_kpi: Callable[..., int]
) -> None:
    run = store.execute(add_kpi("SELECT amount FROM sales WHERE id < 0"), actor="tester")
    assert run.status == "success"
    assert run.row_count == 0 and run.value is None and run.first_row_sample is None


# -- the run record, the audit trail and the archive -------------------------------------------


def test_execute_records_the_run_and_an_execute_audit_entry(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "alice")
    store.update_kpi(kpi.id, {"target": 2000.0}, "alice", expected_version=1, note="raise")

    run = store.execute(kpi.id, {"region": "east"}, actor="bob")

    assert run == store.execution(run.id)
    assert run.kpi_version == 2
    assert run.requested_by == "bob"
    assert run.status == "success" and run.attempts == 1 and run.error is None
    assert run.created_at <= run.started_at <= run.finished_at
    assert run.row_count == 1 and not run.truncated
    (entry,) = store.audit_log(action="EXECUTE")
    assert entry.actor == "bob"
    assert entry.kpi_id == kpi.id
    assert entry.details["execution_id"] == run.id
    assert entry.details["version"] == 2
    assert entry.details["status"] == "success"
    assert entry.details["params"] == {"start": "2024-01-01", "region": "east"}
    assert store.verify_audit().ok


def test_failed_runs_are_audited_too(store: KPIStore, add_kpi: Callable[..., int]) -> None:
    run = store.execute(add_kpi("SELECT x FROM missing"), actor="carol")
    (entry,) = store.audit_log(action="EXECUTE", person="carol")
    assert entry.details["status"] == "failed"
    assert entry.details["error"] == run.error


def test_an_archived_kpi_refuses_to_run(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "tester")
    store.archive_kpi(kpi.id, "tester")
    with pytest.raises((ExecutionError, ValidationError), match="archived"):
        store.execute(kpi.id, actor="tester")
    assert store.executions() == []
    store.unarchive_kpi(kpi.id, "tester")
    assert store.execute(kpi.id, actor="tester").status == "success"


def test_executions_filter_and_come_newest_first(
    store: KPIStore, add_kpi: Callable[..., int]
) -> None:
    good = add_kpi("SELECT count(*) AS n FROM sales")
    bad = add_kpi("SELECT x FROM missing")
    ids = [store.execute(kpi_id, actor="tester").id for kpi_id in (good, bad, good, bad, good)]

    assert [r.id for r in store.executions()] == ids[::-1]
    assert [r.id for r in store.executions(kpi_id=good)] == [ids[4], ids[2], ids[0]]
    assert [r.id for r in store.executions(kpi_id=bad, status="failed")] == [ids[3], ids[1]]
    assert store.executions(kpi_id=bad, status="success") == []
    assert [r.id for r in store.executions(limit=2)] == [ids[4], ids[3]]


def test_every_run_reads_through_a_read_only_connection(store: KPIStore, source_db: Path) -> None:
    engine = store.source_engines.get(f"sqlite:///{source_db}")
    with engine.connect() as connection:
        with pytest.raises(sa.exc.DatabaseError, match="not authorized"):  # the authorizer
            connection.exec_driver_sql("DELETE FROM sales")
        connection.connection.driver_connection.set_authorizer(None)
        with pytest.raises(sa.exc.OperationalError, match="readonly"):  # mode=ro underneath
            connection.exec_driver_sql("DELETE FROM sales")
    assert len(sales_rows(source_db)) == 48
