"""Torch modules -> ONNX graphs: the user tower, the item tower, the cross-encoder.

The TorchScript exporter (`dynamo=False`) is used on purpose: it needs no `onnxscript`, writes the
weights inside the one `.onnx` file (below 2 GB) and traces the BERT attention-mask path as long as
the example batch holds padding (a batch without padding may let the model skip the mask, and that
branch would be baked into the graph). The attention is exported in its eager form (matmul,
softmax, matmul; `eager_attention`): the same numbers as torch's SDPA, in the pattern that
onnxruntime's transformer optimiser fuses into one Attention operator (SDPA's export is not fused).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recs.io import atomic_write_file

DEFAULT_OPSET = 17
EXAMPLE_TEXTS = ("a", "an example sentence that is a little longer than the first one, with padding")

__all__ = [
    "DEFAULT_OPSET", "CrossEncoderGraph", "ItemTowerGraph", "UserTowerGraph", "attention_shape", "eager_attention",
    "example_batch", "export_module",
]


class ItemTowerGraph(nn.Module):
    """input_ids, attention_mask -> item_vectors (batch, d), L2-normalised."""

    input_names = ("input_ids", "attention_mask")
    output_name = "item_vectors"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_items(input_ids, attention_mask)


class UserTowerGraph(nn.Module):
    """input_ids, attention_mask, history_mean (batch, d) -> user_vectors (batch, d)."""

    input_names = ("input_ids", "attention_mask", "history_mean")
    output_name = "user_vectors"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, history_mean: torch.Tensor) -> torch.Tensor:
        return self.model.encode_users(input_ids, attention_mask, history_mean=history_mean)


class CrossEncoderGraph(nn.Module):
    """input_ids, attention_mask, token_type_ids -> scores (batch,)."""

    input_names = ("input_ids", "attention_mask", "token_type_ids")
    output_name = "scores"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def example_batch(tokenizer: Any, pairs: bool = False, max_length: int = 32) -> dict[str, torch.Tensor]:
    """Two texts of different lengths: the batch holds padding (see the module doc)."""
    first = list(EXAMPLE_TEXTS)
    second = ["b", "c"] if pairs else None
    enc = tokenizer(first, second, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    if int(enc["attention_mask"].min()) != 0:
        raise RuntimeError("the example batch for export has no padding")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    batch["token_type_ids"] = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
    return batch


@contextlib.contextmanager
def eager_attention(module: nn.Module) -> Iterator[None]:
    """Every Hugging Face model inside `module` on eager attention for the block, then back to
    what it had (the torch module keeps serving and training with SDPA). A transformers without
    `set_attn_implementation` exports what it has; the optimiser then fuses no attention (logged)."""
    changed = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if hasattr(sub, "set_attn_implementation") and getattr(config, "_attn_implementation", "eager") != "eager":
            changed.append((sub, config._attn_implementation))
            sub.set_attn_implementation("eager")
    try:
        yield
    finally:
        for sub, implementation in changed:
            sub.set_attn_implementation(implementation)


def attention_shape(module: nn.Module) -> tuple[int, int]:
    """(attention heads, hidden size) of the first BERT-like model inside `module` (0, 0: the
    optimiser then reads them from the graph)."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if hasattr(config, "num_attention_heads") and hasattr(config, "hidden_size"):
            return int(config.num_attention_heads), int(config.hidden_size)
    return 0, 0


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    # Eval for the export, then every submodule's own flag back: torch.onnx.export (and a plain
    # `module.train(was)`) would set the wrapper's flag recursively, and a fresh wrapper is in
    # training mode, which would switch dropout on inside the wrapped model.
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def export_module(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export `module` with dynamic batch (and sequence, for token inputs) axes, or the axes the
    module declares (`dynamic_axes`); returns the graph's input and output names as written."""
    import onnx

    names: Sequence[str] = module.input_names  # type: ignore[assignment]
    outputs = list(getattr(module, "output_names", None) or [str(module.output_name)])
    args = tuple(inputs[n] for n in names)
    axes: dict[str, dict[int, str]] | None = getattr(module, "dynamic_axes", None)
    if axes is None:
        axes = {n: ({0: "batch", 1: "sequence"} if inputs[n].dim() == 2 and n != "history_mean" else {0: "batch"}) for n in names}
        axes.update({o: {0: "batch"} for o in outputs})
    def write(tmp: Path) -> None:
        with _eval_mode(module), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes
            torch.onnx.export(
                module, args, str(tmp), dynamo=False, input_names=list(names), output_names=outputs,
                dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
            )
        model = onnx.load(str(tmp), load_external_data=False)
        if _float_eyelike(model):
            onnx.save(model, str(tmp))
        onnx.checker.check_model(model)
        graph_io["inputs"] = [i.name for i in model.graph.input]
        graph_io["outputs"] = [o.name for o in model.graph.output]

    graph_io: dict[str, Any] = {}
    atomic_write_file(path, write)  # a failed export or check leaves no half-written graph
    return graph_io


def _float_eyelike(model: Any) -> bool:
    """onnxruntime has no bool EyeLike kernel (torch.eye(..., dtype=torch.bool), as in the set
    scorer's pair mask): make it a float EyeLike between two Casts."""
    from onnx import TensorProto, helper, shape_inference

    eyes = [n for n in model.graph.node if n.op_type == "EyeLike"]
    if not eyes:
        return False
    inferred = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for producer in model.graph.node:  # where inference gives up: the constant that feeds EyeLike
        if producer.op_type == "ConstantOfShape":
            value = next((a.t for a in producer.attribute if a.name == "value"), None)
            types.setdefault(producer.output[0], value.data_type if value is not None else TensorProto.FLOAT)
    changed = False
    for node in eyes:
        out = node.output[0]
        dtype = next((a.i for a in node.attribute if a.name == "dtype"), None)
        if (dtype if dtype is not None else types.get(out, types.get(node.input[0]))) != TensorProto.BOOL:
            continue
        for attr in [a for a in node.attribute if a.name == "dtype"]:
            node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("dtype", TensorProto.FLOAT))
        # Its input too: onnxruntime's EyeLike takes no bool input either.
        source = node.input[0]
        node.input[0] = f"{source}_float"
        node.output[0] = f"{out}_float"
        at = list(model.graph.node).index(node)
        model.graph.node.insert(at + 1, helper.make_node("Cast", [node.output[0]], [out], to=TensorProto.BOOL, name=f"{node.name}_to_bool"))
        model.graph.node.insert(at, helper.make_node("Cast", [source], [node.input[0]], to=TensorProto.FLOAT, name=f"{node.name}_input_float"))
        changed = True
    return changed


def torch_outputs(module: nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The torch module's output for a numpy batch (the parity reference)."""
    names: Sequence[str] = module.input_names  # type: ignore[assignment]
    with _eval_mode(module), torch.no_grad():
        out = module(*(torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names))
    return out.float().cpu().numpy()
