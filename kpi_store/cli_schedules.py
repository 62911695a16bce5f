"""``python -m kpi_store schedules``: list schedules with their next fire time, add one,
pause, resume or delete one, or show a schedule's tick log (why it ran or did not)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from .formats import format_params
from .schedules import MISSED_COUNT_CAP, Schedule, Tick
from .store import KPIStore
from .terminal import MISSING, fields, table, when

EXIT_OK = 0


def cmd_schedules(store: KPIStore, args: argparse.Namespace) -> int:
    actor = args.actor
    if args.add:
        # cli.py imports this module to register the command: its helpers come in late.
        from .cli import find_kpi, parse_params

        kpi = find_kpi(store, args.add, actor)
        schedule = store.create_schedule(
            kpi.id,
            args.cron,
            actor,
            timezone=args.tz,
            params=parse_params(args.param),
            run_as=args.run_as,
            active=not args.paused,
        )
        print(f"Added schedule {schedule.id} for {kpi.name}.")
        print_schedule(schedule)
    elif args.pause is not None:
        print_schedule(store.pause_schedule(args.pause, actor))
    elif args.resume is not None:
        print_schedule(store.resume_schedule(args.resume, actor))
    elif args.delete is not None:
        store.delete_schedule(args.delete, actor)
        print(f"Deleted schedule {args.delete}; its runs stay.")
    elif args.ticks is not None:
        print_ticks(store.schedule_ticks(args.ticks, args.limit, actor=actor))
    else:
        print_schedules(store.schedules(args.kpi, actor=actor))
    return EXIT_OK


def local(moment: dt.datetime | None) -> str:
    """A zone-aware time as the zone's wall clock with its abbreviation."""
    return MISSING if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def next_fire(schedule: Schedule) -> str:
    return local(schedule.next_run_local) if schedule.active else "paused"


def print_schedule(schedule: Schedule) -> None:
    upcoming = [local(t) for t in schedule.next_fire_times(5)] if schedule.active else []
    print(
        fields(
            [
                ("schedule", schedule.id),
                ("KPI", schedule.kpi_id),
                ("cron", f"{schedule.cron}: {schedule.description}"),
                ("runs as", schedule.run_as),
                ("parameters", format_params(schedule.params, MISSING)),
                ("state", "active" if schedule.active else "paused"),
                ("next fire times", ", ".join(upcoming) or MISSING),
                ("last run", schedule.last_run_id or MISSING),
            ]
        )
    )


def print_schedules(schedules: list[Schedule]) -> None:
    if not schedules:
        print("No schedules yet: add one with --add KPI --cron EXPR.")
        return
    rows = [
        (
            s.id,
            s.kpi_id,
            s.cron,
            s.description,
            s.run_as,
            next_fire(s),
            s.last_run_id or MISSING,
        )
        for s in schedules
    ]
    print(table(["id", "KPI", "cron", "in words", "runs as", "next fire", "last run"], rows))


def print_ticks(ticks: list[Tick]) -> None:
    if not ticks:
        print("No ticks yet: the schedule has not been due since it was made.")
        return
    rows = [(t.due_at, t.decided_at, t.outcome, t.run_id or MISSING, _missed(t)) for t in ticks]
    print(table(["due (UTC)", "decided (UTC)", "outcome", "run", "missed"], rows))
    reasons = [f"{when(t.due_at)}: {t.reason}" for t in ticks if t.reason]
    if reasons:
        print("\nWhy\n")
        print("\n".join(reasons))


def _missed(tick: Tick) -> str:
    return f"{tick.missed:,}+" if tick.missed >= MISSED_COUNT_CAP else f"{tick.missed:,}"


def add_schedules_command(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command(
        "schedules",
        cmd_schedules,
        "list schedules and their next fire time, or change one",
    )
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--kpi", metavar="ID", type=int, help="list only this KPI's schedules")
    which.add_argument("--add", metavar="KPI", help="schedule this KPI (id or exact name)")
    which.add_argument("--pause", metavar="ID", type=int, help="pause this schedule")
    which.add_argument("--resume", metavar="ID", type=int, help="resume this schedule")
    which.add_argument("--delete", metavar="ID", type=int, help="delete this schedule")
    which.add_argument("--ticks", metavar="ID", type=int, help="this schedule's tick log")
    sub.add_argument(
        "--cron",
        metavar="EXPR",
        help="with --add: minute hour day month weekday [second], e.g. '0 9 * * 1-5'",
    )
    sub.add_argument("--tz", metavar="ZONE", default="UTC", help="IANA time zone (default UTC)")
    sub.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a parameter value, dates may be relative ('start of last month'); repeatable",
    )
    sub.add_argument("--run-as", metavar="EMAIL", help="with --add: whom it runs as")
    sub.add_argument("--paused", action="store_true", help="with --add: add it paused")
    sub.add_argument("--limit", metavar="N", type=int, default=20, help="with --ticks: at most N")
