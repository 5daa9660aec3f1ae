"""`recs query` and `recs bundle`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recs.cli.common import ConfigOption, app, console, err_console, handle_errors, runtime_options
from recs.errors import ConfigError


@app.command("query")
@handle_errors
def query(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder.")],
    user: Annotated[str | None, typer.Option("--user", help="User id.")] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.")] = 10,
    category: Annotated[str | None, typer.Option("--category", help="Only this category (or below).")] = None,
    in_stock: Annotated[bool, typer.Option("--in-stock", help="Only items in stock.")] = False,
    exclude_bought: Annotated[bool, typer.Option("--exclude-bought", help="Leave out items the user bought.")] = False,
    history: Annotated[str | None, typer.Option("--history", help="Item ids ID,ID,... for someone not in the data.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="A session or search query as the user tower's input.")] = None,
    unknown_user: Annotated[str, typer.Option("--unknown-user", help="raise | warn | fallback (popularity).")] = "fallback",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    show_history: Annotated[bool, typer.Option("--show-history", help="Also print the user's recent history.")] = False,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the cross-encoder: the learned ranker's order.")] = False,
    rerank_top: Annotated[int | None, typer.Option("--rerank-top", help="How many top items the cross-encoder rescores.")] = None,
    diversity: Annotated[float, typer.Option("--diversity", help="0..1: maximal-marginal-relevance diversity (0 = off).")] = 0.0,
    category_cap: Annotated[int | None, typer.Option("--category-cap", help="At most N items per category.")] = None,
    novelty: Annotated[bool, typer.Option("--novelty", help="Only items new to the user (a 'discover' shelf).")] = False,
    price_min: Annotated[float | None, typer.Option("--price-min", help="Lowest price.")] = None,
    price_max: Annotated[float | None, typer.Option("--price-max", help="Highest price.")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", help="Item ids to leave out, ID,ID,...")] = None,
    time_budget_ms: Annotated[float | None, typer.Option("--time-budget-ms", help="The request's time budget: past it the cross-encoder is skipped (degraded). Default: the model's.")] = None,
    config: ConfigOption = None,
) -> None:
    """Recommend items for a user (or a history / a text) and print them. The [serving] section of
    --config sets the ONNX runtime (precision, threads)."""
    from recs.serving.engine import Engine
    from recs.serving.requests import check_policy

    check_policy(unknown_user, "--unknown-user")
    if user is None and not history and not text:
        raise ConfigError("give --user, --history or --text")
    engine = Engine.load(model, runtime=runtime_options(config))
    items_history = [h.strip() for h in history.split(",") if h.strip()] if history else None
    overrides: dict[str, Any] = {"rerank": not no_rerank, "diversity": diversity, "novelty": novelty}
    if rerank_top is not None:
        overrides["rerank_top"] = rerank_top
    if category_cap is not None:
        overrides["category_cap"] = category_cap
    if time_budget_ms is not None:
        overrides["time_budget_ms"] = time_budget_ms
    excluded = [e.strip() for e in exclude.split(",") if e.strip()] if exclude else []
    results = engine.recommend(
        user_id=user, k=k, history=items_history, text=text, category=category, price_min=price_min,
        price_max=price_max, in_stock=in_stock,
        exclude_bought=exclude_bought, exclude=excluded, unknown_user=unknown_user,  # type: ignore[arg-type]
        **overrides,
    )
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in results]))
        if results.degraded:  # stdout stays JSON
            err_console.print("note: degraded: the cross-encoder missed the time budget; the ranker's order is served", highlight=False)
        return
    if not results:
        console.print("no item matches the filters (category, price, stock, exclusions) of this request", highlight=False)
        return
    if show_history and user is not None and engine.retriever.known_user(user):
        console.print(f"[bold]recent history of {user}:[/bold] {engine.retriever.context(user_id=user).state.text[:300]}", highlight=False)
    flag = " [yellow](degraded: cross-encoder over its time budget)[/yellow]" if results.degraded else ""
    table = Table(title=f"recommendations for {user or 'the given history/text'}{flag}")
    for column in ("rank", "item id", "title", "price", "score", "source", "reason"):
        table.add_column(column, justify="right" if column in ("rank", "price", "score") else "left")
    for r in results:
        table.add_row(str(r.rank), r.item_id, r.title[:50], "" if r.price is None else f"{r.price:.2f}", f"{r.score:.4f}", r.source, r.reason)
    console.print(table)


def parse_size(text: str) -> tuple[int, int]:
    """'2-4' -> (2, 4); '3' -> (3, 3)."""
    parts = [p.strip() for p in text.split("-")]
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        low, high = 0, -1
    if len(parts) > 2 or low < 1 or high < low:
        raise ConfigError(f"--size: expected MIN-MAX with 1 <= MIN <= MAX (e.g. 2-4), got '{text}'")
    return low, high


@app.command("bundle")
@handle_errors
def bundle_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder with a set scorer (`recs train-bundler`).")],
    user: Annotated[str | None, typer.Option("--user", help="User id: bundles for this user.")] = None,
    item: Annotated[str | None, typer.Option("--item", help="Anchor item id: bundles around it.")] = None,
    items: Annotated[str | None, typer.Option("--items", help="Anchor item ids ID,ID,...: all in every bundle.")] = None,
    size: Annotated[str, typer.Option("--size", help="Items per bundle, MIN-MAX.")] = "2-4",
    budget: Annotated[float | None, typer.Option("--budget", help="Highest total price.")] = None,
    n: Annotated[int, typer.Option("--n", help="How many distinct bundles.")] = 3,
    max_shared: Annotated[int | None, typer.Option("--max-shared", help="Non-anchor items two bundles may share (default 1: [bundling.compose] max_shared_items).")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", help="Item ids to leave out, ID,ID,...")] = None,
    allow_same_leaf: Annotated[str | None, typer.Option("--allow-same-leaf", help="Leaf categories that may repeat (full paths, comma-separated; * = any).")] = None,
    include_out_of_stock: Annotated[bool, typer.Option("--include-out-of-stock", help="Allow items that are out of stock.")] = False,
    curated: Annotated[bool, typer.Option("--curated", help="Rank the curated bundles for --user instead of composing new ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    config: ConfigOption = None,
) -> None:
    """Compose complementary bundles for a user and/or around anchor items, under constraints."""
    from recs.data import category as category_rule
    from recs.serving.engine import Engine
    from recs.serving.requests import check_positive_int

    anchors = ([item] if item else []) + ([i.strip() for i in items.split(",") if i.strip()] if items else [])
    if user is None and not anchors:
        raise ConfigError("give --user, --item or --items")
    check_positive_int(n, "--n")
    low, high = parse_size(size)
    engine = Engine.load(model, runtime=runtime_options(config))
    if curated:
        ranked = engine.rank_bundles(user, k=n)
        if as_json:
            console.print_json(json.dumps([r.to_dict() for r in ranked]))
            return
        table = Table(title=f"curated bundles for {user or 'anyone'}")
        for column in ("rank", "bundle", "title", "score", "items"):
            table.add_column(column, justify="right" if column in ("rank", "score") else "left")
        for r in ranked:
            table.add_row(str(r.rank), r.bundle_id, r.title[:40], f"{r.score:.3f}", "; ".join(t[:30] for t in r.titles))
        console.print(table)
        return
    bundles = engine.bundle(
        user, items=anchors, size=(low, high), budget=budget, n=n, in_stock=not include_out_of_stock,
        exclude=[e.strip() for e in exclude.split(",") if e.strip()] if exclude else None,
        allow_same_leaf=[a.strip() for a in allow_same_leaf.split(",") if a.strip()] if allow_same_leaf else None,
        max_shared=max_shared,
    )
    if as_json:
        console.print_json(json.dumps({"bundles": [b.to_dict() for b in bundles], "reason": bundles.reason}))
        return
    if not bundles:
        console.print(f"no bundle: {bundles.reason}", highlight=False)
        return
    for b in bundles:
        price = "unknown" if b.total_price is None else f"{b.total_price:.2f}"
        pref = "" if b.user_preference is None else f", P(user buys) {b.user_preference:.3f}"
        table = Table(title=f"bundle {b.rank}: total {price}, score {b.score:.3f}, P(real set) {b.set_score:.3f}{pref}")
        for column in ("item id", "title", "price", "category", "why"):
            table.add_column(column, justify="right" if column == "price" else "left")
        for i in b.items:
            table.add_row(i.item_id, i.title[:50], "" if i.price is None else f"{i.price:.2f}", category_rule.leaf(i.category), i.reason)
        console.print(table)

