""" "What changed?" (``KPIStore.what_changed``): the change between two runs split by a
column, checked against a GROUP BY computed directly in SQL on the source, in cents."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kpi_store import (
    ExecutionError,
    KPIStore,
    NotFoundError,
    PermissionDeniedError,
    Role,
    ValidationError,
)
from kpi_store.config import Settings
from kpi_store.contributions import Contributions, key_text

ACTOR = "tester"
ROWS_A = [  # (id, region, amount, bucket)
    (1, "north", 120.15, 1),
    (2, "north", 80.10, 1),
    (3, "south", 200.01, 2),
    (4, "east", 55.55, 1),
    (5, "west", 10.99, 3),
    (6, None, 7.07, 2),
    (7, "", 3.03, 2),
    (8, "south", 0.33, 3),
]


def write_rows(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Replace the source's ``orders`` with ``rows`` (``bucket`` has no type affinity, so
    1, 1.0 and '1' stay what they are)."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, region TEXT, "
            "amount REAL, bucket)"
        )
        connection.execute("DELETE FROM orders")
        connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
    connection.close()


def source_sums(path: Path, column: str = "region") -> dict[str | None, Decimal]:
    """Cents per breakdown value, by GROUP BY directly on the source ('' joins NULL)."""
    connection = sqlite3.connect(path)
    try:
        found = connection.execute(
            f"SELECT NULLIF({column}, ''), SUM(CAST(ROUND(amount * 100) AS INTEGER)) "
            f"FROM orders GROUP BY NULLIF({column}, '')"
        ).fetchall()
    finally:
        connection.close()
    return {key: Decimal(cents) / 100 for key, cents in found}


@pytest.fixture()
def shop(store: KPIStore, tmp_path: Path) -> Iterator[tuple[KPIStore, Path]]:
    path = tmp_path / "orders.db"
    write_rows(path, ROWS_A)
    store.add_data_source("orders", f"sqlite:///{path}", ACTOR)
    yield store, path


def revenue_kpi(store: KPIStore, **changes: Any) -> int:
    spec: dict[str, Any] = {
        "name": f"Revenue {changes.pop('tag', '')}".strip(),
        "data_source": "orders",
        "sql": "SELECT id, region, amount, bucket FROM orders ORDER BY id",
        "value_column": "amount",
        "aggregation": "sum",
        "breakdown_column": "region",
        **changes,
    }
    return store.create_kpi(spec, ACTOR).id


def run(store: KPIStore, kpi_id: int) -> int:
    execution = store.execute(kpi_id, actor=ACTOR)
    assert execution.status == "success", execution.error
    return execution.id


def changed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """North rises, south falls most, west goes, a new NULL row and a new region come."""
    out = []
    for id_, region, amount, bucket in rows:
        if region == "west":
            continue
        if region == "north":
            amount = round(amount + 33.33, 2)
        if id_ == 3:
            amount = 150.00
        if region == "east":
            amount = round(amount + 0.01, 2)
        out.append((id_, region, amount, bucket))
    return [*out, (9, None, 2.22, 1.0), (10, "central", 40.40, "1")]


def as_decimal(number: float) -> Decimal:
    return Decimal(repr(number))


def check_against_source(
    result: Contributions, before: dict[Any, Decimal], after: dict[Any, Decimal]
) -> None:
    total = sum(after.values(), Decimal(0)) - sum(before.values(), Decimal(0))
    assert as_decimal(result.total_change) == total
    assert as_decimal(result.explained) == total
    assert result.exact and result.balanced
    listed = {c.value: c for c in [*result.up, *result.down]}
    for value in set(before) | set(after):
        a, b = before.get(value, Decimal(0)), after.get(value, Decimal(0))
        if a == b:
            assert value not in listed
            continue
        part = listed[value]
        assert (as_decimal(part.a), as_decimal(part.b)) == (a, b)
        assert as_decimal(part.change) == b - a
        assert part.share == pytest.approx(float((b - a) / total))
    changes = [as_decimal(c.change) for c in listed.values()]
    assert sum(changes, Decimal(0)) + as_decimal(result.rest_change) == total


def test_contributions_add_up_to_the_change_in_cents(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    before = source_sums(path)
    a = run(store, kpi)
    write_rows(path, changed(ROWS_A))
    after = source_sums(path)
    b = run(store, kpi)
    result = store.what_changed(a, b, top=100, actor=ACTOR)
    check_against_source(result, before, after)
    assert (result.column, result.value_column, result.aggregation) == ("region", "amount", "sum")
    assert (result.all_count, result.up_count, result.down_count) == (6, 4, 2)
    assert result.unchanged_count == 0 and result.rest_change == 0
    assert [c.label for c in result.up] == ["north", "central", "(empty)", "east"]
    assert [c.label for c in result.down] == ["south", "west"]
    empty = result.up[2]
    assert (empty.value, empty.rows_a, empty.rows_b) == (None, 2, 3)  # NULL and "" are one
    assert (result.down[1].rows_a, result.down[1].rows_b, result.down[1].b) == (1, 0, 0.0)
    assert result.run_value_a == pytest.approx(float(sum(before.values())))
    assert "may round them" in result.note


def test_top_keeps_the_largest_each_way(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    write_rows(path, changed(ROWS_A))
    b = run(store, kpi)
    result = store.what_changed(a, b, top=1, actor=ACTOR)
    assert [c.label for c in result.up] == ["north"] and [c.label for c in result.down] == ["south"]
    assert (result.up_count, result.down_count) == (4, 2)
    shown = as_decimal(result.up[0].change) + as_decimal(result.down[0].change)
    assert as_decimal(result.rest_change) == as_decimal(result.total_change) - shown
    back = store.what_changed(b, a, top=1, actor=ACTOR)  # the other way round
    assert [c.label for c in back.up] == ["south"] and back.total_change == -result.total_change


def test_numbers_group_by_value_whatever_their_type(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)  # buckets 1, 2, 3 as integers
    write_rows(path, [(i, r, x, {1: 1.0, 2: "2", 3: 3.5}[k]) for i, r, x, k in ROWS_A])
    b = run(store, kpi)  # 1.0 (a real), "2" (text), 3.5
    result = store.what_changed(a, b, column="bucket", top=100, actor=ACTOR)
    labels = {c.label for c in [*result.up, *result.down]}
    assert labels == {"3", "3.5"} and result.unchanged_count == 2  # "1" and "2" matched
    assert result.total_change == 0 and result.balanced


def test_a_count_splits_the_change_in_rows(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store, aggregation="count", value_column=None, tag="count")
    a = run(store, kpi)
    write_rows(path, changed(ROWS_A))
    b = run(store, kpi)
    result = store.what_changed(a, b, actor=ACTOR)
    assert (result.aggregation, result.value_column) == ("count", None)
    assert (result.value_a, result.value_b, result.total_change) == (8, 9, 1)
    assert {c.label: c.change for c in result.up} == {"central": 1, "(empty)": 1}
    assert {c.label: c.change for c in result.down} == {"west": -1}
    assert result.exact and result.explained == 1


def test_a_run_without_rows_contributes_zeros(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    write_rows(path, [])
    a = run(store, kpi)
    write_rows(path, ROWS_A)
    b = run(store, kpi)
    result = store.what_changed(a, b, top=100, actor=ACTOR)
    check_against_source(result, {}, source_sums(path))
    assert result.value_a == 0 and {c.rows_a for c in result.up} == {0}


def test_values_past_six_decimals_are_summed_as_floats_on_sqlite(
    shop: tuple[KPIStore, Path],
) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    write_rows(path, [(1, "north", 0.1234567, 1), (2, "south", 2.5, 1)])
    b = run(store, kpi)
    result = store.what_changed(a, b, actor=ACTOR)
    on_sqlite = store.engine.dialect.name == "sqlite"
    assert result.exact is not on_sqlite and result.balanced  # PostgreSQL: NUMERIC
    assert result.value_b == pytest.approx(2.6234567)
    assert ("floating point" in result.note) is on_sqlite


def test_float_noise_from_the_source_still_sums_to_the_cent(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    before = source_sums(path)
    a = run(store, kpi)
    connection = sqlite3.connect(path)
    with connection:  # floating point in the source: 0.33 + 0.2 = 0.53 and a little
        connection.execute("UPDATE orders SET amount = amount + 0.2")
    connection.close()
    b = run(store, kpi)
    stored = store.result_page(b, actor=ACTOR).rows
    assert any(len(repr(row[2])) > 8 for row in stored)  # e.g. 0.5300000000000001
    result = store.what_changed(a, b, top=100, actor=ACTOR)
    check_against_source(result, before, source_sums(path))
    assert as_decimal(result.total_change) == Decimal("1.60")  # 8 rows × 0.2


def test_sqlite_sums_too_large_for_integers_fall_back_to_floats(
    shop: tuple[KPIStore, Path],
) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    # Each below a billion (exact), together past 2**63 millionths: SQLite's overflow.
    write_rows(path, [(i, "north", 999_999_999.99, 1) for i in range(1, 10_001)])
    b = run(store, kpi)
    result = store.what_changed(a, b, actor=ACTOR)
    assert not result.exact and result.balanced
    assert result.value_b == pytest.approx(9_999_999_999_900.0)


# -- refusals ------------------------------------------------------------------------------------


def test_what_cannot_be_split_is_refused_clearly(shop: tuple[KPIStore, Path]) -> None:
    store, path = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    with pytest.raises(ValidationError, match=r"Run \d+ has no column 'nope'; its columns are"):
        store.what_changed(a, a, column="nope", actor=ACTOR)
    with pytest.raises(ValidationError, match="Show 1 to 100 top contributors"):
        store.what_changed(a, a, top=0, actor=ACTOR)
    with pytest.raises(NotFoundError):
        store.what_changed(a, 10**9, actor=ACTOR)
    other = run(store, revenue_kpi(store, tag="other"))
    with pytest.raises(ValidationError, match="splits the change between two runs of one KPI"):
        store.what_changed(a, other, actor=ACTOR)
    average = revenue_kpi(store, aggregation="avg", breakdown_column=None, tag="avg")
    with pytest.raises(ValidationError, match="takes the avg of its rows"):
        store.what_changed(run(store, average), run(store, average), column="region", actor=ACTOR)
    plain = revenue_kpi(store, breakdown_column=None, tag="plain")
    with pytest.raises(ValidationError, match="declares no breakdown column"):
        store.what_changed(run(store, plain), run(store, plain), actor=ACTOR)
    pending = store.submit(kpi, actor=ACTOR).id
    with pytest.raises(ExecutionError, match="its status is pending"):
        store.what_changed(a, pending, actor=ACTOR)


def test_versions_that_compute_differently_are_refused(shop: tuple[KPIStore, Path]) -> None:
    store, _ = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    store.update_kpi(kpi, {"aggregation": "count"}, ACTOR, expected_version=1)
    b = run(store, kpi)
    with pytest.raises(ValidationError, match="compute the KPI differently"):
        store.what_changed(a, b, actor=ACTOR)


def test_a_run_cut_at_the_row_cap_is_refused(store_url: str, shop: tuple[KPIStore, Path]) -> None:
    store, _ = shop
    kpi = revenue_kpi(store)
    a = run(store, kpi)
    capped = KPIStore(store_url, settings=Settings.from_env().replace(url=store_url, row_cap=3))
    try:
        cut = capped.execute(kpi, actor=ACTOR)
        assert cut.truncated
        with pytest.raises(ExecutionError, match="cut at the row cap"):
            capped.what_changed(a, cut.id, actor=ACTOR)
    finally:
        capped.close()


def test_a_run_whose_rows_retention_removed_is_refused(
    store_url: str, shop: tuple[KPIStore, Path]
) -> None:
    store, _ = shop
    kpi = revenue_kpi(store)
    a, b = run(store, kpi), run(store, kpi)
    keeping = KPIStore(
        store_url, settings=Settings.from_env().replace(url=store_url, keep_rows_runs=1)
    )
    try:
        keeping.prune(actor=ACTOR)
        with pytest.raises(ExecutionError, match=f"rows of run {a} were removed"):
            keeping.what_changed(a, b, actor=ACTOR)
    finally:
        keeping.close()


def test_a_person_limited_to_one_source_is_held_to_both_runs(
    store_url: str, shop: tuple[KPIStore, Path]
) -> None:
    store, _ = shop
    kpi = revenue_kpi(store)
    a, b = run(store, kpi), run(store, kpi)
    boss = "boss@example.com"
    settings = Settings.from_env().replace(url=store_url, auth="oidc", admins=boss)
    signed = KPIStore(store_url, settings=settings)
    try:
        signed.add_person("limited@example.com", boss, role=Role.VIEWER, data_sources=["shop"])
        signed.add_person("viewer@example.com", boss, role=Role.VIEWER)
        assert signed.what_changed(a, b, actor="viewer@example.com").run_b == b
        for call in (
            lambda: signed.what_changed(a, b, actor="limited@example.com"),
            lambda: signed.unusual(b, actor="limited@example.com"),
        ):
            with pytest.raises(PermissionDeniedError, match="data source orders"):
                call()
        assert signed.unusual_flags([a, b], actor="limited@example.com") == {}
        assert set(signed.unusual_flags([a, b], actor="viewer@example.com")) == {a, b}
    finally:
        signed.close()


# -- the text values group by --------------------------------------------------------------------


def test_key_text() -> None:
    assert [key_text(v) for v in (None, "", "x", 1, 1.0, 2.50, True, False)] == [
        None,
        None,
        "x",
        "1",
        "1",
        "2.5",
        "true",
        "false",
    ]
    assert key_text(1, bool_column=True) == "true" and key_text(5, bool_column=True) == "5"
    assert key_text(1e20) == "1e+20" and key_text(Decimal("3.10")) == "3.1"
    assert key_text({"a": 1}) == '{"a":1}'


# -- 100,000 rows a run -------------------------------------------------------------------------


def test_a_hundred_thousand_rows_match_a_group_by_on_the_source(
    shop: tuple[KPIStore, Path],
) -> None:
    store, path = shop
    regions = ["north", "south", "east", "west", "central", None, ""]
    rng = random.Random(13)
    rows = [
        (i, regions[rng.randrange(7)], rng.randrange(0, 1_000_000) / 100, 1)
        for i in range(1, 100_001)
    ]
    write_rows(path, rows)
    kpi = revenue_kpi(store)
    before = source_sums(path)
    a = run(store, kpi)
    for i in range(0, 100_000, 9):  # change a ninth, drop some, add some
        id_, region, amount, bucket = rows[i]
        rows[i] = (id_, regions[(i // 9) % 7], round(amount * 1.5, 2), bucket)
    rows = [r for r in rows if r[0] % 101] + [(200_000 + i, "new", 1.01, 1) for i in range(999)]
    write_rows(path, rows)
    after = source_sums(path)
    b = run(store, kpi)
    result = store.what_changed(a, b, top=100, actor=ACTOR)
    check_against_source(result, before, after)
    assert result.all_count == 7 and "new" in {c.value for c in result.up}
