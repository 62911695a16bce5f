"""Whole-result CSV export against the plain-Python streaming limit, in two processes.

    python bench/export_speed.py [--rows N] [--repeat K]

Builds the ``bench/run.py`` source (default 1,000,000 rows), runs it once into a store,
then, in a **bare** process (only kpi_store imported) and in a process holding the
**dashboard's imports** (streamlit, pandas, st_aggrid, kpi_ui), measures side by side,
interleaved, the median of K repeats of:

* **limit**: stdlib ``sqlite3`` cursor over the same rows in the source + ``csv.writer``
  to a file (no store, no JSON decoding: the plain-Python streaming limit);
* **export**: ``KPIStore.export_csv`` of the stored run to a file;

and the process's RSS before the first export and at its peak. Target: export ≥ 85% of
the limit in both processes; the export adds well under 150 MB for 1M rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DASHBOARD_IMPORTS = "import streamlit, pandas, st_aggrid, kpi_ui"


def limit_export(source: pathlib.Path, dest: pathlib.Path) -> int:
    import sqlite3

    connection = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        cursor = connection.execute("SELECT * FROM big")
        with dest.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow([d[0] for d in cursor.description])
            count = 0
            while batch := cursor.fetchmany(5_000):
                writer.writerows(batch)
                count += len(batch)
        return count
    finally:
        connection.close()


def child(args: argparse.Namespace) -> int:
    """Measure in this process (started with or without the dashboard's imports)."""
    if args.dashboard_imports:
        exec(DASHBOARD_IMPORTS)  # noqa: S102 - the point is to hold these modules
    from run import open_store

    from kpi_store import KPIStore

    source, store_url = pathlib.Path(args.source), args.store_url
    store: KPIStore = open_store(store_url, args.rows, source.parent)
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dest = source.parent / f"out-{args.dashboard_imports}.csv"
    limits, exports = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        count = limit_export(source, dest)
        limits.append(count / (time.perf_counter() - started))
        started = time.perf_counter()
        exported = store.export_csv(args.execution, dest, "bench")
        exports.append(exported / (time.perf_counter() - started))
        assert exported == count, (exported, count)
    store.close()
    print(
        json.dumps(
            {
                "limit": statistics.median(limits),
                "export": statistics.median(exports),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "before_mb": before_mb,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dashboard-imports", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--execution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    from run import build_source, open_store, run_execute, setup_kpi

    with tempfile.TemporaryDirectory(prefix="kpi-export-bench-") as folder:
        tmp = pathlib.Path(folder)
        source = tmp / "source.db"
        build_source(source, args.rows)
        url = f"sqlite:///{tmp / 'store.db'}"
        store = open_store(url, args.rows, tmp)
        run_id, count, _value, status = run_execute(store, setup_kpi(store, source, "export"))
        store.close()
        assert status == "success" and count == args.rows
        print(f"{count:,} rows; median of {args.repeat}, interleaved\n")
        print(
            "| process | limit (sqlite3 + csv) | KPIStore.export_csv | share "
            "| RSS before | peak RSS |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for imports in (False, True):
            command = [sys.executable, __file__, "--child", "--source", str(source)]
            command += ["--store-url", url, "--execution", str(run_id)]
            command += ["--rows", str(args.rows), "--repeat", str(args.repeat)]
            if imports:
                command.append("--dashboard-imports")
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            share = figures["export"] / figures["limit"]
            label = "dashboard's imports" if imports else "bare"
            print(
                f"| {label} | {figures['limit']:,.0f} rows/s | {figures['export']:,.0f} rows/s "
                f"| {share:.0%} | {figures['before_mb']:.0f} MB | {figures['peak_rss_mb']:.0f} MB |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
