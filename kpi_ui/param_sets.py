"""A parameter set typed for later: what a schedule runs with or an alert rule watches.

Unlike the run form (``widgets.parameter_form``), an empty field means "the KPI's
default" (so a schedule follows the official number when its defaults change), and a
date is typed as text: an ISO date or a relative one such as "start of last month",
resolved when the schedule fires. The store checks the set as it would a run's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import streamlit as st

from kpi_store import KPI, ParameterSpec, ParamType
from kpi_store.values import coerce_value

from .messages import field_error, md
from .widgets import number_text

RELATIVE_HINT = "or relative: today, yesterday, 7 days ago, start of last month…"
_DEFAULT = "__default__"


def _default_text(param: ParameterSpec, markdown: bool = False) -> str:
    """ "default X" (X made inert when it goes into Markdown, such as a tooltip)."""
    if param.default in (None, ""):
        return "no default"
    return f"default {md(str(param.default)) if markdown else param.default}"


def parameter_set_inputs(
    kpi: KPI,
    prefix: str,
    current: dict[str, Any] | None = None,
    *,
    skip: Iterable[str] = (),
    disabled: bool = False,
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One input per parameter of ``kpi`` (but ``skip``), holding ``current``; returns
    the values given (left empty: the default, left out)."""
    params = [p for p in kpi.parameters if p.name not in set(skip)]
    if not params:
        st.caption("No parameters to set: the KPI's own values are used.")
        return {}
    values: dict[str, Any] = {}
    problems = dict(errors or {})
    grid = st.columns(min(3, len(params)))
    for index, param in enumerate(params):
        with grid[index % len(grid)]:
            key = f"{prefix}_p_{kpi.id}_{param.name}"
            given = (current or {}).get(param.name)
            value, problem = _input(param, key, given, disabled)
            if problem:
                problems[param.name] = problem
            if value is not None and value != "":
                values[param.name] = value
            field_error(problems, param.name)
    return values


def _input(param: ParameterSpec, key: str, given: Any, disabled: bool) -> tuple[Any, str | None]:
    """The input of one parameter: (its value or None for the default, a problem)."""
    label = md(param.label or param.name.replace("_", " ").capitalize())
    help_text = f"`:{param.name}` · {param.type} · {_default_text(param, markdown=True)}"
    if param.choices or param.type == ParamType.BOOL:
        options = [_DEFAULT, *(param.choices or [True, False])]
        index = options.index(given) if given in options else 0
        chosen = st.selectbox(
            label,
            options,
            index=index,
            key=key,
            help=help_text,
            disabled=disabled,
            format_func=lambda v: f"Default ({param.default})" if v == _DEFAULT else str(v),
        )
        return (None if chosen == _DEFAULT else chosen), None
    hint = _default_text(param)
    if param.type == ParamType.DATE:
        hint = f"{hint} · {RELATIVE_HINT}"
    text = st.text_input(
        label,
        value="" if given is None else number_text(given),
        key=key,
        help=help_text,
        placeholder=hint,
        disabled=disabled,
    ).strip()
    if not text or param.type not in (ParamType.INT, ParamType.FLOAT):
        return text or None, None
    try:
        return coerce_value(param.type, text, f"parameter '{param.name}'"), None
    except ValueError as error:
        return text, str(error)
