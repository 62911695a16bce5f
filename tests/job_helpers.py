"""Helpers for the job-queue tests, and the worker script the process tests launch.

As a script::

    python tests/job_helpers.py worker STORE_URL CONCURRENCY [--log FILE] [--ready FILE]
        [--recovery-interval S] [--stop-timeout S]

starts ``Worker(KPIStore(STORE_URL), CONCURRENCY)``, writes ``--ready`` (its pid and worker
id, as JSON) once the worker runs, and blocks until SIGTERM or SIGINT; then it calls
``stop()`` and exits 0 (3 if some thread was still busy). With ``--log`` it appends one
JSON line per event, written straight to the file (no buffering, so a SIGKILL loses
nothing written before it):

* ``{"event": "source", "statement": ..., "params": [...]}`` each time a statement is sent
  to a data source (what the source sees, not what the store says);
* ``{"event": "claimed", "id": N}`` / ``{"event": "ran", "id": N}`` around each run.

As a module (``import job_helpers`` from a test): a slow but finite KPI, a worker
subprocess wrapper, polling and row-counting helpers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from kpi_store import KPI, Execution, KPIStore, Worker, db  # noqa: E402
from kpi_store.schema import kpi_execution_results as executions  # noqa: E402

HELPER = Path(__file__).resolve()

# A query whose cost is set by its parameters: ~7M CTE steps/s here, so n=16M, step=320
# streams 50,000 rows over about 2.5 s; n=2e9 runs for minutes (until cancelled or stopped).
SLOW_SQL = (
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < :n)\n"
    "SELECT n, n * 2 AS twice FROM r WHERE n % :step = 0"
)
FINITE = {"n": 16_000_000, "step": 320}
FINITE_ROWS = FINITE["n"] // FINITE["step"]
ENDLESS = {"n": 2_000_000_000, "step": 500}


def slow_kpi(store: KPIStore, data_source: str = "shop", name: str = "Slow count") -> KPI:
    """A KPI over ``SLOW_SQL`` (parameters ``n`` and ``step``) with a count headline."""
    return store.create_kpi(
        {
            "name": name,
            "data_source": data_source,
            "sql": SLOW_SQL,
            "aggregation": "count",
            "parameters": [
                {"name": "n", "type": "int", "default": FINITE["n"]},
                {"name": "step", "type": "int", "default": FINITE["step"]},
            ],
        },
        "setup",
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def wait_status(
    store: KPIStore, execution_id: int, statuses: str | set[str], timeout: float
) -> Execution:
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)

    def reached() -> Execution | None:
        run = store.execution(execution_id)
        return run if run.status in wanted else None

    return wait_for(reached, timeout, f"run {execution_id} to be {sorted(wanted)}")


def wait_running_with_rows(store: KPIStore, execution_id: int, timeout: float = 20) -> Execution:
    """Until the run is ``running`` and has stored at least one batch of rows."""

    def started() -> Execution | None:
        run = store.execution(execution_id)
        if run.finished:
            raise AssertionError(f"run {execution_id} finished too early: {run}")
        return run if run.status == "running" and run.rows_read > 0 else None

    return wait_for(started, timeout, f"run {execution_id} to stream rows")


def stored_rows(store: KPIStore, execution_id: int) -> tuple[int, int | None, int | None]:
    """(count, min row_number, max row_number) of the stored rows of one run."""
    with store.engine.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT count(*), min(row_number), max(row_number) "
                "FROM kpi_execution_result_rows WHERE execution_id = :id"
            ),
            {"id": execution_id},
        ).one()
    return row[0], row[1], row[2]


def all_stored_rows(store: KPIStore, execution_id: int) -> list[list[Any]]:
    """Every stored row of a run, in row-number order, checking the numbering is 1..N."""
    with store.engine.connect() as connection:
        pairs = connection.execute(
            sa.text(
                "SELECT row_number, row_data FROM kpi_execution_result_rows "
                "WHERE execution_id = :id ORDER BY row_number"
            ),
            {"id": execution_id},
        ).all()
    numbers = [number for number, _ in pairs]
    assert numbers == list(range(1, len(pairs) + 1)), f"run {execution_id}: gaps or repeats"
    return [json.loads(data) for _, data in pairs]


def assert_slow_rows_exact(store: KPIStore, execution_id: int, params: dict[str, int]) -> None:
    """The rows of a ``SLOW_SQL`` run are exactly the query's rows, each stored once."""
    step = params["step"]
    expected = params["n"] // step
    assert stored_rows(store, execution_id) == (expected, 1, expected)
    rows = all_stored_rows(store, execution_id)
    assert rows == [[k * step, k * step * 2] for k in range(1, expected + 1)]


def age_heartbeat(store: KPIStore, execution_id: int, seconds: float = 3600) -> None:
    """Data set-up: make a running run look as if its worker stopped beating long ago."""
    with db.write_tx(store.engine) as connection:
        changed = connection.execute(
            executions.update()
            .where(executions.c.id == execution_id, executions.c.status == "running")
            .values(heartbeat_at=db.utcnow() - dt.timedelta(seconds=seconds))
        ).rowcount
    assert changed == 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("KPI_EMBEDDED_WORKER", "0")
    env.update(extra)
    return env


class WorkerProcess:
    """A worker in its own process (this script), with its event log and output file."""

    def __init__(
        self,
        store_url: str,
        folder: Path,
        name: str,
        concurrency: int = 2,
        recovery_interval_s: float = 0.5,
        stop_timeout_s: float = 2.0,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.log_path = folder / f"{name}.events.jsonl"
        self.ready_path = folder / f"{name}.ready.json"
        self.output_path = folder / f"{name}.out"
        command = [
            sys.executable,
            str(HELPER),
            "worker",
            store_url,
            str(concurrency),
            "--log",
            str(self.log_path),
            "--ready",
            str(self.ready_path),
            "--recovery-interval",
            str(recovery_interval_s),
            "--stop-timeout",
            str(stop_timeout_s),
        ]
        self._output = open(self.output_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=subprocess_env(**(env or {})),
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        self.worker_id: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 20) -> WorkerProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()}")
            return self.ready_path.exists() and self.ready_path.stat().st_size > 0

        wait_for(ready, timeout, f"{self.name} to start")
        self.worker_id = json.loads(self.ready_path.read_text())["worker_id"]
        return self

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if kind is None or e["event"] == kind]

    def claimed_ids(self) -> list[int]:
        return [e["id"] for e in self.events("claimed")]

    def output(self) -> str:
        self._output.flush()
        return self.output_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM, then wait: returns (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._output.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: the process dies at once, without any clean-up."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._output.close()

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.poll() is None:
            self.kill()
        self._output.close()


# -- the script ---------------------------------------------------------------------------


class _EventLog:
    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **event: Any) -> None:
        os.write(self._fd, (json.dumps(event, default=str) + "\n").encode())


def _run_worker(argv: list[str]) -> int:
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="job_helpers.py worker")
    parser.add_argument("url")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--log")
    parser.add_argument("--ready")
    parser.add_argument("--recovery-interval", type=float, default=5.0)
    parser.add_argument("--stop-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    store = KPIStore(args.url)
    if args.log:
        events = _EventLog(args.log)

        def source_statement(conn, _cursor, statement, parameters, _context, _many) -> None:
            if conn.engine is not store.engine:
                params = list(parameters) if isinstance(parameters, (list, tuple)) else parameters
                events.write(event="source", statement=statement, params=params)

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", source_statement)
        run_held = store.queue.execute

        def logged_run(execution_id: int, worker_id: str) -> None:
            events.write(event="claimed", id=execution_id, worker_id=worker_id)
            run_held(execution_id, worker_id)
            events.write(event="ran", id=execution_id)

        store.queue = dataclasses.replace(store.queue, execute=logged_run)

    worker = Worker(store, args.concurrency, recovery_interval_s=args.recovery_interval).start()
    if args.ready:
        Path(args.ready + ".tmp").write_text(
            json.dumps({"pid": os.getpid(), "worker_id": worker.worker_id})
        )
        os.replace(args.ready + ".tmp", args.ready)
    while not stop.wait(0.1):
        pass
    clean = worker.stop(timeout=args.stop_timeout)
    store.close()
    return 0 if clean else 3


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "worker":
        sys.exit(__doc__)
    sys.exit(_run_worker(sys.argv[2:]))


def held_by(holder: str | None, worker_id: str) -> bool:
    """Whether a run's holder token is one of ``worker_id``'s claims (``worker_id:token``)."""
    return bool(holder) and holder.startswith(worker_id + ":")
