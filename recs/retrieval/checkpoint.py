"""Pickle-free checkpoints: model and optimizer tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recs.errors import ArtifactError


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
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tmp"
    tmp.mkdir(exist_ok=True)
    save_file(model_state(model), tmp / "model.safetensors")
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().clone().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors or {"_empty": torch.zeros(1)}, tmp / "optimizer.safetensors")
    meta = {**meta, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    meta["torch_rng"] = torch.get_rng_state().tolist()
    (tmp / "state.json").write_text(json.dumps(meta))
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        os.replace(tmp / name, folder / name)
    tmp.rmdir()


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    meta = json.loads((folder / "state.json").read_text())
    load_model_state(model, load_file(folder / "model.safetensors"))
    tensors = load_file(folder / "optimizer.safetensors")
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
