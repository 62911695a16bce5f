"""``python -m kpi_store``: the command line for analysts and operators.

Every command opens the store named by ``--store`` (default: ``KPI_STORE_URL``, else
``sqlite:///data/kpi_store.db``) and acts as ``--actor`` (default: ``KPI_ACTOR``, else
the OS user name). Whoever holds the store URL is trusted like ``psql``; with sign-in on
(``KPI_AUTH=oidc``) the actor must still be an active person's email, and the store holds
them to their role like any dashboard user. Exit codes: 0 done, 1 a run failed or timed
out (or the audit chain is broken), 2 bad input or an error the store refused with a
message.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from .cli_diff import add_diff_command
from .cli_people import add_people_command
from .cli_prune import add_prune_command
from .cli_schedules import add_schedules_command
from .cli_series import add_series_commands
from .config import DEFAULT_URL
from .errors import KPIStoreError, NotFoundError, ValidationError
from .formats import format_params
from .models import KPI, Execution
from .store import KPIStore
from .terminal import MISSING, duration, fields, number, table
from .vocabulary import KPIStatus, RunStatus
from .worker import Worker

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# -- helpers ----------------------------------------------------------------------------------


def default_actor() -> str:
    try:
        return os.environ.get("KPI_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no user name in some containers
        return "cli"


def find_kpi(store: KPIStore, ref: str, actor: str) -> KPI:
    """A KPI by id, or by its exact name (case-insensitive)."""
    ref = ref.strip()
    if ref.isdigit():
        try:
            return store.get_kpi(int(ref), actor=actor)
        except NotFoundError:
            pass  # a KPI may be named with digits
    kpis = store.list_kpis(include_archived=True, actor=actor)
    matches = [k for k in kpis if k.name.casefold() == ref.casefold()]
    if not matches:
        raise NotFoundError(f"There is no KPI with id or name '{ref}' (see: list --archived).")
    return matches[0]


def parse_params(items: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"--param takes name=value; got '{item}'.")
        params[name.strip()] = value
    return params


def last_value(store: KPIStore, kpi: KPI, actor: str) -> str:
    runs = store.executions(kpi_id=kpi.id, status=RunStatus.SUCCESS, limit=1, actor=actor)
    return number(runs[0].value, kpi.unit) if runs else MISSING


def _rows(run: Execution) -> str:
    if run.row_count is None:
        return MISSING
    return f"{run.row_count:,}" + (" (truncated at the row cap)" if run.truncated else "")


def print_run(kpi: KPI, run: Execution) -> None:
    print(
        fields(
            [
                ("KPI", f"{kpi.name} (id {kpi.id}, version {run.kpi_version})"),
                ("Status", run.status),
                ("Value", number(run.value, kpi.unit)),
                ("Rows", _rows(run)),
                ("Duration", duration(run.execution_time_ms)),
                ("Attempts", run.attempts),
                ("Execution", run.id),
                ("Error", run.error),
            ]
        )
    )


# -- commands -------------------------------------------------------------------------------


def cmd_demo(store: KPIStore, args: argparse.Namespace) -> int:
    added = store.install_demo(args.actor)
    print(f"Demo warehouse: {store.demo_warehouse_path()} (data source 'demo')")
    if added:
        print(f"Added {len(added)} KPI(s):")
        print(table(["id", "name"], [(k.id, k.name) for k in added]))
    else:
        print("The demo KPIs are already installed; nothing added.")
    prefix = "" if store.url == DEFAULT_URL else f"KPI_STORE_URL='{store.url}' "
    print(f"\nOpen the dashboard:  {prefix}streamlit run dashboard.py")
    print(f"Or run one here:     {sys.executable} -m kpi_store run Revenue")
    return EXIT_OK


def cmd_list(store: KPIStore, args: argparse.Namespace) -> int:
    kpis = store.list_kpis(
        search=args.search, tag=args.tag, include_archived=args.archived, actor=args.actor
    )
    if not kpis:
        print("No KPIs match.")
        return EXIT_OK
    rows = [
        (
            k.id,
            k.name + (" (archived)" if k.status == KPIStatus.ARCHIVED else ""),
            k.version,
            k.owner,
            ", ".join(k.tags),
            last_value(store, k, args.actor),
        )
        for k in kpis
    ]
    print(table(["id", "name", "version", "owner", "tags", "last value"], rows))
    return EXIT_OK


def cmd_run(store: KPIStore, args: argparse.Namespace) -> int:
    kpi = find_kpi(store, args.kpi, args.actor)
    params = parse_params(args.param)
    if args.background:
        if args.timeout is not None:
            raise ValidationError("--timeout applies to runs in the foreground only.")
        run = store.submit(kpi.id, params, args.actor)
        print(f"Queued run {run.id} of '{kpi.name}'. A worker runs it: python -m kpi_store worker")
        return EXIT_OK
    run = store.execute(kpi.id, params, args.actor, timeout_s=args.timeout)
    print_run(kpi, run)
    return EXIT_OK if run.status == RunStatus.SUCCESS else EXIT_RUN_FAILED


def cmd_export(store: KPIStore, args: argparse.Namespace) -> int:
    from .exports import format_for

    kind = args.format or format_for(args.output)
    if args.excel and kind != "csv":
        raise ValidationError(f"--excel applies to CSV only, not {kind}.")
    count = store.export_file(
        args.execution, args.output, args.actor, format=kind, excel=args.excel
    )
    print(f"Wrote {count} row(s) of run {args.execution} to {args.output} ({kind})")
    return EXIT_OK


def cmd_history(store: KPIStore, args: argparse.Namespace) -> int:
    kpi = find_kpi(store, args.kpi, args.actor)
    print(f"{kpi.name} (id {kpi.id}): versions, newest first\n")
    versions = store.kpi_versions(kpi.id, actor=args.actor)
    print(
        table(
            ["version", "when (UTC)", "who", "note", "action"],
            [(v.version, v.changed_at, v.changed_by, v.note, v.action) for v in versions],
        )
    )
    runs = store.executions(kpi_id=kpi.id, limit=args.runs, actor=args.actor)
    print("\nRecent runs\n")
    if not runs:
        print("No runs yet.")
        return EXIT_OK
    print(
        table(
            ["run", "when (UTC)", "version", "by", "status", "value", "rows", "duration"],
            [
                (
                    r.id,
                    r.created_at,
                    r.kpi_version,
                    r.requested_by,
                    r.status,
                    number(r.value, kpi.unit),
                    r.row_count,
                    duration(r.execution_time_ms),
                )
                for r in runs
            ],
        )
    )
    return EXIT_OK


def cmd_audit(store: KPIStore, args: argparse.Namespace) -> int:
    if args.verify:
        result = store.verify_audit(actor=args.actor)
        vouched = (
            f"The newest audit checkpoint vouches for {result.checkpoint_count} entries."
            if result.checkpoint_count is not None
            else "No audit checkpoint yet (workers write them; see KPI_AUDIT_CHECKPOINT_FILE)."
        )
        if result.ok:
            print(f"Audit chain intact: {result.checked} entries checked.\n{vouched}")
            return EXIT_OK
        where = f" at entry {result.first_broken_id}" if result.first_broken_id else ""
        print(f"Audit check FAILED{where} ({result.checked} entries checked). {vouched}")
        for problem in result.problems:
            print(f"  - {problem}")
        return EXIT_RUN_FAILED
    entries = store.audit_log(
        kpi_id=args.kpi,
        person=args.person,
        action=args.action,
        limit=args.limit,
        actor=args.actor,
    )
    if not entries:
        print("No audit entries match.")
        return EXIT_OK
    rows = [
        (e.id, e.occurred_at, e.actor, e.action, e.kpi_id, e.entity, _details(e.details))
        for e in entries
    ]
    print(table(["id", "when (UTC)", "actor", "action", "kpi", "entity", "details"], rows))
    return EXIT_OK


def _details(details: dict[str, Any]) -> str:
    return format_params(details, MISSING)


def cmd_worker(store: KPIStore, args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    worker = Worker(store, concurrency=args.concurrency).start()
    try:
        print(
            f"Worker {worker.worker_id} started with {args.concurrency} thread(s); "
            "Ctrl+C or SIGTERM stops it.",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print("Stopping: running jobs get a moment to finish, then go back to the queue…")
        clean = worker.stop(timeout=args.stop_timeout)
        print("Worker stopped." if clean else "Worker stopped; some threads were still busy.")
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_cancel(store: KPIStore, args: argparse.Namespace) -> int:
    run = store.cancel(args.execution, args.actor)
    if run.status == RunStatus.CANCELLED:
        print(f"Run {run.id} cancelled.")
    else:
        print(f"Run {run.id} is {run.status}: asked the process running it to stop.")
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kpi_store",
        description="Define, run and audit KPIs from the command line.",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get("KPI_STORE_URL") or None,
        help=f"store database URL (default: $KPI_STORE_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--actor",
        metavar="NAME",
        default=None,
        help="who is acting, recorded in the audit log (default: $KPI_ACTOR or your user name)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(func=func)
        return sub

    command("demo", cmd_demo, "install the demo warehouse and sample KPIs")
    _kpi_commands(command)
    _audit_command(command("audit", cmd_audit, "show the audit log, or verify its hash chain"))
    _worker_command(command("worker", cmd_worker, "run queued jobs until Ctrl+C or SIGTERM"))
    add_people_command(command)
    add_diff_command(command)
    add_series_commands(command)
    add_prune_command(command)
    add_schedules_command(command)
    sub = command("cancel", cmd_cancel, "cancel a queued or running run")
    sub.add_argument("execution", metavar="EXECUTION", type=int, help="run (execution) id")
    return parser


def _kpi_commands(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    sub = command("list", cmd_list, "list KPIs with their last value")
    sub.add_argument("--search", metavar="S", help="text in the name or description")
    sub.add_argument("--tag", metavar="T", help="only KPIs with this tag")
    sub.add_argument("--archived", action="store_true", help="include archived KPIs")

    sub = command("run", cmd_run, "run a KPI now (or queue it with --background)")
    sub.add_argument("kpi", metavar="KPI", help="KPI id or exact name")
    sub.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a parameter value (repeat for several)",
    )
    sub.add_argument("--timeout", metavar="S", type=float, help="time limit in seconds")
    sub.add_argument("--background", action="store_true", help="queue it for a worker")

    sub = command(
        "export", cmd_export, "write every row of a successful run to CSV, XLSX or Parquet"
    )
    sub.add_argument("execution", metavar="EXECUTION", type=int, help="run (execution) id")
    sub.add_argument("-o", "--output", metavar="FILE", required=True, help="output file")
    sub.add_argument(
        "--format",
        choices=("csv", "xlsx", "parquet"),
        default=None,
        help="file format (default: from the extension .csv, .xlsx or .parquet; else csv)",
    )
    sub.add_argument("--excel", action="store_true", help="CSV only: BOM and formula-safe text")

    sub = command("history", cmd_history, "a KPI's versions and recent runs")
    sub.add_argument("kpi", metavar="KPI", help="KPI id or exact name")
    sub.add_argument("--runs", metavar="N", type=_positive_int, default=10, help="runs shown")


def _audit_command(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--kpi", metavar="ID", type=int, help="entries about this KPI")
    sub.add_argument(
        "--person",
        metavar="P",
        help="entries by people whose email or name contains P (any case)",
    )
    sub.add_argument("--action", metavar="X", type=str.upper, help="e.g. CREATE, EXECUTE")
    sub.add_argument("--limit", metavar="N", type=_positive_int, default=50, help="at most N")
    sub.add_argument(
        "--verify",
        action="store_true",
        help="check the signed chain, the newest checkpoint and the definitions instead",
    )


def _worker_command(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=2,
        help="worker threads (default 2)",
    )
    sub.add_argument(
        "--stop-timeout",
        metavar="S",
        type=float,
        default=10.0,
        help="on stop, wait up to S seconds for running jobs (default 10)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    args.actor = args.actor or default_actor()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store = KPIStore(args.store)
    except (ValueError, OSError, sa.exc.SQLAlchemyError) as error:
        reason = str(error).strip().splitlines()[0]
        print(
            f"error: cannot open the store {args.store or DEFAULT_URL}: {reason}", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    try:
        return args.func(store, args)
    except KPIStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"error: {error.strerror or error}: {error.filename or ''}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sa.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        print(f"error: the store database failed: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        store.close()
