"""A random BERT for tests and smoke runs (tiny by default: 2 small layers, seconds) with MiniLM's
own tokenizer; benchmarks/gpu_check.py also makes one of MiniLM-L6's full shape."""

from __future__ import annotations

import shutil
from pathlib import Path

from recs.encoders.backbone import default_model_path
from recs.io import atomic_replace_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_tiny_bert(
    out_dir: str | Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
    intermediate: int | None = None, tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write a randomly initialised BERT (safetensors) and MiniLM's tokenizer to `out_dir`
    (the folder is replaced as a whole, atomically). `intermediate`: the feed-forward width
    (default 2 x hidden); `tokenizer_dir`: where the tokenizer files are (default: the installed
    MiniLM package's, which a bare GPU image may lack)."""
    import torch
    from transformers import BertConfig, BertModel

    source = Path(tokenizer_dir) if tokenizer_dir is not None else default_model_path()
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or hidden * 2,
        max_position_embeddings=512,
    )

    def fill(out: Path) -> None:
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, out / name)
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(out, safe_serialization=True)

    return atomic_replace_dir(Path(out_dir), fill)
