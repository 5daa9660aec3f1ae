"""ItemIndex over FAISS: exactness, recall, filters, updates, padding, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recs import device
from recs.errors import ArtifactError, ConfigError, UnknownItemError
from recs.retrieval.index import ItemIndex

DIM = 32
CATS = [
    "Outdoors > Camping > Tents",
    "Outdoors > Camping > Stoves",
    "Outdoors > Hiking",
    "Home > Kitchen",
]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clustered(n: int, seed: int, dim: int = DIM, centers: int = 40) -> np.ndarray:
    """Random vectors around random centres: shaped like real text embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    return _unit(c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim)))


def _catalog(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"item-{i}" for i in range(n)]
    vecs = _clustered(n, seed)
    cats = [CATS[i % len(CATS)] for i in range(n)]
    stock = rng.random(n) > 0.3
    return ids, vecs, cats, stock


def _brute(vecs: np.ndarray, ids: list[str], q: np.ndarray, k: int):
    scores = _unit(q) @ vecs.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(scores, order, 1)


# One small index per kind; ivfpq needs >= IVFPQ_MIN_ITEMS to be a real IVFPQ.
KIND_SIZES = {"flat": 600, "hnsw": 600, "ivfpq": 1500}


@pytest.fixture(scope="module", params=list(KIND_SIZES))
def built(request):
    kind = request.param
    ids, vecs, cats, stock = _catalog(KIND_SIZES[kind])
    index = ItemIndex.build(
        ids, vecs, kind=kind, categories=cats, in_stock=stock, use_gpu=False, exact_search_below=0
    )
    assert index.kind == kind
    return index, ids, vecs, cats, stock


def test_flat_equals_brute_force():
    ids, vecs, _, _ = _catalog(800, seed=1)
    index = ItemIndex.build(ids, vecs * 3.0, kind="flat", use_gpu=False)  # normalised on add
    q = np.random.default_rng(2).standard_normal((20, DIM)).astype(np.float32)
    got_ids, got_scores = index.search(q, 10)
    want_ids, want_scores = _brute(vecs, ids, q, 10)
    assert got_ids == want_ids
    for g, w in zip(got_scores, want_scores, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=1e-5)
    assert all(isinstance(i, str) for row in got_ids for i in row)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_recall_vs_flat(kind):
    ids, vecs, _, _ = _catalog(3000, seed=3)
    q = _clustered(200, seed=3)[:200] + 0.05 * np.random.default_rng(4).standard_normal((200, DIM))
    exact = ItemIndex.build(ids, vecs, kind="flat", use_gpu=False)
    approx = ItemIndex.build(ids, vecs, kind=kind, use_gpu=False)
    assert approx.kind == kind
    want, _ = exact.search(q, 10)
    got, scores = approx.search(q, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.9, recall
    for s in scores:
        assert np.all(np.isfinite(s)) and np.all(np.diff(s) <= 1e-6)


def test_auto_and_ivfpq_fallback():
    ids, vecs, _, _ = _catalog(300)
    assert ItemIndex.build(ids, vecs, kind="auto").kind == "flat"
    small = ItemIndex.build(ids, vecs, kind="ivfpq")
    assert small.kind == "flat"
    assert any("ivfpq" in note for note in small.notes)


def _check_row(index, ids_row, scores_row, allowed: set[str], k: int):
    assert len(ids_row) == len(scores_row) <= k
    assert len(set(ids_row)) == len(ids_row)
    assert set(ids_row) <= allowed
    assert np.all(np.isfinite(scores_row)) and np.all(np.diff(scores_row) <= 1e-6)


@pytest.mark.parametrize("exact_below", [0, 10**6], ids=["faiss-selectors", "exact-fallback"])
def test_filters(built, exact_below):
    index, ids, vecs, cats, stock = built
    index.exact_search_below = exact_below
    try:
        q = vecs[:5] + 0.01
        meta = dict(zip(ids, zip(cats, stock, strict=True), strict=True))

        got, sc = index.search(q, 10, category="Outdoors")
        allowed = {i for i, (c, _) in meta.items() if c.startswith("Outdoors")}
        for r, s in zip(got, sc, strict=True):
            _check_row(index, r, s, allowed, 10)
            assert len(r) == 10

        got, sc = index.search(q, 10, category="outdoors > camping", in_stock_only=True)
        allowed = {i for i, (c, s_) in meta.items() if c.startswith("Outdoors > Camping") and s_}
        for r, s in zip(got, sc, strict=True):
            _check_row(index, r, s, allowed, 10)
            assert len(r) == 10

        # a partial segment is not a prefix match
        assert index.search(q[:1], 5, category="Outdoors > Camp")[0] == [[]]

        # exclude per query: each query excludes its own previous top-5
        top, _ = index.search(q, 5)
        got, sc = index.search(q, 10, exclude=top)
        for r, s, ex in zip(got, sc, top, strict=True):
            _check_row(index, r, s, set(ids) - set(ex), 10)
            assert len(r) == 10
        # shared exclusion list (unknown ids are ignored)
        got, _ = index.search(q, 10, exclude=[*top[0], "no-such-item"])
        assert all(not set(r) & set(top[0]) for r in got)
    finally:
        index.exact_search_below = 0


def test_exact_fallback_is_exact_for_selective_filters():
    ids, vecs, cats, stock = _catalog(1200, seed=5)
    index = ItemIndex.build(ids, vecs, kind="ivfpq", categories=cats, in_stock=stock, refine="flat")
    q = _clustered(10, seed=6)
    got, _ = index.search(q, 10, category="Home > Kitchen", in_stock_only=True)
    mask = np.array([c == "Home > Kitchen" and s for c, s in zip(cats, stock, strict=True)])
    sub_ids = [i for i, m in zip(ids, mask, strict=True) if m]
    want, _ = _brute(vecs[mask], sub_ids, q, 10)
    assert got == want


def test_remove(built):
    index, ids, vecs, cats, stock = built
    victims = [ids[i] for i in range(0, 40, 2)]
    try:
        index.remove(victims)
        assert len(index) == len(ids) - len(victims)
        assert victims[0] not in index and ids[1] in index
        got, _ = index.search(vecs[:40], 20)
        assert not {i for row in got for i in row} & set(victims)
        got, _ = index.search(vecs[:40], 20, category="Outdoors")
        assert not {i for row in got for i in row} & set(victims)
        with pytest.raises(UnknownItemError):
            index.remove([victims[0]])
        with pytest.raises(UnknownItemError):
            index.vectors([victims[0]])
    finally:
        index.add(victims, vecs[0:40:2], categories=cats[0:40:2], in_stock=stock[0:40:2])
    assert len(index) == len(ids)


def test_update_changes_result(built):
    index, ids, vecs, cats, stock = built
    target = ids[7]
    q = _unit(np.random.default_rng(9).standard_normal(DIM))
    before, _ = index.search(q, 5)
    assert target not in before[0]
    index.update([target], q[None, :])
    after, scores = index.search(q, 5)
    assert after[0][0] == target and scores[0][0] > 0.95
    assert index.categories([target]) == [cats[7]]  # metadata kept
    assert bool(index.in_stock([target])[0]) == bool(stock[7])
    index.update([target], vecs[7:8])
    again, _ = index.search(q, 5)
    assert target not in again[0]


def test_k_larger_than_catalog():
    for kind in ("flat", "hnsw"):
        ids, vecs, cats, stock = _catalog(50)
        index = ItemIndex.build(ids, vecs, kind=kind, categories=cats, in_stock=stock)
        got, scores = index.search(vecs[:3], 1000)
        for r, s in zip(got, scores, strict=True):
            assert sorted(r) == sorted(ids) and np.all(np.isfinite(s))
        got, _ = index.search(vecs[:3], 1000, category="Home")
        assert all(len(r) == cats.count("Home > Kitchen") for r in got)
        index.exact_search_below = 0
        got, scores = index.search(vecs[:3], 1000, in_stock_only=True)
        assert all(len(r) == int(stock.sum()) for r in got)


def test_k_larger_than_catalog_ivfpq(built):
    index, ids, vecs, _, _ = built
    got, scores = index.search(vecs[:3], len(ids) + 500)
    for r, s in zip(got, scores, strict=True):
        assert 0 < len(r) <= len(ids) and len(set(r)) == len(r)
        assert set(r) <= set(ids) and np.all(np.isfinite(s))


def test_bad_vectors_rejected():
    index = ItemIndex(DIM, "flat")
    bad = _clustered(3, 0)
    bad[1, 4] = np.nan
    with pytest.raises(ConfigError, match="'b'"):
        index.add(["a", "b", "c"], bad)
    assert len(index) == 0
    with pytest.raises(ConfigError, match="shape"):
        index.add(["a"], np.ones((1, DIM + 1)))
    with pytest.raises(ConfigError, match="zero"):
        index.add(["a"], np.zeros((1, DIM)))
    index.add(["a"], np.ones(DIM))
    with pytest.raises(ConfigError, match="already"):
        index.add(["a"], np.ones(DIM))
    with pytest.raises(ConfigError, match="strings"):
        index.add([1], np.ones((1, DIM)))
    with pytest.raises(ConfigError):
        index.search(np.full(DIM, np.inf), 3)
    with pytest.raises(ConfigError):
        index.search(np.ones(DIM + 2), 3)
    with pytest.raises(UnknownItemError):
        index.update(["zzz"], np.ones((1, DIM)))


def test_empty_index_search():
    index = ItemIndex(DIM, "hnsw")
    ids, scores = index.search(np.ones((2, DIM)), 5)
    assert ids == [[], []] and len(scores) == 2


def test_save_load_identical(built, tmp_path):
    index, ids, vecs, _, _ = built
    index.remove([ids[3]])  # a tombstone for hnsw
    try:
        index.save(tmp_path / "idx")
        assert {p.name for p in (tmp_path / "idx").iterdir()} >= {
            "index.faiss",
            "ids.json",
            "index_config.json",
        }
        loaded = ItemIndex.load(tmp_path / "idx", use_gpu=False)
        assert loaded.kind == index.kind and len(loaded) == len(index)
        assert loaded.item_ids == index.item_ids and ids[3] not in loaded
        q = vecs[:10] + 0.02
        for kwargs in ({}, {"category": "Outdoors", "in_stock_only": True}, {"exclude": ids[:5]}):
            a_ids, a_sc = index.search(q, 10, **kwargs)
            b_ids, b_sc = loaded.search(q, 10, **kwargs)
            assert a_ids == b_ids
            for x, y in zip(a_sc, b_sc, strict=True):
                np.testing.assert_allclose(x, y, atol=1e-6)
        np.testing.assert_allclose(loaded.vectors(ids[5:8]), index.vectors(ids[5:8]), atol=1e-6)
        # new ids after a load never reuse old int ids
        loaded.add(["brand-new"], vecs[0])
        assert loaded.search(vecs[0], 1, category=None)[0][0][0] in {"brand-new", ids[0]}
    finally:
        index.add([ids[3]], vecs[3:4])


def test_load_refuses_newer_format(tmp_path):
    ids, vecs, _, _ = _catalog(20)
    ItemIndex.build(ids, vecs, kind="flat").save(tmp_path / "idx")
    cfg = json.loads((tmp_path / "idx" / "index_config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "idx" / "index_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="upgrade recs"):
        ItemIndex.load(tmp_path / "idx")
    with pytest.raises(ArtifactError):
        ItemIndex.load(tmp_path / "missing")


def test_vectors_and_membership():
    ids, vecs, _, _ = _catalog(100)
    index = ItemIndex.build(ids, vecs * 2, kind="hnsw")
    np.testing.assert_allclose(index.vectors(ids[:4]), vecs[:4], atol=1e-6)
    assert ids[0] in index and "nope" not in index and len(index) == 100
    assert index.item_ids == ids


def test_hnsw_tombstones_and_compaction():
    ids, vecs, _, _ = _catalog(400)
    index = ItemIndex.build(ids, vecs, kind="hnsw", compact_threshold=0.25)
    index.remove(ids[:50])
    assert index.n_tombstones == 50
    index.remove(ids[50:110])  # 110 / 400 > 0.25: rebuilt without tombstones
    assert index.n_tombstones == 0 and len(index) == 290
    got, _ = index.search(vecs[:110], 10)
    assert not {i for row in got for i in row} & set(ids[:110])
    assert index.search(vecs[200], 1)[0][0] == [ids[200]]


def test_ivfpq_refine_matches_rescoring_by_hand():
    """FAISS's IndexRefine re-scores the IVF-PQ candidates with the refine store's vectors."""
    import faiss

    ids, vecs, _, _ = _catalog(1500)
    index = ItemIndex.build(ids, vecs, kind="ivfpq", refine_factor=4)
    q = _unit(vecs[:20] + 0.05)
    got_ids, got_scores = index.search(q, 10)
    params = faiss.SearchParametersIVF(nprobe=index.nprobe)
    _, cand = index._index.search(q, 40, params=params)
    for row, (g_ids, g_sc) in enumerate(zip(got_ids, got_scores, strict=True)):
        c = cand[row][cand[row] >= 0]
        scores = index._reconstruct(c) @ q[row]
        top = np.argsort(-scores, kind="stable")[:10]
        assert g_ids == [ids[j] for j in c[top]]
        np.testing.assert_allclose(g_sc, scores[top], atol=1e-5)


def test_ivfpq_dead_rows_and_compaction(tmp_path):
    ids, vecs, _, _ = _catalog(1500)
    index = ItemIndex.build(ids, vecs, kind="ivfpq", compact_threshold=0.2)
    index.remove(ids[:100])
    index.update(ids[100:200], vecs[100:200][:, ::-1].copy())  # new vectors, fresh int ids
    assert index.dead_rows == 200 and len(index) == 1400 and index.n_tombstones == 0
    saved = index.search(vecs[300:320], 10)
    index.save(tmp_path / "idx")
    before = index.search(vecs[300:320], 10, exclude=ids[200:300])
    index.remove(ids[200:300])  # 300 dead / 1300 live > 0.2: compacted
    assert index.dead_rows == 0 and len(index) == 1300
    assert index._refine_index.ntotal == 1300 and index._index.ntotal == 1300
    got, _ = index.search(vecs[:300], 10)
    assert not {i for row in got for i in row} & set(ids[:100] + ids[200:300])
    after = index.search(vecs[300:320], 10)
    # The IVF lists were re-encoded from the refine store's vectors: nearly the same candidates,
    # re-scored by the same store rows.
    overlap = [len(set(x) & set(y)) / 10 for x, y in zip(after[0], before[0], strict=True)]
    assert np.mean(overlap) >= 0.9
    for a_ids, a_sc, b_ids, b_sc in zip(*after, *before, strict=True):
        b_score = dict(zip(b_ids, b_sc.tolist(), strict=True))
        for item, score in zip(a_ids, a_sc.tolist(), strict=True):
            assert item not in b_score or abs(b_score[item] - score) < 1e-5
    np.testing.assert_allclose(index.vectors(ids[100:102]), _unit(vecs[100:102][:, ::-1]), atol=0.02)
    index.add(["late"], vecs[0])  # ids continue after the compacted range
    assert index.search(vecs[0], 1)[0][0] == ["late"]
    loaded = ItemIndex.load(tmp_path / "idx")  # saved with dead rows
    assert loaded.dead_rows == 200 and loaded.search(vecs[300:320], 10)[0] == saved[0]


def test_ivfpq_loads_an_id_mapped_refine_store(tmp_path):
    """Saves from before the store was laid out by int id held an IndexIDMap2."""
    import faiss

    ids, vecs, _, _ = _catalog(1500)
    index = ItemIndex.build(ids, vecs, kind="ivfpq", compact_threshold=None)
    index.remove(ids[:30])
    expected = index.search(vecs[40:60], 10)
    index.save(tmp_path / "idx")
    store = index._refine_index
    empty = faiss.clone_index(store)
    empty.reset()
    old = faiss.IndexIDMap2(empty)
    alive = np.arange(30, 1500, dtype=np.int64)
    old.add_with_ids(store.reconstruct_batch(alive), alive)
    faiss.write_index(old, str(tmp_path / "idx" / "refine.faiss"))
    loaded = ItemIndex.load(tmp_path / "idx")
    assert loaded._refine_index.ntotal == 1500 and loaded.dead_rows == 30
    got = loaded.search(vecs[40:60], 10)
    assert got[0] == expected[0]
    np.testing.assert_allclose(np.stack(got[1]), np.stack(expected[1]), atol=1e-5)


def test_gpu_flag_falls_back_to_cpu(monkeypatch):
    # On a CPU-only faiss the GPU path must not be taken; results stay identical.
    ids, vecs, _, _ = _catalog(200)
    a = ItemIndex.build(ids, vecs, kind="flat", use_gpu=None)
    b = ItemIndex.build(ids, vecs, kind="flat", use_gpu=False)
    if not device.faiss_has_gpu():
        assert a.search(vecs[:5], 7)[0] == b.search(vecs[:5], 7)[0]
    assert b._gpu_wanted() is False


@pytest.mark.gpu
def test_gpu_flat_matches_cpu():
    if not device.faiss_has_gpu():
        pytest.skip("faiss has no GPU here")
    ids, vecs, cats, stock = _catalog(5000)
    gpu = ItemIndex.build(ids, vecs, kind="flat", categories=cats, in_stock=stock, use_gpu=True)
    cpu = ItemIndex.build(ids, vecs, kind="flat", categories=cats, in_stock=stock, use_gpu=False)
    q = _clustered(50, seed=11)
    g_ids, g_sc = gpu.search(q, 20)
    assert gpu._gpu is not None and not gpu._gpu_broken
    c_ids, c_sc = cpu.search(q, 20)
    assert g_ids == c_ids
    np.testing.assert_allclose(np.stack(g_sc), np.stack(c_sc), atol=1e-4)
    gpu.remove(ids[:10])  # the GPU copy is rebuilt after a change
    got, _ = gpu.search(q, 20)
    assert not {i for row in got for i in row} & set(ids[:10])


def test_device_helpers():
    assert isinstance(device.faiss_has_gpu(), bool)
    providers = device.onnx_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert device.onnx_providers(prefer_gpu=False) == ["CPUExecutionProvider"]
    assert device.torch_device() in ("cpu", "cuda")


def test_empty_category_filter_rejected():
    ids, vecs, cats, _ = _catalog(20)
    index = ItemIndex.build(ids, vecs, kind="flat", categories=cats)
    with pytest.raises(ConfigError, match="empty category"):
        index.search(vecs[0], 3, category=" > ")
    with pytest.raises(ConfigError, match="lists for"):
        index.search(vecs[:2], 3, exclude=[[ids[0]], [ids[1]], [ids[2]]])


def test_set_metadata_moves_items_between_filters(built):
    """The service's price/stock/category updates in place: filters follow at once."""
    index, ids, vecs, _cats, _stock = built
    item = ids[0]
    version = index.version
    old_cat, old_stock = index.categories([item])[0], bool(index.in_stock([item])[0])
    try:
        index.set_metadata([item], categories=["Garden > NEW-shelf"], in_stock=[False])
        assert index.version > version  # what the Retriever's cached restrictions key on
        got, _ = index.search(vecs[0], 5, category="garden > new-shelf")
        assert got[0] == [item]
        got, _ = index.search(vecs[0], 5, category="garden > new-shelf", in_stock_only=True)
        assert got[0] == []
        restrict = index.allow_mask(ids, np.array([i == item for i in ids]))
        got, _ = index.search(vecs[0], 5, restrict=restrict)
        assert got[0] == [item]
    finally:
        index.set_metadata([item], categories=[old_cat], in_stock=[old_stock])
