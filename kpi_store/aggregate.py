"""The headline value of a run, computed as rows stream past, and column type names."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Sequence
from typing import Any

from .errors import KPIStoreError
from .vocabulary import Aggregation

NUMERIC_TYPES = ("int", "float", "decimal")


def type_name(value: Any) -> str:
    """The column type a value suggests: bool, int, float, decimal, datetime, date, bytes, str."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    return "str"


def infer_types(types: list[str | None], batch: Sequence[Sequence[Any]]) -> None:
    """Fill the still unknown entries of ``types`` from the first non-NULL value in ``batch``."""
    for position, known in enumerate(types):
        if known is None:
            sample = next((row[position] for row in batch if row[position] is not None), None)
            if sample is not None:
                types[position] = type_name(sample)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ValueAggregator:
    """Sum, average, count, min, max or first value of one column, batch by batch."""

    def __init__(self, aggregation: str, value_column: str | None):
        self.aggregation = Aggregation(aggregation)
        self.value_column = value_column
        self.index: int | None = None
        self.rows = 0
        self.count = 0
        self.total = 0.0
        self.low: float | None = None
        self.high: float | None = None
        self.first: float | None = None
        self._first_seen = False

    def choose_column(self, names: Sequence[str], batch: Sequence[Sequence[Any]]) -> None:
        """The named value column, else the first numeric one in ``batch``."""
        if self.index is not None or self.aggregation == Aggregation.COUNT:
            return
        if self.value_column is not None:
            if self.value_column not in names:
                shown = ", ".join(names)
                raise KPIStoreError(
                    f"The value column '{self.value_column}' is not in the result "
                    f"(columns: {shown})."
                )
            self.index = list(names).index(self.value_column)
            return
        for position in range(len(names)):
            sample = next((row[position] for row in batch if row[position] is not None), None)
            if type_name(sample) in NUMERIC_TYPES:
                self.index = position
                return

    def add(self, batch: Sequence[Sequence[Any]]) -> None:
        self.rows += len(batch)
        if self.index is None or not batch:
            return
        index = self.index
        if not self._first_seen:
            self.first, self._first_seen = _number(batch[0][index]), True
        present = [v for row in batch if (v := row[index]) is not None]
        try:
            # Fast path, in C: a column of numbers (fsum refuses text, bytes and dates).
            total = math.fsum(present)
            if not math.isfinite(total):
                raise TypeError
            low, high = float(min(present)), float(max(present))
        except (TypeError, ValueError, OverflowError):
            # Text, NaN or infinity: convert value by value.
            numbers = [v for v in map(_number, present) if v is not None]
            if not numbers:
                return
            total = math.fsum(numbers)
            low, high = min(numbers), max(numbers)
            present = numbers
        self.count += len(present)
        self.total += total
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def value(self) -> float | None:
        """The headline value; None (no data) when the result has no rows, whatever the
        aggregation: an empty result is never read as 0."""
        if self.rows == 0:
            return None
        if self.aggregation == Aggregation.COUNT:
            return float(self.rows)
        if self.index is None or (self.count == 0 and self.aggregation != Aggregation.FIRST):
            return None
        if self.aggregation == Aggregation.SUM:
            return self.total
        if self.aggregation == Aggregation.AVG:
            return self.total / self.count
        if self.aggregation == Aggregation.MIN:
            return self.low
        if self.aggregation == Aggregation.MAX:
            return self.high
        return self.first
