#!/usr/bin/env python3
"""Write the shop example's seed CSVs (raw_*.csv) into seeds/.

Stdlib only and deterministic: the same files on every run (random.Random(42)),
so the endpoint tests in the yml files can name exact values.

    python scripts/generate_seeds.py            # writes seeds/*.csv
    python scripts/generate_seeds.py --out DIR  # somewhere else
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

FIRST_NAMES = [
    "Alex", "Amara", "Ben", "Bianca", "Carlos", "Chen", "Daniel", "Dana", "Elena", "Emil",
    "Fatima", "Felix", "Grace", "Gustav", "Hana", "Hugo", "Ines", "Ivan", "Jana", "Jonas",
    "Kai", "Keiko", "Lena", "Liam", "Maya", "Marco", "Nora", "Noah", "Olga", "Omar",
    "Priya", "Paul", "Quinn", "Rosa", "Ravi", "Sara", "Sven", "Tara", "Tomas", "Uma",
    "Victor", "Vera", "Wei", "Wanda", "Yusuf", "Yara", "Zoe", "Zane",
]
LAST_NAMES = [
    "Andersen", "Baker", "Costa", "Dubois", "Eriksson", "Fischer", "Garcia", "Hansen",
    "Ito", "Jensen", "Kowalski", "Lopez", "Muller", "Nakamura", "Novak", "Olsen",
    "Petrov", "Quispe", "Rossi", "Schmidt", "Silva", "Tanaka", "Urban", "Varga",
    "Weber", "Xu", "Yilmaz", "Zimmer", "Murphy", "Kim",
]
# Names containing "ali" (case-insensitive), placed at fixed ids so that a search
# for "ali" finds several customers whatever the random draw.
ALI_CUSTOMERS = {
    1: ("Alice", "Martin"),
    2: ("Alicia", "Keys"),
    17: ("Natalie", "Brooks"),
    42: ("Ali", "Hassan"),
    99: ("Rosalind", "Khalil"),
}
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "SE", "JP"]
COUNTRY_WEIGHTS = [30, 15, 15, 10, 8, 8, 7, 7]

CATEGORIES = {
    "books": (["Field Guide", "Cookbook", "Novel", "Atlas", "Notebook"], (8, 45)),
    "electronics": (["Headphones", "Charger", "Keyboard", "Webcam", "Speaker"], (15, 250)),
    "home": (["Mug", "Lamp", "Blanket", "Vase", "Cutting Board"], (6, 90)),
    "outdoor": (["Tent", "Backpack", "Water Bottle", "Headlamp", "Hammock"], (10, 300)),
    "toys": (["Puzzle", "Kite", "Board Game", "Building Set", "Yo-yo"], (4, 70)),
}
ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Pro", "Travel", "Mini", "Large"]

N_CUSTOMERS = 200
N_PRODUCTS = 40
N_ORDERS = 1500
FIRST_DAY = dt.date(2023, 1, 1)
LAST_DAY = dt.date(2024, 12, 31)


def _days(start: dt.date, end: dt.date) -> int:
    return (end - start).days


def customers(rng: random.Random) -> list[dict]:
    rows = []
    seen_emails: set[str] = set()
    for cid in range(1, N_CUSTOMERS + 1):
        if cid in ALI_CUSTOMERS:
            first, last = ALI_CUSTOMERS[cid]
        else:
            first = rng.choice(FIRST_NAMES)
            last = rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace(" ", "")
        email = f"{local}@example.com"
        n = 2
        while email in seen_emails:
            email = f"{local}{n}@example.com"
            n += 1
        seen_emails.add(email)
        signup = FIRST_DAY - dt.timedelta(days=365) + dt.timedelta(
            days=rng.randrange(_days(FIRST_DAY - dt.timedelta(days=365), LAST_DAY - dt.timedelta(days=60)))
        )
        rows.append(
            {
                "customer_id": cid,
                "first_name": first,
                "last_name": last,
                "email": email,
                "country": rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0],
                "signup_date": signup.isoformat(),
                "segment": "business" if rng.random() < 0.2 else "consumer",
            }
        )
    return rows


def products(rng: random.Random) -> list[dict]:
    rows = []
    names: set[str] = set()
    pid = 0
    cats = list(CATEGORIES)
    while pid < N_PRODUCTS:
        category = cats[pid % len(cats)]
        nouns, (lo, hi) = CATEGORIES[category]
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(nouns)}"
        if name in names:
            continue
        names.add(name)
        pid += 1
        cents = rng.randrange(lo * 100, hi * 100)
        price = Decimal(cents - cents % 100 + 99) / 100 if rng.random() < 0.7 else Decimal(cents) / 100
        rows.append(
            {
                "product_id": pid,
                "sku": f"{category[:3].upper()}-{pid:04d}",
                "name": name,
                "category": category,
                "price": f"{price:.2f}",
            }
        )
    return rows


def orders_and_items(
    rng: random.Random, custs: list[dict], prods: list[dict]
) -> tuple[list[dict], list[dict]]:
    orders, items = [], []
    # Some customers buy a lot, most a little, a few never (weights 0).
    weights = [0 if rng.random() < 0.05 else rng.choice([1, 1, 2, 3, 5, 8]) for _ in custs]
    weights[0] = 6  # Alice (customer 1) is a regular
    item_id = 0
    for oid in range(1, N_ORDERS + 1):
        cust = rng.choices(custs, weights)[0]
        signup = dt.date.fromisoformat(cust["signup_date"])
        start = max(signup, FIRST_DAY)
        order_date = start + dt.timedelta(days=rng.randrange(_days(start, LAST_DAY) + 1))
        age = _days(order_date, LAST_DAY)
        if age < 5:
            status = "placed"
        elif age < 12:
            status = rng.choice(["placed", "shipped"])
        else:
            status = "returned" if rng.random() < 0.06 else "delivered"
        orders.append(
            {
                "order_id": oid,
                "customer_id": cust["customer_id"],
                "order_date": order_date.isoformat(),
                "status": status,
            }
        )
        n_items = rng.choices([1, 2, 3, 4, 5], [20, 30, 25, 15, 10])[0]
        for prod in rng.sample(prods, n_items):
            item_id += 1
            price = Decimal(prod["price"])
            if rng.random() < 0.15:  # a sale: 10% or 20% off
                price = (price * Decimal(rng.choice(["0.9", "0.8"]))).quantize(Decimal("0.01"))
            items.append(
                {
                    "order_item_id": item_id,
                    "order_id": oid,
                    "product_id": prod["product_id"],
                    "quantity": rng.choices([1, 2, 3, 4], [70, 18, 8, 4])[0],
                    "unit_price": f"{price:.2f}",
                }
            )
    return orders, items


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows):>5} rows to {path}")


def main() -> None:
    default_out = Path(__file__).resolve().parent.parent / "seeds"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rng = random.Random(42)
    custs = customers(rng)
    prods = products(rng)
    orders, items = orders_and_items(rng, custs, prods)
    write_csv(args.out / "raw_customers.csv", custs)
    write_csv(args.out / "raw_products.csv", prods)
    write_csv(args.out / "raw_orders.csv", orders)
    write_csv(args.out / "raw_order_items.csv", items)


if __name__ == "__main__":
    main()
