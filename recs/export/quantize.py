"""Graph optimisation and dynamic int8 quantisation, both with onnxruntime's own tools.

- `optimize_graph`: onnxruntime's offline optimiser at the *basic* level (constant folding,
  redundant-node elimination): the result stays portable across CPUs and execution providers;
  the hardware-specific fusions (attention, GELU, layer norm) are applied by each serving session
  (ORT_ENABLE_ALL) on the machine that runs it.
- `quantize_graph`: `quantize_dynamic` with int8 weights *per channel*. Per-tensor scales
  (the default) measured a cosine of only ~0.85-0.91 against fp32 on the towers; per channel
  ~0.99 at nearly the same speed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recs.io import atomic_write_file, make_temp_dir, remove_tree

__all__ = ["optimize_graph", "quantize_graph"]


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


def quantize_graph(src: Path, dst: Path) -> Path:
    """The int8 graph of `src` at `dst` (written atomically; scratch files in a temp folder beside
    `dst`, so a killed run leaves them where the next writer of the artifact cleans up)."""
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
            extra_options={"MatMulConstBOnly": True},
        ))
    finally:
        remove_tree(tmp)
        quant_logger.setLevel(level)
    return Path(dst)
