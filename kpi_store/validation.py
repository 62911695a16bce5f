"""Checks run before anything is written or run: safe SQL, matching parameters, typed values."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlglot
from pydantic import ValidationError as PydanticValidationError
from sqlglot import exp

from .errors import UnsafeQueryError, ValidationError
from .models import KPISpec, ParameterSpec
from .values import BoundParams, TextRefused, check_text, coerce_value, shown

# Statement kinds that change data or the database, wherever they appear in the tree.
_FORBIDDEN = tuple(
    getattr(exp, name)
    for name in (
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "TruncateTable",
        "Command",
        "Into",
        "Pragma",
        "Attach",
        "Detach",
        "Copy",
        "Grant",
        "Revoke",
        "Set",
        "Transaction",
        "Commit",
        "Rollback",
        "Use",
        "LoadData",
        "Analyze",
        "Lock",
    )
    if hasattr(exp, name)
)

_SQLGLOT_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}


def sqlglot_dialect(sqlalchemy_dialect: str) -> str | None:
    if sqlalchemy_dialect == "duckdb":
        return "duckdb"
    return _SQLGLOT_DIALECTS.get(sqlalchemy_dialect)


def check_read_only_sql(sql: str, dialect: str | None = "sqlite") -> exp.Query:
    """Prove ``sql`` is exactly one read-only query, or raise UnsafeQueryError."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as error:
        first_line = str(error).splitlines()[0] if str(error) else "unreadable SQL"
        raise UnsafeQueryError(f"The SQL could not be read: {first_line}") from None
    if len(statements) != 1:
        raise UnsafeQueryError(
            f"The SQL must be exactly one query; found {len(statements)} statements."
        )
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = type(tree).__name__.upper()
        raise UnsafeQueryError(
            f"Only read-only queries (SELECT, WITH … SELECT, UNION) are allowed, not {kind}."
        )
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            kind = type(node).__name__.upper()
            raise UnsafeQueryError(
                f"The query contains {kind}; only read-only queries are allowed."
            )
    return tree


def placeholders(tree: exp.Query | exp.Expression) -> set[str]:
    """The ``:named`` parameters a parsed query uses."""
    names = set()
    for node in tree.find_all(exp.Placeholder):
        if not node.name or node.name == "?":
            raise UnsafeQueryError(
                "Use named parameters like :start_date; positional '?' placeholders "
                "are not allowed."
            )
        names.add(node.name)
    return names


def bound_names(sql: str) -> set[str]:
    """The ``:name`` markers the query runner will bind (it also sees them inside quotes)."""
    return set(sa.text(sql).compile().params)


def check_parameters_match(spec: KPISpec, used: set[str]) -> None:
    inside_text = sorted(bound_names(spec.sql) - used)
    if inside_text:
        shown = ", ".join(f":{n}" for n in inside_text)
        message = (
            f"{shown} inside quoted text would be read as a parameter; "
            "write it as \\: (for example '10\\:30') or use a declared parameter."
        )
        raise ValidationError(message, {"sql": message})
    declared = {p.name for p in spec.parameters}
    problems = []
    if missing := sorted(used - declared):
        problems.append("used in the SQL but not declared: " + ", ".join(f":{n}" for n in missing))
    if unused := sorted(declared - used):
        problems.append("declared but not used in the SQL: " + ", ".join(unused))
    if problems:
        message = "Parameters do not match the SQL (" + "; ".join(problems) + ")."
        raise ValidationError(message, {"parameters": message})


def parse_spec(data: KPISpec | dict[str, Any]) -> KPISpec:
    """A KPISpec from a dict, with pydantic's errors turned into field-named messages."""
    if isinstance(data, KPISpec):
        return data
    if not isinstance(data, dict):
        raise ValidationError("A KPI definition must be a mapping of field names to values.")
    try:
        return KPISpec.model_validate(data)
    except PydanticValidationError as error:
        raise _friendly(error) from None


def _friendly(error: PydanticValidationError) -> ValidationError:
    fields: dict[str, str] = {}
    for item in error.errors():
        location = _location(item.get("loc", ()))
        message = item.get("msg", "is not valid").removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = "is not a KPI field"
        elif item.get("type") == "missing":
            message = "is required"
        fields.setdefault(location, message)
    summary = "; ".join(f"{name}: {msg}" for name, msg in fields.items())
    return ValidationError(f"The KPI definition is not valid — {summary}", fields)


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


def bind_parameters(
    spec: KPISpec, given: dict[str, Any] | None, *, ignore_undeclared: bool = False
) -> BoundParams:
    """Run-time values checked against the declared parameters, defaults filled in.

    ``ignore_undeclared`` drops names the KPI does not declare (a batch's shared
    parameters) instead of refusing them.
    """
    if given is not None and not isinstance(given, dict):
        raise ValidationError("Parameters must be given as name = value pairs.")
    declared = {p.name for p in spec.parameters}
    given = dict(given or {})
    if ignore_undeclared:
        given = {k: v for k, v in given.items() if k in declared}
    unknown = sorted(shown(name).strip("'") for name in set(given) - declared)
    if unknown:
        raise ValidationError(
            f"Unknown parameter(s) for KPI '{spec.name}': {', '.join(unknown)}.",
            {name: "is not a parameter of this KPI" for name in unknown},
        )
    bound: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for param in spec.parameters:
        try:
            bound[param.name] = _bind_one(param, given.get(param.name))
        except ValueError as error:
            errors[param.name] = str(error)
    if errors:
        raise ValidationError("Invalid parameters — " + "; ".join(errors.values()), errors)
    return BoundParams.of(bound)


def _bind_one(param: ParameterSpec, raw: Any) -> Any:
    if raw is None or raw == "":
        if param.default is None:
            raise ValueError(f"a value for '{param.label or param.name}' is required")
        return param.default
    value = coerce_value(param.type, raw, f"parameter '{param.name}'")
    if param.choices is not None and value not in param.choices:
        listed = ", ".join(str(c) for c in param.choices[:20])
        more = f" … ({len(param.choices)} in all)" if len(param.choices) > 20 else ""
        raise ValueError(f"parameter '{param.name}': {shown(value)} is not one of: {listed}{more}")
    return value


def stored_parameters(spec: KPISpec, stored: dict[str, Any]) -> BoundParams:
    """A run's stored parameters, typed again by the KPI version's declarations."""
    return BoundParams.from_stored({p.name: p.type for p in spec.parameters}, stored)


MAX_TIMEOUT_S = 86_400


def checked_timeout(timeout_s: Any) -> float | None:
    """A run's time limit in seconds, or None for the KPI's own; refused outside (0, 1 day]."""
    if timeout_s is None:
        return None
    try:
        timeout_s = float(timeout_s)
    except (TypeError, ValueError, OverflowError):
        timeout_s = -1.0
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        message = f"The time limit must be a number of seconds from 0 to {MAX_TIMEOUT_S}."
        raise ValidationError(message, {"timeout_s": message})
    return timeout_s


MAX_ACTOR_CHARS = 200  # the width of every "who" column
MAX_NOTE_CHARS = 2_000


def checked_actor(actor: Any) -> str:
    """Who makes a change or a run, stripped; refused when missing, too long or not text."""
    actor = (actor if isinstance(actor, str) else "").strip()
    if not actor:
        raise ValidationError(
            "Say who you are: every change records its author.", {"actor": "required"}
        )
    return _checked_text(actor, "actor", "The actor name", MAX_ACTOR_CHARS)


def checked_note(note: Any) -> str:
    """A version's note ("" when none); refused when too long or not text."""
    if note is None:
        return ""
    if not isinstance(note, str):
        raise ValidationError("The note must be text.", {"note": "must be text"})
    return _checked_text(note, "note", "The note", MAX_NOTE_CHARS)


def _checked_text(text: str, field: str, what: str, max_chars: int) -> str:
    try:
        return check_text(text, what, max_chars)
    except TextRefused as error:
        raise ValidationError(f"{error}.", {field: str(error).removeprefix(what + " ")}) from None
