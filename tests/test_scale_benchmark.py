"""benchmarks/scale.py on tiny sizes: the code paths stay working (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from benchmarks import scale
from recs.retrieval.index import ItemIndex


class HashTowers:
    """A stand-in item tower: a fixed random vector per text (no model to load)."""

    config = SimpleNamespace(max_item_tokens=32)

    def __init__(self) -> None:
        self.calls = 0

    def encode_items(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts]).astype(np.float32)


@pytest.fixture()
def faiss_threads():  # main() sets faiss's global thread count: restore it for the other tests
    before = faiss.omp_get_max_threads()
    yield
    faiss.omp_set_num_threads(before)


def _args(tmp_path: Path, **extra: object) -> argparse.Namespace:
    options = {"work": tmp_path / "work", "shard": 500, "quiet": True, "encode_only": False, "kinds": list(scale.KINDS), "hnsw_max": 10**6,
               "queries": 40, "single": 10, "batch": 16, "threads": 1, "synthetic_queries": 30, "synthetic_chunk": 1000}
    options.update(extra)
    return argparse.Namespace(**options)


def test_shards_are_resumed_not_encoded_again(tmp_path: Path) -> None:
    texts = [f"item {i}" for i in range(1200)]
    towers = HashTowers()
    first, _, encoded = scale.encode_shards(texts, towers.encode_items, tmp_path, 500, show_progress=False)
    assert encoded == 1200 and towers.calls == 3 and first.shape == (1200, 16)
    (tmp_path / "000000500.npy").unlink()  # a run stopped before this shard
    again, _, encoded = scale.encode_shards(texts, towers.encode_items, tmp_path, 500, show_progress=False)
    assert towers.calls == 4 and encoded == 1200  # the time of every shard, whichever run encoded it
    np.testing.assert_array_equal(first, again)


def test_streamed_exact_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    items, queries = scale._normalised(rng.standard_normal((900, 8))), scale._normalised(rng.standard_normal((20, 8)))
    streamed = scale.exact_top_k(queries, (items[s : s + 128] for s in range(0, 900, 128)))
    brute = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(np.sort(streamed, 1), np.sort(brute, 1))


def test_synthetic_chunks_are_deterministic_and_normalised() -> None:
    centers = scale.synthetic_centers(dim=16, clusters=8)
    a, b = scale.synthetic_chunk(centers, 3, 50), scale.synthetic_chunk(centers, 3, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, scale.synthetic_chunk(centers, 4, 50))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_raw_faiss_refine_finds_what_the_wrapper_finds() -> None:
    centers = scale.synthetic_centers(dim=16, clusters=8)
    vectors = scale.synthetic_chunk(centers, 0, 2000)
    index = ItemIndex.build(scale.synthetic_ids(0, 2000), vectors, kind="ivfpq", use_gpu=False)
    raw, _keep = scale.raw_faiss(index)
    queries = scale.synthetic_queries(centers, 20)
    wrapped, _ = index.search(queries, 10)
    _, labels = raw.search(queries, 10)
    same = [len(set(w) & {f"S{i:09d}" for i in row}) / 10 for w, row in zip(wrapped, labels, strict=True)]
    assert np.mean(same) > 0.95


def test_a_tiny_catalog_is_measured_for_every_kind(tmp_path: Path) -> None:
    rows = scale.run_catalog(1500, _args(tmp_path), HashTowers())
    assert [(r["method"], r["slice"]) for r in rows] == [
        ("onnx_int8", "encode"), ("flat", "k10"), ("hnsw", "k10"), ("hnsw", "k10-ef512"), ("ivfpq", "k10"),
        ("ivfpq", "k10-nprobe38")]
    assert (tmp_path / "work" / "demo-1500" / "shop" / "items.csv").is_file()
    for row in rows[1:]:
        m = row["metrics"]
        assert m["items"] == 1500 and 0 <= m["recall@10"] <= 1
        assert {"qps_single", "qps_batch", "raw_qps_single", "overhead_single", "overhead_batch"} <= set(m)
        assert (m.get("bytes_per_item", 0) > 0) == (row["slice"] == "k10")
    assert rows[1]["metrics"]["recall@10"] == 1.0  # flat is the exact search


def test_main_writes_synthetic_rows_table_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   faiss_threads: None) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(name, "1" if name != "OMP_WAIT_POLICY" else "PASSIVE")
    out = tmp_path / "out"
    code = scale.main(["--sizes", "", "--synthetic", "3000", "--synthetic-chunk", "1500", "--synthetic-queries", "20",
                       "--single", "5", "--batch", "8", "--threads", "1", "--quiet", "--work", str(tmp_path / "w"),
                       "--out", str(out)])
    assert code == 0
    document = json.loads((out / "scale.json").read_text())
    assert [(r["dataset"], r["method"], r["slice"][:3]) for r in document["rows"]] == [("synthetic-3k", "ivfpq", "k10")] * 2
    assert (out / "scale.md").is_file() and (out / "scale.png").stat().st_size > 0


def test_recall_counts_a_tied_duplicate_as_found() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:1] + 0.1
    tenth = int(np.argsort(-(vectors @ queries[0]))[scale.K - 1])
    twin = int(np.argsort(-(vectors @ queries[0]))[-1])
    vectors[twin] = vectors[tenth]  # a duplicate text: the same vector under another id, tied 10th
    truth = scale.exact_top_k(queries, iter([vectors]))
    kth = np.einsum("qd,qd->q", queries, vectors[truth[:, -1]])
    ids = [f"I{i}" for i in range(30)]
    hits = scale.score_hits(queries, vectors, {item: row for row, item in enumerate(ids)}, kth)
    exact = [ids[r] for r in truth[0]]
    listed, other = (tenth, twin) if ids[tenth] in exact else (twin, tenth)
    swapped = [ids[other] if i == ids[listed] else i for i in exact]
    assert hits(0, exact) == hits(0, swapped) == scale.K
    assert scale.id_hits([set(exact)])(0, swapped) == scale.K - 1  # ids alone call it a miss
    assert hits(0, [ids[r] for r in np.argsort(vectors @ queries[0])[: scale.K]]) < scale.K  # the worst items
