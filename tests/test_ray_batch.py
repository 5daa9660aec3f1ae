"""Batch work past one process (issue 15): shards, an index from shards and the statistics from
event partitions, in-process and with a local Ray (`ray.init(num_cpus=2)`): the same results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.batch.encode import RayOptions, encode_shards
from recs.batch.index import index_from_shards
from recs.batch.shards import iter_shards, read_manifest, start_folder, write_manifest, write_shard
from recs.batch.statistics import (
    batch_statistics,
    read_statistics,
    save_statistics,
    write_event_partitions,
)
from recs.data import load_dataset
from recs.errors import ArtifactError, ConfigError, DataError
from recs.retrieval.candidates import CandidateConfig
from recs.retrieval.index import ItemIndex
from recs.retrieval.retriever import Retriever
from recs.retrieval.statistics import fit_statistics


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (~10-20 s to start): once per module, for the tests marked `ray` only (`make
    test` runs them after the default suite); without the [distributed] extra they are skipped."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield RayOptions(workers=2)
    ray.shutdown()


def _all(folder: Path) -> tuple[list[str], np.ndarray]:
    ids, vectors = [], []
    for shard_ids, shard in iter_shards(read_manifest(folder)):
        ids += shard_ids
        vectors.append(shard)
    return ids, np.concatenate(vectors)


def _stats_arrays(stats) -> dict[str, np.ndarray]:
    return {**stats.arrays(), "now": np.array(stats.now)}


def _assert_same_stats(a, b) -> None:
    left, right = _stats_arrays(a), _stats_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        if name == "trending.npy":  # partitions' decayed sums, each decayed on to the last event: rounding apart
            np.testing.assert_allclose(left[name], right[name], rtol=1e-12, err_msg=name)
        else:
            assert np.array_equal(left[name], right[name]), name


@pytest.fixture(scope="module")
def shop(small_demo_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    dataset, _ = load_dataset(small_demo_dir)
    return dataset.items, dataset.events


@pytest.mark.ray
def test_shards_in_process_match_the_artifact_and_ray(trained_artifact: Path, tmp_path: Path, local_ray: RayOptions) -> None:
    retriever = Retriever.load(trained_artifact)
    local = encode_shards(trained_artifact, tmp_path / "local", shard_rows=64)
    ids, vectors = _all(tmp_path / "local")
    assert ids == retriever.catalog.item_ids and local.count == len(ids) and len(local.shards) == -(-len(ids) // 64)
    assert local.normalised and local.dim == vectors.shape[1]
    np.testing.assert_allclose(vectors, retriever.item_vectors, atol=1e-5)
    # The same shards from Ray Data map_batches workers.
    remote = encode_shards(trained_artifact, tmp_path / "ray", shard_rows=64, ray=local_ray)
    ray_ids, ray_vectors = _all(tmp_path / "ray")
    assert ray_ids == ids and remote.shards == local.shards and remote.ids_sha256 == local.ids_sha256
    np.testing.assert_allclose(ray_vectors, vectors, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())


def test_a_half_written_shard_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    start_folder(folder)
    entry = write_shard(folder, 0, ["a", "b"], np.eye(2, dtype=np.float32))
    with pytest.raises(ArtifactError, match="did not finish"):
        read_manifest(folder)
    write_manifest(folder, [entry], ["a", "b"], {})
    assert read_manifest(folder).count == 2
    start_folder(folder)  # a new run drops the manifest first
    assert not any(folder.iterdir())
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        read_manifest(folder)


def _shards_of(vectors: np.ndarray, ids: list[str], folder: Path, rows: int) -> None:
    start_folder(folder)
    entries = [write_shard(folder, k, ids[s : s + rows], vectors[s : s + rows]) for k, s in enumerate(range(0, len(ids), rows))]
    write_manifest(folder, entries, ids, {})


def test_ivfpq_from_shards_equals_the_index_of_the_whole_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"I{i:05d}" for i in range(len(vectors))]
    items = pl.DataFrame({"item_id": ids, "category": ["A > B" if i % 3 else "C" for i in range(len(ids))]})
    _shards_of(vectors, ids, tmp_path / "shards", 400)
    manifest = read_manifest(tmp_path / "shards")
    whole = ItemIndex.build(ids, vectors, kind="ivfpq", categories=items["category"].to_list())
    index, filled = index_from_shards(manifest, items, "ivfpq")
    assert index.kind == whole.kind == "ivfpq" and len(index) == len(ids)
    np.testing.assert_array_equal(filled, vectors)
    queries = vectors[:50]
    assert index.search(queries, 10)[0] == whole.search(queries, 10)[0]
    assert index.search(queries, 10, category="a")[0] == whole.search(queries, 10, category="a")[0]
    # A sample smaller than the catalog: another quantiser, nearly the same neighbours.
    sampled, _ = index_from_shards(manifest, items, "ivfpq", sample_size=1000, seed=1)
    got, want = sampled.search(queries, 10)[0], whole.search(queries, 10)[0]
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)]) > 0.8
    index.save(tmp_path / "index")
    assert ItemIndex.load(tmp_path / "index").search(queries, 10)[0] == whole.search(queries, 10)[0]
    with pytest.raises(ConfigError, match="another catalog"):
        index_from_shards(manifest, items.head(10), "ivfpq")


def test_build_index_from_shards_serves_like_build_index(trained_artifact: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recs.cli import app

    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    runner = CliRunner()
    result = runner.invoke(app, ["encode", "--model", str(model), "--out", str(tmp_path / "shards"), "--shard-rows", "50"])
    assert result.exit_code == 0, result.output
    assert "into" in result.output and json.loads((tmp_path / "shards" / "manifest.json").read_text())["count"] > 0
    result = runner.invoke(app, ["build-index", "--model", str(model), "--from-shards", str(tmp_path / "shards"), "--kind", "flat"])
    assert result.exit_code == 0, result.output
    assert "other towers" not in result.output
    before, after = Retriever.load(trained_artifact), Retriever.load(model)
    np.testing.assert_allclose(after.item_vectors, before.item_vectors, atol=1e-5)
    queries = before.item_vectors[:20]
    assert after.index.search(queries, 10)[0] == before.index.search(queries, 10)[0]
    _assert_same_stats(after.stats, before.stats)
    result = runner.invoke(app, ["build-index", "--model", str(model), "--from-shards", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "no manifest.json" in result.output


@pytest.mark.parametrize("config", [CandidateConfig(), CandidateConfig(als_factors=0, n_knn=0)], ids=["all", "counts"])
def test_statistics_from_partitions_equal_fit_statistics(shop, tmp_path: Path, config: CandidateConfig) -> None:
    items, events = shop
    ids = items["item_id"].to_list()
    row_of = {item: row for row, item in enumerate(ids)}
    served = events.select("user_id", "item_id", "timestamp", "event", "basket_id")
    want = fit_statistics(served, row_of, len(ids), config)
    files = write_event_partitions(served, tmp_path / "events", 4)
    assert len(files) == 4
    users = [set(pl.read_parquet(f)["user_id"].to_list()) for f in files]
    assert sum(len(u) for u in users) == len(set().union(*users))  # each user in one file
    _assert_same_stats(batch_statistics(files, row_of, len(ids), config), want)
    save_statistics(want, tmp_path / "stats")
    _assert_same_stats(read_statistics(tmp_path / "stats"), want)


@pytest.mark.ray
def test_statistics_with_ray_equal_fit_statistics(shop, tmp_path: Path, local_ray: RayOptions) -> None:
    items, events = shop
    ids = items["item_id"].to_list()
    row_of = {item: row for row, item in enumerate(ids)}
    served = events.select("user_id", "item_id", "timestamp", "event", "basket_id")
    config = CandidateConfig()
    files = write_event_partitions(served, tmp_path / "events", 5)
    _assert_same_stats(batch_statistics(files, row_of, len(ids), config, ray=local_ray), fit_statistics(served, row_of, len(ids), config))


def test_a_user_in_two_partitions_is_refused(shop, tmp_path: Path) -> None:
    items, events = shop
    ids = items["item_id"].to_list()
    served = events.select("user_id", "item_id", "timestamp", "event", "basket_id")
    (tmp_path / "events").mkdir()
    served.head(40).write_parquet(tmp_path / "events" / "a.parquet")
    served.head(60).tail(30).write_parquet(tmp_path / "events" / "b.parquet")
    shared = set(served.head(40)["user_id"]) & set(served.head(60).tail(30)["user_id"])
    assert shared
    with pytest.raises(DataError, match="two event partitions"):
        batch_statistics(sorted((tmp_path / "events").glob("*.parquet")), {i: r for r, i in enumerate(ids)}, len(ids),
                         CandidateConfig(als_factors=0, n_knn=0))


def test_an_onnx_export_encodes_with_its_onnx_item_tower(trained_artifact: Path, tmp_path: Path) -> None:
    from recs.export import export_artifact

    onnx = export_artifact(trained_artifact, tmp_path / "onnx", check=False).path
    manifest = encode_shards(onnx, tmp_path / "shards", shard_rows=100)
    assert manifest.model["onnx"] is True
    ids, vectors = _all(tmp_path / "shards")
    torch_retriever = Retriever.load(trained_artifact)
    assert ids == torch_retriever.catalog.item_ids
    np.testing.assert_allclose(vectors, torch_retriever.item_vectors, atol=1e-4)


@pytest.mark.parametrize(("argv", "expected"), [
    (["encode", "--ray"], ["encode", "--ray", "local"]),
    (["encode", "--ray", "--out", "x"], ["encode", "--ray", "local", "--out", "x"]),
    (["encode", "--ray", "auto", "--out", "x"], ["encode", "--ray", "auto", "--out", "x"]),
    (["encode", "--ray=ray://head:10001"], ["encode", "--ray=ray://head:10001"]),
    (["encode", "--out", "x"], ["encode", "--out", "x"]),
])
def test_ray_option_value_may_be_left_out(argv: list[str], expected: list[str]) -> None:
    from recs.cli.common import with_optional_values

    assert with_optional_values(argv) == expected


def test_ray_option_means_a_local_ray_or_a_cluster() -> None:
    from recs.cli.batch import _ray_options

    assert _ray_options(None) is None
    assert _ray_options("local", workers=2) == RayOptions(address=None, workers=2)
    assert _ray_options("auto").address == "auto"
    with pytest.raises(ConfigError, match="add --ray"):
        _ray_options(None, workers=2)
