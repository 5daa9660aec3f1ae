"""One owner per rule: the category rule and Filters everywhere, the import graph without
cycles, the root configuration, and `Engine.fit` running the CLI's chain in one call."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import recs
from recs.config import RecsConfig, load_config
from recs.data import category as cat
from recs.errors import ConfigError
from recs.retrieval.filters import CatalogMasks, Filters
from recs.serving import Engine

PACKAGE = Path(recs.__file__).parent


def _imports(path: Path, module: str) -> set[str]:
    """Modules of `recs` that `module` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{prefix}.{base}" if node.module else prefix
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m == "recs" or m.startswith("recs.")}


def test_the_package_has_no_import_cycle() -> None:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("recs", *path.relative_to(PACKAGE).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, name):
            while imported and imported not in modules:
                imported = imported.rsplit(".", 1)[0] if "." in imported else ""
            # A module importing its own package (or a package its submodule) is not a cycle.
            if imported and imported != name and not name.startswith(imported + ".") and not imported.startswith(name + "."):
                targets.add(imported)
        edges[name] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_stages_do_not_import_the_layers_above_them() -> None:
    order = ["data", "encoders", "retrieval", "ranking", "bundling", "serving"]
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in order:
            continue
        name = ".".join(("recs", *Path(*parts).with_suffix("").parts))
        for imported in _imports(path, name):
            top = imported.split(".")[1] if imported.count(".") >= 1 else ""
            assert top not in ("evaluation", "export", "cli"), f"{name} imports {imported}"
            if top in order:
                assert order.index(top) <= order.index(parts[0]), f"{name} imports {imported} (data flows one way)"


def test_category_rule() -> None:
    assert cat.normalise(" Home>  KITCHEN > knives ") == "home > kitchen > knives"
    assert cat.display("Home>Kitchen") == "Home > Kitchen"
    assert cat.top("Home > Kitchen") == "Home" and cat.leaf("Home > Kitchen") == "Kitchen"
    assert cat.top(None) == "" and cat.leaf("") == ""
    assert cat.is_under("Home > Kitchen > Knives", "home > kitchen")
    assert cat.is_under("Home", "HOME")
    assert not cat.is_under("Homeware", "Home") and not cat.is_under("Home", "")
    assert cat.like_prefix("50%_off") == "50\\%\\_off > %"


def test_filters_mask_and_validation() -> None:
    masks = CatalogMasks(
        ["Outdoors > Tents", "outdoors", "Kitchen", None],
        np.array([10.0, np.nan, 30.0, 50.0]),
        np.array([True, False, True, True]),
        {"a": 0, "b": 1, "c": 2, "d": 3},
    )
    assert masks.mask(Filters()) is None
    assert masks.mask(Filters(category="OUTDOORS")).tolist() == [True, True, False, False]
    # Items without a price are kept by a price range.
    assert masks.mask(Filters(price_min=20)).tolist() == [False, True, True, True]
    assert masks.mask(Filters(price_max=20, in_stock_only=True)).tolist() == [True, False, False, False]
    assert masks.mask(Filters(exclude=("c", "zz"))).tolist() == [True, True, False, True]
    assert masks.mask(Filters(exclude_bought=True), np.array([0, 3])).tolist() == [False, True, True, False]
    assert masks.catalog_mask(Filters(category="outdoors")) is masks.catalog_mask(Filters(category=" Outdoors "))
    with pytest.raises(ConfigError, match="above price_max"):
        Filters(price_min=100, price_max=10)
    with pytest.raises(ConfigError, match="finite"):
        Filters(price_min=float("nan"))
    with pytest.raises(ConfigError, match="empty category"):
        Filters(category=" > ")


def test_engine_category_filter_is_case_insensitive_like_the_index(ranked_artifact: Path) -> None:
    """`engine.recommend(category="outdoors")` returned nothing while the index alone returned 10."""
    engine = Engine.load(ranked_artifact)
    r = engine.retriever
    top = next(cat.top(c) for c in r.categories if c)
    user = r.events["user_id"][0]
    lower = engine.recommend(user_id=user, k=10, category=top.lower())
    assert lower, "the case-folded category filter returned nothing"
    assert [i.item_id for i in lower] == [i.item_id for i in engine.recommend(user_id=user, k=10, category=top.upper())]
    assert all(cat.is_under(r.categories[r.catalog.row_of[i.item_id]], top) for i in lower)
    ids, _ = r.index.search(r.item_vectors[:1], 10, category=top.lower())
    assert ids[0] and all(cat.is_under(r.categories[r.catalog.row_of[i]], top) for i in ids[0])
    prices = r.masks.prices
    low, high = np.nanpercentile(prices, [25, 75])
    within = engine.recommend(user_id=user, k=10, price_min=float(low), price_max=float(high))
    assert within and all(i.price is None or low <= i.price <= high for i in within)


def test_config_reads_every_section(tmp_path: Path) -> None:
    path = tmp_path / "recs.toml"
    path.write_text('[data]\non_bad_rows = "skip"\n[retrieval.candidates]\nn_two_tower = 50\n'
                    '[ranking]\ntrain_cross_encoder = false\n[bundling.train]\nepochs = 2\n[serving.options]\nrerank_top = 0\n')
    config = load_config(path)
    assert config.data.on_bad_rows == "skip" and config.retrieval.candidates.n_two_tower == 50
    assert not config.ranking.train_cross_encoder and config.bundling.train.epochs == 2
    assert config.serving.options.rerank_top == 0
    path.write_text("[data]\nitem_template = '{title}'\n")  # accepted and ignored before: now refused
    with pytest.raises(ConfigError, match="item_template"):
        load_config(path)
    assert load_config(None) == RecsConfig()


def test_engine_fit_runs_the_whole_chain(tiny_model_dir: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    from recs.data import load_dataset

    dataset, _ = load_dataset(small_demo_dir)
    config = RecsConfig.parse_dict({
        "retrieval": {"towers": {"model": str(tiny_model_dir)},
                      "train": {"epochs": 1, "batch_size": 32, "max_pairs_per_epoch": 128, "valid_users": 30}},
        "ranking": {"train_cross_encoder": False},
        "bundling": {"train": {"epochs": 1}},
    })
    raw_events = dataset.events.drop("basket_id").with_columns(pl.col("timestamp").cast(pl.Utf8))
    engine = Engine.fit(dataset.items, raw_events, config, out=tmp_path / "model", bundles=dataset.bundles, show_progress=False)
    assert engine.pipeline.ranker is not None and engine.bundler is not None
    user = dataset.events["user_id"][0]
    assert len(engine.recommend(user_id=user, k=5)) == 5
    saved = json.loads((tmp_path / "model" / "recs_config.json").read_text())
    assert saved["retrieval"]["train"]["max_pairs_per_epoch"] == 128
    assert json.loads((tmp_path / "model" / "rank_options.json").read_text()) == engine.options.model_dump(mode="json")
