"""The durable job queue in one process: submit, cancel, recovery, restart, progress, stop.

Everything runs against real SQLite files; workers are real ``Worker`` thread pools.
The multi-process behaviour (claiming across processes, SIGKILL) is in
``test_worker_processes.py``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from job_helpers import (
    ENDLESS,
    FINITE,
    FINITE_ROWS,
    age_heartbeat,
    all_stored_rows,
    assert_slow_rows_exact,
    slow_kpi,
    stored_rows,
    wait_for,
    wait_running_with_rows,
    wait_status,
)

from kpi_store import (
    KPI,
    ExecutionError,
    KPIStore,
    NotFoundError,
    ValidationError,
    Worker,
    db,
)
from kpi_store.config import Settings
from kpi_store.errors import LostOwnership
from kpi_store.queue import new_holder
from kpi_store.schema import kpi_execution_results as executions

CANCEL_WITHIN_S = 1.5


@pytest.fixture()
def revenue(store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]) -> KPI:
    return store.create_kpi(kpi_spec(), "alice")


@pytest.fixture()
def slow(store: KPIStore) -> KPI:
    return slow_kpi(store)


@pytest.fixture()
def workers(store: KPIStore) -> Iterator[Callable[..., Worker]]:
    """``workers(concurrency=1, on=store)`` starts a Worker that is stopped at teardown."""
    started: list[Worker] = []

    def start(concurrency: int = 1, on: KPIStore | None = None) -> Worker:
        worker = Worker(on or store, concurrency=concurrency, poll_interval_s=0.05).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=2)


def _count_executions(store: KPIStore) -> int:
    return len(store.executions(limit=None))


def _cancel_entries(store: KPIStore, execution_id: int) -> list[Any]:
    return [
        e
        for e in store.audit_log(action="CANCEL", limit=None)
        if e.entity == f"execution:{execution_id}"
    ]


def _expected_revenue(source_db: Path, start: str, region: str) -> float:
    with sqlite3.connect(source_db) as connection:
        return connection.execute(
            "SELECT SUM(amount) FROM sales WHERE sold_on >= ? AND region = ?", (start, region)
        ).fetchone()[0]


# -- submit ------------------------------------------------------------------------------


def test_submit_returns_a_pending_run_that_a_worker_then_runs(
    store: KPIStore, revenue: KPI, source_db: Path, workers: Callable[..., Worker]
) -> None:
    run = store.submit(revenue.id, {"region": "south", "start": "2024-03-01"}, "alice")

    assert run.status == "pending"
    assert run.mode == "background"
    assert (run.worker_id, run.started_at, run.finished_at) == (None, None, None)
    assert run.params == {"region": "south", "start": "2024-03-01"}
    assert (run.attempts, run.requeue_count, run.rows_read) == (0, 0, 0)
    assert run.requested_by == "alice"
    assert store.execution(run.id).status == "pending"

    workers()
    done = wait_status(store, run.id, "success", timeout=10)
    assert done.value == pytest.approx(_expected_revenue(source_db, "2024-03-01", "south"))
    assert done.attempts == 1 and done.row_count == 1
    assert done.worker_id is not None and ":worker-" in done.worker_id


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"region": "mars"}, ValidationError),
        ({"start": "not a date"}, ValidationError),
        ({"colour": "red"}, ValidationError),
    ],
)
def test_submit_refuses_bad_parameters_and_queues_nothing(
    store: KPIStore, revenue: KPI, params: dict[str, Any], error: type[Exception]
) -> None:
    before = _count_executions(store)
    with pytest.raises(error):
        store.submit(revenue.id, params, "alice")
    assert _count_executions(store) == before


def test_submit_refuses_unknown_archived_kpi_and_missing_actor(
    store: KPIStore, revenue: KPI, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    archived = store.create_kpi(kpi_spec(name="Old revenue"), "alice")
    store.archive_kpi(archived.id, "alice")

    with pytest.raises(NotFoundError):
        store.submit(999_999, None, "alice")
    with pytest.raises(ValidationError, match="archived"):
        store.submit(archived.id, None, "alice")
    with pytest.raises(ValidationError):
        store.submit(revenue.id, None, "  ")
    assert _count_executions(store) == 0


def test_submit_refuses_the_same_input_as_execute(store: KPIStore, revenue: KPI) -> None:
    bad = {"region": "mars"}
    with pytest.raises(ValidationError) as by_execute:
        store.execute(revenue.id, bad, "alice")
    with pytest.raises(ValidationError) as by_submit:
        store.submit(revenue.id, bad, "alice")
    assert str(by_submit.value) == str(by_execute.value)
    assert by_submit.value.field_errors == by_execute.value.field_errors
    assert _count_executions(store) == 0


def test_submit_batch_shares_a_batch_id_and_reports_refusals(
    store: KPIStore, revenue: KPI, slow: KPI, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    archived = store.create_kpi(kpi_spec(name="Old revenue"), "alice")
    store.archive_kpi(archived.id, "alice")

    batch = store.submit_batch([revenue.id, 424_242, slow.id, archived.id], actor="bob")

    assert batch.total == 4
    assert batch.successful == 2 and batch.failed == 2
    assert [e.kpi_id for e in batch.executions] == [revenue.id, slow.id]
    assert {e.status for e in batch.executions} == {"pending"}
    assert {e.batch_id for e in batch.executions} == {batch.batch_id}
    assert {e.requested_by for e in batch.executions} == {"bob"}
    refused = {e.kpi_id: e.message for e in batch.errors}
    assert set(refused) == {424_242, archived.id}
    assert "archived" in refused[archived.id]
    queued = store.executions(batch_id=batch.batch_id)
    assert sorted(e.id for e in queued) == sorted(e.id for e in batch.executions)
    assert _count_executions(store) == 2


def test_submit_batch_applies_params_only_to_kpis_that_declare_them(
    store: KPIStore, revenue: KPI, slow: KPI
) -> None:
    batch = store.submit_batch([revenue.id, slow.id], {"region": "east"}, "bob")
    params = {e.kpi_id: e.params for e in batch.executions}
    assert params[revenue.id]["region"] == "east"
    assert params[slow.id] == FINITE

    refused = store.submit_batch([revenue.id], {"region": "mars"}, "bob")
    assert (refused.successful, refused.failed, refused.executions) == (0, 1, [])
    assert "mars" in refused.errors[0].message


# -- claiming and recovery ------------------------------------------------------------------


def test_claim_takes_the_oldest_pending_job_once(store: KPIStore, revenue: KPI) -> None:
    first = store.submit(revenue.id, None, "alice")
    second = store.submit(revenue.id, None, "alice")

    assert store.ledger.claim_next("w1") == first.id
    assert store.ledger.claim_next("w2") == second.id
    assert store.ledger.claim_next("w3") is None
    claimed = store.execution(first.id)
    assert (claimed.status, claimed.worker_id) == ("running", "w1")
    assert claimed.started_at is not None and claimed.heartbeat_at is not None


def test_a_job_whose_worker_dies_twice_ends_failed_worker_lost_without_rows(
    store_url: str, store: KPIStore, slow: KPI
) -> None:
    recovering = KPIStore(store_url, Settings.from_env().replace(heartbeat_timeout_s=2))
    try:
        run = store.submit(slow.id, None, "alice")

        # First worker: claims it, stores a partial batch, then stops beating (dies).
        assert store.ledger.claim_next("ghost-1") == run.id
        store.ledger.held(run.id, "ghost-1").store(1, ["[1, 2]", "[2, 4]"], 2)
        assert recovering.executions(status="running")[0].id == run.id
        assert Worker(recovering).recover() == []  # its heartbeat is fresh: not touched yet
        age_heartbeat(store, run.id)
        assert Worker(recovering).recover() == [run.id]

        requeued = store.execution(run.id)
        assert (requeued.status, requeued.requeue_count) == ("pending", 1)
        assert (requeued.worker_id, requeued.rows_read) == (None, 0)
        assert stored_rows(store, run.id)[0] == 0
        with pytest.raises(LostOwnership):  # the dead worker can no longer write
            store.ledger.held(run.id, "ghost-1").store(3, ["[3, 6]"], 3)

        # Second worker: same again.
        assert store.ledger.claim_next("ghost-2") == run.id
        store.ledger.held(run.id, "ghost-2").store(1, ["[1, 2]"], 1)
        age_heartbeat(store, run.id)
        assert Worker(recovering).recover() == [run.id]

        lost = store.execution(run.id)
        assert (lost.status, lost.error, lost.requeue_count) == ("failed", "worker lost", 1)
        assert lost.finished_at is not None and lost.row_count is None
        assert stored_rows(store, run.id)[0] == 0
        assert Worker(recovering).recover() == []  # never re-queued again
        audit = [
            e
            for e in store.audit_log(action="EXECUTE", limit=None)
            if e.entity == f"execution:{run.id}"
        ]
        assert [(e.details["status"], e.details["error"]) for e in audit] == [
            ("failed", "worker lost")
        ]
    finally:
        recovering.close()


def test_a_worker_that_lost_its_job_mid_run_leaves_it_alone(
    store_url: str, store: KPIStore, slow: KPI, workers: Callable[..., Worker]
) -> None:
    """A live worker whose run was failed as lost stops writing; no rows come back."""
    recovering = KPIStore(store_url, Settings.from_env().replace(heartbeat_timeout_s=2))
    try:
        run = store.submit(slow.id, ENDLESS, "alice")
        # Its first life already ended once (requeue_count 1): the next loss is final.
        assert store.ledger.claim_next("ghost") == run.id
        age_heartbeat(store, run.id)
        assert recovering.ledger.recover_stale() == [run.id]

        workers()
        wait_running_with_rows(store, run.id)
        # The live worker beats every second: age its heartbeat and recover at once,
        # again if a beat slipped in between.
        for _ in range(5):
            age_heartbeat(store, run.id)
            if run.id in recovering.ledger.recover_stale():
                break

        lost = store.execution(run.id)
        assert (lost.status, lost.error) == ("failed", "worker lost")
        time.sleep(1.5)  # the worker notices at its next write and lets go
        assert store.execution(run.id).status == "failed"
        assert stored_rows(store, run.id)[0] == 0
    finally:
        recovering.close()


# -- cancel ---------------------------------------------------------------------------------


def test_cancelling_a_pending_job_is_immediate_and_it_never_runs(
    store: KPIStore, revenue: KPI, workers: Callable[..., Worker]
) -> None:
    doomed = store.submit(revenue.id, None, "alice")

    cancelled = store.cancel(doomed.id, "carol")

    assert cancelled.status == "cancelled"
    assert cancelled.cancel_requested and cancelled.finished_at is not None
    assert "carol" in (cancelled.error or "")
    [entry] = _cancel_entries(store, doomed.id)
    assert (entry.actor, entry.kpi_id) == ("carol", revenue.id)
    assert entry.details["status_before"] == "pending"

    later = store.submit(revenue.id, None, "alice")
    workers()
    wait_status(store, later.id, "success", timeout=10)  # the worker was busy meanwhile
    never_ran = store.execution(doomed.id)
    assert never_ran.status == "cancelled"
    assert (never_ran.attempts, never_ran.started_at, never_ran.worker_id) == (0, None, None)
    with pytest.raises(ExecutionError, match="already finished"):
        store.cancel(doomed.id, "carol")


def _process_cpu_over(seconds: float) -> float:
    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


@pytest.mark.parametrize("from_another_store", [False, True], ids=["same-store", "other-store"])
def test_cancelling_a_running_job_stops_its_query_and_leaves_no_rows(
    store_url: str,
    store: KPIStore,
    slow: KPI,
    workers: Callable[..., Worker],
    from_another_store: bool,
) -> None:
    run = store.submit(slow.id, ENDLESS, "alice")
    workers()
    wait_running_with_rows(store, run.id)
    assert stored_rows(store, run.id)[0] > 0
    assert _process_cpu_over(0.5) > 0.1  # the query is burning CPU

    canceller = KPIStore(store_url) if from_another_store else store
    try:
        started = time.monotonic()
        asked = canceller.cancel(run.id, "carol")
        assert asked.status == "running" and asked.cancel_requested
        done = wait_status(store, run.id, "cancelled", timeout=5)
        elapsed = time.monotonic() - started
    finally:
        if from_another_store:
            canceller.close()

    assert elapsed <= CANCEL_WITHIN_S, f"took {elapsed:.2f} s to cancel"
    assert done.error == "Cancelled before it finished."
    assert done.row_count is None and done.finished_at is not None
    assert stored_rows(store, run.id)[0] == 0
    [entry] = _cancel_entries(store, run.id)
    assert entry.details["status_before"] == "running"
    assert _process_cpu_over(0.5) < 0.15  # the source query is no longer running


def test_cancelling_a_finished_run_is_an_error(store: KPIStore, revenue: KPI) -> None:
    finished = store.execute(revenue.id, None, "alice")
    assert finished.status == "success"

    with pytest.raises(ExecutionError, match="already finished"):
        store.cancel(finished.id, "carol")
    assert store.execution(finished.id).status == "success"
    assert _cancel_entries(store, finished.id) == []
    with pytest.raises(NotFoundError):
        store.cancel(987_654, "carol")


# -- durability, progress, stop --------------------------------------------------------------


def test_a_restarted_store_sees_every_queued_job_and_a_worker_runs_them(
    store_url: str, source_db: Path, store: KPIStore, revenue: KPI
) -> None:
    single = [store.submit(revenue.id, {"region": r}, "alice").id for r in ("north", "west")]
    batch = store.submit_batch([revenue.id, revenue.id], {"region": "east"}, "alice")
    queued = sorted(single + [e.id for e in batch.executions])
    store.close()  # the first "server process" goes away

    restarted = KPIStore(store_url)
    try:
        pending = restarted.executions(status="pending", limit=None)
        assert sorted(e.id for e in pending) == queued
        assert len(restarted.executions(batch_id=batch.batch_id)) == 2

        worker = Worker(restarted, concurrency=2, poll_interval_s=0.05).start()
        try:
            for execution_id in queued:
                wait_status(restarted, execution_id, "success", timeout=15)
        finally:
            assert worker.stop(timeout=2)
        east = _expected_revenue(source_db, "2024-01-01", "east")
        assert [restarted.execution(e.id).value for e in batch.executions] == [
            pytest.approx(east)
        ] * 2
        assert restarted.executions(status="pending") == []
    finally:
        restarted.close()


def test_progress_and_heartbeat_advance_while_a_long_job_runs(
    store: KPIStore, slow: KPI, workers: Callable[..., Worker]
) -> None:
    run = store.submit(slow.id, FINITE, "alice")
    workers()
    samples: list[tuple[int, Any]] = []

    def finished() -> bool:
        current = store.execution(run.id)
        if current.status == "running":
            samples.append((current.rows_read, current.heartbeat_at))
        return current.finished

    wait_for(finished, timeout=30, message="the slow run to finish", interval=0.1)

    rows_read = [r for r, _ in samples]
    assert rows_read == sorted(rows_read)  # never goes back
    increases = sum(b > a for a, b in zip(rows_read, rows_read[1:], strict=False))
    assert increases >= 2, rows_read
    assert 0 < max(rows_read) <= FINITE_ROWS
    beats = [h for _, h in samples]
    assert beats == sorted(beats) and beats[-1] > beats[0]

    done = store.execution(run.id)
    assert done.status == "success"
    assert done.rows_read == done.row_count == FINITE_ROWS
    assert done.value == FINITE_ROWS
    assert_slow_rows_exact(store, run.id, FINITE)


def test_stop_hands_a_long_job_back_to_the_queue_within_its_timeout(
    store: KPIStore, slow: KPI
) -> None:
    run = store.submit(slow.id, ENDLESS, "alice")
    worker = Worker(store, concurrency=1, poll_interval_s=0.05).start()
    wait_running_with_rows(store, run.id)

    started = time.monotonic()
    clean = worker.stop(timeout=2)
    elapsed = time.monotonic() - started

    assert clean and not worker.running
    assert elapsed <= 2.5, f"stop(timeout=2) took {elapsed:.2f} s"
    back = store.execution(run.id)
    assert (back.status, back.worker_id, back.rows_read) == ("pending", None, 0)
    assert back.finished_at is None and back.error is None
    assert back.requeue_count == 0  # a clean hand-back is not a lost worker
    assert stored_rows(store, run.id)[0] == 0

    # Handed back, not lost: the next worker picks it up again.
    again = Worker(store, concurrency=1, poll_interval_s=0.05).start()
    try:
        wait_running_with_rows(store, run.id)
    finally:
        store.cancel(run.id, "alice")
        assert again.stop(timeout=2)
    assert store.execution(run.id).status == "cancelled"


def test_stop_on_an_idle_worker_is_fast_and_a_worker_can_restart(
    store: KPIStore, revenue: KPI
) -> None:
    worker = Worker(store, concurrency=2).start()
    assert worker.running
    time.sleep(0.3)
    started = time.monotonic()
    assert worker.stop(timeout=10)
    assert time.monotonic() - started < 0.5
    assert not worker.running

    worker.start()
    try:
        run = store.submit(revenue.id, None, "alice")
        wait_status(store, run.id, "success", timeout=10)
    finally:
        assert worker.stop(timeout=2)


def test_a_finished_background_run_has_exactly_its_rows(
    store: KPIStore, slow: KPI, workers: Callable[..., Worker]
) -> None:
    params = {"n": 200_000, "step": 7}
    run = store.submit(slow.id, params, "alice")
    workers(concurrency=2)
    done = wait_status(store, run.id, {"success", "failed"}, timeout=15)
    assert done.status == "success", done.error
    rows = all_stored_rows(store, run.id)
    assert rows == [[n, 2 * n] for n in range(7, 200_001, 7)]
    assert done.row_count == len(rows)


# -- races with a concurrent writer (a transaction held open stands in for the other side) ------


def _hold_row(store: KPIStore, execution_id: int, **values: Any) -> AbstractContextManager:
    """A write transaction that changes a run and holds its lock until the block ends."""

    @contextmanager
    def held() -> Iterator[None]:
        with db.write_tx(store.engine) as connection:
            connection.execute(
                executions.update().where(executions.c.id == execution_id).values(**values)
            )
            yield

    return held()


def _in_thread(function: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``function`` in a thread; the returned callable joins it and gives its result."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(timeout=30)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result


def test_recovery_leaves_alone_a_run_whose_heartbeat_lands_while_it_looks(
    store_url: str, store: KPIStore, slow: KPI
) -> None:
    recovering = KPIStore(store_url, Settings.from_env().replace(heartbeat_timeout_s=2))
    try:
        run = store.submit(slow.id, None, "alice")
        assert store.ledger.claim_next("alive") == run.id
        store.ledger.held(run.id, "alive").store(1, ["[1, 2]", "[2, 4]"], 2)
        age_heartbeat(store, run.id)

        with _hold_row(store, run.id, heartbeat_at=db.utcnow()):  # a heartbeat in flight
            recovered = _in_thread(lambda: recovering.ledger.recover_stale())
            time.sleep(0.5)
        # ... the heartbeat has committed while the recovery was looking

        assert recovered() == []
        alive = store.execution(run.id)
        assert (alive.status, alive.worker_id, alive.requeue_count) == ("running", "alive", 0)
        assert stored_rows(store, run.id) == (2, 1, 2)  # its rows were not touched
    finally:
        recovering.close()


def test_cancel_racing_a_claim_still_stops_the_run(store: KPIStore, slow: KPI) -> None:
    run = store.submit(slow.id, None, "alice")
    now = db.utcnow()
    claiming = {"status": "running", "worker_id": "w", "started_at": now, "heartbeat_at": now}
    with _hold_row(store, run.id, **claiming):  # a worker's claim in flight
        cancelled = _in_thread(lambda: store.cancel(run.id, "carol"))
        time.sleep(0.5)
    # ... the claim has committed before the cancel could look

    after = cancelled()
    assert after.status == "running" and after.cancel_requested  # the worker will stop it
    assert store.execution(run.id).cancel_requested
    [entry] = _cancel_entries(store, run.id)
    assert entry.details["status_before"] == "running"


def test_a_run_asked_to_cancel_whose_worker_died_is_cancelled_not_requeued(
    store_url: str, store: KPIStore, slow: KPI
) -> None:
    recovering = KPIStore(store_url, Settings.from_env().replace(heartbeat_timeout_s=2))
    try:
        run = store.submit(slow.id, None, "alice")
        assert store.ledger.claim_next("ghost") == run.id
        store.ledger.held(run.id, "ghost").store(1, ["[1, 2]"], 1)
        assert store.cancel(run.id, "carol").status == "running"
        age_heartbeat(store, run.id)  # ... and its worker dies before it sees the request

        assert recovering.ledger.recover_stale() == [run.id]

        done = store.execution(run.id)
        assert done.status == "cancelled" and done.finished_at is not None
        assert done.requeue_count == 0
        assert stored_rows(store, run.id)[0] == 0
        assert store.ledger.claim_next("next") is None  # it never runs again
    finally:
        recovering.close()


@pytest.mark.parametrize("lost", ["before-its-attempt", "during-its-attempt"])
def test_a_worker_that_lost_its_run_does_not_wipe_the_new_owner_s_rows_on_retry(
    store: KPIStore, source_db: Path, kpi_spec: Callable[..., dict[str, Any]], lost: str
) -> None:
    """A worker presumed dead but alive (A), whose query then hits a transient fault, must
    not touch the run another worker (B) now holds: not its rows, not its attempt count."""
    flaky = store.create_kpi(kpi_spec(name="Flaky", max_retries=1), "alice")
    run = store.submit(flaky.id, None, "alice")
    assert store.ledger.claim_next("A") == run.id

    def taken_over_by_b() -> None:  # A was re-queued as lost, then B claimed it and wrote
        with db.write_tx(store.engine) as connection:
            connection.execute(
                executions.update().where(executions.c.id == run.id).values(worker_id="B")
            )
        store.ledger.held(run.id, "B").store(1, ['["x"]', '["y"]'], 2)

    lock = sqlite3.connect(source_db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the source answers "database is locked": transient
        if lost == "before-its-attempt":
            taken_over_by_b()
            store.queue.run(run.id, "A")
        else:
            finished = _in_thread(lambda: store.queue.run(run.id, "A"))
            time.sleep(0.4)  # A has recorded its attempt and waits on the locked source
            taken_over_by_b()
            finished()
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    held = store.execution(run.id)
    assert (held.status, held.worker_id) == ("running", "B")
    assert held.attempts == (0 if lost == "before-its-attempt" else 1)
    assert stored_rows(store, run.id) == (2, 1, 2)


def test_a_run_claimed_again_by_the_same_worker_refuses_the_old_claims_writes(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    run = store.submit(kpi.id, actor="ann")
    first = new_holder("worker-1")
    assert store.ledger.claim_next(first) == run.id
    with db.write_tx(store.engine) as connection:  # its heartbeat went stale
        connection.execute(
            executions.update()
            .where(executions.c.id == run.id)
            .values(heartbeat_at=db.utcnow() - dt.timedelta(minutes=5))
        )
    assert store.ledger.recover_stale() == [run.id]
    second = new_holder("worker-1")  # another thread of the same worker
    assert store.ledger.claim_next(second) == run.id

    with pytest.raises(LostOwnership):
        store.ledger.held(run.id, first).store(1, ["[1]"], 1)
    store.ledger.held(run.id, second).store(1, ["[2]"], 1)
    assert store.execution(run.id).worker_id == second
