"""``python -m kpi_store people``: list people, add one, or change a role or scope."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .models import Person
from .store import KPIStore
from .terminal import MISSING, table
from .vocabulary import Role

EXIT_OK = 0


def cmd_people(store: KPIStore, args: argparse.Namespace) -> int:
    if args.add:
        person = store.add_person(
            args.add,
            args.actor,
            display_name=args.name or "",
            role=args.role or Role.VIEWER,
            data_sources=args.source or (),
        )
        print(f"Added {person.label} as {person.role}.")
    elif args.set:
        scope = [] if args.all_sources else args.source
        person = store.update_person(
            args.set,
            args.actor,
            role=args.role,
            data_sources=scope,
            active=args.active,
            display_name=args.name,
        )
        print(f"{person.label}: {person.role}, {'active' if person.active else 'deactivated'}.")
    else:
        print_people(store.people(actor=args.actor))
    return EXIT_OK


def print_people(people: list[Person]) -> None:
    if not people:
        print("No people yet: they are added at their first sign-in, or with --add.")
        return
    rows = [
        (
            p.email,
            p.display_name,
            p.role,
            "yes" if p.active else "no",
            ", ".join(p.data_sources) or "all",
            p.last_seen_at or MISSING,
        )
        for p in people
    ]
    print(table(["email", "name", "role", "active", "data sources", "last seen (UTC)"], rows))


def add_people_command(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command("people", cmd_people, "list people, add one, or change a role or scope")
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--add", metavar="EMAIL", help="add a person before their first sign-in")
    which.add_argument("--set", metavar="EMAIL", help="change this person")
    sub.add_argument("--name", metavar="NAME", help="display name")
    sub.add_argument("--role", choices=[r.value for r in Role], help="role to give")
    sub.add_argument(
        "--source",
        metavar="NAME",
        action="append",
        help="limit to this data source (repeat for several)",
    )
    sub.add_argument(
        "--all-sources", action="store_true", help="lift the data-source limit (with --set)"
    )
    active = sub.add_mutually_exclusive_group()
    active.add_argument(
        "--deactivate",
        dest="active",
        action="store_false",
        default=None,
        help="lock them out at their next click (with --set)",
    )
    active.add_argument(
        "--activate", dest="active", action="store_true", help="let them back in (with --set)"
    )
