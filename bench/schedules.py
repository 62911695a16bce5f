"""What a schedule's tick costs over queuing the same run by hand, and what an idle poll costs.

    python bench/schedules.py [--schedules N] [--repeat K] [--store-url URL]

Builds a store (a temporary SQLite file, or ``--store-url``) with one tiny KPI and N
schedules (default 200). Then, side by side, each K times (default 3), medians reported:

* **fire**: every schedule due at once, ``run_due_schedules(now)`` claims each tick
  (conditional update of ``next_run_at``), queues its run and logs the tick, one
  transaction per tick; against a **baseline** of ``submit`` of the same N runs (the
  queuing alone). The ratio is the price of exactly-once over a plain queued run.
* **idle poll**: ``run_due_schedules`` when nothing is due (what every worker does every
  ``KPI_SCHEDULE_POLL_S``); against a **baseline** of ``schedules()`` (reading the list).

Queued runs are cancelled between rounds so the per-person queue limit never binds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpi_store import KPIStore, RunStatus  # noqa: E402
from kpi_store.config import Settings  # noqa: E402

ACTOR = "bench"


def open_store(url: str, schedules: int, sources: pathlib.Path) -> KPIStore:
    settings = Settings.from_env().replace(
        url=url, max_queued_per_user=schedules * 4, source_dirs=str(sources)
    )
    return KPIStore(settings=settings)


def clear_queue(store: KPIStore) -> None:
    for run in store.executions(status=RunStatus.PENDING, limit=None, actor=ACTOR):
        store.cancel(run.id, ACTOR)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store-url", default="")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="kpi-bench-schedules-"))
    url = args.store_url or f"sqlite:///{folder / 'store.db'}"
    source = folder / "sources" / "source.db"
    source.parent.mkdir(exist_ok=True)
    store = open_store(url, args.schedules, source.parent)
    sqlite3.connect(source).close()
    store.add_data_source("bench_schedules", f"sqlite:///{source}", ACTOR)
    kpi = store.create_kpi(
        {
            "name": f"Tick {time.time_ns()}",
            "data_source": "bench_schedules",
            "sql": "SELECT 1 AS one",
        },
        ACTOR,
    )
    for _ in range(args.schedules):
        store.create_schedule(kpi.id, "* * * * *", ACTOR)
    fire, queue, idle, listing = [], [], [], []
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for round_number in range(args.repeat):
        now += dt.timedelta(minutes=2)  # every schedule due again
        start = time.perf_counter()
        ticks = store.run_due_schedules(now)
        fire.append(time.perf_counter() - start)
        fired = sum(1 for t in ticks if t.outcome == "fired")
        assert fired == args.schedules, f"only {fired} of {args.schedules} ticks fired"
        clear_queue(store)
        queue.append(
            timed(lambda: [store.submit(kpi.id, None, ACTOR) for _ in range(args.schedules)])
        )
        clear_queue(store)
        idle.append(
            statistics.median(timed(lambda at=now: store.run_due_schedules(at)) for _ in range(20))
        )
        listing.append(statistics.median(timed(lambda: store.schedules(kpi.id)) for _ in range(20)))
        print(
            f"round {round_number + 1}: fire {fire[-1]:.3f} s, submit {queue[-1]:.3f} s", flush=True
        )
    n = args.schedules
    f, q = statistics.median(fire), statistics.median(queue)
    i, s = statistics.median(idle), statistics.median(listing)
    print(f"\n{n} schedules on {store.engine.dialect.name}, medians of {args.repeat}:")
    print(f"fire every tick: {f:.3f} s ({f / n * 1000:.2f} ms a tick)", end="; ")
    print(f"submit {n} runs: {q:.3f} s ({q / n * 1000:.2f} ms a run); ratio {f / q:.2f}")
    print(f"idle poll: {i * 1000:.2f} ms; schedules() list: {s * 1000:.2f} ms; ratio {i / s:.2f}")
    store.close()


if __name__ == "__main__":
    main()
