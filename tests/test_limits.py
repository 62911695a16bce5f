"""Issue 10, resource limits and text sizes: every attack is tried for real.

* A query cannot take the server down: each value (``KPI_VALUE_MAX_BYTES``), the bytes a
  run stores (``KPI_RESULT_MAX_BYTES``) and the deadline bound it; a run over a limit ends
  ``failed`` with a message naming the limit, and keeps no rows. The two probes of the
  issue run in a fresh process under an RSS watchdog (peak RSS < 1 GiB).
* One person cannot fill the workers or the queue (``KPI_MAX_RUNNING_PER_USER``,
  ``KPI_MAX_QUEUED_PER_USER``).
* Text sizes are bounded, and NUL, lone surrogates and 64-bit overflows are refused with a
  ``ValidationError`` naming the field, through ``KPIStore`` and through the CLI (exit 2).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import KPIStore, ValidationError
from kpi_store.config import Settings
from kpi_store.errors import ResourceLimitError
from kpi_store.validation import checked_note

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
RSS_KILL_BYTES = int(1.5 * GIB)  # the watchdog's line: the machine must survive a regression
MANY_BLOBS = (
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<100) "
    "SELECT zeroblob(50000000) FROM r"
)
ONE_HUGE_TEXT = "SELECT printf('%.*c', 300000000, 'x') AS big"


def stored_rows(store: KPIStore, execution_id: int) -> int:
    with store.engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM kpi_execution_result_rows WHERE execution_id = :e"),
            {"e": execution_id},
        ).scalar_one()


@pytest.fixture()
def limited(store: KPIStore, store_url: str) -> Iterator[Callable[..., KPIStore]]:
    """``limited(**settings)``: a second KPIStore on the same store, with small limits."""
    opened: list[KPIStore] = []

    def make(**changes: Any) -> KPIStore:
        settings = Settings.from_env().replace(url=store_url, **changes)
        opened.append(KPIStore(settings=settings))
        return opened[-1]

    yield make
    for each in opened:
        each.close()


def kpi_of(store: KPIStore, sql: str, name: str = "Probe", **extra: Any) -> int:
    spec = {"name": name, "data_source": "shop", "sql": sql, "aggregation": "count", **extra}
    return store.create_kpi(spec, "ann").id


# -- values and stored bytes --------------------------------------------------------------


def test_a_value_over_the_limit_fails_the_run_and_keeps_no_rows(limited) -> None:
    store = limited(value_max_bytes=10_000)
    for sql in (
        "SELECT zeroblob(20000) AS b",
        "SELECT printf('%.*c', 20000, 'x') AS t",  # SQLite's printf alone would return NULL
        "SELECT format('%.*c', 20000, 'x') AS t",
        "SELECT replace(printf('%.*c', 9000, 'x'), 'x', 'yy') AS t",
        "SELECT 1 AS n UNION ALL SELECT length(zeroblob(20000))",  # never reaches Python
    ):
        run = store.execute(kpi_of(store, sql, name=sql[:60]), actor="ann")
        assert run.status == "failed", sql
        assert run.error == (
            "A value in the result is larger than the limit of 10 kB (KPI_VALUE_MAX_BYTES)."
        )
        assert run.attempts == 1  # a limit is never retried
        assert stored_rows(store, run.id) == 0


def test_values_under_the_limit_and_printf_still_work(limited) -> None:
    store = limited(value_max_bytes=10_000)
    sql = (
        "SELECT printf('%.*c', 9000, 'x') AS t, format('%d-%s-%.2f', 3, 'a', 2.5) AS f, "
        "printf(NULL) AS n, zeroblob(4000) AS b"
    )
    run = store.execute(kpi_of(store, sql), actor="ann")
    assert run.status == "success", run.error
    row = store.result_page(run.id).rows[0]
    assert (len(row[0]), row[1], row[2], len(row[3])) == (9000, "3-a-2.50", None, 8000)


def test_a_result_over_the_stored_bytes_limit_fails_and_keeps_no_rows(limited) -> None:
    store = limited(result_max_bytes=200_000)
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<5000) "
        "SELECT n, printf('%.*c', 100, 'x') AS pad FROM r"
    )
    run = store.execute(kpi_of(store, sql), actor="ann")
    assert run.status == "failed"
    assert run.error == (
        "The result passed the limit of 200 kB stored per run (KPI_RESULT_MAX_BYTES)."
    )
    assert stored_rows(store, run.id) == 0 and run.row_count is None
    small = store.execute(kpi_of(store, sql.replace("n<5000", "n<500"), name="Small"), actor="ann")
    assert small.status == "success" and small.row_count == 500


def test_the_row_cap_still_cuts_without_failing(limited) -> None:
    store = limited(row_cap=1_000)
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<3000) SELECT n FROM r"
    )
    run = store.execute(kpi_of(store, sql), actor="ann")
    assert (run.status, run.row_count, run.truncated) == ("success", 1_000, True)
    exact = store.execute(kpi_of(store, sql.replace("3000", "1000"), name="Exact"), actor="ann")
    assert (exact.status, exact.row_count, exact.truncated) == ("success", 1_000, False)


def test_the_deadline_holds_while_rows_are_encoded_and_stored(limited) -> None:
    """Each row is cheap for SQLite (a 1 MB text) but 200 of them take a while to encode and
    store: the run still stops at its time limit and keeps nothing."""
    store = limited()
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<200) "
        "SELECT n, printf('%.*c', 1000000, 'x') AS pad FROM r"
    )
    started = time.monotonic()
    run = store.execute(kpi_of(store, sql), actor="ann", timeout_s=0.2)
    assert run.status == "timeout", run.error
    assert time.monotonic() - started < 5
    assert stored_rows(store, run.id) == 0


def test_a_preview_has_the_same_limits(limited) -> None:
    store = limited(value_max_bytes=10_000, result_max_bytes=50_000)
    with pytest.raises(ResourceLimitError, match="KPI_VALUE_MAX_BYTES"):
        store.preview_query("shop", "SELECT zeroblob(20000) AS b", actor="ann")
    with pytest.raises(ResourceLimitError, match="KPI_VALUE_MAX_BYTES"):
        store.preview_query("shop", "SELECT printf('%.*c', 20000, 'x') AS t", actor="ann")
    wide = "SELECT printf('%.*c', 9000, 'x') AS t FROM sales"  # 48 rows of 9 kB
    with pytest.raises(ResourceLimitError, match="50 kB stored per run"):
        store.preview_query("shop", wide, limit=20, actor="ann")
    columns, rows = store.preview_query("shop", wide, limit=3, actor="ann")
    assert [c.name for c in columns] == ["t"] and len(rows) == 3 and len(rows[0][0]) == 9000


def test_the_source_connection_refuses_big_values_itself(store: KPIStore) -> None:
    """Every SQLite source connection has the default value limit, whoever opens it."""
    from kpi_store import datasources

    with store.engine.connect() as connection:
        url = datasources.connect_url(connection, "shop")
    engine = datasources.read_only_engine(url)
    with engine.connect() as connection, pytest.raises(sa.exc.DataError, match="too big"):
        connection.exec_driver_sql("SELECT zeroblob(17000000)").all()
    engine.dispose()


# -- the issue's two probes, in a fresh process under an RSS watchdog ---------------------


def _memory_probe() -> Any:
    """bench/memory_probe.py, the one copy of the probes and their RSS watchdog."""
    spec = importlib.util.spec_from_file_location(
        "memory_probe", ROOT / "bench" / "memory_probe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("probe", ["zeroblobs", "printf"])
def test_the_issue_probes_fail_fast_with_bounded_memory(probe: str) -> None:
    memory_probe = _memory_probe()
    sql = {"zeroblobs": MANY_BLOBS, "printf": ONE_HUGE_TEXT}[probe]
    assert sql in memory_probe.PROBES.values()  # the bench measures the same queries
    started = time.monotonic()
    report = memory_probe.probe(sql, ROOT, RSS_KILL_BYTES, 120)
    assert report["status"] == "failed", f"past {RSS_KILL_BYTES} bytes of RSS or 120 s: {report}"
    assert "larger than the limit of 16 MB (KPI_VALUE_MAX_BYTES)" in report["error"]
    assert report["stored_rows"] == 0
    assert report["peak"] < GIB, f"peak RSS {report['peak'] / 2**20:.0f} MiB"
    assert report["seconds"] < 10 and time.monotonic() - started < 60


# -- one person's share of the workers and of the queue -----------------------------------


def test_one_person_cannot_fill_the_queue(limited) -> None:
    store = limited(max_queued_per_user=2)
    kpi_id = kpi_of(store, "SELECT 1 AS n")
    first, second = store.submit(kpi_id, actor="ann"), store.submit(kpi_id, actor="ann")
    before = store.executions(kpi_id=kpi_id)
    with pytest.raises(ValidationError) as refused:
        store.submit(kpi_id, actor="ann")
    assert "KPI_MAX_QUEUED_PER_USER" in str(refused.value) and "(2," in str(refused.value)
    assert store.executions(kpi_id=kpi_id) == before  # nothing queued or recorded
    assert store.submit(kpi_id, actor="bob").status == "pending"  # others are not held up
    batch = store.submit_batch([kpi_id, kpi_id], actor="ann")
    assert (batch.successful, batch.failed) == (0, 2)
    assert all("KPI_MAX_QUEUED_PER_USER" in error.message for error in batch.errors)
    store.cancel(first.id, "ann")
    assert store.submit(kpi_id, actor="ann").status == "pending"  # a place came free
    assert second.status == "pending"


def test_one_person_cannot_run_more_than_their_share_at_once(limited) -> None:
    store = limited(max_running_per_user=1)
    slow = kpi_of(
        store,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<1000000000) "
        "SELECT count(*) AS n FROM r",
        name="Slow",
    )
    quick = kpi_of(store, "SELECT 1 AS n", name="Quick")
    going = threading.Thread(target=store.execute, args=(slow,), kwargs={"actor": "ann"})
    going.start()
    try:
        deadline = time.monotonic() + 10
        while not store.executions(kpi_id=slow, status="running"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(ValidationError) as refused:
            store.execute(quick, actor="ann")
        assert "KPI_MAX_RUNNING_PER_USER" in str(refused.value)
        assert store.executions(kpi_id=quick) == []
        assert store.execute(quick, actor="bob").status == "success"
        assert store.submit(quick, actor="ann").status == "pending"  # queuing is separate
    finally:
        for run in store.executions(kpi_id=slow, status="running"):
            store.cancel(run.id, "ann")
        going.join(30)
    assert store.execute(quick, actor="ann").status == "success"


# -- text sizes, NUL, lone surrogates, 64-bit integers ---------------------------------------

BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("name", {"name": "n" * 201}, "name"),
    ("description", {"description": "d" * 10_001}, "description"),
    ("nl_definition", {"nl_definition": "d" * 10_001}, "nl_definition"),
    ("sql", {"sql": "SELECT 1 AS n -- " + "x" * 100_000}, "sql"),
    ("unit", {"unit": "u" * 51}, "unit"),
    ("owner", {"owner": "o" * 201}, "owner"),
    ("tags count", {"tags": [f"t{n}" for n in range(31)]}, "tags"),
    ("tag size", {"tags": ["t" * 51]}, "tags"),
    ("tag NUL", {"tags": ["a\x00b"]}, "tags"),
    ("tag surrogate", {"tags": ["a\udcffb"]}, "tags"),
    ("name surrogate", {"name": "Revenue \ud800"}, "name"),
    ("description surrogate", {"description": "bad \udcff bytes"}, "description"),
    ("data source surrogate", {"data_source": "sh\udcffop"}, "data_source"),
    ("unit NUL", {"unit": "E\x00R"}, "unit"),
]


def with_parameter(kpi_spec: Callable[..., dict[str, Any]], **param: Any) -> dict[str, Any]:
    spec = kpi_spec()
    spec["parameters"][1] = {"name": "region", "type": "str", "default": "north", **param}
    return spec


@pytest.mark.parametrize(("case", "changes", "field"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_oversized_or_broken_text_is_refused_naming_the_field(
    store: KPIStore, kpi_spec, table_counts, case: str, changes: dict[str, Any], field: str
) -> None:
    before = table_counts()
    with pytest.raises(ValidationError) as refused:
        store.create_kpi(kpi_spec(**changes), "ann")
    assert field in refused.value.field_errors, (case, refused.value.field_errors)
    str(refused.value).encode("utf-8")  # the message itself prints anywhere
    assert table_counts() == before


def test_parameter_labels_choices_and_defaults_are_checked(store: KPIStore, kpi_spec) -> None:
    cases = [
        {"label": "L" * 201},
        {"label": "Re\udcffgion"},
        {"label": "Re\x00gion"},
        {"choices": ["north", "so\udcffuth"]},
        {"choices": ["north", "so\x00uth"]},
        {"choices": ["north", "s" * 1_001]},
        {"default": "n" * 1_001},
    ]
    for param in cases:
        with pytest.raises(ValidationError) as refused:
            store.create_kpi(with_parameter(kpi_spec, **param), "ann")
        assert any(key.startswith("parameters") for key in refused.value.field_errors), param
    count = {"name": "n", "type": "int", "default": 2**63}
    spec = kpi_spec(sql="SELECT count(*) AS n FROM sales WHERE id < :n", parameters=[count])
    with pytest.raises(ValidationError, match="outside the range of whole numbers"):
        store.create_kpi(spec, "ann")


def test_parameter_values_are_checked_at_run_time(store: KPIStore, kpi_spec) -> None:
    counted = {"name": "n", "type": "int", "default": 10}
    spec = kpi_spec(
        name="Open text",
        sql="SELECT count(*) AS n FROM sales WHERE id < :n AND region <> :note",
        parameters=[counted, {"name": "note", "type": "str", "default": "x"}],
        value_column="n",
    )
    kpi = store.create_kpi(spec, "ann")
    bad_values = [
        ({"n": 2**63}, "n", "outside the range"),
        ({"n": -(2**63) - 1}, "n", "outside the range"),
        ({"n": "9" * 5_000}, "n", "outside the range"),
        ({"n": 1e19}, "n", "outside the range"),
        ({"note": "x" * 1_001}, "note", "longer than 1,000 characters"),
        ({"note": "a\x00b"}, "note", "NUL"),
        ({"note": "a\udcffb"}, "note", "not valid text"),
        ({"note": "\ud83d"}, "note", "not valid text"),
    ]
    for params, field, words in bad_values:
        with pytest.raises(ValidationError) as refused:
            store.execute(kpi.id, params=params, actor="ann")
        assert field in refused.value.field_errors and words in str(refused.value), params
        str(refused.value).encode("utf-8")
    with pytest.raises(ValidationError, match="Unknown parameter"):
        store.execute(kpi.id, params={"n\udcff": 1, 3: "x"}, actor="ann")
    assert store.executions(kpi_id=kpi.id) == []
    edge = store.execute(kpi.id, params={"n": 2**63 - 1, "note": "é" * 1_000}, actor="ann")
    assert edge.status == "success" and edge.value == 48, edge.error


def test_the_actor_is_refused_not_cut(store: KPIStore, kpi_spec) -> None:
    for actor, words in (("a" * 201, "longer than 200"), ("ann\udcff", "not valid text")):
        with pytest.raises(ValidationError, match=words) as refused:
            store.create_kpi(kpi_spec(), actor)
        assert "actor" in refused.value.field_errors
    assert store.list_kpis() == []
    assert store.create_kpi(kpi_spec(), "a" * 200).created_by == "a" * 200


def test_a_huge_time_limit_is_refused(store: KPIStore, kpi_spec) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    with pytest.raises(ValidationError, match="time limit"):
        store.execute(kpi.id, actor="ann", timeout_s=10**400)


def test_a_note_is_checked_like_other_text() -> None:
    assert checked_note(None) == "" and checked_note("fixed the filter") == "fixed the filter"
    for note, words in (("n" * 2_001, "longer than 2,000"), ("a\udcff", "not valid"), (3, "text")):
        with pytest.raises(ValidationError, match=words):
            checked_note(note)


# -- the same through the CLI: exit 2, a message on stderr, no traceback --------------------


@pytest.fixture()
def cli_kpi(tmp_path: Path, source_db: Path) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path}/cli-store.db"
    with KPIStore(url) as store:
        store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
        spec = {
            "name": "Open text",
            "data_source": "shop",
            "sql": "SELECT count(*) AS n FROM sales WHERE id < :n AND region <> :note",
            "parameters": [
                {"name": "n", "type": "int", "default": 10},
                {"name": "note", "type": "str", "default": "x"},
            ],
        }
        return url, store.create_kpi(spec, "setup").id


def run_cli(url: str, *args: str | bytes, actor: str | bytes = "cli-tester") -> Any:
    env: dict[bytes, bytes] = {
        k.encode(): v.encode() for k, v in os.environ.items() if k not in ("KPI_STORE_URL",)
    }
    env[b"KPI_ACTOR"] = actor if isinstance(actor, bytes) else actor.encode()
    command = [sys.executable, "-m", "kpi_store", "--store", url, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "actor", "words"),
    [
        (["--param", "n=9223372036854775808"], "cli-tester", "outside the range"),
        (["--param", "n=" + "9" * 5_000], "cli-tester", "outside the range"),
        (["--param", "note=" + "x" * 1_001], "cli-tester", "longer than 1,000 characters"),
        ([b"--param", b"note=caf\xe9"], "cli-tester", "not valid text"),  # Latin-1, not UTF-8
        (["--timeout", "1e400"], "cli-tester", "time limit"),
        ([], "a" * 201, "longer than 200"),
        ([], b"ann\xff", "not valid text"),
    ],
    ids=["int64", "int-digits", "long-text", "bad-bytes", "timeout", "long-actor", "actor-bytes"],
)
def test_the_cli_refuses_with_exit_2_and_no_traceback(
    cli_kpi: tuple[str, int], args: list[Any], actor: str | bytes, words: str
) -> None:
    url, kpi_id = cli_kpi
    done = run_cli(url, "run", str(kpi_id), *args, actor=actor)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert words in stderr and "Traceback" not in stderr
    with KPIStore(url) as store:
        assert store.executions(kpi_id=kpi_id) == []


def test_a_version_note_is_bounded_and_checked(store: KPIStore, kpi_spec) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    for note, problem in (
        ("x" * 2_001, "longer than 2,000"),
        ("bad\x00note", "NUL"),
        ("\ud800", "The note"),
    ):
        with pytest.raises(ValidationError, match=problem):
            store.update_kpi(kpi.id, {"target": 5.0}, "ann", kpi.version, note=note)
    assert store.get_kpi(kpi.id).version == kpi.version
