"""``python -m kpi_store prune [--dry-run] [--vacuum]``: remove the stored rows of runs
past the retention limits (``KPI_KEEP_ROWS_DAYS``, ``KPI_KEEP_ROWS_RUNS``) now."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .retention import PruneReport
from .retention_space import human_bytes
from .store import KPIStore
from .terminal import table

EXIT_OK = 0
RUNS_LISTED = 20


def cmd_prune(store: KPIStore, args: argparse.Namespace) -> int:
    report = store.prune(actor=args.actor, dry_run=args.dry_run, vacuum=args.vacuum)
    print(summary(report))
    if report.runs:
        print()
        print(runs_table(report))
    print()
    print(report.note)
    return EXIT_OK


def summary(report: PruneReport) -> str:
    """What went (or would go) and the room it freed, in a few lines."""
    policy = f"Retention: {report.policy}."
    runs = f"{report.runs_pruned:,} run(s)"
    if report.dry_run:
        return f"{policy}\nWould remove {report.rows_removed:,} rows of {runs}. Nothing changed."
    lines = [
        policy,
        f"Removed {report.rows_removed:,} rows of {runs}; "
        f"freed {human_bytes(report.bytes_freed)} ({report.bytes_freed:,} bytes).",
        f"Store: {human_bytes(report.bytes_before)} before, {human_bytes(report.bytes_after)} "
        "after" + (" (the rows tables)." if not report.auto_vacuum else "."),
    ]
    if report.bytes_free:
        lines.append(f"Free inside the file, reused by new rows: {human_bytes(report.bytes_free)}.")
    if report.runs_finished:
        lines.append(f"Finished {report.runs_finished:,} run(s) an interrupted prune had begun.")
    return "\n".join(lines)


def runs_table(report: PruneReport) -> str:
    rows = [
        (run.execution_id, run.kpi_id, f"{run.rows:,}", run.finished_at, _why(run.reason))
        for run in report.runs[:RUNS_LISTED]
    ]
    text = table(["run", "kpi", "rows", "finished (UTC)", "why"], rows)
    hidden = len(report.runs) - RUNS_LISTED
    return text + (f"\n… and {hidden:,} more run(s)" if hidden > 0 else "")


def _why(reason: str) -> str:
    return "older than the age limit" if reason == "age" else "beyond the newest kept"


def add_prune_command(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command("prune", cmd_prune, "remove the stored rows of runs past the retention limits")
    sub.description = (
        "Remove the stored rows of runs older than KPI_KEEP_ROWS_DAYS or beyond the newest "
        "KPI_KEEP_ROWS_RUNS of their KPI and parameter set; the newest official run keeps "
        "its rows. Records, values, parameters and audit entries stay."
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; change nothing"
    )
    sub.add_argument(
        "--vacuum",
        action="store_true",
        help="then a full VACUUM (SQLite: rewrites the file and switches an older store to "
        "incremental auto-vacuum; PostgreSQL: VACUUM of the rows tables)",
    )
