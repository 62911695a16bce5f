"""Memory probes of issue 10: can one KPI query take the server down?

    python bench/memory_probe.py [--code DIR] [--kill-mib 1536] [--timeout 120]

Each probe runs in a fresh Python process (a temporary SQLite store and source, default
settings) that creates one KPI and runs it now; this process watches the child's peak RSS
(``VmHWM`` in ``/proc/PID/status``) and kills it past ``--kill-mib`` so the machine
survives an unbounded build. Prints, per probe: the run's status and message, seconds to
the end of the run, stored rows, and the peak RSS. ``--code DIR`` measures the kpi_store
package in DIR instead (e.g. a copy of an older tree, for before/after figures).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBES = {
    "100 rows of zeroblob(50 MB)": (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n<100) "
        "SELECT zeroblob(50000000) FROM r"
    ),
    "one 300 MB printf row": "SELECT printf('%.*c', 300000000, 'x') AS big",
}
CHILD = """
import json, resource, sqlite3, sys, time
import sqlalchemy as sa
from kpi_store import KPIStore

folder, sql = sys.argv[1], sys.argv[2]
sqlite3.connect(f"{folder}/source.db").execute("CREATE TABLE t (x)").connection.close()
store = KPIStore(f"sqlite:///{folder}/store.db")
store.add_data_source("src", f"sqlite:///{folder}/source.db", "probe")
kpi = store.create_kpi({"name": "Probe", "data_source": "src", "sql": sql}, "probe")
started = time.monotonic()
run = store.execute(kpi.id, actor="probe", timeout_s=600)
elapsed = time.monotonic() - started
with store.engine.connect() as connection:
    rows = connection.execute(
        sa.text("SELECT count(*) FROM kpi_execution_result_rows WHERE execution_id = :e"),
        {"e": run.id},
    ).scalar_one()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"status": run.status, "error": run.error, "stored_rows": rows,
                  "seconds": elapsed, "peak_rss": peak}))
"""


def probe(sql: str, code: pathlib.Path, kill_bytes: int, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kpi-probe-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        env.update(
            KPI_SOURCE_DIRS=folder,
            KPI_SECRET_KEY_FILE=f"{folder}/key",
            PYTHONPATH=str(code),
        )
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, folder, sql],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak, killed = 0, ""
        while child.poll() is None:
            try:
                status = pathlib.Path(f"/proc/{child.pid}/status").read_text()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) * 1024)
            except (OSError, IndexError, ValueError):
                pass  # the child ended between poll() and this read: poll() says so next
            if peak > kill_bytes:
                killed = f"killed at {peak / 2**20:,.0f} MiB RSS"
            elif time.monotonic() - started > timeout_s:
                killed = f"killed after {timeout_s:g} s"
            if killed:
                child.kill()
                break
            time.sleep(0.02)
        out, err = child.communicate()
        wall = time.monotonic() - started
        report: dict[str, Any] = {"wall_seconds": wall, "watched_peak_rss": peak}
        if killed:
            report.update(status=killed, error="", stored_rows=None, seconds=wall)
        elif child.returncode != 0:
            tail = err.strip().splitlines()[-1:] or ["?"]
            report.update(status=f"crashed ({tail[0]})", error="", stored_rows=None, seconds=wall)
        else:
            report.update(json.loads(out.strip().splitlines()[-1]))
        report["peak"] = max(peak, report.get("peak_rss", 0))
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(ROOT), help="folder holding kpi_store")
    parser.add_argument("--kill-mib", type=int, default=1536, help="kill a probe past this RSS")
    parser.add_argument("--timeout", type=float, default=120.0, help="kill a probe after S s")
    args = parser.parse_args()
    code = pathlib.Path(args.code).resolve()
    print(f"kpi_store from {code}; RSS watchdog at {args.kill_mib} MiB\n")
    print("| probe | status | time to end, s | peak RSS, MiB | stored rows | message |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, sql in PROBES.items():
        r = probe(sql, code, args.kill_mib * 2**20, args.timeout)
        print(
            f"| {name} | {r['status']} | {r['seconds']:.2f} | {r['peak'] / 2**20:,.0f} "
            f"| {r['stored_rows']} | {r['error'] or ''} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
