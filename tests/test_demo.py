"""The demo shop generator: determinism, the data contract, and the behaviour it must contain."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from recs.data import demo
from recs.data.demo import (
    COLD_DAYS,
    COMPLEMENTS,
    CONSUMABLES,
    LEAVES,
    PERIOD_DAYS,
    PERIOD_START,
    generate_demo_catalog,
    generate_demo_shop,
    write_demo_shop,
)

PERIOD_END = PERIOD_START + timedelta(days=PERIOD_DAYS)
COLD_FROM = (PERIOD_END - timedelta(days=COLD_DAYS)).date().isoformat()


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_shop(out, seed=0)
    return out


@pytest.fixture(scope="module")
def shop(shop_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The CSV files as written, every column read as text (what a loader sees)."""
    return tuple(pl.read_csv(shop_dir / f"{n}.csv", infer_schema=False) for n in ("items", "events", "bundles"))


@pytest.fixture(scope="module")
def purchases(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
    items, events, _ = shop
    return events.filter(pl.col("event") == "purchase").join(
        items.select("item_id", "category", "in_stock", "first_seen"), on="item_id"
    )


# --- determinism and files ----------------------------------------------------------------


def test_write_returns_paths_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "new" / "shop"
    paths = write_demo_shop(out, seed=3, scale=0.2)
    assert paths == {name: out / f"{name}.csv" for name in ("items", "events", "bundles")}
    assert sorted(p.name for p in out.iterdir()) == ["bundles.csv", "events.csv", "items.csv"]
    # Writing again over existing files replaces them atomically.
    assert write_demo_shop(out, seed=3, scale=0.2) == paths


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    a = write_demo_shop(tmp_path / "a", seed=7, scale=0.5)
    b = write_demo_shop(tmp_path / "b", seed=7, scale=0.5)
    c = write_demo_shop(tmp_path / "c", seed=8, scale=0.5)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
        assert a[name].read_bytes() != c[name].read_bytes(), name


def test_files_are_identical_across_processes(tmp_path: Path, shop_dir: Path) -> None:
    # Another interpreter with another string-hash seed must write the very same bytes.
    code = "import sys; from pathlib import Path; from recs.data.demo import write_demo_shop; write_demo_shop(Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, timeout=60)
    for name in ("items", "events", "bundles"):
        assert (tmp_path / f"{name}.csv").read_bytes() == (shop_dir / f"{name}.csv").read_bytes(), name


def test_generate_matches_written_files(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items, events, bundles = generate_demo_shop(seed=0)
    assert items["item_id"].to_list() == shop[0]["item_id"].to_list()
    assert events.height == shop[1].height
    assert bundles.height == shop[2].height


def test_bad_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        generate_demo_shop(scale=0)
    with pytest.raises(ValueError, match="scale"):
        generate_demo_catalog(scale=0)


def test_the_catalog_alone_is_the_shops_catalog(tmp_path: Path) -> None:
    assert generate_demo_catalog(seed=3, scale=0.3).equals(generate_demo_shop(seed=3, scale=0.3)[0])
    paths = write_demo_shop(tmp_path, seed=3, scale=0.3, items_only=True)
    assert list(paths) == ["items"] and sorted(p.name for p in tmp_path.iterdir()) == ["items.csv"]


def test_module_uses_only_numpy_polars_and_stdlib() -> None:
    tree = ast.parse(Path(demo.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= {"__future__", "json", "importlib", "dataclasses", "datetime", "pathlib", "numpy", "polars", "recs"}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in modules if m.startswith("recs")} == {"recs.io"}  # stdlib only, no torch


# The files `recs data demo --seed 0` writes. They change only when the generator or its taxonomy
# (demo_taxonomy.json) is changed on purpose: then update these, and say so in the change.
SEED0_SHA256 = {
    "items": "3aef8b3e348299258f16ab85e58e6d3d15dbc7f567094bed7b7988152ad9ad29",
    "events": "b6578aa0c480c7cd9ec18a244305e50f3ccf6065f48d0421a3e3164f11a64c02",
    "bundles": "aec15b50609436b3197ca1904fd20f93330c05093b019e1f3506207f30aa4126",
}


def test_seed_zero_shop_is_pinned(shop_dir: Path, shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items, events, bundles = shop
    # A few known rows first: a readable diff when the pin below breaks.
    assert (items.height, events.height, bundles.height) == (800, 31222, 119)
    assert items.row(0) == (
        "I00000", "Pixelly 3-Pack Screen Protector, scratch-resistant hydrogel film",
        "Sleek 3-Pack Screen Protector by Pixelly. Made of hydrogel film. Features an installation frame "
        "and full-edge coverage. A scratch-resistant choice for gaming and streaming.",
        "Electronics > Phones > Screen Protectors", "Pixelly", "13.99", "true", "2023-10-06",
    )
    assert items.row(799)[:2] == ("I00799", "Urbanite Mirrored Aviator Sunglasses, retro metal")
    assert events.row(0) == ("U0000", "I00078", "2025-11-04T10:18:36Z", "view", None, None)
    assert events.row(-1) == ("U0499", "I00148", "2026-02-23T11:56:36Z", "purchase", "O004595", "1")
    assert bundles.row(0) == ("B0001", "I00250", "Complete kitchen set")
    assert bundles.row(-1) == ("B0040", "I00266", "Deluxe new phone essentials")
    digests = {n: hashlib.sha256((shop_dir / f"{n}.csv").read_bytes()).hexdigest() for n in SEED0_SHA256}
    assert digests == SEED0_SHA256


def test_taxonomy_is_package_data() -> None:
    from importlib import resources

    data = json.loads(resources.files("recs.data").joinpath(demo.TAXONOMY_FILE).read_text(encoding="utf-8"))
    assert [leaf["name"] for top in data["tops"] for leaf in top["leaves"]] == [p.split(" > ")[-1] for p in LEAVES]
    # Shipped in wheels and sdists, not only found in a source checkout.
    pyproject_path = Path(demo.__file__).parents[2] / "pyproject.toml"
    if not pyproject_path.is_file():
        pytest.skip("recs is not imported from a source checkout")
    pyproject = tomllib.loads(pyproject_path.read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["recs.data"]
    assert any(Path(demo.TAXONOMY_FILE).match(p) for p in patterns)


def test_taxonomy_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        demo._from_json(demo._Leaf, {"name": "Tents", "colour": "green"}, "leaf 'Tents'")


# --- the data contract ----------------------------------------------------------------------


def test_items_contract(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items = shop[0]
    assert items.columns == ["item_id", "title", "description", "category", "brand", "price", "in_stock", "first_seen"]
    assert items.null_count().sum_horizontal().item() == 0
    assert items["item_id"].is_unique().all()
    assert items["item_id"].str.contains(r"^I\d{5,}$").all()
    assert (items["title"].str.len_chars() > 10).all()
    assert items["category"].is_in(list(LEAVES)).all()
    assert items["price"].str.contains(r"^\d+\.\d{2}$").all()
    assert (items["price"].cast(pl.Float64) > 0).all()
    assert items["in_stock"].is_in(["true", "false"]).all()
    assert items["first_seen"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert (items["first_seen"] < PERIOD_END.date().isoformat()).all()


def test_events_contract(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items, events, _ = shop
    assert events.columns == ["user_id", "item_id", "timestamp", "event", "order_id", "quantity"]
    for column in ("user_id", "item_id", "timestamp", "event"):
        assert events[column].null_count() == 0, column
    assert events["user_id"].str.contains(r"^U\d{4,}$").all()
    assert events["item_id"].is_in(items["item_id"].implode()).all()
    assert events["timestamp"].str.contains(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").all()
    assert events["timestamp"].min() >= PERIOD_START.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert events["timestamp"].max() < PERIOD_END.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert events["event"].is_in(["view", "click", "cart", "purchase"]).all()
    assert set(events["event"].unique()) == {"view", "click", "cart", "purchase"}
    assert not events.select("user_id", "item_id", "timestamp", "event").is_duplicated().any()

    bought = events.filter(pl.col("event") == "purchase")
    assert bought["order_id"].null_count() == 0
    assert bought["order_id"].str.contains(r"^O\d{6,}$").all()
    assert (bought["quantity"].cast(pl.Int64) >= 1).all()
    assert bought.select("order_id", "item_id").is_unique().all()  # one line per item in an order
    assert (bought.group_by("order_id").agg(pl.col("user_id").n_unique())["user_id"] == 1).all()
    assert (bought.group_by("order_id").agg(pl.len())["len"] <= 5).all()
    other = events.filter(pl.col("event") != "purchase")
    assert other["order_id"].null_count() == other.height
    assert other["quantity"].null_count() == other.height


def test_no_event_before_first_seen(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items, events, _ = shop
    joined = events.join(items.select("item_id", "first_seen"), on="item_id")
    assert (joined["timestamp"].str.slice(0, 10) >= joined["first_seen"]).all()


def test_bundles_are_an_anchor_and_its_complements(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items, _, bundles = shop
    assert bundles.columns == ["bundle_id", "item_id", "title"]
    assert bundles.null_count().sum_horizontal().item() == 0
    assert bundles["item_id"].is_in(items["item_id"].implode()).all()
    assert 30 <= bundles["bundle_id"].n_unique() <= 40
    category = dict(zip(items["item_id"], items["category"], strict=True))
    in_stock = dict(zip(items["item_id"], items["in_stock"], strict=True))
    for (_, title), rows in bundles.group_by("bundle_id", "title", maintain_order=True):
        members = rows["item_id"].to_list()
        assert 2 <= len(members) <= 5 and len(set(members)) == len(members)
        anchor, *rest = (category[m] for m in members)
        assert all(c in COMPLEMENTS[anchor] for c in rest), (title, anchor, rest)
        assert all(in_stock[m] == "true" for m in members)
        assert title[0].isupper() and len(title) > 8


def test_loads_through_the_recs_loader_without_problems(shop_dir: Path) -> None:
    from recs.data import leave_last_out, load_dataset

    dataset, report = load_dataset(shop_dir)
    assert report.lines() == []
    assert dataset.n_items == pl.read_csv(shop_dir / "items.csv").height
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    assert split.test["user_id"].n_unique() > 0.8 * dataset.n_users


# --- sizes ------------------------------------------------------------------------------------


def test_sizes_at_scale_one(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], purchases: pl.DataFrame) -> None:
    items, events, _ = shop
    assert 600 <= items.height <= 1000
    n_users = events["user_id"].n_unique()
    assert 400 <= n_users <= 600
    assert 15_000 <= events.height <= 40_000
    orders_per_user = purchases.group_by("user_id").agg(pl.col("order_id").n_unique().alias("n"))["n"]
    assert orders_per_user.len() == n_users  # every user bought something
    assert (orders_per_user >= 3).mean() > 0.8
    assert orders_per_user.mean() >= 3


def test_scale_two_is_about_twice_as_large() -> None:
    items1, events1, bundles1 = generate_demo_shop(seed=1, scale=1.0)
    items2, events2, bundles2 = generate_demo_shop(seed=1, scale=2.0)
    assert 1.8 <= items2.height / items1.height <= 2.2
    assert 1.8 <= events2["user_id"].n_unique() / events1["user_id"].n_unique() <= 2.2
    assert 1.6 <= events2.height / events1.height <= 2.4
    assert 1.6 <= bundles2["bundle_id"].n_unique() / bundles1["bundle_id"].n_unique() <= 2.4


# --- behaviour the models must be able to learn -----------------------------------------------


def test_complements_map_is_symmetric_and_covers_every_leaf() -> None:
    assert set(COMPLEMENTS) == set(LEAVES)
    assert len({leaf.split(" > ")[0] for leaf in LEAVES}) >= 8
    for leaf, others in COMPLEMENTS.items():
        assert others and leaf not in others
        assert all(leaf in COMPLEMENTS[o] for o in others)
    assert "Outdoors > Camping > Sleeping Bags" in COMPLEMENTS["Outdoors > Camping > Tents"]
    assert set(CONSUMABLES) < set(LEAVES)


def test_orders_pair_complements_not_substitutes(purchases: pl.DataFrame) -> None:
    lines = purchases.select("order_id", "category")
    pairs = lines.join(lines, on="order_id", suffix="_b").filter(pl.col("category") < pl.col("category_b"))
    is_complement = [b in COMPLEMENTS[a] for a, b in pairs.select("category", "category_b").iter_rows()]
    assert sum(is_complement) > 500
    assert sum(is_complement) / len(is_complement) > 0.7
    per_order = lines.group_by("order_id").agg(pl.len().alias("n"), pl.col("category").n_unique().alias("leaves"))
    multi = per_order.filter(pl.col("n") > 1)
    assert (multi["n"] == multi["leaves"]).mean() > 0.9  # mostly no two substitutes in one order


def test_consumables_are_rebought_and_new_items_are_bought_too(purchases: pl.DataFrame) -> None:
    times = purchases.group_by("user_id", "item_id", "category").agg(pl.col("order_id").n_unique().alias("orders"))
    rebought = times.filter(pl.col("orders") >= 2)
    assert rebought.height > 300
    assert rebought["category"].is_in(list(CONSUMABLES)).mean() > 0.9
    assert rebought["user_id"].n_unique() > 150

    # The last order of a user: for some it repeats earlier purchases, for many it is new to them.
    ranked = purchases.with_columns(pl.col("timestamp").max().over("user_id").alias("last"))
    last = ranked.filter(pl.col("timestamp") == pl.col("last")).select("user_id", "item_id").unique()
    before = ranked.filter(pl.col("timestamp") < pl.col("last")).select("user_id", "item_id").unique()
    repeat = last.join(before, on=["user_id", "item_id"], how="semi")
    share = repeat.height / last.height
    assert 0.1 < share < 0.7


def test_cold_items_exist_and_are_bought_after_first_seen(
    shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], purchases: pl.DataFrame
) -> None:
    items, events, _ = shop
    cold = items.filter(pl.col("first_seen") >= COLD_FROM)
    assert 0.04 * items.height <= cold.height <= 0.14 * items.height
    cold_bought = purchases.filter(pl.col("first_seen") >= COLD_FROM)
    assert cold_bought["item_id"].n_unique() >= 10
    assert cold_bought["user_id"].n_unique() >= 10
    assert (events.filter(pl.col("timestamp") < COLD_FROM)["item_id"].is_in(cold["item_id"].implode())).sum() == 0


def test_out_of_stock_items_are_rarely_bought_recently(
    shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], purchases: pl.DataFrame
) -> None:
    items = shop[0]
    assert 0.05 <= (items["in_stock"] == "false").mean() <= 0.16
    last_ten_days = (PERIOD_END - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = purchases.filter(pl.col("timestamp") >= last_ten_days)
    assert recent.height > 100
    assert (recent["in_stock"] == "false").sum() == 0


def test_titles_read_alike_within_a_leaf_and_differ_across(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    items = shop[0]
    assert items["title"].n_unique() > 0.95 * items.height

    def words(title: str) -> set[str]:
        return set(title.lower().replace(",", "").split())

    by_leaf = items.group_by("category", maintain_order=True).agg(pl.col("title").head(6))
    leaves = [[words(t) for t in titles] for titles in by_leaf["title"]]

    def jaccard(a: set[str], b: set[str]) -> float:
        return len(a & b) / len(a | b)

    within = [jaccard(ts[i], ts[j]) for ts in leaves for i in range(len(ts)) for j in range(i + 1, len(ts))]
    across = [jaccard(a[0], b[0]) for k, a in enumerate(leaves) for b in leaves[k + 1 :]]
    assert sum(within) / len(within) > 3 * sum(across) / len(across)


def test_budget_shapes_what_users_buy(shop: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], purchases: pl.DataFrame) -> None:
    # Price position within the leaf of what a user buys is consistent: users differ in budget.
    items = shop[0].with_columns(pl.col("price").cast(pl.Float64))
    items = items.with_columns(
        ((pl.col("price").rank() - 1) / (pl.len() - 1)).over("category").alias("position")
    )
    bought = purchases.join(items.select("item_id", "position"), on="item_id")
    per_user = bought.group_by("user_id").agg(pl.col("position").mean(), pl.len()).filter(pl.col("len") >= 5)
    assert per_user["position"].std() > 0.1
