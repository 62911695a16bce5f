"""``python -m kpi_store backfill KPI FROM TO`` and ``compare RUN``: a period KPI's history
in one batch, and a run's value against the previous period, last year or its target."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .formats import format_value
from .store import KPIStore
from .vocabulary import CompareTo

EXIT_OK = 0


def cmd_backfill(store: KPIStore, args: argparse.Namespace) -> int:
    from .cli import find_kpi, parse_params

    kpi = find_kpi(store, args.kpi, args.actor)
    params = parse_params(args.param) or None
    result = store.backfill(
        kpi.id, args.first, args.last, args.actor, params=params, rerun=args.rerun
    )
    print(
        f"Queued {len(result.queued)} of {result.periods} period(s) of '{kpi.name}' as batch "
        f"{result.batch_id}; skipped {len(result.skipped)} already run."
    )
    for error in result.errors:
        print(f"  not queued: {error.kpi_id}: {error.message}")
    if result.queued:
        print("A worker runs them: python -m kpi_store worker")
    return EXIT_OK


def cmd_compare(store: KPIStore, args: argparse.Namespace) -> int:
    run = args.execution
    if args.run_missing:
        found = store.run_comparison(run, args.to, args.actor, to_date=args.to_date)
    else:
        found = store.compare(run, args.to, to_date=args.to_date, actor=args.actor)
    unit = store.get_kpi(store.runs([run], actor=args.actor)[0].kpi_id, actor=args.actor).unit
    print(f"Run {run}: {format_value(found.value, unit)}")
    base = format_value(found.base_value, unit)
    if found.missing:
        print(f"{found.base_label}: not run yet (--run-missing runs it now)")
        return EXIT_OK
    print(
        f"{found.base_label}: {base}" + (f" (run {found.base_run_id})" if found.base_run_id else "")
    )
    if found.change is not None:
        pct = f"{found.change_pct:+.2f} %" if found.change_pct is not None else "no % (base is 0)"
        print(f"Change: {format_value(found.change, unit)} ({pct})")
    else:
        print("Change: no data")
    return EXIT_OK


def add_series_commands(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command("backfill", cmd_backfill, "queue one run per period of a period KPI")
    sub.add_argument("kpi", metavar="KPI", help="KPI id or exact name")
    sub.add_argument("first", metavar="FROM", help="first date (YYYY-MM-DD)")
    sub.add_argument("last", metavar="TO", help="last date (YYYY-MM-DD)")
    sub.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a parameter of the series (default: the official parameter set)",
    )
    sub.add_argument("--rerun", action="store_true", help="run again periods already run")

    sub = command("compare", cmd_compare, "compare a run with its previous period, year or target")
    sub.add_argument("execution", metavar="EXECUTION", type=int, help="run (execution) id")
    sub.add_argument(
        "--to",
        choices=[c.value for c in CompareTo],
        default=CompareTo.PREVIOUS_PERIOD.value,
        help="what to compare with (default: previous_period)",
    )
    sub.add_argument("--to-date", action="store_true", help="the same days of the base period")
    sub.add_argument(
        "--run-missing", action="store_true", help="run the base now when nobody has yet"
    )
