"""Workers in separate processes sharing one store: exactly-once runs, SIGKILL recovery,
cross-process cancel, and the ``python -m kpi_store worker`` command.

Each worker is a real subprocess (``tests/job_helpers.py worker ...`` or the CLI); what a
worker did is read from its own event log, written as the statement reaches the data
source, so the counts come from the source's side and not only from the store's status.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from job_helpers import (
    ENDLESS,
    FINITE,
    FINITE_ROWS,
    REPO,
    WorkerProcess,
    all_stored_rows,
    assert_slow_rows_exact,
    cpu_seconds,
    held_by,
    slow_kpi,
    stored_rows,
    subprocess_env,
    wait_for,
    wait_running_with_rows,
    wait_status,
)

from kpi_store import KPI, KPIStore

pytestmark = pytest.mark.slow

# Timing knobs through settings, not sleeps: beats every 0.2 s, stale after 2 s.
TIMING = {"KPI_HEARTBEAT_TIMEOUT_S": "2", "KPI_HEARTBEAT_INTERVAL_S": "0.2"}
JOBS = 50


@pytest.fixture()
def spawn(store_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(name, concurrency=2)`` starts a worker process; all are killed at teardown."""
    started: list[WorkerProcess] = []

    def start(name: str, concurrency: int = 2) -> WorkerProcess:
        process = WorkerProcess(
            store_url,
            tmp_path,
            name,
            concurrency=concurrency,
            recovery_interval_s=0.5,
            env=TIMING,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])  # host:pid:label


def _tagged_kpi(store: KPIStore) -> KPI:
    return store.create_kpi(
        {
            "name": "Tagged sales",
            "data_source": "shop",
            # The spin makes each job take tens of milliseconds, so one process cannot
            # drain the queue before the other's next poll.
            "sql": "WITH RECURSIVE spin(n) AS "
            "(SELECT 1 UNION ALL SELECT n + 1 FROM spin WHERE n < 200000)\n"
            "SELECT :tag AS tag, id, region, amount FROM sales\n"
            "WHERE id <= :upto AND (SELECT max(n) FROM spin) > 0 ORDER BY id",
            "parameters": [
                {"name": "tag", "type": "int", "default": 0},
                {"name": "upto", "type": "int", "default": 48},
            ],
            "aggregation": "count",
        },
        "setup",
    )


def test_fifty_jobs_on_two_worker_processes_each_run_exactly_once(
    store: KPIStore, source_db: Path, spawn: Callable[..., WorkerProcess]
) -> None:
    tagged = _tagged_kpi(store)
    a, b = spawn("a"), spawn("b")
    a.wait_ready()
    b.wait_ready()

    runs = {}
    for tag in range(1, JOBS + 1):
        run = store.submit(tagged.id, {"tag": tag, "upto": tag % 48 + 1}, "alice")
        runs[run.id] = tag
    wait_for(
        lambda: all(store.execution(i).finished for i in runs),
        timeout=60,
        message=f"all {JOBS} jobs to finish",
        interval=0.2,
    )

    # Source side: each job's query reached the data source exactly once, in one process.
    sent = [
        e["params"][0]
        for process in (a, b)
        for e in process.events("source")
        if "AS tag" in e["statement"]
    ]
    assert sorted(sent) == list(range(1, JOBS + 1)), Counter(sent).most_common(3)
    # Worker side: each execution claimed exactly once, by one of the two processes.
    claimed = {"a": a.claimed_ids(), "b": b.claimed_ids()}
    assert sorted(claimed["a"] + claimed["b"]) == sorted(runs)
    assert claimed["a"] and claimed["b"], "both processes should have taken work"
    assert sorted(e["id"] for p in (a, b) for e in p.events("ran")) == sorted(runs)

    owner = {i: a.worker_id for i in claimed["a"]} | {i: b.worker_id for i in claimed["b"]}
    _assert_each_run_stored_its_own_rows(store, source_db, runs, owner)

    for process in (a, b):
        code, took = process.terminate()
        assert code == 0, process.output()
        assert took < 5


def _assert_each_run_stored_its_own_rows(
    store: KPIStore, source_db: Path, runs: dict[int, int], owner: dict[int, str]
) -> None:
    with sqlite3.connect(source_db) as source:
        sales = source.execute("SELECT id, region, amount FROM sales ORDER BY id").fetchall()
    for execution_id, tag in runs.items():
        run = store.execution(execution_id)
        assert run.status == "success", (execution_id, run.error)
        assert (run.attempts, run.requeue_count) == (1, 0)
        assert held_by(run.worker_id, owner[execution_id])
        expected = [[tag, *row] for row in sales[: tag % 48 + 1]]
        assert all_stored_rows(store, execution_id) == expected
        assert run.row_count == run.rows_read == len(expected)


def test_a_sigkilled_worker_s_job_is_requeued_and_finished_by_another_without_orphans(
    store: KPIStore, spawn: Callable[..., WorkerProcess]
) -> None:
    slow = slow_kpi(store)
    run = store.submit(slow.id, FINITE, "alice")
    a = spawn("a", concurrency=1).wait_ready()
    running = wait_running_with_rows(store, run.id)
    assert held_by(running.worker_id, a.worker_id)

    a.kill()  # SIGKILL in the middle of the query: no clean-up at all
    assert a.process.returncode == -signal.SIGKILL
    orphaned = store.execution(run.id)
    assert orphaned.status == "running" and held_by(orphaned.worker_id, a.worker_id)
    assert stored_rows(store, run.id)[0] > 0  # A's partial rows are still there

    b = spawn("b", concurrency=1).wait_ready()
    wait_for(
        lambda: store.execution(run.id).requeue_count == 1,
        timeout=15,
        message="the dead worker's job to be re-queued",
    )
    done = wait_status(store, run.id, {"success", "failed", "timeout"}, timeout=60)

    assert done.status == "success", done.error
    assert held_by(done.worker_id, b.worker_id)
    assert (done.requeue_count, done.attempts) == (1, 1)
    assert done.row_count == done.rows_read == FINITE_ROWS
    assert_slow_rows_exact(store, run.id, FINITE)  # 1..N once each: nothing left from A
    # Each process sent the query once; only B got to the end of it.
    assert [len(p.events("source")) for p in (a, b)] == [1, 1]
    assert (a.claimed_ids(), b.claimed_ids()) == ([run.id], [run.id])
    assert [e["id"] for e in b.events("ran")] == [run.id] and a.events("ran") == []

    code, _ = b.terminate()
    assert code == 0, b.output()


def test_cancel_from_another_process_stops_the_query_in_a_worker_process(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], spawn: Callable[..., WorkerProcess]
) -> None:
    slow = slow_kpi(store)
    run = store.submit(slow.id, ENDLESS, "alice")
    worker = spawn("w", concurrency=1).wait_ready()
    wait_running_with_rows(store, run.id)
    before = cpu_seconds(worker.pid)
    time.sleep(0.5)
    assert cpu_seconds(worker.pid) - before > 0.1  # the query is running over there

    started = time.monotonic()
    asked = store.cancel(run.id, "carol")  # this process has no handle on that run
    assert asked.status == "running" and asked.cancel_requested
    done = wait_status(store, run.id, "cancelled", timeout=10)
    elapsed = time.monotonic() - started

    assert elapsed <= 1.5, f"cancel took {elapsed:.2f} s to reach the worker process"
    assert done.error == "Cancelled before it finished."
    assert stored_rows(store, run.id)[0] == 0
    before = cpu_seconds(worker.pid)
    time.sleep(1.0)
    assert cpu_seconds(worker.pid) - before < 0.1  # idle: the source query has stopped

    # The worker carries on serving the queue.
    revenue: KPI = store.create_kpi(kpi_spec(), "alice")
    after = store.submit(revenue.id, None, "alice")
    assert held_by(wait_status(store, after.id, "success", timeout=10).worker_id, worker.worker_id)
    code, _ = worker.terminate()
    assert code == 0, worker.output()


def test_cli_worker_runs_jobs_and_stops_cleanly_on_sigterm(
    store_url: str, store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    if not (REPO / "kpi_store" / "cli.py").exists():
        pytest.skip("kpi_store/cli.py is not there yet")
    revenue = store.create_kpi(kpi_spec(), "alice")
    slow = slow_kpi(store)
    output_path = tmp_path / "cli-worker.out"
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kpi_store",
                "--store",
                store_url,
                "worker",
                "--concurrency",
                "2",
                "--stop-timeout",
                "2",
            ],
            cwd=REPO,
            env=subprocess_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "started" in output_path.read_text() or process.poll() is not None,
            timeout=20,
            message="the CLI worker to start",
        )
        assert process.poll() is None, output_path.read_text()

        quick = store.submit_batch([revenue.id] * 6, {"region": "west"}, "alice")
        for run in quick.executions:
            done = wait_status(store, run.id, {"success", "failed"}, timeout=20)
            assert done.status == "success", done.error
            assert _pid_of(done.worker_id or "") == process.pid
        assert len({store.execution(r.id).value for r in quick.executions}) == 1

        long_run = store.submit(slow.id, ENDLESS, "alice")
        wait_running_with_rows(store, long_run.id)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    text = output_path.read_text()
    assert code == 0, text
    assert took < 4, f"the CLI worker took {took:.2f} s to stop"
    handed_back = store.execution(long_run.id)
    assert (handed_back.status, handed_back.worker_id) == ("pending", None), text
    assert stored_rows(store, long_run.id)[0] == 0
