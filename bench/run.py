"""KPI Desk benchmark: storing, paging and exporting a million-row KPI result.

    python bench/run.py [--rows N] [--repeat K] [--store-url URL] [--out DIR]

Builds an N-row source table (default 1,000,000) in a SQLite file in a temporary folder,
then measures, in the same run and interleaved so a noisy machine hurts every contender
alike (the median of K repeats is reported):

* ``KPIStore.execute`` end to end (query, rows stored, headline value) for
  ``SELECT * FROM big``, against
  - **naive**: the origin document's approach (seed guide, section 1): the query read with
    ``fetchall()`` into dicts, then one ``INSERT`` per row of ``json.dumps(dict)`` in one
    transaction, into its table (AUTOINCREMENT id, UNIQUE(execution_id, row_number), index);
  - **raw**: the limit of stdlib ``sqlite3``: the same query read by a cursor, each row
    encoded as a JSON array (orjson) and written with one ``executemany`` in one
    transaction into a table shaped like ``kpi_execution_result_rows`` (WITHOUT ROWID,
    PK (execution_id, row_number)).
* page 1 and the last page (50 rows) via ``store.result_page`` (median of many calls),
  and the origin document's ``COUNT(*)`` + ``LIMIT/OFFSET`` pages on the naive table;
* CSV export rows/s via ``store.export_csv`` to a file, and the export's peak RSS in a
  separate process (``bench/export_rss.py``).

Prints a markdown table and writes the full results as JSON to ``--out`` (default
``bench/out/``). With ``--store-url postgresql+psycopg://...`` the store runs on
PostgreSQL; the source table, and the naive and raw baselines, stay on SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import logging
import os
import pathlib
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _code_dir(argv: list[str]) -> pathlib.Path:
    """``--code DIR``: benchmark the kpi_store package in DIR (e.g. a patched copy)."""
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return pathlib.Path(argv[i + 1]).resolve()
        if arg.startswith("--code="):
            return pathlib.Path(arg.split("=", 1)[1]).resolve()
    return ROOT


CODE = _code_dir(sys.argv[1:]) if __name__ == "__main__" else ROOT
sys.path.insert(0, str(CODE))

import sqlalchemy as sa  # noqa: E402

import kpi_store  # noqa: E402
from kpi_store import KPIStore  # noqa: E402
from kpi_store.config import Settings  # noqa: E402

QUERY = "SELECT * FROM big"
PAGE_SIZE = 50
STORE_PAGE_CALLS = 301  # per page (first / last), interleaved
NAIVE_PAGE_CALLS = 21
ACTOR = "bench"

TARGETS = {
    "execute_vs_naive": 3.0,  # execute rows/s >= 3x naive
    "execute_vs_raw": 0.70,  # execute rows/s >= 70% of raw
    "last_vs_first_page": 2.0,  # last page time <= 2x page 1
    "export_peak_rss_mb": 150.0,  # export process peak RSS < 150 MB
}


# -- machine ------------------------------------------------------------------------------


def machine_info(tmp_dir: pathlib.Path) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_mb = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_mb = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = len(os.sched_getaffinity(0))
    versions: dict[str, str] = {}
    for module in ("sqlalchemy", "orjson", "pandas", "psycopg"):
        with contextlib.suppress(Exception):  # optional packages
            versions[module] = __import__(module).__version__
    filesystem = ""
    try:
        df = subprocess.run(
            ["df", "-T", str(tmp_dir)], capture_output=True, text=True
        ).stdout.splitlines()
        if len(df) > 1:
            parts = df[1].split()
            filesystem = f"{parts[0]} ({parts[1]})"
    except OSError:
        pass
    return {
        "nproc": nproc,
        "cpu_model": cpu_model,
        "mem_total_mb": mem_total_mb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "tmp_dir_filesystem": filesystem,
        "git_commit": _git_commit() if CODE == ROOT else "",
        "kpi_store": str(pathlib.Path(kpi_store.__file__).parent),
    }


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "kpi_store"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" (kpi_store has uncommitted changes)" if dirty else "")
    except OSError:
        return ""


# -- the source table -----------------------------------------------------------------------


def build_source(path: pathlib.Path, rows: int) -> None:
    """``big``: id, customer (text, some with commas and quotes), order_date, amount, status."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(
        """
        CREATE TABLE big (
            id INTEGER PRIMARY KEY,
            customer TEXT NOT NULL,
            order_date TEXT NOT NULL,
            amount REAL NOT NULL,
            status TEXT NOT NULL
        );
        """
    )
    with connection:
        connection.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
            INSERT INTO big (id, customer, order_date, amount, status)
            SELECT
                i,
                CASE WHEN i % 97 = 0 THEN 'Acme, "Bros" & Co ' || (i % 1000)
                     ELSE 'Customer ' || printf('%05d', (i * 7919) % 50000) END,
                date('2020-01-01', '+' || (i % 1826) || ' days'),
                round(((i * 2654435761) % 1000000) / 100.0, 2),
                CASE i % 4 WHEN 0 THEN 'open' WHEN 1 THEN 'shipped'
                           WHEN 2 THEN 'invoiced' ELSE 'paid' END
            FROM seq
            """,
            (rows,),
        )
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def source_sum(path: pathlib.Path) -> float:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT sum(amount) FROM big").fetchone()[0]
    finally:
        connection.close()


# -- baseline (a): the origin document, verbatim where it gives code ------------------------

NAIVE_SCHEMA = """
CREATE TABLE kpi_execution_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_row_sample TEXT
);
CREATE TABLE kpi_execution_result_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id INTEGER NOT NULL,
    row_number INTEGER NOT NULL,
    row_data TEXT NOT NULL,  -- JSON
    FOREIGN KEY (execution_id) REFERENCES kpi_execution_results(id) ON DELETE CASCADE,
    UNIQUE(execution_id, row_number)
);
CREATE INDEX idx_execution_result_rows ON kpi_execution_result_rows(execution_id);
"""


def naive_store_execution_results(db_path: str, execution_id: int, result_rows: list[dict]) -> None:
    """The origin document's ``store_execution_results`` (section 1), as written there."""
    conn = sqlite3.connect(db_path)
    cursor = conn.cursor()
    try:
        for row_num, row_data in enumerate(result_rows, 1):
            cursor.execute(
                """
                INSERT INTO kpi_execution_result_rows
                (execution_id, row_number, row_data)
                VALUES (?, ?, ?)
            """,
                (execution_id, row_num, json.dumps(row_data)),
            )
        if result_rows:
            cursor.execute(
                """
                UPDATE kpi_execution_results
                SET first_row_sample = ?
                WHERE id = ?
            """,
                (json.dumps(result_rows[0]), execution_id),
            )
        conn.commit()
    finally:
        conn.close()


def naive_page(db_path: str, execution_id: int, page: int = 1, page_size: int = 50) -> dict:
    """The origin document's ``get_drilldown_data_paginated`` (section 1), as written there."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    cursor = conn.cursor()
    offset = (page - 1) * page_size
    cursor.execute(
        """
        SELECT COUNT(*) as total FROM kpi_execution_result_rows
        WHERE execution_id = ?
    """,
        (execution_id,),
    )
    total = cursor.fetchone()["total"]
    cursor.execute(
        """
        SELECT row_data FROM kpi_execution_result_rows
        WHERE execution_id = ?
        ORDER BY row_number
        LIMIT ? OFFSET ?
    """,
        (execution_id, page_size, offset),
    )
    rows = [json.loads(row["row_data"]) for row in cursor.fetchall()]
    conn.close()
    return {
        "total": total,
        "page": page,
        "page_size": page_size,
        "total_pages": (total + page_size - 1) // page_size,
        "data": rows,
    }


def run_naive(source: pathlib.Path, naive_db: pathlib.Path) -> tuple[int, int]:
    """Query read into dicts (the origin's ``[dict(row) for row in fetchall()]``), then stored."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    src.row_factory = sqlite3.Row
    try:
        result_rows = [dict(row) for row in src.execute(QUERY).fetchall()]
    finally:
        src.close()
    conn = sqlite3.connect(naive_db)
    try:
        with conn:
            execution_id = conn.execute(
                "INSERT INTO kpi_execution_results (first_row_sample) VALUES (NULL)"
            ).lastrowid
    finally:
        conn.close()
    naive_store_execution_results(str(naive_db), execution_id, result_rows)
    return execution_id, len(result_rows)


# -- baseline (b): the raw limit of stdlib sqlite3 ------------------------------------------

RAW_SCHEMA = """
CREATE TABLE kpi_execution_result_rows (
    execution_id INTEGER NOT NULL,
    row_number INTEGER NOT NULL,
    row_data TEXT NOT NULL,
    PRIMARY KEY (execution_id, row_number)
) WITHOUT ROWID;
"""
RAW_INSERT = (
    "INSERT INTO kpi_execution_result_rows (execution_id, row_number, row_data) VALUES (?, ?, ?)"
)


def _raw_connection(raw_db: pathlib.Path) -> sqlite3.Connection:
    connection = sqlite3.connect(raw_db, isolation_level=None)
    connection.execute("PRAGMA synchronous=NORMAL")  # as the store's connections
    return connection


def run_raw(source: pathlib.Path, raw_db: pathlib.Path, execution_id: int) -> int:
    """Read the query and write JSON arrays with one executemany in one transaction."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = _raw_connection(raw_db)
    dumps = orjson.dumps
    try:
        cursor = src.execute(QUERY)
        dst.execute("BEGIN IMMEDIATE")
        dst.executemany(
            RAW_INSERT,
            ((execution_id, n, dumps(row).decode()) for n, row in enumerate(cursor, 1)),
        )
        count = dst.execute(
            "SELECT max(row_number) FROM kpi_execution_result_rows WHERE execution_id = ?",
            (execution_id,),
        ).fetchone()[0]
        dst.execute("COMMIT")
        return count or 0
    finally:
        src.close()
        dst.close()


def run_raw_write_only(source: pathlib.Path, raw_db: pathlib.Path, execution_id: int) -> float:
    """Seconds for executemany + commit alone, rows read and encoded beforehand (untimed)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        encoded = [
            (execution_id, n, orjson.dumps(row).decode())
            for n, row in enumerate(src.execute(QUERY), 1)
        ]
    finally:
        src.close()
    dst = _raw_connection(raw_db)
    try:
        started = time.perf_counter()
        dst.execute("BEGIN IMMEDIATE")
        dst.executemany(RAW_INSERT, encoded)
        dst.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        dst.close()


def create_baseline_db(path: pathlib.Path, schema: str) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")  # as the store; persists in the file
    connection.executescript(schema)
    connection.close()


# -- the store ------------------------------------------------------------------------------


def open_store(url: str, rows: int, source_dir: pathlib.Path) -> KPIStore:
    base = Settings.from_env()
    changes: dict[str, Any] = {
        "url": url,
        "row_cap": max(base.row_cap, rows),
        "default_timeout_s": 3600.0,
    }
    if hasattr(base, "source_dirs"):  # trees since data sources live in allowed folders
        changes["source_dirs"] = str(source_dir)
    return KPIStore(url, settings=Settings(**{**base.__dict__, **changes}))


def setup_kpi(store: KPIStore, source: pathlib.Path, tag: str) -> int:
    name = f"bench_{tag}"
    store.add_data_source(name, f"sqlite:///{source}", ACTOR)
    kpi = store.create_kpi(
        {
            "name": f"Bench {tag}: every order",
            "data_source": name,
            "sql": QUERY,
            "value_column": "amount",
            "aggregation": "sum",
            "timeout_s": 3600,
            "max_retries": 0,
        },
        ACTOR,
    )
    return kpi.id


def run_execute(store: KPIStore, kpi_id: int) -> tuple[int, int, float | None, str]:
    execution = store.execute(kpi_id, actor=ACTOR)
    return execution.id, execution.row_count or 0, execution.value, execution.status


# -- measuring ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def page_times(calls: int, first: Callable[[], Any], last: Callable[[], Any]) -> tuple[list, list]:
    """Interleaved calls of page 1 and the last page; seconds per call."""
    first_times, last_times = [], []
    first()
    last()  # warm both ends once
    for i in range(calls):
        order = (first, last) if i % 2 == 0 else (last, first)
        for fn in order:
            seconds, _ = timed(fn)
            (first_times if fn is first else last_times).append(seconds)
    return first_times, last_times


def export_rss(store_url: str, execution_id: int, dest: pathlib.Path) -> dict[str, Any]:
    # Through sh, not directly: Linux carries ru_maxrss across execve, so a child exec'd
    # straight from this (large) process would report our peak, not its own. sh forks
    # the helper, whose fresh process starts from zero.
    completed = subprocess.run(
        [
            "/bin/sh",
            "-c",
            '"$@"; exit $?',
            "sh",
            sys.executable,
            str(ROOT / "bench" / "export_rss.py"),
            "--store-url",
            store_url,
            "--execution",
            str(execution_id),
            "--dest",
            str(dest),
            "--code",
            str(CODE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"export subprocess failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def profile_execute(store: KPIStore, kpi_id: int, out_path: pathlib.Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    store.execute(kpi_id, actor=ACTOR)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(30)
    out_path.write_text(text.getvalue())
    profiler.dump_stats(str(out_path.with_suffix(".prof")))


# -- report ---------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    r = report["results"]
    t = report["targets"]
    lines = [
        f"## KPI Desk benchmark — {report['date']}",
        "",
        f"- machine: {m['nproc']} CPU(s), {m['cpu_model']}, {m['mem_total_mb']} MB RAM; "
        f"{m['platform']}",
        f"- Python {m['python']}, SQLite {m['sqlite']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- store: {report['store_backend']}; source table: {report['rows']:,} rows "
        f"(5 columns) in SQLite; temp dir on {m['tmp_dir_filesystem']}; "
        f"load average at start {report['load_start']}, at end {report['load_end']}",
        f"- repeats: {report['repeat']} (medians; contenders interleaved in each repeat); "
        f"kpi_store from {m['kpi_store']}" + (f" at {m['git_commit']}" if m["git_commit"] else ""),
    ]
    if report["store_backend"] != "sqlite":
        lines.append(
            "- the naive and raw baselines are SQLite-only (stdlib sqlite3): the ratios "
            "compare a PostgreSQL store with SQLite baselines"
        )
    lines += [
        "",
        "| measure | median | spread (min–max) | target | |",
        "| --- | ---: | ---: | --- | --- |",
    ]

    def spread(values: list[float], fmt: Callable[[float], str]) -> str:
        return f"{fmt(min(values))}–{fmt(max(values))}" if values else ""

    ex, nv, rw = r["execute"], r["naive"], r["raw"]
    lines.append(
        f"| `KPIStore.execute` rows/s | {fmt_rate(ex['rows_per_s'])} | "
        f"{spread(ex['rates'], fmt_rate)} | | |"
    )
    lines.append(
        f"| naive baseline rows/s (origin doc) | {fmt_rate(nv['rows_per_s'])} | "
        f"{spread(nv['rates'], fmt_rate)} | | |"
    )
    lines.append(
        f"| raw limit rows/s (read + encode + executemany) | {fmt_rate(rw['rows_per_s'])} | "
        f"{spread(rw['rates'], fmt_rate)} | | |"
    )
    lines.append(
        f"| raw write only rows/s (executemany of pre-encoded rows; info) | "
        f"{fmt_rate(rw['write_only_rows_per_s'])} | "
        f"{spread(rw['write_only_rates'], fmt_rate)} | | |"
    )
    lines.append(
        f"| execute / naive | {ex['vs_naive']:.2f}× | "
        f"{spread(ex['vs_naive_each'], lambda v: f'{v:.2f}×')} "
        f"| ≥ {t['execute_vs_naive']:g}× | {verdict(r['met']['execute_vs_naive'])} |"
    )
    lines.append(
        f"| execute / raw | {ex['vs_raw']:.0%} | {spread(ex['vs_raw_each'], lambda v: f'{v:.0%}')} "
        f"| ≥ {t['execute_vs_raw']:.0%} | {verdict(r['met']['execute_vs_raw'])} |"
    )
    pg, npg = r["pages"]["store"], r["pages"]["naive"]
    lines.append(
        f"| `result_page` page 1, ms ({pg['calls']} calls) | {fmt_ms(pg['first_s'])} | "
        f"{spread(pg['first_all'], fmt_ms)} | | |"
    )
    lines.append(
        f"| `result_page` last page ({pg['last_page']:,}), ms | {fmt_ms(pg['last_s'])} | "
        f"{spread(pg['last_all'], fmt_ms)} | | |"
    )
    lines.append(
        f"| `result_page` last / first | {pg['ratio']:.2f}× | | ≤ {t['last_vs_first_page']:g}× "
        f"| {verdict(r['met']['last_vs_first_page'])} |"
    )
    lines.append(
        f"| origin doc page 1 (COUNT + OFFSET), ms ({npg['calls']} calls) | "
        f"{fmt_ms(npg['first_s'])} | {spread(npg['first_all'], fmt_ms)} | | |"
    )
    lines.append(
        f"| origin doc last page, ms | {fmt_ms(npg['last_s'])} | "
        f"{spread(npg['last_all'], fmt_ms)} | | |"
    )
    lines.append(f"| origin doc last / first | {npg['ratio']:.1f}× | | (contrast) | |")
    exp = r["export"]
    lines.append(
        f"| `export_csv` rows/s (to a file) | {fmt_rate(exp['rows_per_s'])} | "
        f"{spread(exp['rates'], fmt_rate)} | | |"
    )
    lines.append(
        f"| export process peak RSS, MB (separate process, ru_maxrss) | "
        f"{exp['peak_rss_mb']:.1f} | {spread(exp['peak_rss_all'], lambda v: f'{v:.1f}')} "
        f"| < {t['export_peak_rss_mb']:g} MB | {verdict(r['met']['export_peak_rss_mb'])} |"
    )
    lines.append(
        f"| same process after `import kpi_store`, MB (info) | {exp['after_import_mb']:.1f} | | | |"
    )
    lines.append(
        f"| same process before the export (store open), MB (info) | "
        f"{exp['rss_before_mb']:.1f} | | | |"
    )
    lines.append(f"| CSV file size, MB | {exp['csv_mb']:.1f} | | | |")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="KPI Desk benchmark (see the module docstring and docs/PERFORMANCE.md)."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="source rows (1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians reported (3)")
    parser.add_argument(
        "--store-url",
        default=None,
        help="store database URL (default: a SQLite file in the temp dir); "
        "e.g. postgresql+psycopg://postgres@127.0.0.1:55432/kpi_test",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"), help="results JSON folder")
    parser.add_argument(
        "--tmp-dir", default=None, help="where the temp folder goes (default $TMPDIR)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--code",
        default=None,
        help="folder holding the kpi_store package to measure (default: this tree); "
        "for A/B runs of a patched copy",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one extra execute into --out"
    )
    args = parser.parse_args(argv)
    if args.rows < PAGE_SIZE * 2 or args.repeat < 1:
        parser.error("--rows must be at least 100 and --repeat at least 1")
    logging.basicConfig(level=logging.WARNING)

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kpi-bench-", dir=args.tmp_dir))
    stamp = dt.datetime.now(dt.UTC)
    tag = stamp.strftime("%Y%m%d%H%M%S") + f"_{os.getpid()}"
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = machine_info(tmp)
    store_url = args.store_url or f"sqlite:///{tmp / 'store.db'}"
    backend = sa.engine.make_url(store_url).get_backend_name()

    def say(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    store: KPIStore | None = None
    kpi_id: int | None = None
    try:
        source = tmp / "source.db"
        naive_db = tmp / "naive.db"
        raw_db = tmp / "raw.db"
        say(f"building {args.rows:,} source rows in {source}")
        build_seconds, _ = timed(lambda: build_source(source, args.rows))
        expected_sum = source_sum(source)
        create_baseline_db(naive_db, NAIVE_SCHEMA)
        create_baseline_db(raw_db, RAW_SCHEMA)
        say(f"opening the store ({backend})")
        store = open_store(store_url, args.rows, source.parent)
        kpi_id = setup_kpi(store, source, tag)

        ex_times, nv_times, rw_times, rw_write = [], [], [], []
        ex_internal_ms = []
        last_execution = 0
        last_naive = 0
        contenders = ["execute", "naive", "raw"]
        for rep in range(args.repeat):
            order = contenders[rep % 3 :] + contenders[: rep % 3]
            for name in order:
                if name == "execute":
                    seconds, (eid, count, value, status) = timed(lambda: run_execute(store, kpi_id))
                    if status != "success" or count != args.rows:
                        raise RuntimeError(f"execute ended {status} with {count} rows")
                    if value is None or abs(value - expected_sum) > 1e-6 * abs(expected_sum):
                        raise RuntimeError(f"execute value {value} != {expected_sum}")
                    ex_internal_ms.append(store.execution(eid).execution_time_ms)
                    ex_times.append(seconds)
                    last_execution = eid
                elif name == "naive":
                    seconds, (eid, count) = timed(lambda: run_naive(source, naive_db))
                    if count != args.rows:
                        raise RuntimeError(f"naive stored {count} rows")
                    nv_times.append(seconds)
                    last_naive = eid
                else:
                    raw_id = 2 * rep + 1
                    seconds, count = timed(lambda rid=raw_id: run_raw(source, raw_db, rid))
                    if count != args.rows:
                        raise RuntimeError(f"raw stored {count} rows")
                    rw_times.append(seconds)
                    rw_write.append(run_raw_write_only(source, raw_db, raw_id + 1))
                say(f"repeat {rep + 1}/{args.repeat}: {name} {args.rows / seconds:,.0f} rows/s")

        rows = args.rows
        ex_rates = [rows / s for s in ex_times]
        nv_rates = [rows / s for s in nv_times]
        rw_rates = [rows / s for s in rw_times]
        # Ratios paired within each repeat (the contenders ran back to back), then the median.
        vs_naive_each = [e / n for e, n in zip(ex_rates, nv_rates, strict=True)]
        vs_raw_each = [e / w for e, w in zip(ex_rates, rw_rates, strict=True)]

        say("timing pages")
        last_page = -(-rows // PAGE_SIZE)
        s_first, s_last = page_times(
            STORE_PAGE_CALLS,
            lambda: store.result_page(last_execution, 1, PAGE_SIZE),
            lambda: store.result_page(last_execution, last_page, PAGE_SIZE),
        )
        check = store.result_page(last_execution, last_page, PAGE_SIZE)
        assert check.rows and check.rows[-1][0] == rows, "last page does not end at the last row"
        n_first, n_last = page_times(
            NAIVE_PAGE_CALLS,
            lambda: naive_page(str(naive_db), last_naive, 1, PAGE_SIZE),
            lambda: naive_page(str(naive_db), last_naive, last_page, PAGE_SIZE),
        )

        say("timing CSV export")
        export_times, export_rss_runs = [], []
        csv_path = tmp / "export.csv"
        for _ in range(args.repeat):
            seconds, count = timed(lambda: store.export_csv(last_execution, csv_path, ACTOR))
            if count != rows:
                raise RuntimeError(f"export wrote {count} rows")
            export_times.append(seconds)
            csv_path.unlink()
            export_rss_runs.append(export_rss(store_url, last_execution, csv_path))
            csv_mb = csv_path.stat().st_size / 1e6
            csv_path.unlink()

        if args.profile:
            say("profiling one more execute")
            profile_execute(store, kpi_id, out_dir / f"profile-execute-{tag}.txt")

        ex_rate, nv_rate, rw_rate = median(ex_rates), median(nv_rates), median(rw_rates)
        results = {
            "build_source_s": build_seconds,
            "execute": {
                "seconds": ex_times,
                "internal_execution_time_ms": ex_internal_ms,
                "rates": ex_rates,
                "rows_per_s": ex_rate,
                "vs_naive": median(vs_naive_each),
                "vs_naive_each": vs_naive_each,
                "vs_raw": median(vs_raw_each),
                "vs_raw_each": vs_raw_each,
                "vs_naive_of_medians": ex_rate / nv_rate,
                "vs_raw_of_medians": ex_rate / rw_rate,
            },
            "naive": {"seconds": nv_times, "rates": nv_rates, "rows_per_s": nv_rate},
            "raw": {
                "seconds": rw_times,
                "rates": rw_rates,
                "rows_per_s": rw_rate,
                "write_only_seconds": rw_write,
                "write_only_rates": [rows / s for s in rw_write],
                "write_only_rows_per_s": median([rows / s for s in rw_write]),
            },
            "pages": {
                "store": {
                    "calls": STORE_PAGE_CALLS,
                    "last_page": last_page,
                    "first_s": median(s_first),
                    "last_s": median(s_last),
                    "first_all": [min(s_first), max(s_first)],
                    "last_all": [min(s_last), max(s_last)],
                    "ratio": median(s_last) / median(s_first),
                },
                "naive": {
                    "calls": NAIVE_PAGE_CALLS,
                    "first_s": median(n_first),
                    "last_s": median(n_last),
                    "first_all": [min(n_first), max(n_first)],
                    "last_all": [min(n_last), max(n_last)],
                    "ratio": median(n_last) / median(n_first),
                },
            },
            "export": {
                "seconds": export_times,
                "rates": [rows / s for s in export_times],
                "rows_per_s": median([rows / s for s in export_times]),
                "subprocess_runs": export_rss_runs,
                "peak_rss_all": [run["peak_rss_mb"] for run in export_rss_runs],
                "peak_rss_mb": max(run["peak_rss_mb"] for run in export_rss_runs),
                "rss_before_mb": max(run["rss_before_mb"] for run in export_rss_runs),
                "after_import_mb": max(run["after_import_mb"] for run in export_rss_runs),
                "csv_mb": csv_mb,
            },
        }
        results["met"] = {
            "execute_vs_naive": results["execute"]["vs_naive"] >= TARGETS["execute_vs_naive"],
            "execute_vs_raw": results["execute"]["vs_raw"] >= TARGETS["execute_vs_raw"],
            "last_vs_first_page": results["pages"]["store"]["ratio"]
            <= TARGETS["last_vs_first_page"],
            "export_peak_rss_mb": results["export"]["peak_rss_mb"] < TARGETS["export_peak_rss_mb"],
        }
        report = {
            "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
            "rows": rows,
            "repeat": args.repeat,
            "query": QUERY,
            "store_backend": backend,
            "store_url": sa.engine.make_url(store_url).render_as_string(hide_password=True)
            if args.store_url
            else "sqlite:///<temp>/store.db",
            "baselines": "SQLite only (stdlib sqlite3), WAL journal",
            "machine": machine,
            "load_start": load_start,
            "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "targets": TARGETS,
            "results": results,
        }
        table = render(report)
        print(table)
        out_file = out_dir / f"bench-{tag}.json"
        out_file.write_text(json.dumps(report, indent=2))
        (out_dir / f"bench-{tag}.md").write_text(table + "\n")
        say(f"results written to {out_file}")
        return 0 if all(results["met"].values()) else 1
    finally:
        if store is not None:
            if backend != "sqlite" and kpi_id is not None:
                # Leave a shared server as we found it (rows go with the KPI's runs).
                try:
                    store.delete_kpi(kpi_id, ACTOR)
                    store.remove_data_source(f"bench_{tag}", ACTOR)
                except Exception as error:  # noqa: BLE001 - best effort
                    say(f"could not clean up the PostgreSQL store: {error}")
            store.close()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
