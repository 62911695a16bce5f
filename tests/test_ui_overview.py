"""The Overview page: KPI cards with value, delta, RAG status; filters; Run all."""

from __future__ import annotations

from ui_helpers import metrics, no_exception, open_app, shown, texts


def kpi_named(store, name):
    return next(k for k in store.list_kpis() if k.name == name)


def card_text(at, kpi_id) -> str:
    card = at.get_by_key(f"kpi_card_{kpi_id}") if hasattr(at, "get_by_key") else None
    assert card is not None
    parts = []

    def walk(node):
        for child in getattr(node, "children", {}).values():
            value = getattr(child, "value", None)
            if isinstance(value, str):
                parts.append(value)
            if getattr(child, "type", "") == "metric":
                delta = f"{child.proto.delta} {child.proto.delta_description}"
                parts.append(shown(f"{child.label}|{child.value}|{delta}"))
            walk(child)

    walk(card)
    return "\n".join(parts)


def test_empty_store_offers_the_demo(app_store):
    at = open_app("overview")
    assert any("No KPIs yet" in i for i in texts(at.info))
    at.button(key="ov_demo").click().run()
    no_exception(at)
    assert len(app_store.list_kpis()) == 8
    assert any("Demo loaded: 8 sample KPIs" in s for s in texts(at.success))
    assert len([m for m in at.metric if m.label == "Not run yet"]) == 1
    assert metrics(at)["Not run yet"] == "8"


def test_cards_show_the_official_number_its_status_and_change(demo_store):
    revenue = kpi_named(demo_store, "Revenue")
    returns = kpi_named(demo_store, "Return Rate")
    year_2024 = {"start_date": "2024-01-01", "end_date": "2024-12-31"}
    earlier = demo_store.execute(revenue.id, year_2024, actor="setup")
    official = demo_store.execute(revenue.id, actor="setup")
    north = demo_store.execute(revenue.id, {"region": "North"}, actor="setup")  # exploration
    demo_store.execute(returns.id, actor="setup")
    at = open_app("overview")
    summary = metrics(at)
    assert (summary["On target"], summary["Off target"], summary["Not run yet"]) == ("1", "1", "6")
    text = card_text(at, revenue.id)
    assert "$5,506,100.50" in text
    assert "On target" in text
    assert "Target $5,250,000 · Finance" in text
    change = official.value - earlier.value
    assert f"{'+' if change >= 0 else '-'}${abs(change):,.2f}" in text and "vs 2024" in text
    assert f"({change / earlier.value * 100:+.1f} %)" in text
    assert f"${north.value:,.2f}" not in text  # the newer exploration is not the number
    assert "an exploration" in text
    returns_text = card_text(at, returns.id)
    assert "8%" in returns_text and "Off target" in returns_text
    never = card_text(at, kpi_named(demo_store, "Orders").id)
    assert "Never run yet" in never and "Not run yet" in never


def test_filters_by_tag_and_owner(demo_store):
    at = open_app("overview")
    assert (
        len(
            [
                m
                for m in at.metric
                if m.label
                not in {"On target", "Near target", "Off target", "No data", "Not run yet"}
            ]
        )
        == 8
    )
    at.multiselect(key="ov_tags").set_value(["finance"]).run()
    assert at.button(key="ov_run_all").label == "Run all (2)"
    at.multiselect(key="ov_owners").set_value(["Marketing"]).run()
    assert "No KPI matches these filters." in texts(at.info)
    at.multiselect(key="ov_tags").set_value([]).run()
    assert at.button(key="ov_run_all").label == "Run all (1)"


def test_run_all_queues_a_batch_and_shows_progress(demo_store):
    at = open_app("overview")
    at.multiselect(key="ov_tags").set_value(["finance"]).run()
    at.button(key="ov_run_all").click().run()
    no_exception(at)
    queued = demo_store.executions(status="pending")
    assert {kpi_named(demo_store, n).id for n in ("Revenue", "Gross Margin")} == {
        r.kpi_id for r in queued
    }
    assert len({r.batch_id for r in queued}) == 1
    progress = [p.proto.text for p in at.get("progress")]
    assert progress == ["Running 2 KPIs in the background: 0 finished, 0 succeeded"]
    # A worker (here: this test) runs them; the next refresh reports the outcome.
    for run in queued:
        demo_store.cancel(run.id, "setup")
    at.run()
    assert any("Run all finished: 0 of 2 succeeded, 2 failed" in w for w in texts(at.warning))
