"""Coercion of parameter values to their declared types.

Values arrive from forms, URLs, the CLI and JSON, so strings are accepted for every
type; anything that does not read unambiguously as the type is refused.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})


def coerce_value(type_name: str, value: Any, what: str = "value") -> Any:
    """Return ``value`` as ``type_name`` or raise ValueError naming ``what``."""
    try:
        return _COERCERS[type_name](value)
    except KeyError:
        raise ValueError(f"{what}: unknown type '{type_name}'") from None
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if not isinstance(value, str) else f"'{value}'"
        raise ValueError(f"{what}: {shown} is not a valid {_TYPE_WORDS[type_name]}") from None


def _to_str(value: Any) -> str:
    if isinstance(value, (dict, list, tuple, set, bytes)):
        raise TypeError
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        result = float(value.strip())
    else:
        raise TypeError
    if not math.isfinite(result):
        raise ValueError
    return result


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return dt.datetime.fromisoformat(text).date()
    raise TypeError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError


_COERCERS = {"str": _to_str, "int": _to_int, "float": _to_float, "date": _to_date, "bool": _to_bool}
_TYPE_WORDS = {
    "str": "text",
    "int": "whole number",
    "float": "number",
    "date": "date (YYYY-MM-DD)",
    "bool": "yes/no value",
}


def to_json_value(value: Any) -> Any:
    """A parameter value as stored in JSON (dates as ISO text)."""
    return value.isoformat() if isinstance(value, dt.date) else value


@dataclass(frozen=True)
class BoundParams:
    """A run's parameter values, bound once: typed for drivers, JSON-safe for storage."""

    typed: dict[str, Any]
    json: dict[str, Any]

    @classmethod
    def of(cls, typed: dict[str, Any]) -> BoundParams:
        return cls(typed=dict(typed), json={k: to_json_value(v) for k, v in typed.items()})

    @classmethod
    def from_stored(cls, types: dict[str, str], stored: dict[str, Any]) -> BoundParams:
        """Values as a run stored them (already checked), typed again by their declared types."""
        typed = {
            name: coerce_value(types.get(name, "str"), value) if value is not None else None
            for name, value in stored.items()
        }
        return cls(typed=typed, json=dict(stored))

    def for_dialect(self, dialect: str) -> dict[str, Any]:
        """What to bind: SQLite compares ISO text, other databases get real dates."""
        return dict(self.json if dialect == "sqlite" else self.typed)
