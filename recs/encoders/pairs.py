"""`PairTokenizer`: one text paired with many, as the cross-encoder scores a request (the user's
text with each of R candidate texts), tokenised exactly as `tokenizers` does the pairs with
longest-first truncation to `max_length` and right padding, at a fraction of the cost.

Why: `tokenizers` truncates each pair on its own and keeps what it cuts off as overflowing
pieces, so a long user text (a history of ~200 tokens cut to ~24) is re-tokenised and sliced R
times, and each pair's encoding is cloned and merged: 20 pairs of 48 tokens took ~15-20 ms on 2
CPU cores, a third of the int8 cross-encoder pass itself. Here the shared text and the partners
are each tokenised once, without special tokens; each pair's kept lengths come from
`longest_first` (the rule of `tokenizers`' own truncation) and its rows are assembled in numpy
around the special tokens of the tokenizer's post-processor, read once from a probe pair, and
padded by `recs.encoders.batching.pad_rows`.
`tests/test_pairs.py` checks equality with `tokenizers`' pair encoding over every pair of lengths
around the budget. numpy + tokenizers only (the torch and ONNX cross-encoders both use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recs.encoders.batching import pad_rows

__all__ = ["PairTokenizer", "longest_first"]


def longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """How many tokens of each sequence `tokenizers`' longest-first truncation keeps, for
    sequences of `n1` and `n2` tokens and `budget` = max_length - the special tokens (its
    `truncate_encodings`, verbatim: the shorter one whole when it fits in half, else both cut to
    half, the longer one keeping the odd token)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long_ = (n2, n1) if swap else (n1, n2)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    first, second = (long_, short) if swap else (short, long_)
    return min(first, n1), min(second, n2)


class PairTokenizer:
    def __init__(self, tokenizer: Any, max_length: int, pad_id: int = 0, pad_type_id: int = 0) -> None:
        """`tokenizer`: a `tokenizers.Tokenizer` (copied: its truncation and padding are unset here)."""
        from tokenizers import Tokenizer

        self.max_length = int(max_length)
        self.pad_id, self.pad_type_id = int(pad_id), int(pad_type_id)
        self._plain = Tokenizer.from_str(tokenizer.to_str())
        self._plain.no_truncation()
        self._plain.no_padding()
        # The post-processor's layout of a pair: runs of special tokens (ids, type ids) and the
        # places of the two sequences (0, 1; in that order) with their type ids: [CLS] A [SEP] B [SEP].
        a, b = (self._plain.encode(t, add_special_tokens=False) for t in ("a", "b"))
        probe = self._plain.post_process(a, b)
        self._layout: list[tuple[int | None, np.ndarray, np.ndarray]] = []
        runs = 0
        for special, token, type_id in zip(probe.special_tokens_mask, probe.ids, probe.type_ids, strict=True):
            last = self._layout[-1] if self._layout else None
            if special and last is not None and last[0] is None:
                self._layout[-1] = (None, np.append(last[1], token), np.append(last[2], type_id))
            elif special:
                self._layout.append((None, np.array([token], np.int64), np.array([type_id], np.int64)))
            elif last is None or last[0] is None:  # a sequence's first token
                self._layout.append((runs, np.zeros(0, np.int64), np.array([type_id], np.int64)))
                runs += 1
        if runs != 2 or [t for t, m in zip(probe.ids, probe.special_tokens_mask, strict=True) if not m] != [*a.ids, *b.ids]:
            raise ValueError(f"the tokenizer's post-processor does not place a pair as <specials> A <specials> B <specials> ({runs} runs)")
        self.n_special = sum(len(ids) for seq, ids, _ in self._layout if seq is None)

    def __call__(self, first: str, seconds: Sequence[str]) -> dict[str, np.ndarray]:
        """`input_ids`, `attention_mask`, `token_type_ids` of the pairs (first, seconds[i]),
        right-padded to the longest (int64), as `tokenizers` encodes and pads the batch."""
        shared = np.asarray(self._plain.encode(first, add_special_tokens=False).ids, np.int64)
        partners = [np.asarray(e.ids, np.int64) for e in self._plain.encode_batch(list(seconds), add_special_tokens=False)]
        budget = max(self.max_length - self.n_special, 0)
        rows, row_types = [], []
        for partner in partners:
            k1, k2 = longest_first(len(shared), len(partner), budget)
            parts = [special if seq is None else shared[:k1] if seq == 0 else partner[:k2] for seq, special, _ in self._layout]
            rows.append(np.concatenate(parts))
            row_types.append(np.concatenate([types if seq is None else np.full(len(part), types[0], np.int64)
                                             for (seq, _, types), part in zip(self._layout, parts, strict=True)]))
        ids, mask = pad_rows(rows, self.pad_id)
        types = pad_rows(row_types, self.pad_type_id)[0]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
