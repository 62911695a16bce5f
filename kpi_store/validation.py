"""Checks run before anything is written or run: safe SQL, matching parameters, typed values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlglot
from pydantic import ValidationError as PydanticValidationError
from sqlglot import exp

from .errors import UnsafeQueryError, ValidationError
from .models import KPISpec, ParameterSpec
from .values import BoundParams, TextRefused, check_text, coerce_value, shown
from .vocabulary import ParamType

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


# What people call each field of a definition (the form's labels), for messages and views.
FIELD_LABELS: dict[str, str] = {
    "name": "Name",
    "description": "Short description",
    "nl_definition": "Definition in plain words",
    "data_source": "Data source",
    "sql": "SQL",
    "parameters": "Parameters",
    "value_column": "Value column",
    "aggregation": "Aggregation",
    "unit": "Unit",
    "target": "Target",
    "direction": "Direction",
    "tolerance_pct": "Tolerance (%)",
    "owner": "Owner",
    "tags": "Tags",
    "timeout_s": "Timeout (seconds)",
    "max_retries": "Retries",
}
_TYPE_WORDS = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "yes or no",
    "bool_type": "yes or no",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a set of named values",
    "model_type": "a set of named values",
    "model_attributes_type": "a set of named values",
}


def field_label(field: str) -> str:
    """A definition field as people call it: ``tolerance_pct`` → ``Tolerance (%)``."""
    return FIELD_LABELS.get(field, field.replace("_", " ").capitalize())


def _friendly(error: PydanticValidationError) -> ValidationError:
    """pydantic's findings in plain words, one sentence per field: "Name is required"."""
    fields: dict[str, str] = {}
    for item in error.errors():
        loc = tuple(item.get("loc", ()))
        fields.setdefault(_location(loc), _plain(item, _label(loc)))
    summary = "; ".join(dict.fromkeys(fields.values()))
    return ValidationError(f"{summary}.", fields)


def _label(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "The definition"
    field = str(loc[0])
    if field == "parameters" and len(loc) > 1 and isinstance(loc[1], int):
        label = f"Parameter {loc[1] + 1}"
        if len(loc) > 2:
            label += " " + str(loc[2]).replace("_", " ")  # "Parameter 2 default"
        return label
    if field == "tags" and len(loc) > 1 and isinstance(loc[1], int):
        return f"Tag {loc[1] + 1}"
    if field not in FIELD_LABELS:  # not a field at all: named as given
        return f"'{shown(field).strip(chr(39))}'"
    return field_label(field)


def _plain(item: Any, label: str) -> str:
    """One pydantic error as a sentence about ``label``."""
    kind = item.get("type", "")
    ctx = item.get("ctx") or {}
    message = str(item.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "missing" or (kind == "string_too_short" and ctx.get("min_length") == 1):
        return f"{label} is required"
    if kind == "extra_forbidden":
        return f"{label} is not a field of a KPI"
    if kind == "string_too_short":
        return f"{label} must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"{label} must be at most {_count(ctx.get('max_length'))} characters"
    if kind == "too_long":
        return f"{label}: at most {_count(ctx.get('max_length'))} allowed"
    if kind == "too_short":
        return f"{label}: at least {_count(ctx.get('min_length'))} needed"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{label} must be {words} {_count(ctx.get(key))}"
    if kind == "finite_number":
        return f"{label} must be a finite number"
    if kind == "enum":
        choices = str(ctx.get("expected", "")).replace("'", "")
        return f"{label} must be one of: {choices}"
    if kind in _TYPE_WORDS:
        return f"{label} must be {_TYPE_WORDS[kind]}"
    if message == "cannot be blank":
        return f"{label} is required"
    if message.startswith(("parameter", "the tag", "at most")):
        return message[0].upper() + message[1:]
    if message.startswith(("cannot", "is ", "must")):
        return f"{label} {message}"
    return f"{label}: {message}"


def _count(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


# -- date ranges ------------------------------------------------------------------------------

START_WORDS = frozenset({"start", "from", "begin", "since"})
END_WORDS = frozenset({"end", "to", "until"})


def _range_end(name: str) -> tuple[str, str] | None:
    """(stem, "start" or "end") for a name that opens or closes a range, else None.

    ``start``/``end``, ``start_date``/``end_date``, ``order_from``/``order_to``,
    ``since``/``until``: the range word first or last, the rest the stem."""
    words = name.lower().split("_")
    for position, stem in ((0, "_".join(words[1:])), (-1, "_".join(words[:-1]))):
        word = words[position]
        side = "start" if word in START_WORDS else "end" if word in END_WORDS else None
        if side is not None:
            return f"{'^' if position == 0 else '$'}{stem}", side
    return None


def date_ranges(parameters: Sequence[ParameterSpec]) -> list[tuple[ParameterSpec, ParameterSpec]]:
    """The (start, end) pairs among the date parameters, by name: a start word
    (start, from, begin, since) and an end word (end, to, until) around the same stem."""
    starts: dict[str, list[ParameterSpec]] = {}
    ends: dict[str, list[ParameterSpec]] = {}
    for param in parameters:
        if param.type != ParamType.DATE:
            continue
        found = _range_end(param.name)
        if found is not None:
            stem, side = found
            (starts if side == "start" else ends).setdefault(stem, []).append(param)
    return [(s, e) for stem in starts for s in starts[stem] for e in ends.get(stem, [])]


def _param_label(param: ParameterSpec) -> str:
    return f"'{param.label or param.name}'"


def check_date_ranges(parameters: Sequence[ParameterSpec], values: dict[str, Any]) -> None:
    """Refuse an end date before its start date (a run's values, or the defaults)."""
    errors: dict[str, str] = {}
    for start, end in date_ranges(parameters):
        first, last = values.get(start.name), values.get(end.name)
        if isinstance(first, dt.date) and isinstance(last, dt.date) and last < first:
            errors[end.name] = (
                f"The end date {_param_label(end)} ({last.isoformat()}) is before the start "
                f"date {_param_label(start)} ({first.isoformat()})"
            )
    if errors:
        raise ValidationError("; ".join(errors.values()) + ".", errors)


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
    check_date_ranges(spec.parameters, bound)
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
