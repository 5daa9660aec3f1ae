"""ONNX export and the torch-free runtime: parity with torch, identical rankings, safety."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recs.errors import ArtifactError, ConfigError
from recs.ranking.budget import PairBudget
from recs.serving import Engine
from recs.serving.onnx_runtime import (
    OnnxCrossEncoder,
    OnnxGraph,
    OnnxTokenizer,
    OnnxTowers,
    RuntimeOptions,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(ranked_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ranked tiny-BERT artifact exported once (fp32 + int8, parity checks on)."""
    from recs.export import export_artifact

    return export_artifact(ranked_artifact, tmp_path_factory.mktemp("onnx") / "export", int8=True)


@pytest.fixture(scope="module")
def torch_engine(ranked_artifact: Path) -> Engine:
    return Engine.load(ranked_artifact)


@pytest.fixture(scope="module")
def onnx_engine(exported) -> Engine:
    return Engine.load(exported.path)


def _users(engine: Engine, n: int) -> list[str]:
    return [str(u) for u in engine.retriever.events["user_id"].unique(maintain_order=True).head(n).to_list()]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ------------------------------------------------------------------------------------ export


def test_export_writes_a_complete_artifact_with_dynamic_axes(exported) -> None:
    import onnx

    from recs.artifacts import open_artifact

    artifact = open_artifact(exported.path)
    assert {"catalog", "index", "interactions", "onnx"} <= set(artifact.components)
    assert not artifact.has_component("towers")  # no torch weights travel
    spec = artifact.component("onnx").config
    assert set(spec["graphs"]) == {"item_tower", "user_tower", "cross_encoder", "ranker", "discover"}
    assert "tokenizer.json" in artifact.files and not any(f.endswith(".onnx.data") for f in artifact.files)
    for name in ("item_tower", "user_tower", "cross_encoder"):
        entry = spec["graphs"][name]
        assert "int8" in entry and (exported.path / entry["int8"]).stat().st_size < (exported.path / entry["fp32"]).stat().st_size
        model = onnx.load(str(exported.path / entry["fp32"]))
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        assert dims["input_ids"] == ["batch", "sequence"] and dims["attention_mask"] == ["batch", "sequence"]
        assert [o.name for o in model.graph.output] == entry["outputs"]
    assert spec["graphs"]["user_tower"]["inputs"] == ["input_ids", "attention_mask", "history_mean"]


def test_fp32_graphs_are_fused_and_int8_graphs_quantised_unfused(exported) -> None:
    """Attention, embedding LayerNorm and bias-GELU are single operators in the fp32 graphs
    (2 layers in the tiny BERT), residual adds stay Add + LayerNormalization (no
    `SkipLayerNormalization`: slower on CPUs); the int8 graphs of the batched ones (item tower,
    cross-encoder) are quantised from the unfused graphs (no `QAttention`: onnxruntime's own
    session-time fusions of those were faster on CPUs), the user tower's (one user per call) from
    the fused one."""
    import onnx

    for name in ("item_tower", "user_tower", "cross_encoder"):
        entry = exported.graphs[name]
        assert entry["fusion"] == {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "LayerNormalization": 4}
        ops = {n.op_type for n in onnx.load(str(exported.path / entry["fp32"])).graph.node}
        assert {"Attention", "LayerNormalization", "BiasGelu", "EmbedLayerNormalization"} <= ops
        assert "Softmax" not in ops and "Erf" not in ops and "SkipLayerNormalization" not in ops
        int8_ops = {n.op_type for n in onnx.load(str(exported.path / entry["int8"])).graph.node}
        if name == "user_tower":
            assert entry["int8_from"] == "fused" and {"QAttention", "LayerNormalization"} <= int8_ops
        else:
            assert entry["int8_from"] == "unfused" and "QAttention" not in int8_ops and "Attention" not in int8_ops
            assert {"DynamicQuantizeLinear", "MatMulInteger", "Softmax"} <= int8_ops


def test_cpu_sessions_leave_skip_layernorm_unfused(exported, tmp_path: Path) -> None:
    """A CPU-only session turns off onnxruntime's SkipLayerNormFusion (its CPU kernel was slower
    than Add + LayerNormalization); the name is onnxruntime's (an unknown one would be ignored
    silently: without it the same session does fuse); a CUDA session keeps it."""
    import onnx
    import onnxruntime as ort

    from recs.device import onnx_disabled_optimizers

    cpu = ["CPUExecutionProvider"]
    assert RuntimeOptions(providers=cpu).disabled_optimizers == onnx_disabled_optimizers(cpu) == ["SkipLayerNormFusion"]
    assert onnx_disabled_optimizers(["CUDAExecutionProvider", *cpu]) == []
    assert RuntimeOptions(providers=cpu, disabled_optimizers=[]).disabled_optimizers == []

    def session_ops(disabled: list[str]) -> set[str]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
        ort.InferenceSession(str(exported.path / exported.graphs["item_tower"]["fp32"]), options, providers=cpu,
                             disabled_optimizers=disabled)
        return {n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node}

    assert "SkipLayerNormalization" not in session_ops(RuntimeOptions(providers=cpu).disabled_optimizers)
    assert "SkipLayerNormalization" in session_ops([])


def test_old_exports_with_skip_layernorm_get_a_hint(exported, caplog: pytest.LogCaptureFixture) -> None:
    """A folder exported while SkipLayerNormalization was still fused (its recorded fusion counts
    say so) loads as before, with a warning to export again; a current one loads without it."""
    import copy

    from recs.artifacts import open_artifact
    from recs.serving.onnx_runtime import graph, onnx_spec

    artifact = open_artifact(exported.path)
    spec = onnx_spec(artifact)
    cpu = RuntimeOptions(providers=["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="recs.serving.onnx_runtime"):
        graph(artifact, spec, "item_tower", cpu)
    assert "SkipLayerNormalization" not in caplog.text
    old = copy.deepcopy(spec)
    old["graphs"]["item_tower"]["fusion"]["SkipLayerNormalization"] = 4
    with caplog.at_level(logging.WARNING, logger="recs.serving.onnx_runtime"):
        graph(artifact, old, "item_tower", RuntimeOptions(precision="int8", providers=["CPUExecutionProvider"]))
        assert "SkipLayerNormalization" not in caplog.text  # its int8 graph was quantised from the unfused one
        graph(artifact, old, "item_tower", cpu)
    assert "item_tower.onnx: exported with SkipLayerNormalization nodes" in caplog.text


def test_encoding_pads_per_length_sorted_batch(onnx_engine: Engine, torch_engine: Engine) -> None:
    """Texts are tokenised once, sorted by token count and padded per batch: each batch equals
    the same texts tokenised on their own, and the vectors do not depend on the batch they fell in."""
    towers = onnx_engine.retriever.towers
    catalog_texts = list(onnx_engine.retriever.catalog.texts)
    texts = [*catalog_texts[:40], "x", " ; ".join(catalog_texts[:30])]
    widths = []
    for rows, inputs in towers.tokenizer.batches(texts, 64, 8):
        alone = towers.tokenizer([texts[i] for i in rows], 64)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(inputs[key], alone[key])
        widths.append(inputs["input_ids"].shape[1])
    assert widths == sorted(widths) and widths[0] < widths[-1] == 64
    one_by_one = np.concatenate([towers.encode_items([t]) for t in texts])
    assert _cos(towers.encode_items(texts), one_by_one).min() > 0.9999
    torch_vectors = torch_engine.retriever.towers.encode_items(texts)
    assert _cos(torch_vectors, one_by_one).min() > 0.999


def test_fp32_and_int8_parity_with_torch(exported) -> None:
    parity = exported.parity
    assert parity["tokenizer"]["equal_to_hf"]
    settings = {"b1_short", "b1_long", "b64_short", "b64_long"}  # batch 1 and 64, 16 and 128 tokens
    for tower in ("item_tower", "user_tower"):
        assert set(parity[tower]["fp32"]["by_setting"]) == settings
        assert min(parity[tower]["fp32"]["by_setting"].values()) >= 0.999
        assert parity[tower]["int8"]["min_cosine"] >= 0.98
    assert max(parity["cross_encoder"]["fp32"]["by_setting"].values()) < 1e-3
    for ranker in ("ranker", "discover"):
        assert parity[ranker]["rows"] > 0 and parity[ranker]["max_abs_diff"] < 1e-3


def test_a_cross_encoder_with_fewer_layers_saves_exports_and_keeps_parity(ranked_artifact: Path, tmp_path: Path) -> None:
    """`[ranking.cross_encoder] layers`: the ranked artifact's CE cut to 1 of its 2 layers is saved
    with its depth, loaded back as such, exported (1 fused attention) within the parity bounds,
    and the ONNX scores are the torch ones."""
    from recs.encoders import keep_first_layers
    from recs.export import export_artifact
    from recs.ranking.artifact import save_ranking

    source = Path(shutil.copytree(ranked_artifact, tmp_path / "model"))
    engine = Engine.load(source)
    cross = engine.pipeline.cross_encoder
    keep_first_layers(cross.model.backbone, 1)
    cross.config = cross.config.model_copy(update={"layers": 1})
    save_ranking(source, engine.pipeline, engine.options)
    torch_cross = Engine.load(source).pipeline.cross_encoder
    assert len(torch_cross.model.backbone.encoder.layer) == 1 and torch_cross.config.layers == 1
    result = export_artifact(source, tmp_path / "export", int8=True)
    entry = result.graphs["cross_encoder"]
    assert entry["fusion"]["Attention"] == 1 and result.graphs["item_tower"]["fusion"]["Attention"] == 2
    assert max(result.parity["cross_encoder"]["fp32"]["by_setting"].values()) < 1e-3
    onnx_cross = Engine.load(result.path).pipeline.cross_encoder
    assert isinstance(onnx_cross, OnnxCrossEncoder)
    items = ["tent for camping", "coffee beans", "phone case", "a much longer text with several more words in it"]
    want = torch_cross.score("purchase: sleeping bag ; purchase: dog bowl", items)
    assert np.abs(want).max() > 1e-3  # the fixture's non-zero head: scores that can differ
    np.testing.assert_allclose(onnx_cross.score("purchase: sleeping bag ; purchase: dog bowl", items), want, atol=1e-3)


def test_export_refuses_an_exported_folder_and_its_own_source(exported, ranked_artifact: Path) -> None:
    from recs.export import export_artifact

    with pytest.raises(ConfigError, match="already an exported ONNX folder"):
        export_artifact(exported.path, exported.path.parent / "again")
    with pytest.raises(ConfigError, match="must differ"):
        export_artifact(ranked_artifact, ranked_artifact)


def test_an_export_of_an_older_cross_encoder_is_refused(exported, tmp_path: Path) -> None:
    """A format-1 export's cross-encoder fed a second-stage ranker: not served as a residual."""
    folder = Path(shutil.copytree(exported.path, tmp_path / "old"))
    manifest = json.loads((folder / "manifest.json").read_text())
    spec = manifest["components"]["onnx"]["config"]
    spec["format"] = 1
    del spec["graphs"]["cross_encoder"]["combination"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="second-stage ranker"):
        Engine.load(folder)


# ------------------------------------------------------------------------------------ runtime


def test_tokenizer_json_reproduces_the_hf_tokenizer(exported, torch_engine: Engine) -> None:
    hf = torch_engine.retriever.towers.tokenizer
    spec = json.loads((exported.path / "manifest.json").read_text())["components"]["onnx"]["config"]["tokenizer"]
    tok = OnnxTokenizer(exported.path / "tokenizer.json", spec)
    texts = [" ", "Ünïcode café — naïve 東京", "UPPER case, punctuation!!", *torch_engine.retriever.catalog.texts[:5], "word " * 300]
    pairs = list(reversed(texts))
    for length in (8, 40, 128):
        ref = hf(texts, truncation=True, max_length=length, padding=True)
        got = tok(texts, length)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(np.asarray(ref[key]), got[key]), (key, length)
        ref = hf(texts, pairs, truncation="longest_first", max_length=length, padding=True)
        got = tok(texts, length, pairs=pairs)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(np.asarray(ref[key]), got[key]), ("pairs", key, length)
        for first in (texts[1], texts[-1]):  # one user's text with every candidate: the cross-encoder's call
            ref = hf([first] * len(pairs), pairs, truncation="longest_first", max_length=length, padding=True)
            got = tok.pairs(first, pairs, length)
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert np.array_equal(np.asarray(ref[key]), got[key]), ("one first", key, length)


def test_onnx_towers_match_torch_at_batch_1_and_64(onnx_engine: Engine, torch_engine: Engine) -> None:
    onnx_r, torch_r = onnx_engine.retriever, torch_engine.retriever
    assert isinstance(onnx_r.towers, OnnxTowers)
    texts = list(torch_r.catalog.texts[:64])
    assert _cos(onnx_r.encode_texts(texts), torch_r.encode_texts(texts)).min() >= 0.999
    assert _cos(onnx_r.encode_texts(texts[:1]), torch_r.encode_texts(texts[:1])).min() >= 0.999
    states = [torch_r.context(user_id=u).state for u in _users(torch_engine, 64)]
    assert _cos(onnx_r.user_vectors(states), torch_r.user_vectors(states)).min() >= 0.999
    assert _cos(onnx_r.user_vectors(states[:1]), torch_r.user_vectors(states[:1])).min() >= 0.999


def test_exported_folder_ranks_identically_to_the_torch_engine(onnx_engine: Engine, torch_engine: Engine) -> None:
    requests = [{"user_id": u} for u in _users(torch_engine, 12)]
    requests += [{"text": "camping tent for the weekend"}, {"user_id": _users(torch_engine, 1)[0], "category": "Electronics", "in_stock": True}]
    for request in requests:
        # No time budget: a slow CI machine must not flip one engine into its degraded order.
        want = torch_engine.recommend(k=10, time_budget_ms=None, **request)
        got = onnx_engine.recommend(k=10, time_budget_ms=None, **request)
        assert [r.item_id for r in got] == [r.item_id for r in want], request
        assert np.allclose([r.score for r in got], [r.score for r in want], atol=1e-3)
        assert any("cross_encoder" in r.stages for r in got) == any("cross_encoder" in r.stages for r in want)
    assert onnx_engine.options == torch_engine.options


def test_both_runtimes_serve_ranker_logit_plus_cross_encoder(onnx_engine: Engine, torch_engine: Engine) -> None:
    """The top R is ordered by ranker logit + CE score, the same sum on the torch and ONNX paths."""
    moved = 0
    for user in _users(torch_engine, 8):
        served = {}
        for name, engine in (("torch", torch_engine), ("onnx", onnx_engine)):
            results = engine.recommend(user_id=user, k=10, time_budget_ms=None, rerank_top=10)
            reranked = [r for r in results if "cross_encoder" in r.stages]
            for r in reranked:
                assert r.stages["ranker+cross_encoder"] == pytest.approx(r.stages["ranker"] + r.stages["cross_encoder"], abs=1e-5)
                assert r.score == pytest.approx(r.stages["ranker+cross_encoder"])  # the served score is the sum
            sums = [r.stages["ranker+cross_encoder"] for r in reranked]
            assert sums == sorted(sums, reverse=True)  # served in the order of the sum
            served[name] = reranked
            moved += int(any(abs(r.stages["cross_encoder"]) > 1e-3 for r in reranked))
        assert [r.item_id for r in served["onnx"]] == [r.item_id for r in served["torch"]]
        np.testing.assert_allclose([r.stages["ranker+cross_encoder"] for r in served["onnx"]],
                                   [r.stages["ranker+cross_encoder"] for r in served["torch"]], atol=1e-3)
    assert moved  # the CE is not the zero residual here: the comparison means something


def test_int8_keeps_ndcg_within_one_point(exported, ranked_artifact: Path, small_demo_dir: Path) -> None:
    """Two-tower NDCG@10 (full ranking, leave-last-out) with the int8 user tower vs torch fp32."""
    from recs.data import leave_last_out, load_dataset
    from recs.evaluation.metrics import hit_matrix, mean_ranking_metrics
    from recs.retrieval.retriever import Retriever

    dataset, _ = load_dataset(small_demo_dir)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    test = split.test.group_by("user_id").agg("item_id")
    truth = {str(u): set(items) for u, items in test.iter_rows()}

    def ndcg(retriever: Retriever) -> float:
        fitted = retriever.with_events(split.fit_events)
        users = sorted(truth)
        vectors = fitted.user_vectors([fitted.context(user_id=u).state for u in users])
        top = np.argsort(-(vectors @ fitted.item_vectors.T), axis=1, kind="stable")[:, :10]
        ranked = [[fitted.catalog.item_ids[j] for j in row] for row in top]
        hits, n_rel = hit_matrix(ranked, [truth[u] for u in users], 10)
        return mean_ranking_metrics(hits, n_rel, [10])["ndcg@10"]

    reference = ndcg(Retriever.load(ranked_artifact))
    int8 = ndcg(Engine.load(exported.path, runtime=RuntimeOptions(precision="int8")).retriever)
    assert int8 >= reference - 0.01


def test_corrupted_onnx_graph_is_refused_with_its_name(exported, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(exported.path, tmp_path / "corrupt"))
    graph = folder / "onnx" / "user_tower.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=re.escape("'onnx/user_tower.onnx'")):
        Engine.load(folder)  # the checksum catches it first
    # With checksums rewritten to agree, onnxruntime's refusal still names the file.
    graph.write_bytes(b"not an onnx graph at all")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["onnx/user_tower.onnx"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=re.escape("onnx/user_tower.onnx: not a loadable ONNX graph")):
        Engine.load(folder)


def _without_torch(body: str) -> dict:
    """Run `body` in a fresh interpreter where importing torch, transformers (and the exporters'
    libraries) raises ImportError; `body` sets `result`, returned with the heavy modules loaded."""
    code = f"""
import json, sys
for name in ("torch", "transformers", "lightgbm", "sklearn", "onnx", "onnxmltools"):
    sys.modules[name] = None  # importing any of them now raises ImportError
from recs.serving.engine import Engine
{body}
loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("torch", "transformers", "lightgbm"))
print(json.dumps({{"result": result, "loaded": loaded}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    return out["result"]


def test_serving_never_imports_torch_or_transformers(exported, onnx_engine: Engine) -> None:
    user = _users(onnx_engine, 1)[0]
    result = _without_torch(f"""
engine = Engine.load({str(exported.path)!r})
items = engine.recommend(user_id={user!r}, k=10, time_budget_ms=None)
result = {{"items": [i.item_id for i in items], "runtime": type(engine.retriever.towers).__name__}}
""")
    assert result["runtime"] == "OnnxTowers"
    assert result["items"] == [i.item_id for i in onnx_engine.recommend(user_id=user, k=10, time_budget_ms=None)]


def test_providers_and_threads_are_checked(exported, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = exported.path / "onnx" / "ranker.onnx"
    graph = OnnxGraph(path, RuntimeOptions(threads=1, inter_op_threads=1, providers=["CPUExecutionProvider"]))
    assert graph.providers == ["CPUExecutionProvider"]
    assert graph.session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("RECS_ORT_THREADS", "2")
    assert RuntimeOptions().threads == 2
    monkeypatch.setenv("RECS_ORT_THREADS", "many")
    with pytest.raises(ConfigError, match="RECS_ORT_THREADS"):
        RuntimeOptions()
    monkeypatch.delenv("RECS_ORT_THREADS")
    # Threads sleep between operators unless asked to spin (onnxruntime's own default is to spin).
    monkeypatch.delenv("RECS_ORT_SPIN", raising=False)
    assert RuntimeOptions().spinning is False
    monkeypatch.setenv("RECS_ORT_SPIN", "1")
    assert RuntimeOptions().spinning is True
    monkeypatch.delenv("RECS_ORT_SPIN")
    # Asked for CUDA where the session cannot have it: a warning (or an error when strict).
    import onnxruntime

    asked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fallen_back = OnnxGraph(path, RuntimeOptions(providers=asked))
    if "CUDAExecutionProvider" not in fallen_back.providers:
        with caplog.at_level(logging.WARNING, logger="recs.serving.onnx_runtime"):
            OnnxGraph(path, RuntimeOptions(providers=asked))
        assert "onnxruntime gave ['CPUExecutionProvider']" in caplog.text
        # The fusions turned off follow the provider it got (CPU), not the one asked for...
        assert RuntimeOptions(providers=asked).disabled_optimizers == []
        assert fallen_back.disabled_optimizers == ["SkipLayerNormFusion"]
        # ...unless the options name them.
        assert OnnxGraph(path, RuntimeOptions(providers=asked, disabled_optimizers=[])).disabled_optimizers == []
        with pytest.raises(ConfigError, match="asked for"):
            OnnxGraph(path, RuntimeOptions(providers=asked, strict_providers=True))
    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
    with pytest.raises(ConfigError, match="precision"):
        RuntimeOptions(precision="fp16")  # type: ignore[arg-type]


def test_int8_engine_and_cross_encoder_deadline(exported) -> None:
    engine = Engine.load(exported.path, runtime=RuntimeOptions(precision="int8"))
    assert isinstance(engine.retriever.towers, OnnxTowers)
    assert engine.retriever.towers.user.path.name == "user_tower.int8.onnx"
    cross = engine.pipeline.cross_encoder
    assert isinstance(cross, OnnxCrossEncoder) and cross.graph.path.name == "cross_encoder.int8.onnx"
    assert cross.score("coffee", ["mug", "beans"], deadline=time.monotonic() - 1) is None
    assert cross.score("coffee", []).shape == (0,)
    assert len(engine.recommend(user_id=_users(engine, 1)[0], k=5)) == 5
    with pytest.raises(ArtifactError, match="read-only"):
        engine.retriever.save(exported.path.parent / "nope")


def test_onnx_cross_encoder_keeps_the_time_budget(onnx_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX cross-encoder follows the torch one's budget rule (recs.ranking.budget): chunks of 32
    and the same scores without a deadline; None after few pairs when pairs cost too much."""
    cross = onnx_engine.pipeline.cross_encoder
    assert isinstance(cross, OnnxCrossEncoder)
    fresh = OnnxCrossEncoder(cross.graph, cross.tokenizer, cross.max_tokens)
    texts = [f"item {i} | bought before" for i in range(40)]
    want = np.concatenate([
        cross.graph.run(cross.tokenizer(["coffee"] * len(part), cross.max_tokens, pairs=part)).reshape(-1)
        for part in (texts[:32], texts[32:])
    ])
    got = fresh.score("coffee", texts)
    assert got is not None and np.array_equal(got, want)

    now = [1000.0]  # a clock that advances 10 ms per pair scored, and only then
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    pairs: list[int] = []

    class SlowGraph:
        def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
            pairs.append(len(feed["input_ids"]))
            now[0] += 0.010 * len(feed["input_ids"])
            return cross.graph.run(feed)

    fresh.graph = SlowGraph()  # type: ignore[assignment]
    fresh.budget = PairBudget()  # forget the cost measured on the real clock above
    assert fresh.score("coffee", texts[:20], deadline=now[0] + 0.030) is None
    assert 0 < sum(pairs) * 0.010 <= 0.030


def test_cli_export_without_ranking_then_query(trained_artifact: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recs.cli import app

    out = tmp_path / "onnx"
    runner = CliRunner()
    done = runner.invoke(app, ["export", "--model", str(trained_artifact), "--out", str(out), "--no-check"])
    assert done.exit_code == 0, done.output
    spec = json.loads((out / "manifest.json").read_text())["components"]["onnx"]["config"]
    assert set(spec["graphs"]) == {"item_tower", "user_tower"}
    done = runner.invoke(app, ["query", "--model", str(out), "--text", "coffee beans", "--k", "3", "--json"])
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.output)) == 3
    done = runner.invoke(app, ["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert done.exit_code == ArtifactError.exit_code and "not found" in done.output


def test_set_scorer_exports_and_bundles_identically(ranked_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    bundler_module = pytest.importorskip("recs.bundling.bundler")
    from recs.bundling.config import BundlerConfig, SetScorerConfig, SetTrainConfig
    from recs.data import load_dataset
    from recs.export import export_artifact
    from recs.retrieval.retriever import Retriever

    source = Path(shutil.copytree(ranked_artifact, tmp_path / "bundled"))
    dataset, _ = load_dataset(small_demo_dir)
    retriever = Retriever.load(source)
    config = BundlerConfig(scorer=SetScorerConfig(hidden=16, pair_rank=8), train=SetTrainConfig(epochs=2, max_sets=300))
    bundler = bundler_module.Bundler.fit(retriever, dataset.events, dataset.bundles, config, work_dir=tmp_path / "work", show_progress=False)
    bundler_module.save_bundler(source, bundler)
    result = export_artifact(source, tmp_path / "onnx")
    assert {"set_scorer", "set_completion"} <= set(result.graphs)
    assert result.parity["set_scorer"]["max_abs_diff"] < 1e-3
    assert not (result.path / "set_scorer" / "weights.safetensors").exists()
    engine = Engine.load(result.path)
    onnx_bundler = engine.bundler
    torch_bundler = bundler_module.Bundler.load(source, Retriever.load(source))
    # The bundle item model travels with the export (JSON, its trees as ONNX graphs like the
    # ranker's, no LightGBM text) and is served by both runtimes.
    assert onnx_bundler.item_model is not None and torch_bundler.item_model is not None
    from recs.bundling.item_model import booster_name
    from recs.serving.onnx_runtime import OnnxRanker

    modes = sorted(torch_bundler.item_model.boosters)
    assert modes and sorted(onnx_bundler.item_model.boosters) == modes
    assert all(isinstance(b, OnnxRanker) for b in onnx_bundler.item_model.boosters.values())
    assert {booster_name(m) for m in modes} <= set(result.graphs) and not list((result.path / "set_scorer").glob("*.txt"))
    assert all(result.parity[booster_name(m)]["ok"] and result.parity[booster_name(m)]["boundary_rows"] > 0 for m in modes)
    user = str(retriever.events["user_id"][0])
    anchor = [retriever.catalog.item_ids[0]]

    def outputs(b) -> tuple[list, list]:
        composed = [(x.item_ids, x.score) for x in b.compose(user_id=user, items=anchor, size=(2, 4), n=3)]
        return composed, [(x.bundle_id, x.score) for x in b.rank_bundles(user_id=user, k=3)]

    # Same bundles in the same order; scores within float error (rounding them to 4 places
    # fails whenever a score sits on a rounding boundary).
    want, got = outputs(torch_bundler), outputs(onnx_bundler)
    assert [[i for i, _ in part] for part in got] == [[i for i, _ in part] for part in want] and got[0]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=1e-4)
    want = [b.item_ids for b in torch_bundler.compose(user, items=anchor, n=2)]
    assert [b.item_ids for b in engine.bundle(user, item=anchor[0], n=2)] == want
    served = _without_torch(f"result = [b.item_ids for b in Engine.load({str(result.path)!r}).bundle({user!r}, item={anchor[0]!r}, n=2)]")
    assert served == want


def test_export_scratch_stays_beside_the_target_and_a_killed_export_is_cleaned(
    trained_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Killed exports left `.OUT.tmp-*` beside the target and `recs-export-*` in the system temp
    folder, which nothing ever removed: scratch now lives in `.OUT.work`, cleaned by the next run."""
    import tempfile

    from recs.export import export_artifact, towers

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "serve" / "onnx"
    for name in (".onnx.tmp-killed", ".onnx.work"):
        (out.parent / name).mkdir(parents=True)
        (out.parent / name / "graph.onnx").write_bytes(b"x" * 3_000_000)
    scratch: list[Path] = []
    real = towers.export_module

    def spy(module, example, path, opset):
        scratch.append(Path(path).parent)
        return real(module, example, path, opset)

    monkeypatch.setattr(towers, "export_module", spy)
    with caplog.at_level(logging.WARNING, logger="recs.io"):
        export_artifact(trained_artifact, out, int8=True, check=False)
    assert set(scratch) == {out.parent / ".onnx.work"}
    assert list(system_tmp.iterdir()) == []
    assert sorted(p.name for p in out.parent.iterdir()) == [".onnx.lock", "onnx"]
    removed = sorted(r.getMessage().rsplit("/", 1)[-1] for r in caplog.records if "left by" in r.getMessage())
    assert removed == [".onnx.tmp-killed (3.0 MB) left by an interrupted run", ".onnx.work (3.0 MB) left by an interrupted run"]
    assert Engine.load(out).recommend(text="coffee", k=3)


def test_fused_and_unfused_graphs_agree(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`export_transformer` with and without the BERT fusions: the same vectors, the torch
    module's attention implementation restored after the (eager) export."""
    from recs.encoders.backbone import load_backbone, load_tokenizer
    from recs.export.quantize import export_transformer
    from recs.export.towers import ItemTowerGraph, example_batch, torch_outputs
    from recs.retrieval.config import TowerConfig
    from recs.retrieval.towers import TwoTowerModel

    model = TwoTowerModel(load_backbone(str(tiny_model_dir)), TowerConfig(model=str(tiny_model_dir))).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    before = model.item_backbone.config._attn_implementation
    fused = export_transformer(ItemTowerGraph(model), example_batch(tokenizer), tmp_path, tmp_path / "fused.onnx")
    plain = export_transformer(ItemTowerGraph(model), example_batch(tokenizer), tmp_path, tmp_path / "plain.onnx", fuse=False)
    assert model.item_backbone.config._attn_implementation == before
    assert fused["fusion"]["Attention"] == 2 and "fusion" not in plain
    options = RuntimeOptions(precision="fp32", providers=["CPUExecutionProvider"])
    enc = tokenizer(["a short one", "a much longer text with several more words in it"], padding=True, return_tensors="np")
    batch = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
    reference = torch_outputs(ItemTowerGraph(model), batch)
    for path in ("fused.onnx", "plain.onnx"):
        assert _cos(OnnxGraph(tmp_path / path, options).run(batch), reference).min() > 0.9999
