"""Comparing two runs row by row (``KPIStore.diff_runs`` / ``diff_page`` /
``export_diff_csv``, ``python -m kpi_store diff``), checked against Python on small runs."""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kpi_store import DuplicateKeyError, KPIStore, RunDiff, ValidationError
from kpi_store.models import DIFF_CATEGORIES

ROOT = Path(__file__).resolve().parents[1]
ACTOR = "tester"

Row = tuple[Any, ...]


def make_source(path: Path, versions: dict[int, list[Row]], columns: str) -> None:
    """Table ``t`` with a ``v`` column: each version's rows, ``SELECT`` -ed by ``:v``."""
    connection = sqlite3.connect(path)
    names = [c.split()[0] for c in columns.split(",")]
    with connection:
        connection.execute(f"CREATE TABLE t (v INTEGER, seq INTEGER, {columns})")
        for v, rows in versions.items():
            connection.executemany(
                f"INSERT INTO t VALUES (?, ?, {', '.join('?' * len(names))})",
                [(v, i, *row) for i, row in enumerate(rows)],
            )
    connection.close()


def add_kpi(store: KPIStore, path: Path, select: str, name: str = "Diffed") -> int:
    source = f"src_{name.lower()}"
    store.add_data_source(source, f"sqlite:///{path}", ACTOR)
    kpi = store.create_kpi(
        {
            "name": name,
            "data_source": source,
            "sql": f"SELECT {select} FROM t WHERE v = :v ORDER BY seq",
            "parameters": [{"name": "v", "type": "int", "default": 1}],
            "value_column": "amount",
            "aggregation": "sum",
        },
        ACTOR,
    )
    return kpi.id


def run(store: KPIStore, kpi_id: int, v: int) -> int:
    execution = store.execute(kpi_id, {"v": v}, ACTOR)
    assert execution.status == "success", execution.error
    return execution.id


def same(x: Any, y: Any) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return float(x) == float(y)
    return type(x) is type(y) and x == y


def expected(a: list[Row], b: list[Row], names: list[str], key: list[int]) -> dict[str, Any]:
    """The diff computed in Python: {category: {key: differing columns}}, per-column matches."""
    by_a = {tuple(r[i] for i in key): r for r in a}
    by_b = {tuple(r[i] for i in key): r for r in b}
    found: dict[str, Any] = {"only_in_a": {}, "only_in_b": {}, "changed": {}, "unchanged": 0}
    matches = dict.fromkeys(names, 0)
    for k, row in by_a.items():
        if k not in by_b:
            found["only_in_a"][k] = []
            continue
        differ = [n for n, x, y in zip(names, row, by_b[k], strict=True) if not same(x, y)]
        for n in names:
            matches[n] += n not in differ
        if differ:
            found["changed"][k] = differ
        else:
            found["unchanged"] += 1
    found["only_in_b"] = {k: [] for k in by_b if k not in by_a}
    found["matches"] = matches
    return found


def every_page(store: KPIStore, a: int, b: int, key: list[str], category: str) -> dict:
    rows, number = {}, 1
    while True:
        page = store.diff_page(a, b, key, category, number, 7, actor=ACTOR)
        for row in page.rows:
            rows[tuple(row.key)] = row.columns
        if not page.has_more:
            return rows
        number += 1


def random_rows(seed: int) -> tuple[list[Row], list[Row]]:
    rnd = random.Random(seed)
    a = [
        (i, rnd.choice(["north", "south", None, "Ünïcode", "x,y"]), rnd.randint(0, 50) / 2)
        for i in range(1, 121)
    ]
    b = []
    for row in a:
        roll = rnd.random()
        if roll < 0.1:
            continue  # deleted
        if roll < 0.3:
            region = rnd.choice(["north", "south", None, "east"])
            amount = row[2] + rnd.choice([0, 1])
            b.append((row[0], region, amount))
        else:
            b.append(row)
    b += [(i, "new", 1.5) for i in range(200, 215)]
    rnd.shuffle(b)  # stored order must not matter
    return a, b


def test_every_category_matches_python(store: KPIStore, tmp_path: Path) -> None:
    a_rows, b_rows = random_rows(7)
    path = tmp_path / "diff.db"
    make_source(path, {1: a_rows, 2: b_rows}, "id INTEGER, region TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, region, amount")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    names = ["id", "region", "amount"]
    want = expected(a_rows, b_rows, names, [0])

    diff = store.diff_runs(a, b, ["id"], actor=ACTOR)

    assert (diff.rows_a, diff.rows_b) == (len(a_rows), len(b_rows))
    assert diff.only_in_a == len(want["only_in_a"]) > 0
    assert diff.only_in_b == len(want["only_in_b"]) == 15
    assert diff.changed == len(want["changed"]) > 0
    assert diff.unchanged == want["unchanged"]
    both = diff.changed + diff.unchanged
    for column in diff.columns:
        assert (column.in_a, column.in_b) == (True, True)
        assert column.matched == want["matches"][column.column]
        assert column.percent == pytest.approx(100 * column.matched / both)
    assert diff.settings_differ
    assert [(s.what, s.name, s.a, s.b) for s in diff.settings] == [("parameter", "v", 1, 2)]
    for category in DIFF_CATEGORIES:
        assert every_page(store, a, b, ["id"], category) == {
            (k[0],): v for k, v in want[category].items()
        }, category


def test_a_page_holds_both_sides_in_key_order(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    a_rows = [(3, "c", 3.0), (1, "a", 1.0), (2, "b", 2.0), (4, "d", 4.0)]
    b_rows = [(2, "B", 2.0), (1, "a", 1.0), (5, "e", 5.0), (3, "c", 30.0)]
    make_source(path, {1: a_rows, 2: b_rows}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    page = store.diff_page(a, b, "id", "changed", actor=ACTOR)
    assert [(r.key, r.row_a, r.row_b, r.columns) for r in page.rows] == [
        ([2], 3, 1, ["name"]),
        ([3], 1, 4, ["amount"]),
    ]
    assert page.rows[1].a == {"id": 3, "name": "c", "amount": 3.0}
    assert page.rows[1].b == {"id": 3, "name": "c", "amount": 30.0}
    [gone] = store.diff_page(a, b, "id", "only_in_a", actor=ACTOR).rows
    assert (gone.key, gone.b, gone.a) == ([4], None, {"id": 4, "name": "d", "amount": 4.0})
    [new] = store.diff_page(a, b, "id", "only_in_b", actor=ACTOR).rows
    assert (new.key, new.a, new.row_b) == ([5], None, 3)
    with pytest.raises(ValidationError, match="category"):
        store.diff_page(a, b, "id", "everything", actor=ACTOR)


def test_composite_keys_and_nulls(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    a_rows = [
        ("x", 1, 10.0, None),
        ("x", 2, 20.0, "n"),
        ("y", 1, 30.0, None),
        (None, 1, 40.0, "k"),
        ("z", None, 50.0, None),
    ]
    b_rows = [
        ("x", 1, 10.0, None),  # NULL = NULL: unchanged
        ("x", 2, 20.0, None),  # a value became NULL
        ("y", 2, 30.0, None),  # other key
        (None, 1, 41.0, "k"),  # NULL in the key matches NULL
        ("z", None, 50.0, "now"),
    ]
    make_source(path, {1: a_rows, 2: b_rows}, "k1 TEXT, k2 INTEGER, amount REAL, note TEXT")
    kpi = add_kpi(store, path, "k1, k2, amount, note")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    with pytest.raises(DuplicateKeyError, match="'x'"):
        store.diff_runs(a, b, ["k1"], actor=ACTOR)  # k1 alone is not unique
    diff = store.diff_runs(a, b, ["k1", "k2"], actor=ACTOR)
    want = expected(a_rows, b_rows, ["k1", "k2", "amount", "note"], [0, 1])
    assert (diff.only_in_a, diff.only_in_b, diff.changed, diff.unchanged) == (1, 1, 3, 1)
    for category in DIFF_CATEGORIES:
        assert every_page(store, a, b, ["k1", "k2"], category) == want[category]
    assert {c.column: c.matched for c in diff.columns} == want["matches"]


def test_a_duplicate_key_is_refused_naming_the_value_and_the_run(
    store: KPIStore, tmp_path: Path
) -> None:
    path = tmp_path / "diff.db"
    a_rows = [(1, "a", 1.0), (2, "b", 2.0)]
    b_rows = [(1, "a", 1.0), (2, "b", 2.0), (2, "again", 3.0)]
    make_source(path, {1: a_rows, 2: b_rows}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    with pytest.raises(DuplicateKeyError) as refused:
        store.diff_runs(a, b, ["id"], actor=ACTOR)
    assert f"run {b}" in str(refused.value) and "id=2" in str(refused.value)
    assert (refused.value.run, refused.value.key) == (b, [2])
    with pytest.raises(DuplicateKeyError):
        store.export_diff_csv(a, b, ["id"], tmp_path / "out.csv", ACTOR)
    with pytest.raises(ValidationError, match="no column 'nope'"):
        store.diff_runs(a, b, ["nope"], actor=ACTOR)
    with pytest.raises(ValidationError):
        store.diff_runs(a, b, [], actor=ACTOR)
    assert store.diff_runs(a, b, ["id", "name"], actor=ACTOR).only_in_b == 1


def test_versions_and_columns_that_differ_are_flagged(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    rows = [(1, "a", 1.0), (2, "b", 2.0)]
    make_source(path, {1: rows}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a = run(store, kpi, 1)
    same_run = store.diff_runs(a, run(store, kpi, 1), "id", actor=ACTOR)
    assert same_run.identical and not same_run.settings_differ and same_run.unchanged == 2
    new_sql = "SELECT id, amount, name AS label FROM t WHERE v = :v ORDER BY seq"
    store.update_kpi(kpi, {"sql": new_sql}, ACTOR, expected_version=1)
    b = run(store, kpi, 1)
    diff = store.diff_runs(a, b, ["id"], actor=ACTOR)
    assert [(s.what, s.a, s.b) for s in diff.settings] == [("kpi_version", 1, 2)]
    assert (diff.columns_only_in_a, diff.columns_only_in_b) == (["name"], ["label"])
    # a column only one run has differs for every shared row; the values that match, match
    assert (diff.changed, diff.unchanged) == (2, 0)
    match = {c.column: (c.in_a, c.in_b, c.percent) for c in diff.columns}
    assert match == {
        "id": (True, True, 100.0),
        "amount": (True, True, 100.0),
        "name": (True, False, 0.0),
        "label": (False, True, 0.0),
    }
    page = store.diff_page(a, b, ["id"], "changed", actor=ACTOR)
    assert page.rows[0].columns == ["name", "label"]


def csv_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def test_the_csv_export_is_audited(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    a_rows = [(1, "=cmd", 1.0), (2, "b", 2.0), (3, "c", 3.0)]
    b_rows = [(1, "=cmd", 1.5), (2, "b", 2.0), (4, "d", None)]
    make_source(path, {1: a_rows, 2: b_rows}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    out = tmp_path / "out.csv"
    assert store.export_diff_csv(a, b, ["id"], out, ACTOR) == 1 + 3 + 3
    lines = csv_of(out)
    assert list(lines[0]) == ["id", "category", "column", "value_a", "value_b"]
    assert [tuple(line.values()) for line in lines] == [
        ("1", "changed", "amount", "1.0", "1.5"),
        ("3", "only_in_a", "id", "3", ""),
        ("3", "only_in_a", "name", "c", ""),
        ("3", "only_in_a", "amount", "3.0", ""),
        ("4", "only_in_b", "id", "", "4"),
        ("4", "only_in_b", "name", "", "d"),
        ("4", "only_in_b", "amount", "", ""),
    ]
    [entry] = store.audit_log(action="EXPORT", limit=1)
    assert (entry.actor, entry.entity) == (ACTOR, f"execution:{a}")
    assert entry.details["compared_with"] == b and entry.details["rows"] == 7
    assert entry.details["key"] == ["id"] and entry.details["diff"] is True
    buffer = io.BytesIO()
    store.export_diff_csv(b, a, ["name"], buffer, ACTOR, excel=True)
    text = buffer.getvalue().decode("utf-8")
    assert text.startswith("\ufeff") and "'=cmd" in text


def test_sqlite_the_cli_diff_end_to_end(store: KPIStore, store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    a_rows = [(1, "a", 1.0), (2, "b", 2.0)]
    b_rows = [(1, "a", 1.0), (2, "b", 2.5), (3, "c", 3.0)]
    make_source(path, {1: a_rows, 2: b_rows}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a, b = run(store, kpi, 1), run(store, kpi, 2)
    out = tmp_path / "cli.csv"
    done = subprocess.run(
        [sys.executable, "-m", "kpi_store", "--store", store_url, "--actor", "cli-diff"]
        + ["diff", str(a), str(b), "--key", "id", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # like diff(1): 1 when the runs differ
    assert "parameter v: A 1, B 2" in done.stdout
    assert "Wrote 4 line(s)" in done.stdout
    assert [line["category"] for line in csv_of(out)] == ["changed"] + ["only_in_b"] * 3
    [entry] = store.audit_log(action="EXPORT", limit=1)
    assert entry.actor == "cli-diff"
    same = subprocess.run(
        [sys.executable, "-m", "kpi_store", "--store", store_url]
        + ["diff", str(a), str(a), "--key", "id,name"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same.returncode == 0 and "0 " in same.stdout, same.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "kpi_store", "--store", store_url]
        + ["diff", str(a), str(b), "--key", "name,amount,nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_only_successful_runs_compare(store: KPIStore, tmp_path: Path) -> None:
    path = tmp_path / "diff.db"
    make_source(path, {1: [(1, "a", 1.0)]}, "id INTEGER, name TEXT, amount REAL")
    kpi = add_kpi(store, path, "id, name, amount")
    a = run(store, kpi, 1)
    queued = store.submit(kpi, {"v": 1}, ACTOR)
    with pytest.raises(Exception, match="no stored rows"):
        store.diff_runs(a, queued.id, ["id"], actor=ACTOR)
    assert isinstance(store.diff_runs(a, a, "id", actor=ACTOR), RunDiff)


# -- History → Compare runs ----------------------------------------------------------------------


def frame_with(at: Any, column: str) -> Any:
    return next(f.value for f in at.dataframe if column in f.value.columns)


def test_history_compare_runs_shows_the_row_diff(demo_store: KPIStore) -> None:
    from ui_helpers import metrics, no_exception, open_app, shown, texts

    kpi = next(k for k in demo_store.list_kpis() if k.name == "Units Sold by Category")
    first = demo_store.execute(kpi.id, {"region": "North"}, actor="setup")
    second = demo_store.execute(kpi.id, actor="setup")
    at = open_app("history", query={"kpi": kpi.id})
    assert at.multiselect(key=f"hi_dkey_{first.id}_{second.id}").value == ["category"]
    at.button(key="hi_diff_go").click().run()
    no_exception(at)
    diff = demo_store.diff_runs(first.id, second.id, ["category"])
    counts = metrics(at)
    assert counts["Changed"] == f"{diff.changed:,}" and diff.changed > 0
    assert counts["Unchanged"] == f"{diff.unchanged:,}"
    warned = [shown(w) for w in texts(at.warning)]
    assert any("parameter region: A North" in w for w in warned), warned
    columns = frame_with(at, "Match %").set_index("Column")
    assert columns.loc["category", "Match %"] == 100.0
    assert columns.loc["units_sold", "Match %"] < 100.0
    rows = frame_with(at, "Key category")
    assert list(rows.columns) == ["Key category", "Column", "In run A", "In run B"]
    page = demo_store.diff_page(first.id, second.id, ["category"], "changed")
    assert len(rows) == sum(len(r.columns) for r in page.rows)
    assert rows.iloc[0]["In run A"] == str(page.rows[0].a[page.rows[0].columns[0]])
    assert at.get("download_button")[-1].proto.label == "Download the differences (CSV)"
    at.radio(key="hi_diff_category").set_value("only_in_a").run()
    no_exception(at)
    assert frame_with(at, "Match %") is not None
    assert any(f.value.empty and not len(f.value.columns) for f in at.dataframe)  # none only in A
