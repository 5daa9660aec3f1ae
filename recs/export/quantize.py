"""Graph optimisation, transformer fusion and dynamic int8 quantisation, with onnxruntime's own tools.

- `optimize_graph`: onnxruntime's offline optimiser at the *basic* level (constant folding,
  redundant-node elimination): the result stays portable across CPUs and execution providers.
- `fuse_graph`: onnxruntime's transformer optimiser (`onnxruntime.transformers.optimizer`, model
  type "bert") on a BERT graph: attention, embedding-LayerNorm and bias-GELU become single
  com.microsoft operators, which both the CPU and the CUDA providers implement. Residual adds
  stay Add + LayerNormalization: onnxruntime's CPU `SkipLayerNormalization` was ~4x slower than
  the two (see `recs.device.onnx_disabled_optimizers`); a CUDA session fuses them itself. It
  runs at opt_level 0 (python fusions only) on a basic-optimised graph, never at the levels that
  bake one provider's kernels into the file. The attention pattern it recognises is the eager one
  (see `recs.export.towers.eager_attention`).
- `quantize_graph`: `quantize_dynamic` with int8 weights *per channel*. Per-tensor scales
  (the default) measured a cosine of only ~0.85-0.91 against fp32 on the towers; per channel
  ~0.99 at nearly the same speed. Static int8 (QDQ or QOperator, calibrated on the shop's texts)
  measured both slower (+17-24%) and less faithful (cosine ~0.95) on a 2-core AVX-512 VNNI CPU.
- `export_transformer`: the one pipeline (export -> basic -> fuse -> fp32; basic -> int8) that
  `recs export` and the speed benchmark both use. int8 runs on CPUs, and which graph to quantise
  depends on the batch a graph is served at (`INT8_FROM_FUSED`): from 8 rows up, the *unfused*
  basic graph quantised, with onnxruntime's own session-time fusions (quantised MatMul + bias,
  GELU), was 6-13% faster than the quantised fused graph, whose `QAttention` is
  the slow part (profiled per operator); at one row the fused graph was ~5% faster.
  `benchmarks/encode_speed.py` times both on each CPU (`onnx_int8` / `onnx_int8_fused`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recs.io import atomic_write_file, make_temp_dir, remove_tree

__all__ = ["FUSED_OPERATORS", "INT8_FROM_FUSED", "export_transformer", "fuse_graph", "optimize_graph", "quantize_graph", "scratch_graphs"]

log = logging.getLogger(__name__)

# The operators whose counts `fuse_graph` reports (the optimiser's statistics list more kinds).
FUSED_OPERATORS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "LayerNormalization")

# The exported graphs whose int8 is quantised from the fused graph: those served one row per call
# (the user tower: one user per request). The batched ones (the item tower encodes the catalog in
# batches of 64, the cross-encoder scores a request's R pairs in one batch) quantise the unfused one.
INT8_FROM_FUSED = frozenset({"user_tower"})


def optimize_graph(src: Path, dst: Path) -> Path:
    """The optimised graph of `src` at `dst` (written atomically)."""
    import onnxruntime as ort

    def write(tmp: Path) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp)  # ends in dst's suffix (.onnx, not .ort)
        options.log_severity_level = 3
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])

    return atomic_write_file(dst, write)


def fuse_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """The BERT-fused graph of `src` at `dst` (written atomically); returns how many of each
    `FUSED_OPERATORS` it holds (all zero: nothing matched, `dst` is then `src` unchanged)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    optimiser_logger = logging.getLogger("onnxruntime.transformers")  # chatty at INFO/WARNING
    level = optimiser_logger.level
    optimiser_logger.setLevel(logging.ERROR)
    try:
        options = FusionOptions("bert")
        options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
        model = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, use_gpu=False, optimization_options=options)
    finally:
        optimiser_logger.setLevel(level)
    counts = model.get_fused_operator_statistics()
    atomic_write_file(dst, lambda out: model.save_model_to_file(str(out)))
    return {op: int(counts.get(op, 0)) for op in FUSED_OPERATORS if counts.get(op, 0)}


def quantize_graph(src: Path, dst: Path) -> Path:
    """The int8 graph of `src` at `dst` (written atomically; scratch files in a temp folder beside
    `dst`, so a killed run leaves them where the next writer of the artifact cleans up)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_logger = logging.getLogger()  # the quantiser warns on the root logger ("run pre-processing")
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    tmp = make_temp_dir(dst)
    try:
        prepared = tmp / "prepared.onnx"
        # ONNX shape inference, so that the quantiser knows every tensor's type (the graph is
        # already optimised above; symbolic shape inference cannot follow BERT's masks).
        quant_pre_process(str(src), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        atomic_write_file(dst, lambda out: quantize_dynamic(
            str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
            # Fused contrib ops (Attention, SkipLayerNormalization, ...) are unknown to ONNX shape
            # inference: their outputs are float32.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
        ))
    finally:
        remove_tree(tmp)
        quant_logger.setLevel(level)
    return Path(dst)


def scratch_graphs(work: Path, fp32: Path) -> tuple[Path, Path]:
    """Where `export_transformer` leaves the raw export and the basic-optimised graph of `fp32` in
    `work` (with fusions on, the basic graph is the unfused one the speed benchmark also times)."""
    name = Path(fp32).name.removesuffix(".onnx")
    return work / f"{name}.raw.onnx", work / f"{name}.basic.onnx"


def export_transformer(module: Any, example: dict[str, Any], work: Path, fp32: Path, int8: Path | None = None,
                       opset: int | None = None, fuse: bool = True, int8_fused: bool = False) -> dict[str, Any]:
    """A BERT-based torch module -> its serving graphs: `fp32` (basic-optimised, then fused) and,
    when given, `int8` (quantised from the basic-optimised graph; `int8_fused`: from the fused
    one). Scratch graphs go to `work`. Returns the graph's input/output names, `fusion` (the
    fused operators' counts) and, with `int8`, `int8_from` ("fused" or "unfused")."""
    from recs.export.towers import DEFAULT_OPSET, attention_shape, eager_attention, export_module

    name = Path(fp32).name.removesuffix(".onnx")
    raw, basic = scratch_graphs(work, fp32)
    with eager_attention(module):
        io = export_module(module, example, raw, opset or DEFAULT_OPSET)
    optimize_graph(raw, basic if fuse else fp32)
    if fuse:
        heads, hidden = attention_shape(module)
        io["fusion"] = fuse_graph(basic, fp32, heads, hidden)
        if "Attention" not in io["fusion"]:
            log.warning("%s: onnxruntime's transformer optimiser fused no attention (%s)", name, io["fusion"] or "nothing")
    if int8 is not None:
        quantize_graph(fp32 if int8_fused or not fuse else basic, int8)  # without fusions fp32 is the basic graph
        io["int8_from"] = "fused" if fuse and int8_fused else "unfused"
    return io
