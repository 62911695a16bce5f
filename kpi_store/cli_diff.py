"""``python -m kpi_store diff A B --key id [-o diff.csv]``: compare two runs row by row."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .formats import as_text
from .models import RunDiff
from .store import KPIStore
from .terminal import MISSING, table

EXIT_OK = 0
EXIT_DIFFERENT = 1


def cmd_diff(store: KPIStore, args: argparse.Namespace) -> int:
    key = [part.strip() for item in args.key for part in item.split(",") if part.strip()]
    diff = store.diff_runs(args.a, args.b, key, actor=args.actor)
    print_diff(diff)
    if args.output:
        count = store.export_diff_csv(
            args.a, args.b, key, args.output, args.actor, excel=args.excel
        )
        print(f"\nWrote {count} line(s) of differences to {args.output}")
    return EXIT_OK if diff.identical else EXIT_DIFFERENT


def print_diff(diff: RunDiff) -> None:
    print(f"Run {diff.run_a} (A, {diff.rows_a} rows) vs run {diff.run_b} (B, {diff.rows_b} rows)")
    print(f"matched by {', '.join(diff.key)}\n")
    print(
        table(
            ["only in A", "only in B", "changed", "unchanged"],
            [(diff.only_in_a, diff.only_in_b, diff.changed, diff.unchanged)],
        )
    )
    print("\nColumns (match % over the rows both runs have)\n")
    rows = [
        (
            c.column,
            "yes" if c.in_a else "no",
            "yes" if c.in_b else "no",
            MISSING if c.percent is None else f"{c.percent:.2f}%",
        )
        for c in diff.columns
    ]
    print(table(["column", "in A", "in B", "match"], rows))
    if diff.settings_differ:
        print("\nThe runs were run differently:")
        for s in diff.settings:
            what = f"parameter {s.name}" if s.what == "parameter" else s.what
            print(f"  - {what}: A {as_text(s.a)}, B {as_text(s.b)}")


def add_diff_command(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command(
        "diff",
        cmd_diff,
        "compare two runs row by row (exit 1 if they differ)",
    )
    sub.add_argument("a", metavar="A", type=int, help="run (execution) id of run A")
    sub.add_argument("b", metavar="B", type=int, help="run (execution) id of run B")
    sub.add_argument(
        "--key",
        metavar="COLUMN",
        action="append",
        required=True,
        help="column that identifies a row (repeat, or comma-separate, for several)",
    )
    sub.add_argument("-o", "--output", metavar="FILE", help="write the differences as CSV")
    sub.add_argument("--excel", action="store_true", help="CSV: BOM and formula-safe text")
