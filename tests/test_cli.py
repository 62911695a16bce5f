"""``python -m kpi_store`` end to end on a real store with the demo installed.

The commands named by the issue run as real processes (``[sys.executable, "-m",
"kpi_store", ...]``); the many small error cases call ``cli.main`` in this process,
which runs the same code without paying an interpreter start each.
"""

from __future__ import annotations

import csv
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kpi_store import KPIStore
from kpi_store.cli import main

ROOT = Path(__file__).resolve().parents[1]
HELP_OPTIONS = {
    "demo": [],
    "list": ["--search", "--tag", "--archived"],
    "run": ["KPI", "--param", "--timeout", "--background"],
    "export": ["EXECUTION", "-o", "--format", "--excel"],
    "history": ["KPI"],
    "audit": ["--kpi", "--person", "--action", "--limit", "--verify"],
    "people": ["--add", "--set", "--name", "--role", "--source", "--all-sources"],
    "worker": ["--concurrency"],
    "cancel": ["EXECUTION"],
}


def command(url: str | None, *args: str) -> list[str]:
    store = ["--store", url] if url else []
    return [sys.executable, "-m", "kpi_store", *store, *args]


def clean_env(actor: str = "cli-tester") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KPI_STORE_URL", "KPI_ACTOR")}
    env["KPI_ACTOR"] = actor
    return env


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process, acting as ``cli-tester`` (from KPI_ACTOR)."""
    return subprocess.run(
        command(url, *args), cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def run_main(
    capsys: pytest.CaptureFixture[str], url: str, *args: str, actor: str = "cli-tester"
) -> tuple[int, str, str]:
    """The CLI in this process; returns (exit code, stdout, stderr)."""
    code = main(["--store", url, "--actor", actor, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def field(output: str, label: str) -> str:
    match = re.search(rf"^{label}\s+(.*)$", output, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{output}"
    return match.group(1).strip()


def run_count(url: str) -> int:
    with KPIStore(url) as store:
        return len(store.executions(limit=None))


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with the demo installed through the CLI (once for this module)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli')}/store.db"
    result = cli(url, "demo")
    assert result.returncode == 0, result.stderr
    assert "Added 8 KPI(s)" in result.stdout
    assert "streamlit run dashboard.py" in result.stdout
    assert "Revenue" in result.stdout and "Order Line Detail" in result.stdout
    return url


@pytest.fixture(scope="module")
def warehouse(demo_url: str) -> Path:
    return Path(demo_url.removeprefix("sqlite:///")).parent / "sources" / "demo_warehouse.db"


@pytest.fixture()
def small_url(tmp_path: Path, source_db: Path) -> str:
    """A store of its own with one KPI, ``Count`` (48), on the ``shop`` source."""
    url = f"sqlite:///{tmp_path}/small.db"
    with KPIStore(url) as store:
        store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
        store.create_kpi(
            {"name": "Count", "data_source": "shop", "sql": "SELECT count(*) AS n FROM sales"},
            "setup",
        )
    return url


# -- the commands, as real processes ---------------------------------------------------------


def test_list_is_a_table_of_kpis(demo_url: str) -> None:
    result = cli(demo_url, "list")
    assert result.returncode == 0, result.stderr
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == ["id", "name", "version", "owner", "tags", "last", "value"]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 8
    assert any(row.split()[1] == "Revenue" for row in rows)


def test_run_by_name_with_params_matches_the_query(demo_url: str, warehouse: Path) -> None:
    params = {"region": "North", "start_date": "2025-03-01", "end_date": "2025-06-30"}
    result = cli(demo_url, "run", "revenue", *(f"--param={k}={v}" for k, v in params.items()))

    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "Status") == "success"
    assert field(result.stdout, "Rows") == "1"
    assert field(result.stdout, "Attempts") == "1"
    assert field(result.stdout, "Error") == "-"
    assert field(result.stdout, "Duration").endswith(" ms")
    with KPIStore(demo_url) as store:
        kpi = next(k for k in store.list_kpis() if k.name == "Revenue")
        run = store.execution(int(field(result.stdout, "Execution")))
    with sqlite3.connect(warehouse) as connection:
        expected = connection.execute(kpi.sql, params).fetchone()[0]
    assert run.kpi_id == kpi.id and run.requested_by == "cli-tester"
    assert run.params == params
    assert run.value == pytest.approx(expected)
    assert field(result.stdout, "Value") == f"{expected:,.2f} $"


def test_a_bad_parameter_exits_2_with_a_message_and_no_traceback(demo_url: str) -> None:
    runs_before = run_count(demo_url)
    result = cli(demo_url, "run", "Revenue", "--param", "region=Atlantis")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Atlantis" in result.stderr and "North" in result.stderr
    assert run_count(demo_url) == runs_before


def test_export_writes_every_row_of_the_run(
    demo_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(demo_url, "run", "New Customers by Month")
    assert run.returncode == 0, run.stderr
    execution_id = field(run.stdout, "Execution")
    row_count = int(field(run.stdout, "Rows").replace(",", ""))
    out = tmp_path / "new_customers.csv"

    result = cli(demo_url, "export", execution_id, "-o", str(out))

    assert result.returncode == 0, result.stderr
    assert f"Wrote {row_count} row(s)" in result.stdout
    with open(out, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert len(rows) == row_count > 1
    with KPIStore(demo_url) as store:
        record = store.execution(int(execution_id))
        assert header == [c.name for c in record.columns]
        assert rows[0] == [str(v) for v in store.result_page(record.id, 1, 1).rows[0]]
        (entry,) = [
            e
            for e in store.audit_log(action="EXPORT")
            if e.details["execution_id"] == int(execution_id)
        ]
        assert entry.actor == "cli-tester" and entry.details["rows"] == row_count

    excel = tmp_path / "excel.csv"
    assert run_main(capsys, demo_url, "export", execution_id, "-o", str(excel), "--excel")[0] == 0
    assert excel.read_bytes().startswith(b"\xef\xbb\xbf")


def test_history_shows_versions_and_recent_runs(demo_url: str) -> None:
    with KPIStore(demo_url) as store:
        kpi = next(k for k in store.list_kpis() if k.name == "Return Rate")
        store.update_kpi(kpi.id, {"target": 7.0}, "frank", expected_version=1, note="new goal")
        run = store.execute(kpi.id, actor="frank")

    result = cli(demo_url, "history", "Return Rate")

    assert result.returncode == 0, result.stderr
    versions, runs = result.stdout.split("Recent runs")
    lines = versions.splitlines()
    assert lines[2].split() == ["version", "when", "(UTC)", "who", "note", "action"]
    v2, v1 = (line.split() for line in lines[4:6])
    assert v2[0] == "2" and "frank" in v2 and v2[-1] == "update" and "goal" in v2
    assert v1[0] == "1" and v1[-1] == "create"
    assert re.search(rf"^{run.id}\s.*\bfrank\s+success\b", runs, re.MULTILINE)


def test_audit_verify(demo_url: str) -> None:
    result = cli(demo_url, "audit", "--verify")
    assert result.returncode == 0, result.stderr
    assert re.match(r"Audit chain intact: \d+ entries checked\.", result.stdout)


# Runs ``python -m kpi_store SUBCOMMAND --help`` for each subcommand inside one interpreter
# (runpy does what ``-m`` does), printing each exit code, so eight interpreters need not start.
HELP_EACH = """
import runpy, sys
for name in sys.argv[1:]:
    sys.argv = ["kpi_store", name, "--help"]
    try:
        runpy.run_module("kpi_store", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        print(f"<<exit {exit_.code}>>", flush=True)
"""


def test_help_for_the_program_and_each_subcommand() -> None:
    top = subprocess.run(
        command(None, "--help"), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: python -m kpi_store")
    assert "--store" in top.stdout and "--actor" in top.stdout
    assert all(name in top.stdout for name in HELP_OPTIONS)

    each = subprocess.run(
        [sys.executable, "-c", HELP_EACH, *HELP_OPTIONS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert each.returncode == 0, each.stderr
    texts = each.stdout.split("<<exit 0>>\n")
    assert texts[-1] == "" and len(texts) == len(HELP_OPTIONS) + 1
    for (name, options), text in zip(HELP_OPTIONS.items(), texts, strict=False):
        assert text.startswith(f"usage: python -m kpi_store {name}")
        assert all(option in text for option in options), (name, text)


def test_worker_runs_queued_jobs_and_stops_on_sigterm(
    small_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, small_url, "run", "Count", "--background")
    assert code == 0
    execution_id = int(re.search(r"Queued run (\d+)", out).group(1))

    worker = subprocess.Popen(
        command(small_url, "worker", "--concurrency", "1"),
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([worker.stdout], [], [], 20)
        assert ready, "the worker printed nothing"
        assert "started with 1 thread(s)" in worker.stdout.readline()
        with KPIStore(small_url) as store:
            deadline = time.monotonic() + 20
            while not store.execution(execution_id).finished and time.monotonic() < deadline:
                time.sleep(0.1)
            run = store.execution(execution_id)
        assert (run.status, run.value) == ("success", 48.0)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "Worker stopped." in out
    assert "Traceback" not in err


# -- the rest, in this process -------------------------------------------------------------


def test_demo_twice_adds_nothing_the_second_time(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, demo_url, "demo")
    assert code == 0
    assert "already installed" in out


def test_list_filters(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, demo_url, "list", "--tag", "finance", "--search", "margin")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[2:]] == ["Gross"]
    code, out, _ = run_main(capsys, demo_url, "list", "--search", "no such words")
    assert (code, out.strip()) == (0, "No KPIs match.")


def test_run_by_id_with_an_explicit_actor(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, demo_url, "run", "2", actor="erin")
    assert code == 0
    assert field(out, "KPI") == "Orders (id 2, version 1)"
    with KPIStore(demo_url) as store:
        assert store.execution(int(field(out, "Execution"))).requested_by == "erin"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "Revenue", "--param", "start_date=yesterday"], ["start_date"]),
        (["run", "Revenue", "--param", "colour=red"], ["Unknown parameter", "colour"]),
        (["run", "Revenue", "--param", "region"], ["name=value"]),
        (["run", "No Such KPI"], ["No Such KPI"]),
        (["run", "Revenue", "--timeout", "-3"], ["time limit"]),
        (["run", "Revenue", "--background", "--timeout", "3"], ["--timeout"]),
        (["export", "999999", "-o", "x.csv"], ["999999"]),
        (["cancel", "999999"], ["999999"]),
        (["history", "nope"], ["nope"]),
    ],
)
def test_bad_input_exits_2_and_runs_nothing(
    demo_url: str, args: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = run_count(demo_url)
    code, out, err = run_main(capsys, demo_url, *args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err
    assert run_count(demo_url) == runs_before


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["launch"]) == 2
    assert main(["export", "1"]) == 2  # -o is required
    assert main(["worker", "--concurrency", "0"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_an_unusable_store_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "sqlite://", "list")
    assert code == 2
    assert err.startswith("error: cannot open the store")


def test_a_run_that_times_out_exits_1(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, demo_url, "run", "Order Line Detail", "--timeout", "0.000001")
    assert code == 1
    assert field(out, "Status") == "timeout"
    assert field(out, "Rows") == "-"
    assert "time limit" in field(out, "Error")


def test_a_failed_run_exits_1(tmp_path: Path, source_db: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with KPIStore(url) as store:
        store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
        store.create_kpi(
            {"name": "Broken", "data_source": "shop", "sql": "SELECT x FROM gone"}, "s"
        )
    code, out, _ = run_main(capsys, url, "run", "Broken")
    assert code == 1
    assert field(out, "Status") == "failed"
    assert "no such table: gone" in field(out, "Error")
    code, _, err = run_main(capsys, url, "export", field(out, "Execution"), "-o", "x.csv")
    assert code == 2 and "failed" in err


def test_an_export_to_a_missing_folder_is_a_clean_error(
    small_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, small_url, "run", "Count")
    assert code == 0
    target = tmp_path / "no" / "such" / "dir.csv"
    code, _, err = run_main(capsys, small_url, "export", field(out, "Execution"), "-o", str(target))
    assert code == 2
    assert "No such file or directory" in err and str(target) in err


def test_audit_lists_and_filters(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, demo_url, "run", "Orders")[0] == 0

    code, out, _ = run_main(capsys, demo_url, "audit", "--kpi", "2", "--action", "execute")
    assert code == 0
    rows = out.splitlines()[2:]
    assert len(rows) >= 1
    assert all(row.split()[4] == "EXECUTE" and row.split()[5] == "2" for row in rows)

    code, out, _ = run_main(
        capsys, demo_url, "audit", "--person", "CLI-TEST", "--action", "create", "--limit", "3"
    )
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [(row[3], row[4]) for row in rows] == [("cli-tester", "CREATE")] * 3

    code, out, _ = run_main(capsys, demo_url, "audit", "--person", "nobody")
    assert (code, out.strip()) == (0, "No audit entries match.")


def test_a_broken_audit_chain_exits_1(
    tmp_path: Path, source_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with KPIStore(url) as store:
        store.add_data_source("here", f"sqlite:///{source_db}", "grace")
        store.add_data_source("there", f"sqlite:///{source_db}", "grace")
    with sqlite3.connect(tmp_path / "store.db") as connection:
        connection.execute("UPDATE kpi_audit_log SET actor = 'mallory' WHERE id = 1")
    code, out, _ = run_main(capsys, url, "audit", "--verify")
    assert code == 1
    assert "FAILED at entry 1" in out and "entry 1 was altered" in out


def test_background_run_cancel_and_a_second_cancel(
    small_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(capsys, small_url, "run", "Count", "--background", actor="hank")
    assert code == 0
    execution_id = re.search(r"Queued run (\d+)", out).group(1)

    code, out, _ = run_main(capsys, small_url, "cancel", execution_id, actor="hank")
    assert (code, out.strip()) == (0, f"Run {execution_id} cancelled.")
    code, _, err = run_main(capsys, small_url, "cancel", execution_id)
    assert code == 2 and "already finished" in err
    with KPIStore(small_url) as store:
        assert store.execution(int(execution_id)).status == "cancelled"
        assert store.audit_log(action="CANCEL")[0].actor == "hank"


def test_list_shows_archived_kpis_only_when_asked(
    small_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with KPIStore(small_url) as store:
        kpi = store.list_kpis()[0]
        store.execute(kpi.id, actor="setup")
        store.archive_kpi(kpi.id, "setup")

    code, out, _ = run_main(capsys, small_url, "list")
    assert (code, out.strip()) == (0, "No KPIs match.")
    code, out, _ = run_main(capsys, small_url, "list", "--archived")
    row = out.splitlines()[2]
    assert "Count (archived)" in row and row.endswith("48")
    code, _, err = run_main(capsys, small_url, "run", "Count")
    assert code == 2 and "archived" in err
