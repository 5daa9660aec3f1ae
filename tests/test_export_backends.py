"""Item vectors into search backends: Parquet/NPY, pgvector (a real server), OpenSearch/ES files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.errors import ConfigError
from recs.export.backends import (
    elasticsearch_mapping,
    export_search_index,
    opensearch_mapping,
    read_item_vectors,
)


@pytest.fixture(scope="module")
def data(trained_artifact: Path):
    return read_item_vectors(trained_artifact)


def test_parquet_and_npy_carry_ids_fields_and_vectors(trained_artifact: Path, data, tmp_path: Path) -> None:
    export_search_index(trained_artifact, "parquet", out=tmp_path / "items.parquet")
    frame = pl.read_parquet(tmp_path / "items.parquet")
    assert frame["item_id"].to_list() == data.ids
    assert {"title", "category", "price", "in_stock"} <= set(frame.columns)
    assert np.array_equal(np.stack(frame["vector"].to_numpy()), data.vectors)
    export_search_index(trained_artifact, "npy", out=tmp_path / "npy", fields=["title"])
    assert np.array_equal(np.load(tmp_path / "npy" / "vectors.npy"), data.vectors)
    assert pl.read_parquet(tmp_path / "npy" / "items.parquet").columns == ["item_id", "title"]
    with pytest.raises(ConfigError, match="unknown item field"):
        export_search_index(trained_artifact, "npy", out=tmp_path / "x", fields=["colour"])
    with pytest.raises(ConfigError, match="--to must be"):
        export_search_index(trained_artifact, "milvus", out=tmp_path / "x")


@pytest.mark.parametrize("backend", ["opensearch", "elasticsearch"])
def test_search_engine_mapping_and_bulk_ndjson(trained_artifact: Path, data, tmp_path: Path, backend: str) -> None:
    report = export_search_index(trained_artifact, backend, out=tmp_path / backend, index="shop-items")
    mapping = json.loads((tmp_path / backend / "mapping.json").read_text())
    vector = mapping["mappings"]["properties"]["embedding"]
    if backend == "opensearch":
        assert mapping == opensearch_mapping(data) and mapping["settings"]["index"]["knn"] is True
        assert vector["type"] == "knn_vector" and vector["dimension"] == data.dim
        assert vector["method"]["space_type"] == "innerproduct"
    else:
        assert mapping == elasticsearch_mapping(data)
        assert vector == {"type": "dense_vector", "dims": data.dim, "index": True, "similarity": "dot_product"}
    properties = mapping["mappings"]["properties"]
    assert properties["item_id"]["type"] == "keyword" and properties["price"]["type"] == "double"
    assert properties["in_stock"]["type"] == "boolean"
    lines = (tmp_path / backend / "bulk.ndjson").read_text().splitlines()
    assert len(lines) == 2 * len(data.ids) == 2 * report["items"]
    for n, (action, doc) in enumerate(zip(lines[::2], lines[1::2], strict=True)):
        action, doc = json.loads(action), json.loads(doc)
        assert action == {"index": {"_index": "shop-items", "_id": data.ids[n]}}
        assert doc["item_id"] == data.ids[n] and len(doc["embedding"]) == data.dim
        assert np.allclose(doc["embedding"], data.vectors[n], atol=1e-7)
    query = json.loads((tmp_path / backend / "query.json").read_text())
    assert "embedding" in json.dumps(query)


def test_pgvector_round_trip_exact_topk_equals_faiss_flat(trained_artifact: Path, data, tmp_path: Path) -> None:
    pgserver = pytest.importorskip("pgserver")
    psycopg = pytest.importorskip("psycopg")
    import faiss
    from typer.testing import CliRunner

    from recs.cli import app
    from recs.export.backends import pgvector_search

    flat = faiss.IndexFlatIP(data.dim)
    flat.add(data.vectors)
    rng = np.random.default_rng(0)
    queries = np.concatenate([rng.standard_normal((6, data.dim)), data.vectors[:2] + 0.1 * rng.standard_normal((2, data.dim))]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = 10
    with pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete") as server:
        uri = server.get_uri()
        done = CliRunner().invoke(app, ["export-vectors", "--model", str(trained_artifact), "--to", "pgvector", "--dsn", uri, "--table", "shop_items"])
        assert done.exit_code == 0, done.output
        assert "ORDER BY embedding <#>" in done.output
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT count(*) FROM shop_items").fetchone()[0] == len(data.ids)
            index = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'shop_items' AND indexdef ILIKE '%hnsw%'").fetchone()
            assert index is not None and "vector_ip_ops" in index[0]
            scores, rows = flat.search(queries, k)
            for q, score_row, id_row in zip(queries, scores, rows, strict=True):
                got = pgvector_search(conn, "shop_items", q, k, exact=True)
                want = [data.ids[i] for i in id_row]
                got_ids, got_scores = [g[0] for g in got], np.array([g[1] for g in got])
                assert np.allclose(got_scores, score_row, atol=1e-5)
                # Same items in the same order (up to exact float ties, where either order is right).
                assert got_ids == want or (set(got_ids) == set(want) and np.allclose(np.sort(got_scores), np.sort(score_row), atol=1e-6))
            # The HNSW path with filters: only allowed items come back, best first.
            category = data.items["category"][0].split(" > ")[0]
            excluded = data.ids[:3]
            hits = pgvector_search(conn, "shop_items", queries[0], 5, category=category, in_stock_only=True, exclude=excluded)
            allowed = data.items.filter(
                (pl.col("category").str.starts_with(category + " > ") | (pl.col("category") == category))
                & pl.col("in_stock").fill_null(True) & ~pl.col("item_id").is_in(excluded)
            )["item_id"].to_list()
            assert hits and all(i in allowed for i, _ in hits)
            assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
            # The engine's category rule: case and spacing do not matter.
            shouted = pgvector_search(conn, "shop_items", queries[0], 5, category=f" {category.upper()} ", in_stock_only=True, exclude=excluded)
            assert shouted == hits
        # --replace reloads into the same table.
        done = CliRunner().invoke(app, ["export-vectors", "--model", str(trained_artifact), "--to", "pgvector", "--dsn", uri, "--table", "shop_items", "--replace", "--fields", "title,category,in_stock"])
        assert done.exit_code == 0, done.output
