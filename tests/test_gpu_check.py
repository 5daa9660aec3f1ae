"""benchmarks/gpu_check.py on CPU: `--cpu-smoke` runs every section's code path with tiny sizes,
results merge by section, and without a GPU the GPU checks fail loudly instead of measuring the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import (
    CUDA_EP,
    RESULTS_FILE,
    Context,
    SectionFailed,
    Sizes,
    main,
    merge_results,
    read_results,
    section_faiss_gpu,
    section_onnx_cuda,
)

OLD_FORMAT = {
    "cuda": True, "torch": "2.11.0+cu130", "gpu": "NVIDIA H200", "pairs_available": 3434,
    "towers": [{"batch_size": 64, "train_layers": 2, "steps": 53, "pairs_per_s": 346.5, "finite": True}],
    "cross_encoder": {"steps": 20, "queries_per_s": 15.2, "scores_finite": True},
}


def _document(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_cpu_smoke_runs_the_sections_and_keeps_the_rows_of_those_not_rerun(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    out.write_text(json.dumps(OLD_FORMAT), encoding="utf-8")  # the first format: the `train` section
    code = main(["--cpu-smoke", "--sections", "onnx_cuda,faiss_gpu,rerank", "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    document = _document(out)
    sections = document["sections"]
    assert {k: v["status"] for k, v in sections.items()} == {"train": "ok", "onnx_cuda": "ok", "faiss_gpu": "ok", "rerank": "ok"}
    assert all(sections[k]["smoke"] for k in ("onnx_cuda", "faiss_gpu", "rerank"))
    rows = {(r["section"], r["method"]): r for r in document["rows"] if r["method"] != "cross_encoder_score"}
    assert rows[("train", "towers")]["pairs_per_s"] == 346.5  # kept from the earlier file
    assert rows[("train", "cross_encoder")]["queries_per_s"] == 15.2
    onnx = rows[("onnx_cuda", "item_tower_onnx")]
    assert onnx["providers"] == ["CPUExecutionProvider"] and onnx["cosine_min"] > 0.999 and onnx["items_per_s"] > 0
    assert rows[("faiss_gpu", "flat")]["overlap@k"] == 1.0
    assert rows[("faiss_gpu", "ivf_flat")]["overlap@k"] == 1.0 and 0 < rows[("faiss_gpu", "ivf_flat")]["recall@k_cpu"] <= 1
    assert rows[("faiss_gpu", "item_index_flat")]["overlap@k"] == 1.0
    rerank = [r for r in document["rows"] if r["method"] == "cross_encoder_score"]
    assert [r["R"] for r in rerank] == [20, 100]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] and r["scores_finite"] for r in rerank)

    # A second run of one section replaces that section's rows only.
    assert main(["--cpu-smoke", "--sections", "train", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    again = _document(out)
    train = [r for r in again["rows"] if r["section"] == "train"]
    assert [r["method"] for r in train] == ["towers", "cross_encoder"] and train[0]["batch_size"] == 16
    assert all(r.get("finite", r.get("scores_finite")) for r in train)
    assert [r for r in again["rows"] if r["section"] != "train"] == [r for r in document["rows"] if r["section"] != "train"]


def test_merge_replaces_rerun_sections_and_reads_the_first_format(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_FORMAT), encoding="utf-8")
    old = read_results(path)
    assert old["sections"]["train"]["machine"]["gpu"] == "NVIDIA H200"
    new = {"sections": {"train": {"status": "failed", "error": "boom"}}, "rows": []}
    merged = merge_results(old, new)
    assert merged["rows"] == [] and merged["sections"]["train"]["status"] == "failed"
    assert read_results(tmp_path / "missing.json") == {"sections": {}, "rows": []}


def test_smoke_figures_never_go_into_the_results_file() -> None:
    assert main(["--cpu-smoke", "--sections", "faiss_gpu", "--out", str(RESULTS_FILE)]) == 2
    assert main(["--sections", "nope"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_gpu_run_refuses_and_the_gpu_sections_fail_loudly(tmp_path: Path) -> None:
    assert main(["--sections", "rerank"]) == 2
    ctx = Context(tmp_path, smoke=False, sizes=Sizes.smoke())
    with pytest.raises(SectionFailed, match=CUDA_EP):
        section_onnx_cuda(ctx)  # the CPU onnxruntime offers no CUDA provider: no figure from the CPU
    with pytest.raises(SectionFailed, match="no GPU"):
        section_faiss_gpu(ctx)


@pytest.mark.slow  # two torchrun launches: about 50 s on 2 CPU cores
def test_cpu_smoke_ddp_trains_under_torchrun_with_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    assert main(["--cpu-smoke", "--sections", "ddp", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    rows = _document(out)["rows"]
    assert [r["world_size"] for r in rows] == [1, 2]
    assert all(r["backend"] == "gloo" and r["finite"] and r["train_pairs_per_s"] > 0 for r in rows)
    assert rows[1]["global_batch"] == 2 * rows[0]["global_batch"] and "efficiency" in rows[1]
