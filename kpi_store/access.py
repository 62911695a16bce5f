"""Who may do what: the one wall between people and the store, for every caller.

Each public ``KPIStore`` method carries a rule (``@allowed(Role.X, ...)``): the least role
it needs and which of its arguments name the KPI, run or data source it touches, so a
person limited to some data sources is held to them. With ``KPI_AUTH=off`` nothing is
checked (the single-user demo); with sign-in on, the actor must be a known, active person,
looked up again on every call, so a role change or deactivation holds at the next click.
A refusal raises ``PermissionDeniedError`` and leaves a ``DENIED`` audit entry.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa

from . import audit, db, people
from .config import Settings
from .errors import PermissionDeniedError, ValidationError
from .schema import kpi_definitions as kpis
from .schema import kpi_execution_results as executions
from .vocabulary import AuditAction, Role

F = TypeVar("F", bound=Callable[..., Any])

WHAT = {  # what each role adds, for messages
    Role.VIEWER: "see KPIs, runs and history",
    Role.RUNNER: "run KPIs and export their rows",
    Role.EDITOR: "create and edit KPIs",
    Role.ADMIN: "administer KPI Desk",
}


@dataclass(frozen=True)
class Principal:
    """The person a call acts for, as the store knows them right now."""

    actor: str  # what the audit records: the email when signed in
    role: Role
    sources: frozenset[str] | None  # the data sources they are limited to; None = all

    def sees(self, data_source: str) -> bool:
        return self.sources is None or data_source in self.sources


@dataclass(frozen=True)
class Rule:
    """A public method's rule: the least role, and which arguments name what it touches."""

    role: Role
    kpi: str | None = None  # argument holding a KPI id
    kpis: str | None = None  # argument holding several KPI ids
    run: str | None = None  # argument holding a run id
    source: str | None = None  # argument holding a data-source name
    spec: str | None = None  # argument holding a KPI definition (its data source)
    own_run: bool = False  # below admin, only the person who asked for the run
    actor: str = "actor"  # argument naming who acts


class Guard:
    """Resolves actors to principals and enforces rules; writes the DENIED entries."""

    def __init__(self, engine: sa.engine.Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    def principal(self, actor: Any, operation: str) -> Principal:
        """Who ``actor`` is and what they may do; refused when sign-in is on and they are
        not a known, active person (``KPI_ADMINS`` people are added on first use)."""
        if not self.settings.auth_on:
            return Principal(str(actor or ""), Role.ADMIN, None)
        try:
            email = people.normal_email(actor)
        except ValidationError:
            self.deny(
                str(actor or "(nobody)"),
                operation,
                "sign-in is on, and only a known person's email may act",
            )
        with db.read_tx(self.engine) as connection:
            person = people.find(connection, email)
        if person is None and email in self.settings.admin_emails():
            person = people.sign_in(self.engine, self.settings, email, "")
        if person is None:
            self.deny(email, operation, f"{email} is not a known person here")
        if not person.active:
            self.deny(email, operation, f"{email} has been deactivated")
        return Principal(email, person.role, frozenset(person.data_sources) or None)

    def sources(self, actor: Any, operation: str) -> frozenset[str] | None:
        """The data sources ``actor`` may see (None = all): for filtering lists."""
        return self.principal(actor, operation).sources

    def check(self, rule: Rule, operation: str, arguments: dict[str, Any]) -> Principal:
        """Enforce ``rule`` for one call whose arguments are ``arguments``."""
        principal = self.principal(arguments.get(rule.actor), operation)
        kpi_ids = _kpi_ids(rule, arguments)
        target = _target(kpi_ids, arguments.get(rule.run) if rule.run else None)
        if not principal.role.includes(rule.role):
            self.deny(
                principal.actor,
                operation,
                f"only people with the {rule.role} role or above may {WHAT[rule.role]}, and "
                f"{principal.actor} has the {principal.role} role",
                **target,
            )
        if principal.sources is None and not rule.own_run:
            return principal
        with db.read_tx(self.engine) as connection:
            touched = set(_named_sources(rule, arguments))
            touched |= _kpi_sources(connection, kpi_ids)
            run = _run(connection, arguments.get(rule.run)) if rule.run else None
        if run is not None:
            touched.add(run.data_source)
            if rule.own_run and not may_touch_run(
                principal.role, principal.actor, run.requested_by
            ):
                self.deny(
                    principal.actor,
                    operation,
                    f"run {run.id} was asked for by {run.requested_by}; only they or an admin "
                    "may do that",
                    **target,
                )
        outside = sorted(s for s in touched if not principal.sees(s))
        if outside:
            self.deny(
                principal.actor,
                operation,
                f"{principal.actor} may not use the data source {', '.join(outside)}",
                **target,
            )
        return principal

    def admit_run(self, requested_by: str, kpi_id: int) -> str | None:
        """Why a queued run may not start now (its person was demoted, deactivated or
        limited since they asked), or None. Checked when a worker picks it up."""
        if not self.settings.auth_on:
            return None
        rule = Rule(Role.RUNNER, kpi="kpi_id")
        try:
            self.check(rule, "start_run", {"actor": requested_by, "kpi_id": kpi_id})
        except PermissionDeniedError as refused:
            return f"Not started: {refused}"
        return None

    def deny(
        self,
        actor: str,
        operation: str,
        reason: str,
        kpi_id: int | None = None,
        entity: str | None = None,
    ) -> NoReturn:
        audit.record(
            self.engine,
            actor=actor[:200] or "(nobody)",
            action=AuditAction.DENIED,
            kpi_id=kpi_id,
            entity=entity,
            details={"operation": operation, "reason": reason},
        )
        raise PermissionDeniedError(f"Not allowed ({operation}): {reason.rstrip('.')}.", operation)


def may_touch_run(role: Role, actor: str, requested_by: str) -> bool:
    """Whether someone may cancel a run: their own as a runner, anyone's as an admin."""
    return role.includes(Role.ADMIN) or (role.includes(Role.RUNNER) and requested_by == actor)


def allowed(role: Role, **where: Any) -> Callable[[F], F]:
    """Mark a ``KPIStore`` method with its rule and enforce it on every call."""
    rule = Rule(role, **where)

    def decorate(method: F) -> F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.settings.auth_on:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                if rule.kpis and not isinstance(bound.arguments[rule.kpis], (list, tuple)):
                    bound.arguments[rule.kpis] = list(bound.arguments[rule.kpis])
                principal = self._guard.check(rule, method.__name__, bound.arguments)
                bound.arguments[rule.actor] = principal.actor  # the email, as stored
                args, kwargs = bound.args[1:], bound.kwargs
            return method(self, *args, **kwargs)

        guarded.__rule__ = rule  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def unguarded(reason: str) -> Callable[[F], F]:
    """Mark a public method that needs no rule, saying why (the matrix test reads it)."""

    def decorate(method: F) -> F:
        method.__unguarded__ = reason  # type: ignore[attr-defined]
        return method

    return decorate


def rule_of(method: Any) -> Rule | None:
    return getattr(method, "__rule__", None)


# -- what a call touches ------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    id: int
    requested_by: str
    data_source: str


def _kpi_ids(rule: Rule, arguments: dict[str, Any]) -> list[int]:
    ids: list[Any] = []
    if rule.kpi:
        ids.append(arguments.get(rule.kpi))
    if rule.kpis:
        ids.extend(arguments.get(rule.kpis) or ())
    return [i for i in ids if db.is_valid_id(i)]


def _target(kpi_ids: list[int], run_id: Any) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if len(kpi_ids) == 1:
        target["kpi_id"] = kpi_ids[0]
    if db.is_valid_id(run_id):
        target["entity"] = f"execution:{run_id}"
    return target


def _named_sources(rule: Rule, arguments: dict[str, Any]) -> Iterable[str]:
    if rule.source and isinstance(arguments.get(rule.source), str):
        yield arguments[rule.source]
    if rule.spec:
        spec = arguments.get(rule.spec)
        name = (
            spec.get("data_source")
            if isinstance(spec, dict)
            else getattr(spec, "data_source", None)
        )
        if isinstance(name, str):
            yield name


def _kpi_sources(connection: sa.engine.Connection, kpi_ids: list[int]) -> set[str]:
    if not kpi_ids:
        return set()
    query = sa.select(kpis.c.data_source).where(kpis.c.id.in_(kpi_ids)).distinct()
    return set(connection.execute(query).scalars())


def _run(connection: sa.engine.Connection, run_id: Any) -> _Run | None:
    if not db.is_valid_id(run_id):
        return None
    row = connection.execute(
        sa.select(executions.c.id, executions.c.requested_by, kpis.c.data_source)
        .join(kpis, kpis.c.id == executions.c.kpi_id)
        .where(executions.c.id == run_id)
    ).first()
    return None if row is None else _Run(row.id, row.requested_by, row.data_source)


def visible_kpis(sources: frozenset[str] | None) -> sa.Select[Any] | None:
    """A subquery of the ids of KPIs on ``sources`` (None when every KPI is visible)."""
    if sources is None:
        return None
    return sa.select(kpis.c.id).where(kpis.c.data_source.in_(sorted(sources)))
