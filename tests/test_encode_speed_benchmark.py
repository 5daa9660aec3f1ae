"""benchmarks/encode_speed.py on the tiny BERT: every slice and variant is produced and well formed
(no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import encode_speed


def test_quick_run_writes_every_slice(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny_model_dir), "--quick", "--threads", "1", "--users", "20",
            "--latency-calls", "4", "--ce-layers", "1", "--out", str(tmp_path)]
    assert encode_speed.main(args) == 0
    rows = json.loads((tmp_path / "encode_speed.json").read_text())["rows"]
    by = {(r["method"], r["slice"]): r["metrics"] for r in rows}
    for label, _, _ in encode_speed.SETTINGS:
        for method in ("torch", "onnx_fp32", "onnx_int8", "onnx_fp32_unfused", "onnx_int8_fused", "onnx_int8_skipln"):
            m = by[(method, label)]
            assert m["ratio_round_min"] <= m["ratio_round_max"]
            assert m["cosine_min"] >= (0.999 if "fp32" in method or method == "torch" else 0.98)  # the export's parity bounds
    assert {"onnx_int8_unfused", "onnx_int8_skipln"} <= {m for m, s in by if s == "user_latency"}
    # The default-depth cross-encoder and the --ce-layers one, each against its own torch.
    assert {("torch", "cross_encoder_r20"), ("onnx_int8", "cross_encoder_r20"), ("torch_l1", "cross_encoder_r20"),
            ("onnx_int8_l1", "cross_encoder_r20")} <= set(by)
    assert by[("onnx_fp32", "cross_encoder_r20")]["max_abs_diff"] < 1e-3
    ndcg = by[("onnx_int8", "ndcg_zero_shot")]
    assert ndcg["ndcg_delta_ci_low"] <= ndcg["ndcg_delta_vs_torch"] <= ndcg["ndcg_delta_ci_high"]
    assert by[("onnx_fp32", "ndcg_zero_shot")]["ndcg_delta_vs_torch"] == 0.0
    # Every row names the CPU; the plot leaves out the --ce-layers rows (their own torch).
    assert all("cores" in r["notes"] for r in rows if r["slice"] != "ndcg_zero_shot")
    assert (tmp_path / "encode_speed.png").stat().st_size > 0 and (tmp_path / "encode_speed.md").exists()
