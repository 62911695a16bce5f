"""Three real worker processes firing one schedule due every second, on one store (a
SQLite file, and PostgreSQL when ``KPI_TEST_POSTGRES_URL`` is set).

The cron ``* * * * * *`` uses croniter's sixth field, seconds. Each worker looks for due
schedules every 0.2 s (``KPI_SCHEDULE_POLL_S``, set through the environment), so the three
race for every tick; the conditional UPDATE of ``next_run_at`` lets one win. Over 20 s of
ticks: no due time is decided twice, each fired tick has exactly one run marked with the
schedule (and no run lacks its tick), and every second between the first and the last
tick is accounted for: decided, or counted as missed by the tick that followed it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import make_spec
from job_helpers import WorkerProcess, wait_for

from kpi_store import KPIStore
from kpi_store.schedules import Tick

pytestmark = pytest.mark.slow

WINDOW = dt.timedelta(seconds=20)
FAST = {"KPI_SCHEDULE_POLL_S": "0.2", "KPI_WORKER_POLL_S": "0.1"}


@pytest.fixture()
def spawn(store_url: str, tmp_path: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    """``spawn(name)`` starts a worker process; all are killed at teardown."""
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        process = WorkerProcess(store_url, tmp_path, name, concurrency=2, env=FAST)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _span(ticks: list[Tick]) -> dt.timedelta:
    dues = [t.due_at for t in ticks]
    return max(dues) - min(dues) if dues else dt.timedelta(0)


def test_three_workers_fire_a_schedule_due_every_second_exactly_once_per_tick(
    store: KPIStore, spawn: Callable[[str], WorkerProcess]
) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    workers = [spawn(name) for name in ("a", "b", "c")]
    for worker in workers:
        worker.wait_ready()
    schedule = store.create_schedule(kpi.id, "* * * * * *", "alice")

    wait_for(
        lambda: _span(store.schedule_ticks(schedule.id, None)) >= WINDOW,
        timeout=90,
        message="20 s of ticks",
        interval=0.5,
    )
    store.pause_schedule(schedule.id, "alice")
    wait_for(
        lambda: all(r.finished for r in store.executions(kpi.id, limit=None)),
        timeout=60,
        message="the scheduled runs to finish",
        interval=0.2,
    )
    for worker in workers:
        code, _ = worker.terminate()
        assert code == 0, worker.output()

    ticks = sorted(store.schedule_ticks(schedule.id, None), key=lambda t: t.due_at)
    runs = store.executions(kpi.id, limit=None)
    dues = [t.due_at for t in ticks]
    assert len(dues) == len(set(dues)), "a due time was decided twice"
    assert all(d.microsecond == 0 for d in dues)
    for earlier, later in zip(ticks, ticks[1:], strict=False):
        assert later.due_at - earlier.due_at == dt.timedelta(seconds=1 + earlier.missed), (
            f"the seconds between {earlier.due_at} and {later.due_at} are not accounted for"
        )

    fired = [t for t in ticks if t.outcome == "fired"]
    assert Counter(t.outcome for t in ticks).keys() <= {"fired", "skipped"}
    assert sorted(t.run_id for t in fired) == sorted(r.id for r in runs)  # one run per tick
    assert {r.schedule_id for r in runs} == {schedule.id}
    assert {r.status for r in runs} == {"success"}
    going = {t.run_id for t in fired}
    for skipped in (t for t in ticks if t.outcome == "skipped"):
        assert any(f"Run {run_id} of this schedule" in (skipped.reason or "") for run_id in going)
    assert len(ticks) >= WINDOW.total_seconds() // 2, f"too few ticks: {len(ticks)}"

    pids = {int(t.decided_by.split(":")[1]) for t in ticks}
    assert pids <= {w.pid for w in workers} and len(pids) >= 2, pids
    print(  # the figures, for the report (pytest -s)
        f"\n{len(ticks)} ticks over {_span(ticks).total_seconds():.0f} s: "
        f"{len(fired)} fired, {len(ticks) - len(fired)} skipped, "
        f"{sum(t.missed for t in ticks)} missed; decided by "
        f"{dict(Counter(t.decided_by.split(':')[1] for t in ticks))}"
    )
