"""Adapters from the public benchmark datasets to the data contract (`recs.data.schema.Dataset`).

The raw files live outside the project, in `../shared/datasets/` beside the checkout (override with the
environment variable `RECS_DATASETS`); nothing is copied or cached into the project tree. Every loader
returns frames with exactly the canonical dtypes of `recs.data.schema` (ITEMS_SCHEMA, EVENTS_SCHEMA with
`basket_id` set by `assign_baskets`, BUNDLES_SCHEMA), events sorted by (user_id, timestamp), every event
item present in `items`, and no NaN.

Each loader takes `root`: the datasets folder (the one holding `online_retail/`, `amazon_bundles/`,
`movielens_small/`), or the dataset's own folder; `None` means `datasets_root()`. An optional `report`
dict is filled with counts of what was read and dropped, and why.

Decisions (see each loader's docstring for the reasons):
- online_retail: one event per (invoice, stock code), quantities summed; service lines (postage, carriage,
  manual, discounts, fees, adjustments, test items, gift vouchers) dropped; no category (the data has none).
- amazon_bundles: events from `user_bundle.csv` x `bundle_item.csv`, one order per user-bundle interaction;
  `user_item.csv` is not read (it is exactly the same items, without the bundle structure).
- movielens_small: every rating is a "purchase" in its own order (next-item protocol); session windows
  would make baskets of up to 1,000 movies.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recs.data.baskets import assign_baskets
from recs.data.schema import (
    BUNDLES_SCHEMA,
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    TIMESTAMP_DTYPE,
    Dataset,
)

ENV_VAR = "RECS_DATASETS"
AMAZON_DOMAINS: tuple[str, ...] = ("electronic", "clothing", "food")
DATASET_NAMES: tuple[str, ...] = (
    "online_retail",
    "amazon_bundles/electronic",
    "amazon_bundles/clothing",
    "amazon_bundles/food",
    "movielens_small",
)

ONLINE_RETAIL_FILE = "online_retail_II_combined.csv.gz"
AMAZON_FILES: tuple[str, ...] = (
    "item_titles.csv",
    "item_categories.csv",
    "user_bundle.csv",
    "bundle_item.csv",
    "bundle_intent.csv",
)
AMAZON_SESSION_FILES: tuple[str, ...] = (
    "user_session.csv",
    "session_item.csv",
    "session_bundle.csv",
)
MOVIELENS_FILES: tuple[str, ...] = ("movies.csv", "ratings.csv")

# online_retail: stock codes that are services, not products. Checked on the data: every code without a
# digit is a service line (POST, DOT, M, D, S, B, CRUK, PADS, BANK CHARGES, AMAZONFEE, ...) except the
# "DCGS..." dotcom-gift-shop products (e.g. DCGSSBOY "BOYS PARTY BAG"); among codes with digits the
# services are C2/C3 (carriage), 23444 ("Next Day Carriage"), 23574 ("PACKING CHARGE"), ADJUST2, TEST001/2
# and the GIFT_0001_* vouchers.
ONLINE_RETAIL_SERVICE_CODES: frozenset[str] = frozenset({"C2", "C3", "23444", "23574"})
ONLINE_RETAIL_SERVICE_PREFIXES: tuple[str, ...] = ("ADJUST", "TEST", "GIFT")
ONLINE_RETAIL_PRODUCT_PREFIXES: tuple[str, ...] = ("DCGS",)

_NO_GENRES = "(no genres listed)"


# ----------------------------------------------------------------------------------------------- paths


def datasets_root() -> Path:
    """`$RECS_DATASETS`, else `../shared/datasets` beside the project checkout."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _find_dir(root: str | Path | None, candidates: Iterable[str], required: Iterable[str]) -> Path:
    """The first of `root/<candidate>` (then `root` itself) that holds every required file."""
    base = Path(root) if root is not None else datasets_root()
    required = tuple(required)
    tried = [base / c for c in candidates] + [base]
    for folder in tried:
        if all((folder / f).is_file() for f in required):
            return folder
    raise FileNotFoundError(
        f"dataset files {', '.join(required)} not found in any of: {', '.join(str(t) for t in tried)}"
    )


def _amazon_dir(
    root: str | Path | None, domain: str, required: Iterable[str] = AMAZON_FILES
) -> Path:
    if domain not in AMAZON_DOMAINS:
        raise ValueError(
            f"unknown amazon_bundles domain {domain!r}; expected one of {AMAZON_DOMAINS}"
        )
    return _find_dir(root, (f"amazon_bundles/{domain}", domain), required)


# ------------------------------------------------------------------------------------------- canonical


def _canonical_items(items: pl.DataFrame) -> pl.DataFrame:
    cols = [
        (pl.col(name) if name in items.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in ITEMS_SCHEMA.items()
    ]
    return items.select(cols).sort("item_id")


def _canonical_events(events: pl.DataFrame) -> pl.DataFrame:
    """Cast to EVENTS_SCHEMA, set `basket_id` (assign_baskets), sort by (user_id, timestamp, item_id)."""
    cols = [
        (pl.col(name) if name in events.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in EVENTS_SCHEMA.items()
        if name != "basket_id"
    ]
    events = assign_baskets(events.select(cols))
    return events.select([pl.col(n).cast(d) for n, d in EVENTS_SCHEMA.items()])


def _canonical_bundles(bundles: pl.DataFrame) -> pl.DataFrame:
    return bundles.select([pl.col(n).cast(d) for n, d in BUNDLES_SCHEMA.items()]).sort(
        ["bundle_id", "item_id"]
    )


def _epoch_seconds(col: str) -> pl.Expr:
    return (
        pl.from_epoch(pl.col(col).cast(pl.Int64), time_unit="s")
        .dt.replace_time_zone("UTC")
        .cast(TIMESTAMP_DTYPE)
    )


def _clean_text(value: str | None) -> str | None:
    """Unescape HTML entities (`&amp;`), collapse whitespace (incl. line breaks); '' -> None."""
    if value is None:
        return None
    text = " ".join(html.unescape(value).split())
    return text or None


def _clean_text_col(series: pl.Series) -> pl.Series:
    return pl.Series(series.name, [_clean_text(v) for v in series.to_list()], dtype=pl.Utf8)


def _fill(report: dict[str, Any] | None, **values: Any) -> None:
    if report is not None:
        report.update(values)


# -------------------------------------------------------------------------------------- online retail


def is_online_retail_product(code: pl.Expr) -> pl.Expr:
    """True for stock codes that are products (see ONLINE_RETAIL_SERVICE_CODES); expects upper case."""
    service = (
        code.is_in(sorted(ONLINE_RETAIL_SERVICE_CODES))
        | code.str.contains("^(" + "|".join(ONLINE_RETAIL_SERVICE_PREFIXES) + ")")
        | (
            ~code.str.contains(r"\d")
            & ~code.str.contains("^(" + "|".join(ONLINE_RETAIL_PRODUCT_PREFIXES) + ")")
        )
    )
    return ~service


def load_online_retail(
    root: str | Path | None = None, report: dict[str, Any] | None = None
) -> Dataset:
    """UCI Online Retail II (combined csv.gz) as a Dataset.

    Kept rows: a customer id, Quantity > 0, an invoice not starting with "C" (cancellation), Price > 0 and
    a product stock code (service lines dropped, see `is_online_retail_product`).
    Items: item_id = StockCode upper-cased; title = its most frequent description on kept rows
    (whitespace-normalised, original upper case: a title-caser mangles "KID'S" and "15CM"); price = median
    unit price on kept rows; category null (the shop has none, and none is invented).
    Events: one "purchase" per (invoice, stock code), quantities summed (an invoice sometimes lists a code
    on several lines); order_id = Invoice; timestamp = InvoiceDate read as UTC.
    """
    folder = _find_dir(root, ("online_retail",), (ONLINE_RETAIL_FILE,))
    raw = pl.read_csv(
        folder / ONLINE_RETAIL_FILE,
        columns=[
            "Invoice",
            "StockCode",
            "Description",
            "Quantity",
            "InvoiceDate",
            "Price",
            "CustomerID",
        ],
        schema_overrides={
            "Invoice": pl.Utf8,
            "StockCode": pl.Utf8,
            "Description": pl.Utf8,
            "Quantity": pl.Float64,
            "InvoiceDate": pl.Utf8,
            "Price": pl.Float64,
            "CustomerID": pl.Utf8,
        },
    )
    df = raw.with_columns(
        pl.col("Invoice").str.strip_chars(),
        pl.col("StockCode").str.strip_chars().str.to_uppercase(),
        # Some exports write customer ids as floats ("13085.0").
        pl.col("CustomerID").str.strip_chars().str.replace(r"\.0+$", ""),
    )
    counts: dict[str, int] = {"rows_read": df.height}
    steps: list[tuple[str, pl.Expr]] = [
        ("no_customer", pl.col("CustomerID").is_not_null() & (pl.col("CustomerID") != "")),
        ("cancelled", ~pl.col("Invoice").str.starts_with("C")),
        ("quantity_not_positive", pl.col("Quantity") > 0),
        ("price_not_positive", pl.col("Price") > 0),
        ("non_product", is_online_retail_product(pl.col("StockCode"))),
    ]
    for reason, keep in steps:
        before = df.height
        df = df.filter(keep.fill_null(False))
        counts[f"dropped_{reason}"] = before - df.height
    counts["rows_kept"] = df.height

    df = df.with_columns(
        pl.col("Description").str.replace_all(r"\s+", " ").str.strip_chars(),
        pl.col("InvoiceDate")
        .str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC", strict=True)
        .cast(TIMESTAMP_DTYPE),
    )
    titles = (
        df.filter(pl.col("Description").is_not_null() & (pl.col("Description") != ""))
        .group_by("StockCode", "Description")
        .len()
        .sort(["StockCode", "len", "Description"], descending=[False, True, False])
        .group_by("StockCode", maintain_order=True)
        .agg(pl.col("Description").first().alias("title"))
    )
    items = (
        df.group_by("StockCode")
        .agg(pl.col("Price").median().alias("price"))
        .join(titles, on="StockCode", how="left")
        .select(
            pl.col("StockCode").alias("item_id"),
            pl.col("title").fill_null(pl.col("StockCode")),
            pl.col("price"),
        )
    )
    events = (
        df.group_by("Invoice", "StockCode")
        .agg(
            pl.col("CustomerID").first().alias("user_id"),
            pl.col("InvoiceDate").min().alias("timestamp"),
            pl.col("Quantity").sum().alias("quantity"),
        )
        .select(
            "user_id",
            pl.col("StockCode").alias("item_id"),
            "timestamp",
            pl.lit("purchase").alias("event"),
            pl.col("Invoice").alias("order_id"),
            "quantity",
        )
    )
    counts["events"] = events.height
    _fill(report, **counts)
    return Dataset(items=_canonical_items(items), events=_canonical_events(events), bundles=None)


# ------------------------------------------------------------------------------------- amazon bundles


def parse_category_path(value: str | None) -> str | None:
    """'[[Electronics,Computers & Accessories,Cases]]' -> 'Electronics > Computers & Accessories > Cases'.

    Levels are separated by a comma *without* a following space: Amazon level names contain ", "
    ("Clothing, Shoes & Jewelry", "Coffee, Tea & Cocoa"). With several paths, the deepest one is kept
    (the first among equals): e.g. clothing items list "[Clothing, Shoes & Jewelry,Women]" beside the
    more informative "[Clothing, Shoes & Jewelry,Women,Clothing,Tops & Tees]". '[[]]' -> None.
    """
    if value is None:
        return None
    text = " ".join(html.unescape(value).split())
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    best: list[str] = []
    for raw_path in re.split(r"\]\s*,\s*\[", text):
        path = raw_path.strip().strip("[]")
        levels = [lvl.strip() for lvl in re.split(r",(?! )", path) if lvl.strip()]
        if len(levels) > len(best):
            best = levels
    return " > ".join(best) if best else None


def _read_amazon(folder: Path, name: str, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read one Amazon bundle csv (comma-separated, header, quoted multi-line values) with the given
    dtypes, renaming 'user ID' -> 'user_id' etc. (the files' header names, in order)."""
    df = pl.read_csv(folder / name, infer_schema_length=0)  # all Utf8: ids stay exact strings
    if df.width != len(columns):
        raise ValueError(f"{folder / name}: expected {len(columns)} columns, found {df.columns}")
    df = df.rename(dict(zip(df.columns, columns, strict=True)))
    return df.with_columns(
        [pl.col(n).str.strip_chars().cast(d) for n, d in columns.items() if d != pl.Utf8]
    )


def load_amazon_bundles(
    root: str | Path | None = None, domain: str = "electronic", report: dict[str, Any] | None = None
) -> Dataset:
    """One domain of the Amazon bundle data (Sun et al., SIGIR'22) as a Dataset.

    Items: every titled item (item_titles.csv), title HTML-unescaped and whitespace-normalised (titles can
    span lines), category from item_categories.csv as a " > " path (`parse_category_path`); no price.
    Events: `user_item.csv` is exactly the multiset of the user's bundle items, so it carries nothing more
    and hides which items were bought together; events are built from user_bundle.csv (user, bundle,
    day timestamp) x bundle_item.csv: each user-bundle interaction is one order
    (order_id = "<user>-<bundle>", so basket_id = "o:<user>-<bundle>"), event "purchase". Bundle items
    outside the titled set are dropped and counted in `report["dropped_untitled_events"]`.
    Bundles: bundle_item.csv (titled items), title = the crowd-written intent (bundle_intent.csv).
    """
    folder = _amazon_dir(root, domain)
    titles = _read_amazon(folder, "item_titles.csv", {"item_id": pl.Utf8, "title": pl.Utf8})
    cats = _read_amazon(folder, "item_categories.csv", {"item_id": pl.Utf8, "category": pl.Utf8})
    titles = titles.with_columns(_clean_text_col(titles["title"])).unique("item_id", keep="first")
    n_titles = titles.height
    titles = titles.filter(pl.col("title").is_not_null())
    cats = cats.with_columns(
        pl.Series(
            "category", [parse_category_path(v) for v in cats["category"].to_list()], dtype=pl.Utf8
        )
    ).unique("item_id", keep="first")
    items = titles.join(cats, on="item_id", how="left")
    titled = items["item_id"].implode()

    user_bundle = _read_amazon(
        folder, "user_bundle.csv", {"user_id": pl.Utf8, "bundle_id": pl.Utf8, "timestamp": pl.Int64}
    ).unique(["user_id", "bundle_id"], keep="first")
    bundle_item = _read_amazon(
        folder, "bundle_item.csv", {"bundle_id": pl.Utf8, "item_id": pl.Utf8}
    ).unique()
    intents = _read_amazon(folder, "bundle_intent.csv", {"bundle_id": pl.Utf8, "title": pl.Utf8})
    intents = intents.with_columns(_clean_text_col(intents["title"])).unique(
        "bundle_id", keep="first"
    )

    joined = user_bundle.join(bundle_item, on="bundle_id", how="inner")
    kept = joined.filter(pl.col("item_id").is_in(titled))
    events = kept.select(
        "user_id",
        "item_id",
        _epoch_seconds("timestamp").alias("timestamp"),
        pl.lit("purchase").alias("event"),
        pl.concat_str([pl.col("user_id"), pl.lit("-"), pl.col("bundle_id")]).alias("order_id"),
    )
    bundles = (
        bundle_item.filter(pl.col("item_id").is_in(titled))
        .join(intents, on="bundle_id", how="left")
        .select("bundle_id", "item_id", "title")
    )
    _fill(
        report,
        domain=domain,
        items_titled=n_titles,
        dropped_empty_titles=n_titles - items.height,
        user_bundle_rows=user_bundle.height,
        events_before_filter=joined.height,
        dropped_untitled_events=joined.height - kept.height,
        dropped_untitled_bundle_items=bundle_item.height - bundles.height,
        bundles=bundles["bundle_id"].n_unique(),
    )
    return Dataset(
        items=_canonical_items(items),
        events=_canonical_events(events),
        bundles=_canonical_bundles(bundles),
    )


@dataclass(frozen=True)
class AmazonSessions:
    """The co-purchase sessions the bundles were cut from.

    `session_items`: session_id, user_id, timestamp (UTC, day granularity), item_id, titled (bool: the item
    has a title, i.e. is in the Dataset's catalog; about 30% of session-only items are not).
    `session_bundles`: session_id, bundle_id.
    """

    session_items: pl.DataFrame
    session_bundles: pl.DataFrame


def amazon_bundle_sessions(
    root: str | Path | None = None, domain: str = "electronic"
) -> AmazonSessions:
    """Session data of one Amazon bundle domain (see AmazonSessions)."""
    folder = _amazon_dir(root, domain, ("item_titles.csv", *AMAZON_SESSION_FILES))
    titled = _read_amazon(folder, "item_titles.csv", {"item_id": pl.Utf8, "title": pl.Utf8})[
        "item_id"
    ]
    user_session = _read_amazon(
        folder,
        "user_session.csv",
        {"user_id": pl.Utf8, "session_id": pl.Utf8, "timestamp": pl.Int64},
    )
    session_item = _read_amazon(
        folder, "session_item.csv", {"session_id": pl.Utf8, "item_id": pl.Utf8}
    )
    session_bundle = _read_amazon(
        folder, "session_bundle.csv", {"session_id": pl.Utf8, "bundle_id": pl.Utf8}
    )
    session_items = (
        session_item.join(user_session, on="session_id", how="left")
        .select(
            "session_id",
            "user_id",
            _epoch_seconds("timestamp").alias("timestamp"),
            "item_id",
            pl.col("item_id").is_in(titled.implode()).alias("titled"),
        )
        .sort(["user_id", "timestamp", "session_id", "item_id"], nulls_last=True)
    )
    return AmazonSessions(
        session_items=session_items,
        session_bundles=session_bundle.sort(["session_id", "bundle_id"]),
    )


# ------------------------------------------------------------------------------------------- movielens


def load_movielens(root: str | Path | None = None, report: dict[str, Any] | None = None) -> Dataset:
    """MovieLens ml-latest-small as a Dataset.

    Items: every movie in movies.csv; title as given ("Toy Story (1995)"); category = first genre;
    description = "Genres: Adventure, Animation, ..." ("(no genres listed)" -> both null).
    Events: every rating is a "purchase" event with its `rating` kept; quantity null.
    Baskets: each rating is its own order (order_id = "<user>-<movie>"), which makes leave_last_out a
    next-item protocol. The alternative, 30-minute session windows, makes useless baskets here: people rate
    in bursts, so half the users have a single session, and the last session (the test target) holds a
    median of 27 and up to 703 movies.
    """
    folder = _find_dir(root, ("movielens_small",), MOVIELENS_FILES)
    movies = pl.read_csv(
        folder / "movies.csv",
        schema_overrides={"movieId": pl.Utf8, "title": pl.Utf8, "genres": pl.Utf8},
    )
    genres = (
        pl.col("genres")
        .str.split("|")
        .list.eval(
            pl.element()
            .str.strip_chars()
            .filter((pl.element() != "") & (pl.element() != _NO_GENRES))
        )
    )
    items = movies.select(
        pl.col("movieId").str.strip_chars().alias("item_id"),
        pl.col("title").str.replace_all(r"\s+", " ").str.strip_chars().alias("title"),
        genres.alias("_genres"),
    ).with_columns(
        pl.when(pl.col("_genres").list.len() > 0)
        .then(pl.concat_str([pl.lit("Genres: "), pl.col("_genres").list.join(", ")]))
        .alias("description"),
        pl.col("_genres").list.first().alias("category"),
        pl.col("title").fill_null(pl.col("item_id")),
    )
    items = items.with_columns(
        pl.when(pl.col("title") == "")
        .then(pl.col("item_id"))
        .otherwise(pl.col("title"))
        .alias("title")
    ).unique("item_id", keep="first")

    ratings = pl.read_csv(
        folder / "ratings.csv",
        schema_overrides={
            "userId": pl.Utf8,
            "movieId": pl.Utf8,
            "rating": pl.Float64,
            "timestamp": pl.Int64,
        },
    )
    known = ratings["movieId"].is_in(items["item_id"].implode())
    kept = ratings.filter(known)
    events = kept.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        _epoch_seconds("timestamp").alias("timestamp"),
        pl.lit("purchase").alias("event"),
        pl.concat_str([pl.col("userId"), pl.lit("-"), pl.col("movieId")]).alias("order_id"),
        pl.col("rating"),
    )
    _fill(report, ratings_read=ratings.height, dropped_unknown_movies=ratings.height - kept.height)
    return Dataset(items=_canonical_items(items), events=_canonical_events(events), bundles=None)


# ----------------------------------------------------------------------------------------- registry


def _required_paths(name: str, root: Path) -> list[Path]:
    if name == "online_retail":
        return [root / "online_retail" / ONLINE_RETAIL_FILE]
    if name.startswith("amazon_bundles/"):
        domain = name.split("/", 1)[1]
        return [root / "amazon_bundles" / domain / f for f in AMAZON_FILES]
    if name == "movielens_small":
        return [root / "movielens_small" / f for f in MOVIELENS_FILES]
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def available_datasets(root: str | Path | None = None) -> list[str]:
    """The names in DATASET_NAMES whose files all exist under `root` (default `datasets_root()`)."""
    base = Path(root) if root is not None else datasets_root()
    return [n for n in DATASET_NAMES if all(p.is_file() for p in _required_paths(n, base))]


def missing_files(name: str, root: str | Path | None = None) -> list[Path]:
    """The files dataset `name` needs that are absent (empty when it can be loaded)."""
    base = Path(root) if root is not None else datasets_root()
    return [p for p in _required_paths(name, base) if not p.is_file()]


def load_dataset_by_name(
    name: str, root: str | Path | None = None, report: dict[str, Any] | None = None
) -> Dataset:
    """Load one of DATASET_NAMES from the datasets root (`root`, default `datasets_root()`)."""
    base = Path(root) if root is not None else datasets_root()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if name == "online_retail":
        return load_online_retail(base / "online_retail", report=report)
    if name == "movielens_small":
        return load_movielens(base / "movielens_small", report=report)
    domain = name.split("/", 1)[1]
    return load_amazon_bundles(base / "amazon_bundles" / domain, domain=domain, report=report)


def describe(dataset: Dataset) -> dict[str, int]:
    """Sizes after adaptation: items, users, events, baskets, bundles."""
    return {
        "items": dataset.n_items,
        "users": dataset.n_users,
        "events": dataset.events.height,
        "baskets": dataset.events["basket_id"].n_unique()
        - int(dataset.events["basket_id"].null_count() > 0),
        "bundles": 0 if dataset.bundles is None else dataset.bundles["bundle_id"].n_unique(),
    }
