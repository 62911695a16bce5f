"""Comparing two million-row runs: how long ``diff_runs`` takes and how much memory.

    python bench/diff.py [--rows N] [--changed K] [--deleted K] [--added K] [--store-url URL]

Builds the N-row source of ``bench/run.py`` (default 1,000,000), runs it into a store (run
A), then changes K rows (amount and status), deletes K and adds K (defaults 5,000, 2,000,
3,000) and runs it again (run B). In a fresh process (so the peak RSS is the diff's, not
the runs'), it measures, keyed by ``id``:

* ``diff_runs`` (counts, per-column match %), checked against the changes made;
* ``diff_page`` of each category, page 1 and page 20;
* ``export_diff_csv`` of every difference to a file;

and reports seconds and the process's peak RSS. Target: the diff within 10 s.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import ACTOR, build_source, open_store, run_execute, setup_kpi  # noqa: E402


def change_source(path: pathlib.Path, rows: int, changed: int, deleted: int, added: int) -> None:
    """Change ``changed`` rows spread over the table, delete ``deleted``, add ``added``."""
    connection = sqlite3.connect(path)
    with connection:
        step = max(1, rows // (changed + deleted))
        ids = list(range(1, rows + 1, step))[: changed + deleted]
        connection.executemany(
            "UPDATE big SET amount = amount + 1, status = 'changed' WHERE id = ?",
            [(i,) for i in ids[:changed]],
        )
        connection.executemany("DELETE FROM big WHERE id = ?", [(i,) for i in ids[changed:]])
        connection.execute(
            "INSERT INTO big (id, customer, order_date, amount, status) "
            "SELECT id + ?, customer, order_date, amount, status FROM big WHERE id <= ?",
            (rows, added),
        )
    connection.close()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, a: int, b: int, out: pathlib.Path, rows: int) -> dict[str, Any]:
    """Run in a fresh process: the diff, pages and the export, with the peak RSS."""
    store = open_store(url, rows, out.parent)
    figures: dict[str, Any] = {"rss_at_start_mb": rss_mb()}
    started = time.perf_counter()
    diff = store.diff_runs(a, b, ["id"], actor=ACTOR)
    figures["diff_runs_s"] = time.perf_counter() - started
    figures["rss_after_diff_mb"] = rss_mb()
    figures["counts"] = {
        "only_in_a": diff.only_in_a,
        "only_in_b": diff.only_in_b,
        "changed": diff.changed,
        "unchanged": diff.unchanged,
    }
    figures["match"] = {c.column: c.percent for c in diff.columns}
    for category in ("only_in_a", "only_in_b", "changed"):
        for number in (1, 20):
            started = time.perf_counter()
            page = store.diff_page(a, b, ["id"], category, number, 50, actor=ACTOR)
            figures[f"page_{category}_{number}_s"] = time.perf_counter() - started
            figures[f"page_{category}_{number}_rows"] = len(page.rows)
    started = time.perf_counter()
    lines = store.export_diff_csv(a, b, ["id"], out, ACTOR)
    figures["export_s"] = time.perf_counter() - started
    figures["export_lines"] = lines
    figures["peak_rss_mb"] = rss_mb()
    store.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=5_000)
    parser.add_argument("--deleted", type=int, default=2_000)
    parser.add_argument("--added", type=int, default=3_000)
    parser.add_argument("--store-url", default=None)
    parser.add_argument(
        "--measure", nargs=4, metavar=("URL", "A", "B", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure:
        url, a, b, out = args.measure
        print(json.dumps(measure(url, int(a), int(b), pathlib.Path(out), args.rows)))
        return 0
    with tempfile.TemporaryDirectory(prefix="kpi-diff-bench-") as folder:
        tmp = pathlib.Path(folder)
        source = tmp / "source.db"
        build_source(source, args.rows)
        url = args.store_url or f"sqlite:///{tmp / 'store.db'}"
        store = open_store(url, args.rows + args.added, tmp)
        kpi = setup_kpi(store, source, "diff")
        a, count_a, _, status = run_execute(store, kpi)
        assert status == "success" and count_a == args.rows, status
        change_source(source, args.rows, args.changed, args.deleted, args.added)
        b, count_b, _, status = run_execute(store, kpi)
        assert status == "success", status
        store.close()
        print(f"run A: {count_a:,} rows; run B: {count_b:,} rows")
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rows",
                str(args.rows + args.added),
                "--measure",
                url,
                str(a),
                str(b),
                str(tmp / "diff.csv"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        counts = figures["counts"]
        expected = {
            "only_in_a": args.deleted,
            "only_in_b": args.added,
            "changed": args.changed,
            "unchanged": args.rows - args.changed - args.deleted,
        }
        print(json.dumps(figures, indent=2))
        print("\n| measure | figure |\n| --- | --- |")
        print(
            f"| `diff_runs` (2 × {args.rows:,} rows, key `id`) | {figures['diff_runs_s']:.2f} s |"
        )
        print(f"| counts as made ({counts}) | {'yes' if counts == expected else 'NO'} |")
        for category in ("only_in_a", "only_in_b", "changed"):
            print(
                f"| `diff_page` {category}, page 1 / page 20 | "
                f"{figures[f'page_{category}_1_s']:.2f} s / "
                f"{figures[f'page_{category}_20_s']:.2f} s |"
            )
        print(
            f"| `export_diff_csv` ({figures['export_lines']:,} lines) | "
            f"{figures['export_s']:.2f} s |"
        )
        print(
            f"| peak RSS of the measuring process | {figures['peak_rss_mb']:.0f} MB "
            f"(at start {figures['rss_at_start_mb']:.0f} MB) |"
        )
        return 0 if counts == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
