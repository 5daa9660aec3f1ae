"""benchmarks/datasets.py: the dataset adapters, on tiny synthetic files in the raw formats."""

from __future__ import annotations

import gzip
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `benchmarks` is a folder beside `recs`, not an installed package
    sys.path.insert(0, str(_ROOT))

from benchmarks.datasets import (  # noqa: E402
    ENV_VAR,
    amazon_bundle_sessions,
    available_datasets,
    datasets_root,
    describe,
    load_amazon_bundles,
    load_dataset_by_name,
    load_movielens,
    load_online_retail,
    missing_files,
    parse_category_path,
)
from recs.data.schema import BUNDLES_SCHEMA, EVENTS_SCHEMA, ITEMS_SCHEMA, Dataset  # noqa: E402

# ------------------------------------------------------------------------------------ raw fixtures

ONLINE_RETAIL_CSV = """\
Invoice,StockCode,Description,Quantity,InvoiceDate,Price,CustomerID,Country,source
489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom,II_2009-2010
489434,79323p,PINK CHERRY LIGHTS,12,2009-12-01 07:45:00,6.75,13085.0,United Kingdom,II_2009-2010
489434,79323P,PINK CHERRY LIGHTS,6,2009-12-01 07:45:00,6.75,13085.0,United Kingdom,II_2009-2010
489434,POST,POSTAGE,1,2009-12-01 07:45:00,18.00,13085.0,United Kingdom,II_2009-2010
489435,85048,15CM CHRISTMAS GLASS BALL  20 LIGHTS,2,2009-12-02 09:00:00,7.95,13085.0,United Kingdom,II_2009-2010
489435,DCGSSBOY,BOYS PARTY BAG,1,2009-12-02 09:00:00,3.29,13085.0,United Kingdom,II_2009-2010
489435,M,Manual,1,2009-12-02 09:00:00,2.00,13085.0,United Kingdom,II_2009-2010
489435,C2,CARRIAGE,1,2009-12-02 09:00:00,50.00,13085.0,United Kingdom,II_2009-2010
489435,ADJUST2,Adjustment by Peter on Jun 25 2010,1,2009-12-02 09:00:00,300.13,13085.0,United Kingdom,II_2009-2010
489435,TEST001,This is a test product.,1,2009-12-02 09:00:00,4.50,13085.0,United Kingdom,II_2009-2010
489435,GIFT_0001_10,Dotcomgiftshop Gift Voucher £10.00,1,2009-12-02 09:00:00,8.33,13085.0,United Kingdom,II_2009-2010
489435,BANK CHARGES,Bank Charges,1,2009-12-02 09:00:00,15.00,13085.0,United Kingdom,II_2009-2010
489435,23444,Next Day Carriage,1,2009-12-02 09:00:00,15.00,13085.0,United Kingdom,II_2009-2010
C489436,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,-2,2009-12-03 10:00:00,6.95,13085.0,United Kingdom,II_2009-2010
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom,I_2010-2011
536365,22752,SET 7 BABUSHKA NESTING BOXES,2,2010-12-01 08:26:00,0.00,17850,United Kingdom,I_2010-2011
536366,71053,WHITE METAL LANTERN,6,2010-12-01 08:28:00,3.39,,United Kingdom,I_2010-2011
536367,84406B,CREAM CUPID HEARTS COAT HANGER,-8,2010-12-01 08:34:00,2.75,17850,United Kingdom,I_2010-2011
"""

# item_titles.csv with a quoted multi-line title and an HTML entity; categories with ", " inside level
# names, several paths, and an empty path.
AMAZON_FILES = {
    "item_titles.csv": (
        "item ID,titles\n"
        '10,"Urban Boundaries Argyle &amp; Stripe Socks,\nColors Grey, Pink"\n'
        "11,Moving Comfort Women's Luna Bra\n"
        '12,"Tommy Hilfiger Men\'s Boxer, 3-Pack"\n'
        "13,Plain Tee\n"
    ),
    "item_categories.csv": (
        "item ID,categories\n"
        '10,"[[Clothing, Shoes & Jewelry,Women],[Clothing, Shoes & Jewelry,Novelty, Costumes & More,'
        'Novelty,Socks]]"\n'
        '11,"[[Clothing, Shoes & Jewelry,Women,Clothing,Lingerie, Sleep & Lounge,Bras]]"\n'
        '12,"[[Clothing, Shoes & Jewelry,Men,Underwear]]"\n'
        '13,"[[]]"\n'
    ),
    "user_bundle.csv": "user ID,bundle ID,timestamp\n0,100,1404864000\n0,101,1405036800\n1,100,1405987200\n",
    "bundle_item.csv": "bundle ID,item ID\n100,10\n100,11\n101,12\n101,13\n101,99\n",
    "bundle_intent.csv": 'bundle ID,intent\n100,"socks and\nunderwear"\n101,Men basics\n',
    "user_session.csv": "user ID,session ID,timestamp\n0,7,1404864000\n",
    "session_item.csv": "session ID,item ID\n7,10\n7,11\n7,55\n8,12\n",
    "session_bundle.csv": "session ID,bundle ID\n7,100\n8,101\n",
}

MOVIES_CSV = """\
movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,Unrated Short (2018),(no genres listed)
"""
RATINGS_CSV = """\
userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964982703
1,3,5.0,964983000
2,2,0.5,1445714994
2,404,3.0,1445714995
"""


def _write_online_retail(root: Path) -> None:
    folder = root / "online_retail"
    folder.mkdir(parents=True)
    with gzip.open(folder / "online_retail_II_combined.csv.gz", "wt", encoding="utf-8") as f:
        f.write(ONLINE_RETAIL_CSV)


def _write_amazon(root: Path, domain: str = "clothing") -> None:
    folder = root / "amazon_bundles" / domain
    folder.mkdir(parents=True)
    for name, text in AMAZON_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")


def _write_movielens(root: Path) -> None:
    folder = root / "movielens_small"
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(MOVIES_CSV, encoding="utf-8")
    (folder / "ratings.csv").write_text(RATINGS_CSV, encoding="utf-8")


def _assert_canonical(ds: Dataset) -> None:
    assert dict(ds.items.schema) == ITEMS_SCHEMA
    assert dict(ds.events.schema) == EVENTS_SCHEMA
    if ds.bundles is not None:
        assert dict(ds.bundles.schema) == BUNDLES_SCHEMA
        assert ds.bundles["item_id"].is_in(ds.items["item_id"].implode()).all()
    assert ds.items["item_id"].is_unique().all()
    assert ds.items["title"].null_count() == 0
    assert (ds.items["title"].str.strip_chars() != "").all()
    assert ds.events["item_id"].is_in(ds.items["item_id"].implode()).all()
    assert ds.events.equals(ds.events.sort(["user_id", "timestamp"], maintain_order=True))
    purchases = ds.events.filter(pl.col("event") == "purchase")
    assert purchases["basket_id"].null_count() == 0
    for frame in (ds.items, ds.events):
        for name, dtype in frame.schema.items():
            if dtype == pl.Float64:
                assert frame[name].is_nan().sum() == 0, name


# ------------------------------------------------------------------------------------ online retail


def test_online_retail_filters_and_maps(tmp_path: Path) -> None:
    _write_online_retail(tmp_path)
    report: dict = {}
    ds = load_online_retail(tmp_path, report=report)
    _assert_canonical(ds)
    assert ds.bundles is None

    # Kept products: 85048, 79323P (lower-case code upper-cased), DCGSSBOY, 85123A; dropped: POST, M, C2,
    # ADJUST2, TEST001, GIFT_0001_10, BANK CHARGES, 23444 (services), 22752 (price 0), 71053 (no customer),
    # 84406B (negative quantity) and the cancellation C489436.
    assert sorted(ds.items["item_id"]) == ["79323P", "85048", "85123A", "DCGSSBOY"]
    assert report["dropped_no_customer"] == 1
    assert report["dropped_cancelled"] == 1
    assert report["dropped_quantity_not_positive"] == 1
    assert report["dropped_price_not_positive"] == 1
    assert report["dropped_non_product"] == 8
    assert not ds.events["order_id"].str.starts_with("C").any()

    items = {r["item_id"]: r for r in ds.items.to_dicts()}
    # Most frequent description (whitespace-normalised), median price, no invented category.
    assert items["85048"]["title"] == "15CM CHRISTMAS GLASS BALL 20 LIGHTS"
    assert items["85048"]["price"] == pytest.approx((6.95 + 7.95) / 2)
    assert ds.items["category"].null_count() == ds.items.height

    # "13085.0" -> "13085"; two lines of one code in one invoice -> one event, quantities summed.
    assert set(ds.events["user_id"]) == {"13085", "17850"}
    pink = ds.events.filter(pl.col("item_id") == "79323P")
    assert pink.height == 1 and pink["quantity"][0] == 18.0
    assert set(ds.events["event"]) == {"purchase"}
    assert set(ds.events["basket_id"]) == {"o:489434", "o:489435", "o:536365"}
    first = ds.events.filter(pl.col("order_id") == "489434")["timestamp"][0]
    assert first.isoformat() == "2009-12-01T07:45:00+00:00"


# ----------------------------------------------------------------------------------- amazon bundles


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "[[Electronics,Computers & Accessories,Touch Screen Tablet Accessories,Cases & Sleeves]]",
            "Electronics > Computers & Accessories > Touch Screen Tablet Accessories > Cases & Sleeves",
        ),
        (
            "[[Grocery & Gourmet Food,Beverages,Coffee, Tea & Cocoa,Coffee]]",
            "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Coffee",
        ),
        (  # several paths: the deepest wins
            "[[Clothing, Shoes & Jewelry,Women],[Clothing, Shoes & Jewelry,Women,Clothing,Tops & Tees]]",
            "Clothing, Shoes & Jewelry > Women > Clothing > Tops & Tees",
        ),
        ("[[A,B],[C,D]]", "A > B"),  # equal depth: the first
        ("[[]]", None),
        (None, None),
    ],
)
def test_parse_category_path(raw: str | None, expected: str | None) -> None:
    assert parse_category_path(raw) == expected


def test_amazon_bundles_items_events_bundles(tmp_path: Path) -> None:
    _write_amazon(tmp_path)
    report: dict = {}
    ds = load_amazon_bundles(tmp_path, "clothing", report=report)
    _assert_canonical(ds)

    items = {r["item_id"]: r for r in ds.items.to_dicts()}
    assert set(items) == {"10", "11", "12", "13"}
    # Multi-line quoted title read whole, HTML entity unescaped, line break folded.
    assert items["10"]["title"] == "Urban Boundaries Argyle & Stripe Socks, Colors Grey, Pink"
    assert items["12"]["title"] == "Tommy Hilfiger Men's Boxer, 3-Pack"
    assert items["10"]["category"] == (
        "Clothing, Shoes & Jewelry > Novelty, Costumes & More > Novelty > Socks"
    )
    assert items["11"]["category"] == (
        "Clothing, Shoes & Jewelry > Women > Clothing > Lingerie, Sleep & Lounge > Bras"
    )
    assert items["13"]["category"] is None

    # Events: user_bundle x bundle_item, one order per user-bundle; untitled item 99 dropped and counted.
    assert report["dropped_untitled_events"] == 1
    assert report["dropped_untitled_bundle_items"] == 1
    ev = ds.events
    assert ev.height == 2 + 2 + 2
    assert set(ev["basket_id"]) == {"o:0-100", "o:0-101", "o:1-100"}
    assert sorted(ev.filter(pl.col("order_id") == "0-101")["item_id"]) == ["12", "13"]
    assert (
        ev.filter(pl.col("user_id") == "1")["timestamp"][0].isoformat()
        == "2014-07-22T00:00:00+00:00"
    )
    assert ev["quantity"].null_count() == ev.height

    b = ds.bundles
    assert b is not None
    assert sorted(b.filter(pl.col("bundle_id") == "101")["item_id"]) == ["12", "13"]
    assert b.filter(pl.col("bundle_id") == "100")["title"][0] == "socks and underwear"
    assert describe(ds) == {"items": 4, "users": 2, "events": 6, "baskets": 3, "bundles": 2}


def test_amazon_sessions(tmp_path: Path) -> None:
    _write_amazon(tmp_path)
    s = amazon_bundle_sessions(tmp_path, "clothing")
    rows = s.session_items.filter(pl.col("session_id") == "7").sort("item_id")
    assert rows["item_id"].to_list() == ["10", "11", "55"]
    assert rows["titled"].to_list() == [True, True, False]
    assert rows["user_id"].to_list() == ["0", "0", "0"]
    assert s.session_items.schema["timestamp"] == EVENTS_SCHEMA["timestamp"]
    # A session nobody is linked to keeps null user and time.
    assert s.session_items.filter(pl.col("session_id") == "8")["user_id"].to_list() == [None]
    assert s.session_bundles.height == 2


def test_amazon_unknown_domain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="domain"):
        load_amazon_bundles(tmp_path, "toys")


# ----------------------------------------------------------------------------------------- movielens


def test_movielens_mapping(tmp_path: Path) -> None:
    _write_movielens(tmp_path)
    report: dict = {}
    ds = load_movielens(tmp_path, report=report)
    _assert_canonical(ds)
    items = {r["item_id"]: r for r in ds.items.to_dicts()}
    assert items["1"]["title"] == "Toy Story (1995)"
    assert items["1"]["category"] == "Adventure"
    assert items["1"]["description"] == "Genres: Adventure, Animation, Children, Comedy, Fantasy"
    assert items["2"]["title"] == "American President, The (1995)"
    assert items["3"]["category"] is None and items["3"]["description"] is None

    # Every rating is a purchase in its own basket, rating kept; unknown movie 404 dropped.
    assert report["dropped_unknown_movies"] == 1
    ev = ds.events
    assert ev.height == 4
    assert set(ev["event"]) == {"purchase"}
    assert ev["basket_id"].n_unique() == ev.height
    assert ev.filter((pl.col("user_id") == "2") & (pl.col("item_id") == "2"))["rating"][0] == 0.5
    assert ev.filter(pl.col("user_id") == "1")["timestamp"][0] == datetime.fromtimestamp(
        964982703, UTC
    )


# ----------------------------------------------------------------------------------------- registry


def test_available_and_by_name(tmp_path: Path) -> None:
    assert available_datasets(tmp_path) == []
    _write_movielens(tmp_path)
    _write_amazon(tmp_path, "food")
    assert available_datasets(tmp_path) == ["amazon_bundles/food", "movielens_small"]
    assert missing_files("online_retail", tmp_path) == [
        tmp_path / "online_retail" / "online_retail_II_combined.csv.gz"
    ]
    ds = load_dataset_by_name("amazon_bundles/food", tmp_path)
    _assert_canonical(ds)
    assert ds.n_items == 4
    with pytest.raises(FileNotFoundError):
        load_dataset_by_name("online_retail", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset_by_name("nope", tmp_path)


def test_datasets_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert datasets_root() == _ROOT.parent / "shared" / "datasets"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    _write_movielens(tmp_path)
    assert datasets_root() == tmp_path
    assert available_datasets() == ["movielens_small"]
    assert load_dataset_by_name("movielens_small").n_users == 2


# ------------------------------------------------------------------------------- benchmark script


def test_baselines_script_runs_and_skips_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("recs.evaluation.protocol")
    pytest.importorskip("recs.evaluation.report")
    import json

    from benchmarks import baselines

    root = tmp_path / "data"
    _write_online_retail(root)
    out = tmp_path / "results"
    rc = baselines.main(
        [
            "--datasets",
            "online_retail,movielens_small",
            "--k",
            "5,10",
            "--methods",
            "popularity,repeat",
            "--no-tune",
            "--root",
            str(root),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "[movielens_small] skipped: missing" in printed
    doc = json.loads((out / "baselines.json").read_text(encoding="utf-8"))
    assert doc["benchmark"] == "baselines"
    rows = doc["rows"]
    assert {(r["dataset"], r["method"], r["slice"]) for r in rows} == {
        ("online_retail", m, s) for m in ("popularity", "repeat") for s in ("all", "new_to_user")
    }
    assert all("recall@10" in r["metrics"] and "ndcg@5" in r["metrics"] for r in rows)
    assert all("test users" in r["notes"] and "leave_last_out" in r["notes"] for r in rows)
    assert (out / "baselines.md").is_file() and (out / "baselines.png").is_file()


def test_baselines_args() -> None:
    from benchmarks import baselines

    args = baselines.parse_args(["--datasets", "movielens_small", "--k", "10,50", "--no-tune"])
    assert args.datasets == ["movielens_small"] and args.k == [10, 50] and args.no_tune
    with pytest.raises(SystemExit):
        baselines.parse_args(["--datasets", "nope"])
