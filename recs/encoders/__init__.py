"""Backbones (local folders only), tokenisation and pooling."""

from recs.encoders.backbone import (
    default_model_path,
    keep_first_layers,
    load_backbone,
    load_tokenizer,
    resolve_model_path,
)
from recs.encoders.tiny import build_tiny_bert

__all__ = ["build_tiny_bert", "default_model_path", "keep_first_layers", "load_backbone", "load_tokenizer", "resolve_model_path"]
