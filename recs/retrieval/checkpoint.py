"""Pickle-free checkpoints: model and optimizer tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recs.errors import ArtifactError
from recs.io import atomic_replace_dir, restore_dir

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"  # written last


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliased tensors (a shared backbone appears once)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:
            continue
        seen.add(key)
        out[name] = tensor.detach().clone().contiguous().cpu()
    return out


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Keys of an aliased (shared) module are legitimately absent.
    shared = {k for k in missing if k.startswith("user_backbone.")}
    if unexpected or set(missing) - shared:
        raise ArtifactError(
            f"weights do not fit the model: missing {sorted(set(missing) - shared)[:3]}, unexpected {unexpected[:3]}"
        )


def save_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    """Write the checkpoint folder (model, optimizer, state.json) as one unit: the new folder is
    filled beside the old one and swapped in (`recs.io.atomic_replace_dir`), so a crash leaves
    either the old complete checkpoint or the new one, never a mix."""
    weights = model_state(model)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().clone().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    meta = {**meta, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    meta["torch_rng"] = torch.get_rng_state().tolist()

    def fill(tmp: Path) -> None:
        save_file(weights, tmp / MODEL_FILE)
        save_file(tensors or {"_empty": torch.zeros(1)}, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(meta))

    atomic_replace_dir(Path(folder), fill)


def _complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def has_training_state(folder: Path) -> bool:
    """Whether `folder` holds a checkpoint to resume from (restoring the previous one first if a
    save was interrupted between its two renames)."""
    folder = Path(folder)
    restore_dir(folder, complete=_complete)
    return _complete(folder)


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    folder = Path(folder)
    if not has_training_state(folder):
        raise ArtifactError(f"{folder}: no training checkpoint ({STATE_FILE} missing)")
    meta = json.loads((folder / STATE_FILE).read_text())
    load_model_state(model, load_file(folder / MODEL_FILE))
    tensors = load_file(folder / OPTIMIZER_FILE)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key == "_empty":
            continue
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta
