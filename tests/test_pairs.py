"""`PairTokenizer`: the cross-encoder's pairs, equal to `tokenizers`' own longest-first pair encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recs.encoders.pairs import PairTokenizer

WORDS = ("purchase", "tent", "sleeping", "bag", "coffee", "beans", "dark", "roast", "unbelievably", "waterproof",
         "kettlebell", "5", "kg", "hydrogel", "screen-protector", ";", "|", "bought", "together", "with", "café", "naïve")


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n).tolist())


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir: Path):
    from recs.encoders.backbone import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize("max_length", [16, 17, 24, 48, 64])
def test_pairs_equal_the_tokenizers_pair_encoding(hf_tokenizer, max_length: int) -> None:
    """Every length relation: shared text shorter / longer than its partners, partners longer than
    max_length, an odd and an even budget (who keeps the odd token), texts that fit untruncated."""
    rng = np.random.default_rng(max_length)
    pairs = PairTokenizer(hf_tokenizer.backend_tokenizer, max_length, hf_tokenizer.pad_token_id, hf_tokenizer.pad_token_type_id)
    for trial in range(40):
        first = _text(rng, int(rng.integers(1, 120)))
        seconds = [_text(rng, int(rng.integers(1, 3 if trial % 4 == 0 else 70))) for _ in range(int(rng.integers(1, 12)))]
        want = hf_tokenizer([first] * len(seconds), seconds, truncation="longest_first", max_length=max_length,
                            padding=True, return_tensors="np")
        got = pairs(first, seconds)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key}: {first!r} with {seconds!r}")


@pytest.mark.parametrize("max_length", [9, 16, 17])
def test_every_pair_of_lengths_is_cut_as_tokenizers_cuts_it(hf_tokenizer, max_length: int) -> None:
    """`longest_first` against `tokenizers` itself over every (n1, n2) up to twice the budget and
    beyond: "a" is one token, so "a a a" is 3."""
    pairs = PairTokenizer(hf_tokenizer.backend_tokenizer, max_length, hf_tokenizer.pad_token_id)
    lengths = list(range(0, 2 * max_length + 3))
    seconds = [" ".join(["a"] * n2) for n2 in lengths]
    for n1 in lengths:
        first = " ".join(["a"] * n1)
        want = hf_tokenizer([first] * len(seconds), seconds, truncation="longest_first", max_length=max_length,
                            padding=True, return_tensors="np")
        got = pairs(first, seconds)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key}: n1={n1}")


def test_no_partners_and_the_tokenizer_left_as_it_was(hf_tokenizer) -> None:
    backend = hf_tokenizer.backend_tokenizer
    before = (backend.truncation, backend.padding)
    pairs = PairTokenizer(backend, 32)
    assert pairs("anything", [])["input_ids"].shape == (0, 0)
    assert pairs("a b", ["c"])["input_ids"].shape == (1, 6)  # [CLS] a b [SEP] c [SEP]
    assert pairs.n_special == 3
    assert (backend.truncation, backend.padding) == before


def test_the_torch_cross_encoder_batches_pairs_as_the_hf_tokenizer(hf_tokenizer, tiny_model_dir: Path) -> None:
    from recs.encoders.backbone import load_backbone
    from recs.ranking.config import CrossEncoderConfig
    from recs.ranking.cross_encoder import CrossEncoderModel, CrossEncoderReranker

    reranker = CrossEncoderReranker(CrossEncoderModel(load_backbone(str(tiny_model_dir))), hf_tokenizer, CrossEncoderConfig(max_tokens=24))
    user, items = "purchase: tent ; purchase: sleeping bag ; " * 6, ["coffee beans dark roast", "kettlebell 5 kg " * 8]
    want = hf_tokenizer([user] * 2, items, truncation="longest_first", max_length=24, padding=True, return_tensors="pt")
    got = reranker._batch(user, items, "cpu")
    assert set(got) == {"input_ids", "attention_mask", "token_type_ids"}
    for key, value in got.items():
        assert value.equal(want[key]), key
