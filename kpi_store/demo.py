"""A deterministic demo warehouse and the sample KPI definitions that query it.

:func:`build_demo_warehouse` writes a small retail business into a single SQLite
file: regions, customers, products, orders and order lines for 2024-01-01 ..
2025-12-31, with growth, seasonality, returns and discounts. Everything comes from
``random.Random(42)``, so two builds hold exactly the same rows.

:data:`DEMO_KPIS` holds KPI specs (plain dicts, as the store accepts them) written
against that warehouse. Their targets were computed from the generated data for
the default parameters, so the demo shows a mix of green, amber and red KPIs.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import os
import random
import sqlite3
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SEED = 42
DEMO_SOURCE = "demo"
START_DATE = dt.date(2024, 1, 1)
END_DATE = dt.date(2025, 12, 31)
N_DAYS = (END_DATE - START_DATE).days + 1

N_CUSTOMERS = 5_000
N_LAUNCH_CUSTOMERS = 1_200  # customers who signed up in the launch month
N_ORDERS = 40_000
PRODUCTS_PER_CATEGORY = 40

REGIONS: tuple[str, ...] = ("North", "South", "East", "West", "Central")
REGION_WEIGHTS: tuple[float, ...] = (0.24, 0.20, 0.26, 0.20, 0.10)

SEGMENTS: tuple[str, ...] = ("Consumer", "Corporate", "Small Business")
SEGMENT_WEIGHTS: tuple[float, ...] = (0.60, 0.25, 0.15)

# Month -> relative order volume (holiday peak, January lull, back to school).
SEASONALITY: dict[int, float] = {
    1: 0.85, 2: 0.80, 3: 0.95, 4: 0.95, 5: 1.00, 6: 1.00,
    7: 0.95, 8: 1.05, 9: 1.00, 10: 1.05, 11: 1.35, 12: 1.50,
}  # fmt: skip
GROWTH_OVER_SPAN = 0.35  # the last day sells 35 % more than the first
WEEKEND_UPLIFT = 1.15

LINES_PER_ORDER: tuple[int, ...] = (1, 2, 3, 4, 5)
LINES_PER_ORDER_WEIGHTS: tuple[int, ...] = (25, 30, 22, 13, 10)
QUANTITIES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)
QUANTITY_WEIGHTS: tuple[int, ...] = (50, 25, 10, 7, 4, 2, 1, 1)
DISCOUNTS: tuple[float, ...] = (0.0, 0.05, 0.10, 0.15, 0.20)
DISCOUNT_WEIGHTS: tuple[int, ...] = (62, 15, 12, 7, 4)
HOLIDAY_DISCOUNT_WEIGHTS: tuple[int, ...] = (40, 20, 18, 12, 10)

# Channel -> (probability returned, probability cancelled).
STATUS_ODDS: dict[str, tuple[float, float]] = {
    "online": (0.09, 0.045),
    "store": (0.05, 0.030),
}

# Category -> (cost-to-price ratio range, brands, items with a typical price).
CATALOG: dict[str, tuple[tuple[float, float], list[str], list[tuple[str, float]]]] = {
    "Electronics": (
        (0.68, 0.82),
        ["Voltix", "Nordić Audio", "Pixelcraft", "Helios"],
        [
            ("Wireless Mouse", 29),
            ("Mechanical Keyboard", 99),
            ('27" 4K Monitor', 349),
            ("USB-C Hub", 45),
            ("Noise-Cancelling Headphones", 249),
            ("Bluetooth Speaker", 79),
            ("HD Webcam", 69),
            ("Portable SSD 1TB", 119),
            ('Laptop 14"', 1099),
            ('Tablet 10"', 449),
            ("Smartwatch", 299),
            ("Wi-Fi Router", 139),
            ("Power Bank, 20,000 mAh", 49),
            ("Earbuds", 129),
        ],
    ),
    "Furniture": (
        (0.48, 0.62),
        ["Möbelwerk", "Oakline", "Studio Norte", "Ergonomix"],
        [
            ("Standing Desk", 499),
            ("Ergonomic Chair", 329),
            ("Bookshelf, 5-Tier", 149),
            ("Filing Cabinet", 189),
            ("Conference Table", 899),
            ("Sofa, 3-Seat", 799),
            ("Coffee Table", 219),
            ("Desk Lamp", 59),
            ("Monitor Arm", 89),
            ("Storage Ottoman", 79),
            ("Bar Stool", 99),
            ("Wardrobe", 599),
            ("Side Table", 119),
            ("Footrest", 39),
        ],
    ),
    "Office Supplies": (
        (0.35, 0.55),
        ["Papyrus & Co.", "Señor Pen", "Clipwell", "Inkpoint"],
        [
            ("Ballpoint Pens (12-pack)", 8),
            ("A4 Copy Paper, 500 Sheets", 7),
            ("Sticky Notes", 5),
            ("Stapler", 15),
            ("Binder Clips", 4),
            ("Highlighters, Assorted", 6),
            ("Notebook A5", 9),
            ("Desk Organizer", 25),
            ("Whiteboard Markers", 11),
            ("Envelopes #10", 12),
            ("Label Maker Tape", 18),
            ("Scissors", 10),
            ("Paper Shredder Bags", 14),
            ("Correction Tape", 3),
        ],
    ),
    "Apparel": (
        (0.30, 0.50),
        ["Threadline", "Åsa Knitwear", "Northpeak", "Urban Loom"],
        [
            ("Crew T-Shirt", 19),
            ("Hoodie", 49),
            ("Rain Jacket", 119),
            ("Chino Trousers", 59),
            ("Wool Beanie", 24),
            ("Polo Shirt", 35),
            ("Running Shoes", 109),
            ("Socks (3-pack)", 14),
            ("Fleece Vest", 65),
            ("Denim Jacket", 89),
            ("Baseball Cap", 22),
            ("Leather Belt", 39),
            ("Scarf", 29),
            ("Gloves", 25),
        ],
    ),
    "Home & Kitchen": (
        (0.40, 0.60),
        ["Café Crème", "Hearth & Home", "Kitchenry", "Pure Living"],
        [
            ("Espresso Cups (set of 4)", 29),
            ("Chef's Knife", 79),
            ("Cast-Iron Skillet", 45),
            ("French Press", 35),
            ("Blender", 129),
            ("Electric Kettle", 49),
            ("Cutting Board", 25),
            ("Bath Towels, 2-pack", 32),
            ("Scented Candle", 18),
            ("Throw Blanket", 55),
            ("Storage Jars", 22),
            ("Toaster", 59),
            ("Water Bottle", 21),
            ("Table Lamp", 69),
        ],
    ),
}

FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sophia", "Lucas", "Mia",
    "Ethan", "Aisha", "Wei", "Priya", "Kofi", "Hannah", "Lukas", "Zoë", "José",
    "Chloé", "Søren", "Renée", "François", "Ana", "Jürgen", "Siobhán", "Ines",
    "Daniel", "Grace", "Omar", "Yuki", "Camila", "Henry", "Nora", "Arjun",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis",
    "Martinez", "Lopez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore",
    "O'Brien", "Müller", "Núñez", "D'Angelo", "García", "Nguyen", "Kowalski",
    "Dvořák", "Schäfer", "Okafor", "Patel", "Kim", "Rossi", "Larsen", "Chen",
)  # fmt: skip
COMPANY_PATTERNS: tuple[str, ...] = (
    "{a} & Sons, Inc.",
    "{a} Holdings, LLC",
    "{a}-{b} Consulting",
    '"{a}" Trading Co.',
    "{a} Logistics, Ltd.",
    "{a} & {b} Partners",
    "{a} Supplies",
)

# Customers 1.. get these names, so awkward text is always present in the data.
SPECIAL_CUSTOMERS: tuple[tuple[str, str], ...] = (
    ("O'Brien, Ltd.", "Corporate"),
    ('Zoë "Z" Müller', "Consumer"),
    ("Smith & Sons, Inc.", "Small Business"),
    ("José Núñez", "Consumer"),
    ('Café "Le Zinc", S.A.R.L.', "Small Business"),
    ("Björk Guðmundsdóttir", "Consumer"),
    ("Nguyễn Văn An", "Consumer"),
    ("Tanaka Trading 株式会社", "Corporate"),
)

SCHEMA = """
CREATE TABLE regions (
    region_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    region_id INTEGER NOT NULL REFERENCES regions (region_id),
    segment TEXT NOT NULL
        CHECK (segment IN ('Consumer', 'Corporate', 'Small Business')),
    signup_date TEXT NOT NULL
);
CREATE TABLE products (
    product_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    unit_price REAL NOT NULL,
    unit_cost REAL NOT NULL
);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    order_date TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('completed', 'returned', 'cancelled')),
    channel TEXT NOT NULL CHECK (channel IN ('online', 'store'))
);
CREATE TABLE order_lines (
    line_id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (order_id),
    product_id INTEGER NOT NULL REFERENCES products (product_id),
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    discount REAL NOT NULL,
    line_amount REAL NOT NULL
);
"""

INDEXES = """
CREATE INDEX ix_customers_region_id ON customers (region_id);
CREATE INDEX ix_customers_signup_date ON customers (signup_date);
CREATE INDEX ix_products_category ON products (category);
CREATE INDEX ix_orders_customer_id ON orders (customer_id);
CREATE INDEX ix_orders_order_date ON orders (order_date);
CREATE INDEX ix_order_lines_order_id ON order_lines (order_id);
CREATE INDEX ix_order_lines_product_id ON order_lines (product_id);
"""

Row = tuple[Any, ...]


# --------------------------------------------------------------------------- build


def build_demo_warehouse(path: str | os.PathLike[str]) -> None:
    """Create (or atomically recreate) the demo warehouse SQLite file at ``path``.

    The file is built next to the target as ``<path>.tmp`` and moved into place
    with :func:`os.replace`, so readers never see a half-written warehouse.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    _remove_sqlite_file(tmp)
    tables = generate_tables(random.Random(SEED))
    try:
        _write_database(tmp, tables)
        os.replace(tmp, target)
    except BaseException:
        _remove_sqlite_file(tmp)
        raise


def generate_tables(rng: random.Random) -> dict[str, list[Row]]:
    """Generate every table's rows, in insertion order, from ``rng``."""
    regions = [(i, name) for i, name in enumerate(REGIONS, start=1)]
    products = _generate_products(rng)
    customers = _generate_customers(rng)
    orders = _generate_orders(rng, customers)
    order_lines = _generate_order_lines(rng, orders, products)
    return {
        "regions": regions,
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_lines": order_lines,
    }


def _write_database(path: Path, tables: dict[str, list[Row]]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA page_size = 4096")
        conn.executescript(SCHEMA)
        with conn:  # one transaction for all rows
            for table, rows in tables.items():
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.executescript(INDEXES)
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def _remove_sqlite_file(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-journal")):
        leftover.unlink(missing_ok=True)


# ------------------------------------------------------------------------ products


def _generate_products(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for category, (cost_range, brands, items) in CATALOG.items():
        combos = list(itertools.product(brands, items))
        for brand, (item, typical_price) in rng.sample(combos, PRODUCTS_PER_CATEGORY):
            price = _retail_price(typical_price * rng.uniform(0.75, 1.35))
            cost = round(price * rng.uniform(*cost_range), 2)
            rows.append((len(rows) + 1, f"{brand} {item}", category, price, cost))
    return rows


def _retail_price(raw: float) -> float:
    """``raw`` rounded to a shelf price ending in .99 (or .49 under $5)."""
    if raw < 5:
        return round(int(raw) + 0.49, 2)
    return round(round(raw) - 0.01, 2)


def _product_weights(rng: random.Random, products: Sequence[Row]) -> list[float]:
    """Cumulative popularity weights: cheap products sell more often."""
    weights = [rng.uniform(0.5, 1.5) / (row[3] ** 0.5) for row in products]
    return list(itertools.accumulate(weights))


# ----------------------------------------------------------------------- customers


def _generate_customers(rng: random.Random) -> list[Row]:
    """Customers ordered by signup date, so ``customer_id`` grows with it."""
    signup_days = sorted(_signup_days(rng))
    rows: list[Row] = []
    for customer_id, day in enumerate(signup_days, start=1):
        if customer_id <= len(SPECIAL_CUSTOMERS):
            name, segment = SPECIAL_CUSTOMERS[customer_id - 1]
        else:
            segment = rng.choices(SEGMENTS, SEGMENT_WEIGHTS)[0]
            name = _customer_name(rng, segment)
        region_id = rng.choices(range(1, len(REGIONS) + 1), REGION_WEIGHTS)[0]
        email = f"{_email_slug(name)}.{customer_id}@example.com"
        signup = _iso(day)
        rows.append((customer_id, name, email, region_id, segment, signup))
    return rows


def _signup_days(rng: random.Random) -> list[int]:
    """Day offsets: a launch cohort in January 2024, then growing steady signups."""
    launch = [0] * len(SPECIAL_CUSTOMERS)
    launch += [rng.randrange(31) for _ in range(N_LAUNCH_CUSTOMERS - len(launch))]
    later_weights = [1.0 + GROWTH_OVER_SPAN * d / N_DAYS for d in range(N_DAYS)]
    later = rng.choices(range(N_DAYS), later_weights, k=N_CUSTOMERS - len(launch))
    return launch + later


def _customer_name(rng: random.Random, segment: str) -> str:
    if segment == "Consumer":
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    a, b = rng.sample(LAST_NAMES, 2)
    return rng.choice(COMPANY_PATTERNS).format(a=a, b=b)


def _email_slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = "".join(c if c.isalnum() else " " for c in ascii_name.lower()).split()
    return ".".join(words) or "customer"


# -------------------------------------------------------------------------- orders


def _generate_orders(rng: random.Random, customers: Sequence[Row]) -> list[Row]:
    """Orders by date; each buyer had signed up on or before the order date."""
    cum_weights = list(itertools.accumulate(_day_weight(d) for d in range(N_DAYS)))
    days = sorted(rng.choices(range(N_DAYS), cum_weights=cum_weights, k=N_ORDERS))
    signup_days = [_day_offset(row[5]) for row in customers]
    cum_activity = _customer_activity(rng, len(customers))
    rows: list[Row] = []
    for order_id, day in enumerate(days, start=1):
        eligible = bisect.bisect_right(signup_days, day)
        draw = rng.random() * cum_activity[eligible - 1]
        customer_id = customers[bisect.bisect_right(cum_activity, draw)][0]
        online_share = 0.55 + 0.15 * day / N_DAYS
        channel = "online" if rng.random() < online_share else "store"
        status = _order_status(rng, channel)
        rows.append((order_id, customer_id, _iso(day), status, channel))
    return rows


def _customer_activity(rng: random.Random, n_customers: int) -> list[float]:
    """Cumulative buying-frequency weights: a few customers order far more often.

    The named special customers are regulars, so they appear in any recent period.
    """
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(n_customers)]
    for index in range(min(len(SPECIAL_CUSTOMERS), n_customers)):
        weights[index] = 4.0
    return list(itertools.accumulate(weights))


def _day_weight(day: int) -> float:
    date = START_DATE + dt.timedelta(days=day)
    growth = 1.0 + GROWTH_OVER_SPAN * day / (N_DAYS - 1)
    weekend = WEEKEND_UPLIFT if date.weekday() >= 5 else 1.0
    return growth * SEASONALITY[date.month] * weekend


def _order_status(rng: random.Random, channel: str) -> str:
    p_returned, p_cancelled = STATUS_ODDS[channel]
    draw = rng.random()
    if draw < p_returned:
        return "returned"
    if draw < p_returned + p_cancelled:
        return "cancelled"
    return "completed"


# --------------------------------------------------------------------- order lines


def _generate_order_lines(
    rng: random.Random, orders: Sequence[Row], products: Sequence[Row]
) -> list[Row]:
    cum_weights = _product_weights(rng, products)
    rows: list[Row] = []
    for order_id, _customer, order_date, _status, _channel in orders:
        n_lines = rng.choices(LINES_PER_ORDER, LINES_PER_ORDER_WEIGHTS)[0]
        holiday = order_date[5:7] in ("11", "12")
        discount_weights = HOLIDAY_DISCOUNT_WEIGHTS if holiday else DISCOUNT_WEIGHTS
        for index in _distinct_products(rng, cum_weights, n_lines):
            product_id, _name, _category, unit_price, _cost = products[index]
            quantity = rng.choices(QUANTITIES, QUANTITY_WEIGHTS)[0]
            discount = rng.choices(DISCOUNTS, discount_weights)[0]
            amount = round(quantity * unit_price * (1 - discount), 2)
            rows.append(
                (len(rows) + 1, order_id, product_id, quantity, unit_price, discount, amount)
            )
    return rows


def _distinct_products(rng: random.Random, cum_weights: list[float], k: int) -> list[int]:
    """``k`` distinct product indexes drawn by popularity."""
    population = range(len(cum_weights))
    picked: list[int] = []
    while len(picked) < k:
        index = rng.choices(population, cum_weights=cum_weights)[0]
        if index not in picked:
            picked.append(index)
    return picked


# ----------------------------------------------------------------------- dates


def _iso(day: int) -> str:
    return (START_DATE + dt.timedelta(days=day)).isoformat()


def _day_offset(iso_date: str) -> int:
    return (dt.date.fromisoformat(iso_date) - START_DATE).days


# ------------------------------------------------------------------------- KPIs

_START = {
    "name": "start_date",
    "type": "date",
    "default": "2025-01-01",
    "label": "From (inclusive)",
}
_END = {
    "name": "end_date",
    "type": "date",
    "default": "2025-12-31",
    "label": "To (inclusive)",
}
_REGION = {
    "name": "region",
    "type": "str",
    "default": "All",
    "choices": ["All", *REGIONS],
    "label": "Region",
}
_SEGMENT = {
    "name": "segment",
    "type": "str",
    "default": "All",
    "choices": ["All", *SEGMENTS],
    "label": "Customer segment",
}


# The demo's dates default to a whole year (targets are yearly), so their period is a year:
# 2025 compares with 2024, and a backfill fills both years.
_YEARLY = {"start": "start_date", "end": "end_date", "grain": "year"}


def _date_region_params() -> list[dict[str, Any]]:
    return [dict(_START), dict(_END), {**_REGION, "choices": list(_REGION["choices"])}]


_ORDER_FILTER = """o.order_date >= :start_date
  AND o.order_date <= :end_date
  AND (:region = 'All' OR r.name = :region)"""

_ORDER_JOINS = """JOIN customers c ON c.customer_id = o.customer_id
JOIN regions r ON r.region_id = c.region_id"""

# Values for the default parameters (2025, all regions) -> target, status at 10 %:
#   Revenue 5,506,100.50 -> 5,250,000 green      Orders 19,117 -> 18,500 green
#   Average Order Value 288.02 -> 305 amber      Return Rate 8.00 % -> 6.5 % red
#   Gross Margin 40.47 % -> 40 % green           New Customers 2,041 -> 2,000 green
#   Units Sold 101,094 -> 95,000 green           Order Line Detail 54,530 rows,
#   6,222,890.36 -> 6,000,000 green.  Re-check these if the generator changes.
DEMO_KPIS: list[dict[str, Any]] = [
    {
        "name": "Revenue",
        "description": "Net sales of completed orders in the period.",
        "nl_definition": (
            "Total amount customers paid, after line discounts, for orders that were "
            "completed (not returned or cancelled) between the two dates, optionally "
            "for one region."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT ROUND(SUM(ol.line_amount), 2) AS revenue
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
{_ORDER_JOINS}
WHERE o.status = 'completed'
  AND {_ORDER_FILTER}""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "value_column": "revenue",
        "aggregation": "sum",
        "unit": "$",
        "target": 5_250_000.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Finance",
        "tags": ["sales", "finance"],
    },
    {
        "name": "Orders",
        "description": "Number of completed orders in the period.",
        "nl_definition": (
            "How many orders were placed between the two dates and completed, "
            "optionally for one region. Returned and cancelled orders do not count."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT COUNT(*) AS orders
FROM orders o
{_ORDER_JOINS}
WHERE o.status = 'completed'
  AND {_ORDER_FILTER}""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "value_column": "orders",
        "aggregation": "sum",
        "unit": "orders",
        "target": 18_500.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Sales Ops",
        "tags": ["sales", "operations"],
    },
    {
        "name": "Average Order Value",
        "description": "Revenue per completed order.",
        "nl_definition": (
            "Revenue of completed orders divided by the number of completed orders "
            "placed between the two dates, optionally for one region."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT ROUND(SUM(ol.line_amount) / COUNT(DISTINCT o.order_id), 2)
       AS avg_order_value
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
{_ORDER_JOINS}
WHERE o.status = 'completed'
  AND {_ORDER_FILTER}""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "value_column": "avg_order_value",
        "aggregation": "first",
        "unit": "$",
        "target": 305.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Sales Ops",
        "tags": ["sales"],
    },
    {
        "name": "Return Rate",
        "description": "Share of delivered orders that came back.",
        "nl_definition": (
            "Returned orders as a percentage of all delivered orders (completed plus "
            "returned) placed between the two dates, optionally for one region. "
            "Cancelled orders were never delivered and are left out."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT ROUND(
         100.0 * SUM(CASE WHEN o.status = 'returned' THEN 1 ELSE 0 END)
         / NULLIF(COUNT(*), 0),
         2
       ) AS return_rate_pct
FROM orders o
{_ORDER_JOINS}
WHERE o.status IN ('completed', 'returned')
  AND {_ORDER_FILTER}""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "value_column": "return_rate_pct",
        "aggregation": "first",
        "unit": "%",
        "target": 6.5,
        "direction": "lower_is_better",
        "tolerance_pct": 10.0,
        "owner": "Customer Service",
        "tags": ["operations", "quality"],
    },
    {
        "name": "Gross Margin",
        "description": "Gross profit as a share of revenue, completed orders only.",
        "nl_definition": (
            "Revenue minus the cost of the goods sold, as a percentage of revenue, "
            "for orders completed between the two dates, optionally for one region."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT ROUND(
         100.0 * SUM(ol.line_amount - ol.quantity * p.unit_cost)
         / NULLIF(SUM(ol.line_amount), 0),
         2
       ) AS gross_margin_pct
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
JOIN products p ON p.product_id = ol.product_id
{_ORDER_JOINS}
WHERE o.status = 'completed'
  AND {_ORDER_FILTER}""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "value_column": "gross_margin_pct",
        "aggregation": "first",
        "unit": "%",
        "target": 40.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Finance",
        "tags": ["finance", "profitability"],
    },
    {
        "name": "New Customers by Month",
        "description": "Customer sign-ups per month.",
        "nl_definition": (
            "Number of customers whose account was created in each month between the "
            "two dates, optionally for one region and one customer segment. The "
            "headline figure is the total over all months."
        ),
        "data_source": DEMO_SOURCE,
        "sql": """SELECT substr(c.signup_date, 1, 7) AS month,
       COUNT(*) AS new_customers
FROM customers c
JOIN regions r ON r.region_id = c.region_id
WHERE c.signup_date >= :start_date
  AND c.signup_date <= :end_date
  AND (:region = 'All' OR r.name = :region)
  AND (:segment = 'All' OR c.segment = :segment)
GROUP BY month
ORDER BY month""",
        "parameters": [
            *_date_region_params(),
            {**_SEGMENT, "choices": list(_SEGMENT["choices"])},
        ],
        "period": dict(_YEARLY),
        "value_column": "new_customers",
        "aggregation": "sum",
        "unit": "customers",
        "target": 2_000.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Marketing",
        "tags": ["customers", "growth"],
    },
    {
        "name": "Units Sold by Category",
        "description": "Units of completed orders, per product category.",
        "nl_definition": (
            "Number of items sold in completed orders placed between the two dates, "
            "broken down by product category, optionally for one region."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT p.category AS category,
       SUM(ol.quantity) AS units_sold,
       ROUND(SUM(ol.line_amount), 2) AS revenue
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
JOIN products p ON p.product_id = ol.product_id
{_ORDER_JOINS}
WHERE o.status = 'completed'
  AND {_ORDER_FILTER}
GROUP BY p.category
ORDER BY units_sold DESC""",
        "parameters": _date_region_params(),
        "period": dict(_YEARLY),
        "breakdown_column": "category",
        "value_column": "units_sold",
        "aggregation": "sum",
        "unit": "units",
        "target": 95_000.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Merchandising",
        "tags": ["sales", "products"],
    },
    {
        "name": "Order Line Detail",
        "description": "Every order line in the period, for drill-down and export.",
        "nl_definition": (
            "One row per order line placed between the two dates with its customer, "
            "product, quantity, price, discount and amount, optionally for one region, "
            "only lines of at least a given quantity and amount, and only completed "
            "orders. The headline figure is the sum of the line amounts."
        ),
        "data_source": DEMO_SOURCE,
        "sql": f"""SELECT ol.line_id AS line_id,
       o.order_id AS order_id,
       o.order_date AS order_date,
       o.status AS status,
       o.channel AS channel,
       r.name AS region,
       c.name AS customer,
       c.segment AS segment,
       p.name AS product,
       p.category AS category,
       ol.quantity AS quantity,
       ol.unit_price AS unit_price,
       ol.discount AS discount,
       ol.line_amount AS line_amount
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
JOIN products p ON p.product_id = ol.product_id
{_ORDER_JOINS}
WHERE {_ORDER_FILTER}
  AND ol.quantity >= :min_quantity
  AND ol.line_amount >= :min_amount
  AND (:completed_only = 0 OR o.status = 'completed')
ORDER BY ol.line_id""",
        "parameters": [
            *_date_region_params(),
            {
                "name": "min_quantity",
                "type": "int",
                "default": 1,
                "label": "Minimum quantity",
            },
            {
                "name": "min_amount",
                "type": "float",
                "default": 0.0,
                "label": "Minimum line amount ($)",
            },
            {
                "name": "completed_only",
                "type": "bool",
                "default": False,
                "label": "Completed orders only",
            },
        ],
        "period": dict(_YEARLY),
        "breakdown_column": "category",
        "value_column": "line_amount",
        "aggregation": "sum",
        "unit": "$",
        "target": 6_000_000.0,
        "direction": "higher_is_better",
        "tolerance_pct": 10.0,
        "owner": "Sales Ops",
        "tags": ["sales", "drill-down"],
    },
]


def install(store: Any, actor: str = "demo") -> list[Any]:
    """Build the warehouse (once), register it as ``demo`` and add missing sample KPIs.

    ``store`` is a KPIStore; what already exists is left alone. Returns the KPIs added.
    """
    path = store.demo_warehouse_path()
    if not path.exists():
        build_demo_warehouse(path)
    if DEMO_SOURCE not in {source.name for source in store.data_sources(actor=actor)}:
        store.add_data_source(DEMO_SOURCE, f"sqlite:///{path}", actor)
    existing = {kpi.name.lower() for kpi in store.list_kpis(include_archived=True, actor=actor)}
    return [
        store.create_kpi(spec, actor) for spec in DEMO_KPIS if spec["name"].lower() not in existing
    ]
