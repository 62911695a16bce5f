"""Retention: old runs lose their stored rows and nothing else, on SQLite and PostgreSQL.

Rows are counted per run in the store before and after each prune; the newest official
run keeps its rows at any age, other series are limited each on its own, queued runs are
never touched; a pruned run reads as removed (never a crash), a dry run changes nothing,
a new SQLite store's file shrinks, an old one says how to switch; the CLI runs as a real
process, the worker's chore prunes, and the admin's Storage page prunes after a dry run.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import make_spec
from job_helpers import wait_for
from ui_helpers import all_text, clean_kpi_spec, no_exception, open_app, shown, sqlite_url

from kpi_store import KPIStore, ValidationError, Worker, db
from kpi_store.config import Settings
from kpi_store.errors import ExecutionError, RowsRemovedError
from kpi_store.retention import CHUNK_ROWS
from kpi_store.schema import kpi_execution_result_rows as rows_table
from kpi_store.schema import kpi_execution_results as executions
from kpi_store.schema import kpi_result_view_rows as view_rows
from kpi_store.schema import kpi_result_views as views

ROOT = Path(__file__).resolve().parents[1]
REGIONS = ("north", "south", "east", "west")
ADMIN = "admin@example.com"
REMOVED = (
    r"The rows of run {run} were removed on \d{{4}}-\d\d-\d\d by the retention policy "
    r"\({why}\) — its value and parameters are kept\."
)


# -- a store with a data source of as many rows as a test needs --------------------------


def items_db(path: Path, rows: int, label: str = "item") -> Path:
    """A SQLite source: ``items`` with ``rows`` rows, the regions taking turns."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, region TEXT, label TEXT, amount REAL)"
        )
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            ((i, REGIONS[i % 4], f"{label} {i}", float(i % 100)) for i in range(1, rows + 1)),
        )
    connection.close()
    return path


def items_spec(name: str = "Items") -> dict[str, Any]:
    """A KPI whose series are its regions; north (the default) is the official one."""
    region = {"name": "region", "type": "str", "default": "north", "choices": list(REGIONS)}
    return make_spec(
        name=name,
        data_source="items",
        sql="SELECT id, region, label, amount FROM items WHERE region = :region",
        parameters=[region],
        value_column="amount",
    )


OpenStore = Callable[..., KPIStore]


@pytest.fixture()
def open_store(store_url: str, tmp_path: Path) -> Iterator[OpenStore]:
    """``open_store(rows=400, **settings)``: the store with retention settings and the
    ``items`` source (made once per test), closed at the end."""
    opened: list[KPIStore] = []

    def make(rows: int = 400, label: str = "item", **changes: Any) -> KPIStore:
        store = KPIStore(store_url, Settings.from_env().replace(url=store_url, **changes))
        opened.append(store)
        source = tmp_path / f"items-{rows}.db"
        if not source.exists():
            items_db(source, rows, label)
            store.add_data_source("items", f"sqlite:///{source}", ADMIN)
        return store

    yield make
    for store in opened:
        store.close()


def run(store: KPIStore, kpi_id: int, region: str = "north") -> int:
    done = store.execute(kpi_id, {"region": region}, actor=ADMIN)
    assert done.status == "success", done.error
    return done.id


def stored(store: KPIStore) -> dict[int, int]:
    """Stored rows per run, counted in the rows table."""
    query = sa.select(rows_table.c.execution_id, sa.func.count()).group_by(
        rows_table.c.execution_id
    )
    with store.engine.connect() as connection:
        return {run_id: count for run_id, count in connection.execute(query)}


def kept_views(store: KPIStore) -> dict[int, int]:
    """Positions kept in sorted views, per run."""
    query = (
        sa.select(views.c.execution_id, sa.func.count())
        .join(view_rows, view_rows.c.view_id == views.c.id)
        .group_by(views.c.execution_id)
    )
    with store.engine.connect() as connection:
        return {run_id: count for run_id, count in connection.execute(query)}


def prune_entries(store: KPIStore) -> list[Any]:
    return store.audit_log(action="PRUNE", limit=None, actor=ADMIN)


# -- what goes, and nothing else ------------------------------------------------------------


def test_prune_removes_exactly_the_rows_it_reports(open_store: OpenStore) -> None:
    store = open_store(keep_rows_runs=2)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    north = [run(store, kpi) for _ in range(4)]
    south = [run(store, kpi, "south") for _ in range(3)]
    east = run(store, kpi, "east")
    queued = store.submit(kpi, {"region": "north"}, actor=ADMIN).id
    for run_id in (south[0], south[2]):  # a sorted view each: an old run's and a kept one's
        store.result_page(run_id, sort=[("amount", "desc")], actor=ADMIN)
    store._view_builder.settle()
    rows_before, views_before = stored(store), kept_views(store)
    assert views_before.keys() == {south[0], south[2]}
    record_before = store.execution(north[0], actor=ADMIN)

    report = store.prune(actor=ADMIN)

    gone = {north[0], north[1], south[0]}  # beyond the newest two of their own series
    assert {r.execution_id for r in report.runs} == gone
    assert {r.reason for r in report.runs} == {"count"}
    assert report.runs_pruned == 3 and not report.dry_run
    rows_after = stored(store)
    assert rows_after == {k: v for k, v in rows_before.items() if k not in gone}
    assert report.rows_removed == sum(rows_before[k] for k in gone) == 300
    assert report.rows_removed == sum(rows_before.values()) - sum(rows_after.values())
    assert kept_views(store) == {south[2]: views_before[south[2]]}
    for run_id in [*north, *south, east, queued]:
        execution = store.execution(run_id, actor=ADMIN)
        assert (execution.rows_pruned_at is not None) == (run_id in gone), run_id
    pending = store.execution(queued, actor=ADMIN)
    assert pending.status == "pending" and pending.rows_pruned_at is None
    record = store.execution(north[0], actor=ADMIN)  # the record, value and parameters stay
    assert record.model_dump(exclude={"rows_pruned_at"}) == record_before.model_dump(
        exclude={"rows_pruned_at"}
    )

    [entry] = prune_entries(store)
    assert entry.actor == ADMIN
    assert {k: entry.details[k] for k in ("runs", "rows", "by_count", "keep_rows_runs")} == {
        "runs": 3,
        "rows": 300,
        "by_count": 3,
        "keep_rows_runs": 2,
    }
    again = store.prune(actor=ADMIN)
    assert (again.runs_pruned, again.rows_removed, len(prune_entries(store))) == (0, 0, 1)
    assert stored(store) == rows_after


def test_the_newest_official_run_keeps_its_rows_at_any_age(open_store: OpenStore) -> None:
    store = open_store(keep_rows_days=30)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    north = [run(store, kpi) for _ in range(2)]
    south = [run(store, kpi, "south") for _ in range(2)]  # newer, but not the official series
    queued = store.submit(kpi, {"region": "north"}, actor=ADMIN).id
    waiting = store.submit(kpi, {"region": "south"}, actor=ADMIN).id
    assert store.queue.claim("a-test-holder") == queued  # running now, as a worker has it
    before = stored(store)

    assert store.prune(actor=ADMIN).runs_pruned == 0  # nothing is 30 days old yet
    later = db.utcnow() + dt.timedelta(days=45)
    report = store.prune(actor=ADMIN, now=later)

    gone = {north[0], *south}
    assert {r.execution_id for r in report.runs} == gone
    assert {r.reason for r in report.runs} == {"age"} and report.as_of == later
    assert stored(store) == {north[1]: before[north[1]]}
    for unfinished, status in ((queued, "running"), (waiting, "pending")):
        execution = store.execution(unfinished, actor=ADMIN)
        assert (execution.status, execution.rows_pruned_at) == (status, None)
    with pytest.raises(
        RowsRemovedError, match=REMOVED.format(run=south[1], why="runs older than 30 days")
    ):
        store.result_page(south[1], actor=ADMIN)
    assert store.result_page(north[1], actor=ADMIN).total == 100


def test_limits_hold_per_kpi_and_parameter_set(open_store: OpenStore) -> None:
    store = open_store(keep_rows_runs=1, keep_rows_days=10)
    first = store.create_kpi(items_spec(), ADMIN).id
    second = store.create_kpi(items_spec("Items again"), ADMIN).id
    runs = {
        (kpi, region): [run(store, kpi, region) for _ in range(2)]
        for kpi in (first, second)
        for region in ("north", "west")
    }
    with store.engine.begin() as connection:  # one run finished long ago: gone by age
        connection.execute(
            executions.update()
            .where(executions.c.id == runs[(second, "west")][1])
            .values(finished_at=db.utcnow() - dt.timedelta(days=11))
        )

    report = store.prune(actor=ADMIN)

    reasons = {r.execution_id: r.reason for r in report.runs}
    expected = {ids[0]: "count" for ids in runs.values()}
    expected[runs[(second, "west")][1]] = "age"
    assert reasons == expected
    assert set(stored(store)) == {runs[(k, "north")][1] for k in (first, second)} | {
        runs[(first, "west")][1]
    }
    why = "beyond the newest 1 run of its KPI and parameter set"
    assert re.fullmatch(
        REMOVED.format(run=runs[(first, "west")][0], why=why),
        store.rows_removed_note(runs[(first, "west")][0], actor=ADMIN) or "",
    )
    assert store.rows_removed_note(runs[(first, "west")][1], actor=ADMIN) is None


# -- a pruned run reads as removed -----------------------------------------------------------


def test_a_pruned_run_refuses_its_rows_clearly(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store(keep_rows_runs=1)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    old, new = run(store, kpi), run(store, kpi)
    store.prune(actor=ADMIN)
    message = REMOVED.format(run=old, why="beyond the newest 1 run of its KPI and parameter set")
    refusals = [
        lambda: store.result_page(old, actor=ADMIN),
        lambda: store.result_page(old, sort=[("amount", "asc")], actor=ADMIN),
        lambda: store.result_frame(old, actor=ADMIN),
        lambda: store.export_csv(old, tmp_path / "old.csv", ADMIN),
        lambda: store.export_file(old, tmp_path / "old.xlsx", ADMIN, format="xlsx"),
        lambda: store.export_file(old, io.BytesIO(), ADMIN, format="parquet"),
        lambda: store.export_link(old, ADMIN),
        lambda: store.page_csv(old, actor=ADMIN),
    ]
    for refused in refusals:
        with pytest.raises(RowsRemovedError, match=message) as caught:
            refused()
        assert isinstance(caught.value, ExecutionError) and caught.value.execution_id == old
    assert not (tmp_path / "old.csv").exists() and not (tmp_path / "old.xlsx").exists()
    with pytest.raises(RowsRemovedError, match=f"The rows of run {old} were removed on"):
        store.diff_runs(old, new, ["id"], actor=ADMIN)  # compared runs are refused too
    assert store.rows_removed_note(new, actor=ADMIN) is None
    assert store.export_csv(new, tmp_path / "new.csv", ADMIN) == 100
    exports = store.audit_log(action="EXPORT", limit=None, actor=ADMIN)
    assert [e.details["execution_id"] for e in exports] == [new]


def test_a_dry_run_changes_nothing(open_store: OpenStore) -> None:
    store = open_store(keep_rows_runs=1)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    ids = [run(store, kpi) for _ in range(3)]
    before, audit_before = stored(store), store.audit_log(limit=None, actor=ADMIN)

    plan = store.prune(actor=ADMIN, dry_run=True)

    assert plan.dry_run and (plan.runs_pruned, plan.rows_removed) == (2, 200)
    assert [r.execution_id for r in plan.runs] == ids[:2]
    assert (plan.bytes_freed, plan.bytes_before) == (0, plan.bytes_after)
    assert stored(store) == before
    assert store.audit_log(limit=None, actor=ADMIN) == audit_before
    assert all(store.execution(i, actor=ADMIN).rows_pruned_at is None for i in ids)
    with pytest.raises(ValidationError, match="cannot vacuum"):
        store.prune(actor=ADMIN, dry_run=True, vacuum=True)
    with pytest.raises(ValidationError, match="now must be a date and time"):
        store.prune(actor=ADMIN, now="yesterday")  # type: ignore[arg-type]
    done = store.prune(actor=ADMIN)
    assert [r.execution_id for r in done.runs] == [r.execution_id for r in plan.runs]
    assert done.rows_removed == plan.rows_removed


def test_a_big_run_goes_in_short_transactions(open_store: OpenStore) -> None:
    store = open_store(rows=4 * 45_000, keep_rows_runs=1)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    old, new = run(store, kpi), run(store, kpi)
    store.result_page(old, sort=[("label", "asc")], actor=ADMIN)
    store._view_builder.settle()
    assert kept_views(store) == {old: 45_000}
    deleted: list[int] = []
    commits: list[int] = []

    def count_delete(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM KPI_EXECUTION_RESULT_ROWS"):
            deleted.append(cursor.rowcount)

    sa.event.listen(store.engine, "after_cursor_execute", count_delete)
    sa.event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    try:
        report = store.prune(actor=ADMIN)
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", count_delete)

    assert report.rows_removed == sum(deleted) == 45_000
    assert max(deleted) <= CHUNK_ROWS and len([d for d in deleted if d]) == math.ceil(
        45_000 / CHUNK_ROWS
    )
    assert len(commits) >= 2 * math.ceil(45_000 / CHUNK_ROWS)  # rows, then view positions
    assert stored(store) == {new: 45_000} and kept_views(store) == {}


def test_an_interrupted_prune_is_finished_by_the_next(open_store: OpenStore) -> None:
    store = open_store(keep_rows_runs=1)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    old, new = run(store, kpi), run(store, kpi)
    with store.engine.begin() as connection:  # marked, as a prune cut short leaves it
        connection.execute(
            executions.update().where(executions.c.id == old).values(rows_pruned_at=db.utcnow())
        )
    report = store.prune(actor=ADMIN)
    assert (report.runs_pruned, report.runs_finished, report.rows_removed) == (0, 1, 100)
    assert stored(store) == {new: 100}


# -- the room comes back ----------------------------------------------------------------------


def sqlite_file(store: KPIStore) -> Path:
    return Path(str(store.engine.url.database))


def checkpointed_size(path: Path) -> int:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path.stat().st_size


def auto_vacuum(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA auto_vacuum").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.sqlite_only
def test_sqlite_a_new_store_file_shrinks_after_a_prune(open_store: OpenStore) -> None:
    store = open_store(rows=4 * 10_000, label="a fairly long label for item", keep_rows_runs=1)
    path = sqlite_file(store)
    assert auto_vacuum(path) == 2  # INCREMENTAL, set before the first table
    kpi = store.create_kpi(items_spec(), ADMIN).id
    for _ in range(4):
        run(store, kpi)
    size_before = checkpointed_size(path)

    report = store.prune(actor=ADMIN)

    size_after = path.stat().st_size
    assert report.rows_removed == 30_000 and report.auto_vacuum == "incremental"
    assert (report.bytes_before, report.bytes_after) == (size_before, size_after)
    assert report.bytes_freed == size_before - size_after > size_before / 2
    assert report.bytes_free == 0 and "returned to the operating system" in report.note


@pytest.mark.sqlite_only
def test_sqlite_an_old_store_says_how_to_switch_and_vacuum_switches_it(
    open_store: OpenStore,
) -> None:
    store = open_store(rows=4 * 10_000, keep_rows_runs=1)
    path = sqlite_file(store)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    for _ in range(3):
        run(store, kpi)
    store.engine.dispose()
    old = sqlite3.connect(path)  # made as stores were before retention
    old.isolation_level = None
    old.execute("PRAGMA auto_vacuum = NONE")
    old.execute("VACUUM")
    old.close()
    assert auto_vacuum(path) == 0

    report = store.prune(actor=ADMIN)

    assert report.auto_vacuum == "none" and report.rows_removed == 20_000
    assert report.bytes_freed == 0 and (report.bytes_free or 0) > 0
    assert "python -m kpi_store prune --vacuum" in report.note
    size_before = path.stat().st_size
    vacuumed = store.prune(actor=ADMIN, vacuum=True)
    assert vacuumed.vacuumed and vacuumed.auto_vacuum == "incremental"
    assert vacuumed.runs_pruned == 0 and vacuumed.bytes_freed > 0
    assert path.stat().st_size < size_before and auto_vacuum(path) == 2


# -- the command line, the worker --------------------------------------------------------------


def cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KPI_KEEP_")}
    environment |= {"KPI_ACTOR": ADMIN, **env}
    return subprocess.run(
        [sys.executable, "-m", "kpi_store", "--store", url, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_prune_command_runs_as_a_process(open_store: OpenStore, store_url: str) -> None:
    store = open_store()
    kpi = store.create_kpi(items_spec(), ADMIN).id
    ids = [run(store, kpi) for _ in range(3)]

    dry = cli(store_url, "prune", "--dry-run", KPI_KEEP_ROWS_RUNS="1")
    assert dry.returncode == 0, dry.stderr
    assert "Would remove 200 rows of 2 run(s). Nothing changed." in dry.stdout
    assert len(stored(store)) == 3

    done = cli(store_url, "prune", KPI_KEEP_ROWS_RUNS="1")
    assert done.returncode == 0, done.stderr
    assert "Removed 200 rows of 2 run(s); freed " in done.stdout
    assert f"{ids[0]}" in done.stdout and "beyond the newest kept" in done.stdout
    assert stored(store) == {ids[2]: 100}

    refused = cli(store_url, "export", str(ids[0]), "-o", os.devnull)
    assert refused.returncode == 2
    assert f"error: The rows of run {ids[0]} were removed on" in refused.stderr
    nothing = cli(store_url, "prune")  # no limits set: nothing goes
    assert nothing.returncode == 0 and "Removed 0 rows of 0 run(s)" in nothing.stdout


def test_the_worker_chore_prunes(open_store: OpenStore) -> None:
    store = open_store(keep_rows_runs=1, prune_interval_s=0.2)
    kpi = store.create_kpi(items_spec(), ADMIN).id
    ids = [run(store, kpi) for _ in range(3)]
    assert open_store().prune_chore() is None  # no limits: the chore does nothing

    worker = Worker(store, concurrency=1).start()
    try:
        wait_for(lambda: stored(store) == {ids[2]: 100}, 30, "the worker's prune")
    finally:
        assert worker.stop()
    [entry] = prune_entries(store)
    assert entry.actor == "retention" and entry.details["runs"] == 2


# -- the Storage page, the drill-down ----------------------------------------------------------


def test_storage_page_prunes_after_a_dry_run(
    app_store: KPIStore, sales_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPI_KEEP_ROWS_RUNS", "1")
    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    kpi = app_store.create_kpi(clean_kpi_spec(), "setup").id
    ids = [app_store.execute(kpi, actor="setup").id for _ in range(3)]

    at = open_app("storage")
    assert "Storage" in [t.value for t in at.title]
    frames = [d.value for d in at.dataframe]
    assert frames[0].to_dict("records") == [
        {
            "KPI": "Sales since",
            "Runs": 3,
            "Runs with rows": 3,
            "Runs pruned": 0,
            "Rows kept": 21,
            "Rows removed": 0,
        }
    ]
    assert list(frames[1]["Run"]) == sorted(ids, reverse=True)
    assert "runs beyond the newest 1 per KPI and parameter set" in shown(all_text(at))

    at.button(key="st_dry").click().run()
    no_exception(at)
    assert len(stored(app_store)) == 3  # only a dry run so far
    question = shown(all_text(at))
    assert "Remove the stored rows of 2 run(s) (14 rows)?" in question
    at.button(key="st_prune_yes").click().run()
    no_exception(at)
    assert "Removed 14 rows of 2 run(s); freed" in shown(all_text(at))
    assert stored(app_store) == {ids[2]: 7}

    drill = open_app("drilldown", query={"execution": ids[0]})
    text = shown(all_text(drill))
    assert f"The rows of run {ids[0]} were removed on" in text
    assert "beyond the newest 1 run of its KPI and parameter set" in text
    assert not any("Download" in str(b.label) for b in drill.button)
