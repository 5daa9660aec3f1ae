"""Item vectors + item fields into existing search backends (numpy, polars, psycopg only: no torch).

A search service that already runs PostgreSQL or OpenSearch/Elasticsearch keeps its engine: the
backend holds the item vectors written here, and the service computes one user vector per request
with the user-tower ONNX graph (`recs.serving.onnx_runtime`) and asks the backend for the top k.

- `parquet`: one file, `item_id`, the fields, `vector` (fixed-size list of float32).
- `npy`: a folder, `vectors.npy` (float32, n x d) and `items.parquet` (ids + fields), row-aligned.
- `pgvector`: a table (`item_id` primary key, the fields, `embedding vector(d)`), loaded with COPY,
  an HNSW index for inner product (`vector_ip_ops`); `PGVECTOR_TOPK_SQL` is the query.
- `opensearch` / `elasticsearch`: the index body (`knn_vector` / `dense_vector` of the right dimension,
  inner-product similarity) as `mapping.json`, the documents as bulk NDJSON `bulk.ndjson`, and an
  example filtered k-NN query `query.json`.

Vectors are L2-normalised, so inner product = cosine; every backend is told "inner product" so that
its scores equal the engine's two-tower scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import open_artifact
from recs.data import category as category_rule
from recs.errors import ArtifactError, ConfigError
from recs.io import atomic_write_file, atomic_write_text

__all__ = [
    "BACKENDS",
    "PGVECTOR_TOPK_SQL",
    "ItemVectors",
    "elasticsearch_mapping",
    "export_search_index",
    "load_pgvector",
    "opensearch_mapping",
    "pgvector_search",
    "pgvector_topk_sql",
    "read_item_vectors",
    "write_bulk_ndjson",
    "write_npy",
    "write_parquet",
]

BACKENDS = ("parquet", "npy", "pgvector", "opensearch", "elasticsearch")
VECTOR_FIELD = "embedding"
PGVECTOR_MAX_HNSW_DIM = 2000  # pgvector's HNSW limit for `vector` columns

def pgvector_topk_sql(category: bool = True, in_stock: bool = True, exclude: bool = True) -> str:
    """The top-k query, with the filter clauses asked for. Parameters: q (the user vector as
    '[x,y,...]'), k, category + category_prefix (`recs.data.category.normalise(C)` and
    `like_prefix(C)`: the category and every category below it, case-insensitive, matched against the
    exported `category_path` column), exclude (text[] of item ids). `<#>` is pgvector's negative inner product:
    ascending = best first, and the score is its negation. Before it, per session/transaction:
      SET hnsw.ef_search = 100;                 -- candidates the HNSW scan keeps (recall)
      SET hnsw.iterative_scan = relaxed_order;  -- pgvector >= 0.8: keep scanning while filters drop rows
    """
    where = []
    if category:
        # recs.data.category's rule: the normalised path equals the filter or lies below it.
        where.append("(category_path = %(category)s OR category_path LIKE %(category_prefix)s)")
    if in_stock:
        where.append("COALESCE(in_stock, true)")  # unknown stock counts as in stock, as in the engine
    if exclude:
        where.append("NOT (item_id = ANY(%(exclude)s::text[]))")
    clause = ("WHERE " + "\n  AND ".join(where) + "\n") if where else ""
    return (
        "SELECT item_id, -(embedding <#> %(q)s::vector) AS score\n"
        "FROM {table}\n" + clause +
        "ORDER BY embedding <#> %(q)s::vector\nLIMIT %(k)s"
    )


# The documented query with every filter (see README, "Embedding recs in a search service").
PGVECTOR_TOPK_SQL = pgvector_topk_sql()


@dataclass
class ItemVectors:
    """What every backend receives: ids, fields (a polars frame with `item_id` first), vectors."""

    items: pl.DataFrame
    vectors: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ids(self) -> list[str]:
        return self.items["item_id"].cast(pl.Utf8).to_list()


def read_item_vectors(model: str | Path, fields: Sequence[str] | None = None) -> ItemVectors:
    """Ids, fields and item vectors of an artifact (a trained one or a `recs export` folder)."""
    artifact = open_artifact(model)
    if not artifact.has_component("catalog"):
        raise ArtifactError(f"{model}: no 'catalog' component (items + item vectors)")
    items = artifact.read_parquet("items.parquet")
    vectors = np.ascontiguousarray(artifact.read_npy("item_vectors.npy"), dtype=np.float32)
    if len(vectors) != items.height:
        raise ArtifactError(f"{model}: {items.height} items but {len(vectors)} item vectors")
    if fields is not None:
        unknown = [f for f in fields if f not in items.columns]
        if unknown:
            raise ConfigError(f"--fields: unknown item field(s) {', '.join(unknown)}; items have {', '.join(items.columns)}")
    keep = [c for c in (fields if fields is not None else items.columns) if c != "item_id" and c != VECTOR_FIELD]
    items = items.select(pl.col("item_id").cast(pl.Utf8), *keep)
    if "category" in items.columns:
        # The filter key of recs.data.category (case-folded, canonical spacing): what SQL and
        # OpenSearch filters compare, so that they match exactly what the engine matches.
        items = items.with_columns(
            pl.col("category").map_elements(category_rule.normalise, return_dtype=pl.Utf8).alias("category_path")
        )
    # Dates and other non-scalar columns travel as text: every backend takes text.
    items = items.with_columns(
        pl.col(c).cast(pl.Utf8) for c in keep
        if not (items[c].dtype.is_numeric() or items[c].dtype == pl.Boolean or items[c].dtype == pl.Utf8)
    )
    return ItemVectors(items, vectors)


# ---------------------------------------------------------------------------------- files


def write_parquet(data: ItemVectors, path: str | Path) -> Path:
    column = pl.Series("vector", data.vectors, dtype=pl.Array(pl.Float32, data.dim))
    return atomic_write_file(path, lambda tmp: data.items.with_columns(column).write_parquet(tmp))


def write_npy(data: ItemVectors, folder: str | Path) -> Path:
    """vectors.npy and items.parquet in `folder` (each file replaced atomically; other files in
    the folder are left alone)."""
    folder = Path(folder)

    def write_vectors(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to another name
            np.save(fh, data.vectors, allow_pickle=False)

    atomic_write_file(folder / "vectors.npy", write_vectors)
    atomic_write_file(folder / "items.parquet", lambda tmp: data.items.write_parquet(tmp))
    return folder


# ---------------------------------------------------------------------------------- pgvector

_PG_TYPES = {pl.Boolean: "boolean", pl.Utf8: "text"}


def _pg_type(dtype: pl.DataType) -> str:
    if dtype.is_float():
        return "double precision"
    if dtype.is_integer():
        return "bigint"
    return _PG_TYPES.get(dtype.base_type(), "text")  # type: ignore[call-overload]


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form; 9 significant digits round-trip float32 exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def pgvector_schema_sql(table: str, data: ItemVectors) -> list[str]:
    """CREATE EXTENSION + CREATE TABLE statements (composed with psycopg.sql: names are quoted)."""
    from psycopg import sql

    columns = [sql.SQL("{} text PRIMARY KEY").format(sql.Identifier("item_id"))]
    for name in data.items.columns[1:]:
        columns.append(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_pg_type(data.items[name].dtype))))
    columns.append(sql.SQL("{} vector({}) NOT NULL").format(sql.Identifier(VECTOR_FIELD), sql.Literal(data.dim)))
    return [
        sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"),
        sql.SQL("CREATE TABLE {} ({})").format(_table_id(table), sql.SQL(", ").join(columns)),
    ]


def _table_id(table: str) -> Any:
    from psycopg import sql

    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigError(f"--table must be NAME or SCHEMA.NAME, got {table!r}")
    return sql.Identifier(*parts)


def load_pgvector(
    conninfo: str | Any,
    table: str,
    data: ItemVectors,
    replace: bool = False,
    hnsw: bool = True,
    m: int = 16,
    ef_construction: int = 64,
) -> int:
    """Create `table`, COPY the items in, build the HNSW index; one transaction. Returns the row
    count. `conninfo` is a libpq URI/DSN or an open psycopg connection."""
    import psycopg
    from psycopg import sql

    if hnsw and data.dim > PGVECTOR_MAX_HNSW_DIM:
        raise ConfigError(f"pgvector's HNSW index takes at most {PGVECTOR_MAX_HNSW_DIM} dimensions, vectors have {data.dim}")
    own = isinstance(conninfo, str)
    conn = psycopg.connect(conninfo) if own else conninfo
    try:
        with conn.transaction(), conn.cursor() as cur:
            if replace:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_table_id(table)))
            for statement in pgvector_schema_sql(table, data):
                cur.execute(statement)
            names = sql.SQL(", ").join(sql.Identifier(c) for c in [*data.items.columns, VECTOR_FIELD])
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(_table_id(table), names)) as copy:
                for row, vector in zip(data.items.iter_rows(), data.vectors, strict=True):
                    copy.write_row((*row, vector_literal(vector)))
            if hnsw:
                cur.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw ({} vector_ip_ops) WITH (m = {}, ef_construction = {})").format(
                    sql.Identifier(f"{table.split('.')[-1]}_{VECTOR_FIELD}_hnsw"), _table_id(table), sql.Identifier(VECTOR_FIELD),
                    sql.Literal(int(m)), sql.Literal(int(ef_construction)),
                ))
            cur.execute(sql.SQL("ANALYZE {}").format(_table_id(table)))
    finally:
        if own:
            conn.close()
    return len(data.vectors)


def pgvector_search(
    conn: Any,
    table: str,
    vector: np.ndarray,
    k: int,
    category: str | None = None,
    in_stock_only: bool = False,
    exclude: Iterable[str] = (),
    exact: bool = False,
    ef_search: int = 100,
) -> list[tuple[str, float]]:
    """Run `PGVECTOR_TOPK_SQL`. `exact` turns index scans off for this transaction (a full scan:
    exact top-k, what FAISS flat returns); otherwise the HNSW index with iterative scans."""
    from psycopg import sql

    excluded = list(exclude)
    query = pgvector_topk_sql(category is not None, in_stock_only, bool(excluded))
    params = {
        "q": vector_literal(vector), "k": int(k),
        "category": None if category is None else category_rule.normalise(category),
        "category_prefix": None if category is None else category_rule.like_prefix(category),
        "exclude": excluded,
    }
    with conn.transaction(), conn.cursor() as cur:
        if exact:
            cur.execute("SET LOCAL enable_indexscan = off")
        else:
            cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
            cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur.execute(sql.SQL(query).format(table=_table_id(table)), params)  # type: ignore[arg-type]
        return [(str(i), float(s)) for i, s in cur.fetchall()]


# ---------------------------------------------------------------------------------- OpenSearch / ES


def _field_mapping(dtype: pl.DataType, name: str) -> dict[str, Any]:
    if dtype == pl.Boolean:
        return {"type": "boolean"}
    if dtype.is_float():
        return {"type": "double"}
    if dtype.is_integer():
        return {"type": "long"}
    if name in ("title", "description"):
        return {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}}
    return {"type": "keyword"}  # ids, categories, brands: exact filters


def opensearch_mapping(data: ItemVectors, m: int = 16, ef_construction: int = 128) -> dict[str, Any]:
    """Index body for OpenSearch's k-NN plugin: `knn_vector`, HNSW (faiss engine), inner product."""
    properties = {c: _field_mapping(data.items[c].dtype, c) for c in data.items.columns}
    if "category_path" in properties:
        properties["category_prefixes"] = {"type": "keyword"}
    properties[VECTOR_FIELD] = {
        "type": "knn_vector", "dimension": data.dim,
        "method": {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                   "parameters": {"m": m, "ef_construction": ef_construction}},
    }
    return {"settings": {"index": {"knn": True}}, "mappings": {"properties": properties}}


def elasticsearch_mapping(data: ItemVectors) -> dict[str, Any]:
    """Index body for Elasticsearch: `dense_vector`, indexed (HNSW), `dot_product` similarity
    (Elasticsearch requires unit-length vectors for it: the item vectors are)."""
    norms = np.linalg.norm(data.vectors, axis=1)
    similarity = "dot_product" if np.all(np.abs(norms - 1.0) < 1e-3) else "cosine"
    properties = {c: _field_mapping(data.items[c].dtype, c) for c in data.items.columns}
    if "category_path" in properties:
        properties["category_prefixes"] = {"type": "keyword"}
    properties[VECTOR_FIELD] = {"type": "dense_vector", "dims": data.dim, "index": True, "similarity": similarity}
    return {"mappings": {"properties": properties}}


def write_bulk_ndjson(data: ItemVectors, path: str | Path, index: str) -> Path:
    """The `_bulk` API body: an action line and a document line per item (OpenSearch and ES)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            for row, vector in zip(data.items.iter_rows(named=True), data.vectors, strict=True):
                handle.write(json.dumps({"index": {"_index": index, "_id": row["item_id"]}}) + "\n")
                doc = {k: _json_value(v) for k, v in row.items()}
                if row.get("category_path"):
                    # Every ancestor path: a `term` filter on it keeps a category and all below it.
                    parts = str(row["category_path"]).split(category_rule.SEPARATOR)
                    doc["category_prefixes"] = [category_rule.SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]
                doc[VECTOR_FIELD] = [float(x) for x in np.asarray(vector, dtype=np.float32).tolist()]
                handle.write(json.dumps(doc, allow_nan=False) + "\n")

    return atomic_write_file(path, write)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def example_query(backend: str, dim: int, k: int = 10) -> dict[str, Any]:
    """A filtered k-NN query body; the service puts the user-tower output into the vector."""
    vector = [0.0] * dim
    term = {"term": {"in_stock": True}}
    if backend == "opensearch":
        return {"size": k, "query": {"knn": {VECTOR_FIELD: {"vector": vector, "k": k, "filter": {"bool": {"filter": [term]}}}}}}
    return {"knn": {"field": VECTOR_FIELD, "query_vector": vector, "k": k, "num_candidates": max(100, 10 * k), "filter": [term]}}


# ---------------------------------------------------------------------------------- entry point


def export_search_index(
    model: str | Path,
    to: str,
    out: str | Path | None = None,
    dsn: str | None = None,
    table: str = "recs_items",
    index: str = "recs-items",
    fields: Sequence[str] | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """`recs export-vectors`: returns what was written (paths, row count, dimension)."""
    if to not in BACKENDS:
        raise ConfigError(f"--to must be one of {', '.join(BACKENDS)}, got {to!r}")
    data = read_item_vectors(model, fields)
    report: dict[str, Any] = {"backend": to, "items": len(data.vectors), "dim": data.dim}
    if to == "pgvector":
        if not dsn:
            raise ConfigError("--to pgvector needs --dsn (a libpq connection string or postgresql:// URI)")
        report["rows"] = load_pgvector(dsn, table, data, replace=replace)
        report["table"] = table
        report["query"] = PGVECTOR_TOPK_SQL.format(table=table)
        return report
    if out is None:
        raise ConfigError(f"--to {to} needs --out")
    out = Path(out)
    if to == "parquet":
        report["files"] = [str(write_parquet(data, out))]
    elif to == "npy":
        write_npy(data, out)
        report["files"] = [str(out / "vectors.npy"), str(out / "items.parquet")]
    else:
        mapping = opensearch_mapping(data) if to == "opensearch" else elasticsearch_mapping(data)
        atomic_write_text(out / "mapping.json", json.dumps(mapping, indent=2) + "\n")
        write_bulk_ndjson(data, out / "bulk.ndjson", index)
        atomic_write_text(out / "query.json", json.dumps(example_query(to, data.dim), indent=2) + "\n")
        report["files"] = [str(out / n) for n in ("mapping.json", "bulk.ndjson", "query.json")]
        report["index"] = index
    return report
