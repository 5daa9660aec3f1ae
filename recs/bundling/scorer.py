"""The set scorer: does this set of items go together (and would this user buy it)?

Inputs per item: its frozen item-tower vector x and (optionally) its frequency in the training
sets; per pair: co-occurrence features g (cooc.py); per set: optionally a user vector u (the
recency-weighted mean of the item vectors the user bought before).

    set     = prior + gate * learned
    prior   = w_sim mean_{i != j} cos(x_i, x_j) + w_g . mean_{i != j} g_ij + b_0
    h_i     = MLP(x_i)                                        item token
    r_ij    = (a_i . b_j + a_j . b_i) / (2 sqrt r)            learned complementarity, a = A h, b = B h
            + gamma cos(x_i, x_j) + w . g_ij + w0             residual on the prior's pair signals
    z       = sum_i softmax_i(k_i . q / sqrt m) v_i           attention pooling, q = q0 + Q U, U = P u
    learned = scale (mean_{i != j} r_ij + (c + U * c_u) . z + w_pop mean_i pop_i) + bias
    pref    = alpha cos(u, mean_i x_i) + MLP_pref([z, U, z * U])

The prior ("similar items, often bought together": the two baselines' signals) is a logistic
regression fitted before training (prior.py) and held in buffers the optimizer never moves.
Everything trainable is in `learned`, which starts at exactly zero: an untrained scorer IS the
prior. `gate` (a buffer in [0, 1], default 1) is chosen after training on validation sets
(training.py): the largest share of the residual that keeps every corruption AUC at least the
prior's. Artifacts of format 1 (a trainable prior inside the pair term) load with a zero prior
and gate 1, which is exactly their old score (`upgrade_state`).

`set` is a logit: a real basket/bundle vs a corrupted one. `pref` is a logit: this user buys this
set (trained with user-swapped negatives). The pair terms are bilinear, the pooling a
softmax-weighted mean and the read-out of z linear, so the score of `rest + c` for every item c of
the catalog follows from sums over `rest` and one pass over the catalog (`complete`): completing a
set against 10k items costs a few matrix products, which also makes training against the whole
catalog (a full softmax) cheap. `complete(rest, c)` equals `forward(rest + [c])` (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from recs.bundling.config import SetScorerConfig
from recs.bundling.cooc import N_PAIR_FEATURES, CoocStats
from recs.bundling.sets import pad
from recs.retrieval.history import history_means

NEG = -1e9
N_PRIOR_FEATURES = 1 + N_PAIR_FEATURES  # mean cosine, mean of each pair feature (prior.py)
# Before a fit: the hand-set prior (scale 10 x [similarity 1, co-occurrence 1, 1, 0.5]).
DEFAULT_PRIOR_WEIGHT: tuple[float, ...] = (10.0, 10.0, 10.0, 5.0)


class SetScorerNet(nn.Module):
    def __init__(self, item_dim: int, config: SetScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.item_dim = item_dim
        m, r = config.hidden, config.pair_rank
        self.dropout = nn.Dropout(config.dropout)
        self.item_mlp = nn.Sequential(nn.Linear(item_dim, m), nn.GELU(), nn.Linear(m, m), nn.LayerNorm(m))
        self.pair_a = nn.Linear(m, r, bias=False)
        self.pair_b = nn.Linear(m, r, bias=False)
        self.pair_feat = nn.Linear(N_PAIR_FEATURES, 1)
        self.sim_weight = nn.Parameter(torch.tensor(0.0))
        self.pop_weight = nn.Parameter(torch.tensor(0.0))
        self.query = nn.Parameter(torch.zeros(m))
        self.key = nn.Linear(m, m, bias=False)
        self.value = nn.Linear(m, m, bias=False)
        self.user_proj = nn.Linear(item_dim, m)
        self.user_query = nn.Linear(m, m, bias=False)
        self.readout = nn.Parameter(torch.zeros(m))
        self.user_readout = nn.Parameter(torch.zeros(m))
        self.bias = nn.Parameter(torch.tensor(0.0))
        # Raw set scores differ by ~0.1 between items; this learned scale (init 10) makes them
        # logits. Without it a softmax over the catalog is nearly uniform, and its gradient only
        # tells members from the average item, never the true item from its close competitors.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.pref_mlp = nn.Sequential(nn.Linear(3 * m, m), nn.GELU(), nn.Linear(m, 1))
        self.pref_alpha = nn.Parameter(torch.tensor(5.0))
        # The prior (fitted by prior.fit_prior, never trained): [w_sim, w_g] and b_0. Before a fit,
        # the hand-set one. The gate scales the learned residual (chosen after training).
        self.register_buffer("prior_weight", torch.tensor(DEFAULT_PRIOR_WEIGHT, dtype=torch.float32))
        self.register_buffer("prior_bias", torch.tensor(0.0))
        self.register_buffer("residual_gate", torch.tensor(1.0))
        with torch.no_grad():
            # Learned terms start at zero, so an untrained scorer is the prior: training moves
            # away from it only as far as validation rewards it (early stopping keeps the best
            # epoch, epoch 0 included; the gate can scale the residual back).
            nn.init.zeros_(self.pair_feat.weight)
            nn.init.zeros_(self.pair_feat.bias)
            nn.init.zeros_(self.pair_b.weight)
            # Untrained, the preference head is the cosine of user and set.
            nn.init.zeros_(self.pref_mlp[-1].weight)
            nn.init.zeros_(self.pref_mlp[-1].bias)
        self._pair_scale = 1.0 / (2.0 * math.sqrt(r))
        self._attn_scale = 1.0 / math.sqrt(m)

    # -- the prior and the gate ------------------------------------------------------------------

    def set_prior(self, weight: Sequence[float] | np.ndarray, bias: float) -> None:
        """Fix the prior: weight = [w_sim, w_g (3)], bias = b_0."""
        w = torch.as_tensor(np.asarray(weight, np.float32).reshape(N_PRIOR_FEATURES))
        with torch.no_grad():
            self.prior_weight.copy_(w)
            self.prior_bias.fill_(float(bias))

    def set_gate(self, gate: float) -> None:
        if not 0.0 <= gate <= 1.0:
            raise ValueError(f"residual gate must be in [0, 1], got {gate}")
        with torch.no_grad():
            self.residual_gate.fill_(float(gate))

    # -- pieces --------------------------------------------------------------------------------

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.item_mlp(self.dropout(x))

    def _g(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.config.use_cooc else torch.zeros_like(g)

    def _pop(self, pop: torch.Tensor) -> torch.Tensor:
        return pop if self.config.use_popularity else torch.zeros_like(pop)

    def _user(self, user: torch.Tensor | None, has_user: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, m) projected user vectors, zero where there is no user."""
        if user is None:
            return torch.zeros(batch, self.config.hidden, device=self.query.device)
        flag = torch.ones(batch, device=user.device) if has_user is None else has_user.float()
        return self.user_proj(user) * flag.unsqueeze(-1)

    def _rest_pairs(self, x: torch.Tensor, h: torch.Tensor, pair: torch.Tensor, fm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Sums of r_ij (learned) and p_ij (prior) over ordered pairs of members, and the a/b
        projections."""
        a, b = self.pair_a(h), self.pair_b(h)
        g = self._g(pair)
        dots = torch.einsum("bid,bjd->bij", x, x)
        bil = torch.einsum("bir,bjr->bij", a, b)
        s = (bil + bil.transpose(1, 2)) * self._pair_scale + self.pair_feat(g).squeeze(-1)
        s = s + self.sim_weight * dots
        p = self.prior_weight[0] * dots + g @ self.prior_weight[1:]
        eye = torch.eye(x.shape[1], device=x.device, dtype=torch.bool).unsqueeze(0)
        pm = (fm.unsqueeze(2) * fm.unsqueeze(1)).masked_fill(eye, 0.0)
        return (s * pm).sum((1, 2)), (p * pm).sum((1, 2)), a, b

    # -- whole sets ----------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,  # (B, L, d) item vectors
        pop: torch.Tensor,  # (B, L)
        pair: torch.Tensor,  # (B, L, L, F) pair features
        mask: torch.Tensor,  # (B, L) bool: real member
        user: torch.Tensor | None = None,  # (B, d)
        has_user: torch.Tensor | None = None,  # (B,) bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(set logits (B,), preference logits (B,); 0 without a user)."""
        fm = mask.float()
        h = self.tokens(x)
        pair_sum, prior_sum, _, _ = self._rest_pairs(x, h, pair, fm)
        n = fm.sum(1)
        n_pairs = torch.clamp(n * (n - 1), min=1.0)
        pair_term = pair_sum / n_pairs
        prior = prior_sum / n_pairs + self.prior_bias
        u = self._user(user, has_user, x.shape[0])
        q = self.query + self.user_query(u)
        logits = torch.einsum("blm,bm->bl", self.key(h), q) * self._attn_scale
        weights = torch.softmax(logits.masked_fill(~mask, NEG), dim=1) * fm
        z = torch.einsum("bl,blm->bm", weights, self.value(h))
        pop_term = self.pop_weight * (self._pop(pop) * fm).sum(1) / torch.clamp(n, min=1.0)
        raw = pair_term + (z * (self.readout + u * self.user_readout)).sum(-1) + pop_term
        set_logit = prior + self.residual_gate * (self.log_scale.exp() * raw + self.bias)
        if user is None:
            return set_logit, torch.zeros_like(set_logit)
        mean_x = (x * fm.unsqueeze(-1)).sum(1) / torch.clamp(fm.sum(1, keepdim=True), min=1.0)
        cos = nn.functional.cosine_similarity(user, mean_x, dim=-1, eps=1e-8)
        pref = self.pref_alpha * cos + self.pref_mlp(torch.cat([z, u, z * u], dim=-1)).squeeze(-1)
        flag = torch.ones_like(pref) if has_user is None else has_user.float()
        return set_logit, pref * flag

    # -- completions ---------------------------------------------------------------------------

    def complete(
        self,
        x_rest: torch.Tensor,  # (B, L, d)
        pop_rest: torch.Tensor,  # (B, L)
        pair_rest: torch.Tensor,  # (B, L, L, F)
        mask_rest: torch.Tensor,  # (B, L)
        x_cand: torch.Tensor,  # (K, d) or (1, K, d): candidates shared by the batch
        pop_cand: torch.Tensor,  # (B, K) or (1, K)
        pair_cross: torch.Tensor,  # (B, K, F): pair features of each candidate summed over rest
        user: torch.Tensor | None = None,
        has_user: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K) set logits of rest_b + [candidate_k], from sums over rest."""
        if x_cand.dim() == 3:  # (1, K, d), as the ONNX export feeds it
            x_cand = x_cand[0]
        fm = mask_rest.float()
        h = self.tokens(x_rest)
        hc = self.tokens(x_cand)  # (K, m)
        rest_pairs, rest_prior, a, b = self._rest_pairs(x_rest, h, pair_rest, fm)
        n_rest = fm.sum(1)
        sum_a = (a * fm.unsqueeze(-1)).sum(1)
        sum_b = (b * fm.unsqueeze(-1)).sum(1)
        sum_x = (x_rest * fm.unsqueeze(-1)).sum(1)
        cross = (sum_a @ self.pair_b(hc).T + sum_b @ self.pair_a(hc).T) * self._pair_scale  # (B, K)
        sims = sum_x @ x_cand.T  # (B, K)
        g_cross = self._g(pair_cross)
        cross = cross + self.sim_weight * sims
        cross = cross + g_cross @ self.pair_feat.weight.squeeze(0) + self.pair_feat.bias * n_rest.unsqueeze(1)
        prior_cross = self.prior_weight[0] * sims + g_cross @ self.prior_weight[1:]
        n = (n_rest + 1).unsqueeze(1)
        n_pairs = torch.clamp(n * (n - 1), min=1.0)
        pair_term = (rest_pairs.unsqueeze(1) + 2.0 * cross) / n_pairs
        prior = (rest_prior.unsqueeze(1) + 2.0 * prior_cross) / n_pairs + self.prior_bias

        u = self._user(user, has_user, x_rest.shape[0])
        q = self.query + self.user_query(u)  # (B, m)
        rho = self.readout + u * self.user_readout  # (B, m): z is read out linearly
        lr = (torch.einsum("blm,bm->bl", self.key(h), q) * self._attn_scale).masked_fill(~mask_rest, NEG)
        lc = q @ self.key(hc).T * self._attn_scale  # (B, K)
        vr = self.value(h)  # (B, L, m)
        top_r = lr.max(dim=1).values
        er = torch.exp(lr - top_r.unsqueeze(1)) * fm  # (B, L)
        read_r = torch.einsum("bl,blm,bm->b", er, vr, rho)  # sum_i e_i (v_i . rho)
        shift = torch.maximum(top_r.unsqueeze(1), lc)
        scale_r = torch.exp(top_r.unsqueeze(1) - shift)
        ec = torch.exp(lc - shift)
        read_c = rho @ self.value(hc).T  # (B, K)
        ctx = (scale_r * read_r.unsqueeze(1) + ec * read_c) / (scale_r * er.sum(1, keepdim=True) + ec)

        pop_sum = (self._pop(pop_rest) * fm).sum(1, keepdim=True)
        pop_term = self.pop_weight * (pop_sum + self._pop(pop_cand)) / n
        return prior + self.residual_gate * (self.log_scale.exp() * (pair_term + ctx + pop_term) + self.bias)


def upgrade_state(state: dict[str, torch.Tensor], fmt: int) -> dict[str, torch.Tensor]:
    """A saved state dict in the current layout. Format 1 had no separate prior (its trained
    sim_weight/pair_feat were the whole pair term) and no gate: a zero prior and gate 1 give
    exactly its scores."""
    if fmt >= 2:
        return state
    return {
        **state,
        "prior_weight": state.get("prior_weight", torch.zeros(N_PRIOR_FEATURES)),
        "prior_bias": state.get("prior_bias", torch.tensor(0.0)),
        "residual_gate": state.get("residual_gate", torch.tensor(1.0)),
    }


# ---------------------------------------------------------------------------------------------
# The numpy-facing scorer: catalog rows in, scores out


class SetScorer:
    """A trained `SetScorerNet` with what it reads: the item vectors (catalog row order) and the
    co-occurrence statistics of the training sets. Every method takes catalog rows."""

    def __init__(
        self,
        net: SetScorerNet,
        item_vectors: np.ndarray,
        cooc: CoocStats,
        history_max_items: int = 20,
        history_half_life: float = 5.0,
        report: dict[str, Any] | None = None,
    ) -> None:
        self.net = net.eval()
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.cooc = cooc
        self.history_max_items = history_max_items
        self.history_half_life = history_half_life
        self.report = report or {}
        self._x_all = torch.from_numpy(self.item_vectors)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def rebased(self, item_vectors: np.ndarray, new_row_of_old: np.ndarray) -> SetScorer:
        """The same net over a changed catalog (`recs.retrieval.itemchanges`)."""
        return SetScorer(self.net, item_vectors, self.cooc.remap(new_row_of_old, len(item_vectors)),
                         self.history_max_items, self.history_half_life, self.report)

    # -- features ------------------------------------------------------------------------------

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(B, d) L2-normalised recency-weighted means of history item vectors, (B,) has-history."""
        means = history_means(histories, self.item_vectors, self.history_max_items, self.history_half_life)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return (means / np.maximum(norms, 1e-12)).astype(np.float32), norms[:, 0] > 0

    def set_features(self, sets: np.ndarray, own: np.ndarray | bool = False) -> tuple[torch.Tensor, ...]:
        """Tensors (x, pop, pair, mask) of padded sets (B, L) (-1 = padding). `own`: members of
        a training set, whose own contribution to the statistics is left out."""
        sets = np.asarray(sets, np.int64)
        own = np.broadcast_to(np.asarray(own, bool), sets.shape) & (sets >= 0)
        x = self.item_vectors[np.maximum(sets, 0)]
        pop = self.cooc.popularity_feature(sets, own)
        pair = self.cooc.pair_features(sets[:, :, None], sets[:, None, :], own[:, :, None], own[:, None, :])
        return torch.from_numpy(x), torch.from_numpy(pop), torch.from_numpy(pair), torch.from_numpy(sets >= 0)

    def cross_features(self, rest: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """(B, K, F): pair features of each candidate with each rest member, summed over rest
        (nothing own; the trainer corrects the true item's column)."""
        out = np.zeros((len(rest), len(cand), N_PAIR_FEATURES), np.float32)
        for b, row in enumerate(np.asarray(rest, np.int64)):
            for member in row[row >= 0]:
                out[b] += self.cooc.row_features(int(member))[cand]
        return out

    # -- scoring -------------------------------------------------------------------------------

    @torch.no_grad()
    def score(
        self, sets: Sequence[Sequence[int]], users: np.ndarray | None = None, has_user: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(set logits, preference logits) of sets of catalog rows; `users` (B, d) from
        `user_vectors` (None: no user; preference logits are then 0)."""
        if not len(sets):
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        padded = pad([np.asarray(s, np.int64) for s in sets])
        x, pop, pair, mask = self.set_features(padded)
        user = None if users is None else torch.from_numpy(np.asarray(users, np.float32))
        has = None if has_user is None else torch.from_numpy(np.asarray(has_user, bool))
        set_logit, pref = self.net(x, pop, pair, mask, user, has)
        return set_logit.numpy(), pref.numpy()

    @torch.no_grad()
    def complete(
        self,
        rests: Sequence[Sequence[int]],
        candidates: np.ndarray | None = None,
        user: np.ndarray | None = None,
        chunk: int = 64,
    ) -> np.ndarray:
        """(len(rests), K) set logits of rest + [candidate] for each candidate row (default: the
        whole catalog). Candidates already in a rest score -inf."""
        cand = np.arange(self.n_items) if candidates is None else np.asarray(candidates, np.int64)
        out = np.zeros((len(rests), len(cand)), np.float32)
        x_c = self._x_all[torch.from_numpy(cand)]
        pop_c = torch.from_numpy(self.cooc.popularity_feature(cand)).unsqueeze(0)
        user_t = None if user is None else torch.from_numpy(np.asarray(user, np.float32).reshape(1, -1))
        for start in range(0, len(rests), chunk):
            block = [np.asarray(r, np.int64) for r in rests[start : start + chunk]]
            padded = pad(block)
            x, pop, pair, mask = self.set_features(padded)
            cross = torch.from_numpy(self.cross_features(padded, cand))
            u = None if user_t is None else user_t.expand(len(block), -1)
            scores = self.net.complete(x, pop, pair, mask, x_c, pop_c, cross, u).numpy()
            for b, rest in enumerate(block):
                scores[b, np.isin(cand, rest)] = -np.inf
            out[start : start + len(block)] = scores
        return out
