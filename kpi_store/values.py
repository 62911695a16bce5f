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
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what every database (and JSON reader) holds
MAX_VALUE_CHARS = 1_000  # a text parameter value
_SHOWN_CHARS = 40


class TextRefused(ValueError):
    """Text that cannot be stored: the message says why (without quoting the text)."""


def text_problem(text: str, max_chars: int | None = None) -> str | None:
    """Why ``text`` cannot be stored, or None: NUL, not valid Unicode, or too long."""
    if "\x00" in text:
        return "cannot contain the NUL character (U+0000)"
    if max_chars is not None and len(text) > max_chars:
        return f"is longer than {max_chars:,} characters ({len(text):,})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid text (it holds bytes that are not UTF-8, or a lone surrogate)"
    return None


def check_text(text: str, what: str, max_chars: int | None = None) -> str:
    """``text`` itself, or TextRefused naming ``what`` and the problem."""
    problem = text_problem(text, max_chars)
    if problem:
        raise TextRefused(f"{what} {problem}")
    return text


def shown(value: Any) -> str:
    """A value quoted in a message: short, and printable whatever it holds."""
    text = f"'{value}'" if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def coerce_value(type_name: str, value: Any, what: str = "value") -> Any:
    """Return ``value`` as ``type_name`` or raise ValueError naming ``what``."""
    try:
        return _COERCERS[type_name](value)
    except KeyError:
        raise ValueError(f"{what}: unknown type '{shown(type_name)}'") from None
    except _OutOfRange:
        raise ValueError(
            f"{what}: {shown(value)} is outside the range of whole numbers "
            f"({INT_MIN:,} to {INT_MAX:,})"
        ) from None
    except TextRefused as error:
        raise ValueError(f"{what} {error}") from None
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"{what}: {shown(value)} is not a valid {_TYPE_WORDS[type_name]}"
        ) from None


class _OutOfRange(ValueError):
    """A whole number that does not fit in 64 bits."""


def _to_str(value: Any) -> str:
    if isinstance(value, (dict, list, tuple, set, bytes)):
        raise TypeError
    text = str(value)
    problem = text_problem(text, MAX_VALUE_CHARS)
    if problem:
        raise TextRefused(problem)
    return text


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 40:  # longer than any 64-bit number, however written
            raise _OutOfRange if text.lstrip("+-").isdigit() else ValueError
        number = int(text)
    else:
        raise TypeError
    if not INT_MIN <= number <= INT_MAX:
        raise _OutOfRange
    return number


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
        typed = {  # text as stored: a run queued before a limit changed still runs
            name: value
            if value is None or types.get(name, "str") == "str"
            else coerce_value(types[name], value)
            for name, value in stored.items()
        }
        return cls(typed=typed, json=dict(stored))

    def for_dialect(self, dialect: str) -> dict[str, Any]:
        """What to bind: SQLite compares ISO text, other databases get real dates."""
        return dict(self.json if dialect == "sqlite" else self.typed)
