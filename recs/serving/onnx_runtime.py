"""The torch-free serving path: an exported folder (`recs export`) served with onnxruntime,
tokenizers, faiss and numpy only. Nothing here imports torch or transformers (a test proves it).

    engine = recs.Engine.load("build/demo/onnx")     # recs.serving.load reads either kind of folder
    engine.recommend(user_id="U0007", k=10)

Each class is the ONNX implementation of one `recs.protocols` interface: `OnnxTowers`
(TowerEncoders), `OnnxRanker` (Ranker), `OnnxCrossEncoder` (PairScorer), `OnnxSetScorer`
(SetScorer); the stages that hold them are the same as with torch. Sessions use
`recs.device.onnx_providers()` (CUDA when onnxruntime-gpu and a GPU are present) and check what the
session really got: onnxruntime-gpu lists CUDA even without a GPU and silently falls back to CPU.
A CPU-only session turns off the fusions `recs.device.onnx_disabled_optimizers` names (slower
there than what they fuse).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from recs.artifacts import Artifact, open_artifact
from recs.device import onnx_disabled_optimizers, onnx_providers
from recs.encoders.batching import length_batches, pad_rows
from recs.encoders.pairs import PairTokenizer
from recs.errors import ArtifactError, ConfigError
from recs.protocols import TowerEncoders
from recs.ranking.budget import PairBudget
from recs.retrieval.config import RetrievalConfig, TowerConfig
from recs.retrieval.history import history_means
from recs.retrieval.retriever import Retriever

__all__ = [
    "ONNX_COMPONENT",
    "OnnxCrossEncoder",
    "OnnxGraph",
    "OnnxRanker",
    "OnnxSetScorer",
    "OnnxTokenizer",
    "OnnxTowers",
    "RuntimeOptions",
    "is_onnx_export",
    "load_onnx_bundler",
    "read_towers",
]

log = logging.getLogger(__name__)

ONNX_COMPONENT = "onnx"
# 2: the cross-encoder is a residual on the ranker's logit (1 had a second-stage ranker, which a
# reader of format 1 would apply; this one refuses a format-1 cross-encoder).
ONNX_FORMAT = 2
Precision = Literal["fp32", "int8"]


class RuntimeOptions:
    """How sessions are made: precision, providers, threads.

    Defaults come from the environment: `RECS_ONNX_PRECISION` (fp32 | int8), `RECS_ORT_THREADS`
    (intra-op threads; 0 = onnxruntime's choice), `RECS_ORT_INTER_THREADS`, `RECS_ORT_SPIN=1`
    (idle threads spin-wait instead of sleeping, onnxruntime's own default: off here, because a
    request runs several sessions, numpy and FAISS one after another, and a finished session's
    spinning threads took the cores from the next step: a whole request took p50 27-30 ms with
    spinning against 12-14 ms without on 2 cores), `RECS_ONNX_CPU=1` (never ask for CUDA),
    `RECS_ORT_STRICT_PROVIDERS=1` (refuse a session that did not get the providers asked for,
    instead of warning). `disabled_optimizers`: the onnxruntime optimisers turned off (default:
    `recs.device.onnx_disabled_optimizers` of the providers each session gets: a session that
    asked for CUDA and fell back to the CPU is opened again with the CPU's)."""

    def __init__(
        self,
        precision: Precision | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        inter_op_threads: int | None = None,
        strict_providers: bool | None = None,
        spinning: bool | None = None,
        disabled_optimizers: Sequence[str] | None = None,
    ) -> None:
        self.precision: Precision = precision or _env_precision()
        if self.precision not in ("fp32", "int8"):
            raise ConfigError(f"ONNX precision must be fp32 or int8, got {self.precision!r}")
        self.providers = list(providers) if providers else onnx_providers(prefer_gpu=os.environ.get("RECS_ONNX_CPU") != "1")
        self.threads = _env_int("RECS_ORT_THREADS", threads)
        self.inter_op_threads = _env_int("RECS_ORT_INTER_THREADS", inter_op_threads)
        self.strict_providers = strict_providers if strict_providers is not None else os.environ.get("RECS_ORT_STRICT_PROVIDERS") == "1"
        self.spinning = spinning if spinning is not None else os.environ.get("RECS_ORT_SPIN", "0") == "1"
        # Left to the default, the choice follows the providers a session actually gets (OnnxGraph).
        self.optimizers_given = disabled_optimizers is not None
        self.disabled_optimizers = list(disabled_optimizers) if disabled_optimizers is not None else onnx_disabled_optimizers(self.providers)


def _env_precision() -> Precision:
    value = os.environ.get("RECS_ONNX_PRECISION", "fp32").strip().lower() or "fp32"
    if value not in ("fp32", "int8"):
        raise ConfigError(f"RECS_ONNX_PRECISION must be fp32 or int8, got {value!r}")
    return cast(Precision, value)


def _env_int(name: str, given: int | None) -> int | None:
    if given is not None:
        value: Any = given
    else:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: thread count must be an integer >= 0, got {value!r}")
    return value


class OnnxGraph:
    """One onnxruntime session over one graph file, with its input names checked."""

    def __init__(self, path: Path, options: RuntimeOptions, name: str | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.name = name or self.path.name
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            so.intra_op_num_threads = options.threads
        if options.inter_op_threads:
            so.inter_op_num_threads = options.inter_op_threads
        if not options.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: a CUDA fallback is reported below, by us
        self.disabled_optimizers = list(options.disabled_optimizers)
        self.session = self._open(so, list(options.providers))
        self.requested = list(options.providers)
        self.providers = list(self.session.get_providers())
        missing = [p for p in self.requested if p not in self.providers]
        if missing:
            message = f"{self.name}: asked for {self.requested}, onnxruntime gave {self.providers}"
            if options.strict_providers:
                raise ConfigError(message)
            log.warning("%s (running without %s)", message, ", ".join(missing))
        fitting = onnx_disabled_optimizers(self.providers)
        if not options.optimizers_given and fitting != self.disabled_optimizers:
            # CUDA asked for, CPU given: open it again with the CPU's choice of fusions.
            self.disabled_optimizers = fitting
            self.session = self._open(so, self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _open(self, so: Any, providers: list[str]) -> Any:
        import onnxruntime as ort

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Specified provider")  # reported by __init__
                return ort.InferenceSession(str(self.path), so, providers=providers, disabled_optimizers=self.disabled_optimizers)
        except Exception as err:  # onnxruntime raises its own (Fail, InvalidGraph, ...) types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ArtifactError(f"{self.path}: not a loadable ONNX graph ({first[:300]})") from None

    def run_all(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, {k: v for k, v in feed.items() if k in self.input_names})

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The first output; inputs the graph does not take (e.g. a history term the tower
        ignores, pruned at export) are left out."""
        return self.session.run(self.output_names[:1], {k: v for k, v in feed.items() if k in self.input_names})[0]


class OnnxTokenizer:
    """The exported `tokenizer.json` through the `tokenizers` library, set up per call exactly as
    the Hugging Face tokenizer is (truncation longest_first to max_length, padding to the
    longest in the batch, on the right)."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise ArtifactError(f"{path}: unreadable tokenizer ({err})") from None
        self.pad_id = int(config.get("pad_id", 0))
        self.pad_token = str(config.get("pad_token", "[PAD]"))
        self.pad_type_id = int(config.get("pad_type_id", 0))
        self.uses_token_type_ids = bool(config.get("token_type_ids", True))
        # One configured copy per max_length (towers and cross-encoder differ): no shared state is
        # switched per call, so concurrent requests cannot truncate each other's inputs.
        self._by_length: dict[tuple[int, bool], Any] = {}
        self._pairs: dict[int, PairTokenizer] = {}
        self._lock = threading.Lock()

    def _for(self, max_length: int, padded: bool = True) -> Any:
        tok = self._by_length.get((max_length, padded))
        if tok is None:
            from tokenizers import Tokenizer

            with self._lock:
                tok = Tokenizer.from_str(self.tokenizer.to_str())
                tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
                if padded:
                    tok.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=self.pad_type_id, pad_token=self.pad_token)
                self._by_length[(max_length, padded)] = tok
        return tok

    def __call__(self, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        inputs: list[Any] = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        encodings = self._for(max_length).encode_batch(inputs)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        if not self.uses_token_type_ids:
            types = np.zeros_like(ids)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def pairs(self, first: str, seconds: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        """`self([first] * len(seconds), max_length, pairs=seconds)`, the same arrays, with `first`
        tokenised once (`recs.encoders.pairs`): one user's text with a request's R candidates."""
        pairs = self._pairs.get(max_length)
        if pairs is None:
            with self._lock:
                pairs = self._pairs[max_length] = PairTokenizer(self.tokenizer, max_length, self.pad_id, self.pad_type_id)
        inputs = pairs(first, seconds)
        if not self.uses_token_type_ids:
            inputs["token_type_ids"] = np.zeros_like(inputs["input_ids"])
        return inputs

    def batches(self, texts: Sequence[str], max_length: int, batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(rows, inputs) per batch: `texts` tokenised once, sorted by token count and padded per
        batch (`recs.encoders.batching`); each batch's inputs equal `self(texts[rows], max_length)`."""
        encodings = self._for(max_length, padded=False).encode_batch(list(texts))
        for rows in length_batches([len(e.ids) for e in encodings], batch_size):
            ids, mask = pad_rows([encodings[i].ids for i in rows], self.pad_id)
            types = pad_rows([encodings[i].type_ids for i in rows], self.pad_type_id)[0] if self.uses_token_type_ids else np.zeros_like(ids)
            yield rows, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class OnnxTowers:
    """Both towers as ONNX graphs: a `recs.protocols.TowerEncoders` (no torch anywhere)."""

    def __init__(self, item: OnnxGraph, user: OnnxGraph, tokenizer: OnnxTokenizer, config: TowerConfig, dim: int) -> None:
        self.item = item
        self.user = user
        self._tokenizer = tokenizer
        self.config = config
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def tokenizer(self) -> OnnxTokenizer:
        return self._tokenizer

    @property
    def providers(self) -> list[str]:
        return self.item.providers

    def encode_items(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return _encode(self.item, self.tokenizer, texts, self.config.max_item_tokens, self.dim)

    def encode_users(self, texts: list[str], history_means: np.ndarray) -> np.ndarray:
        return _encode(self.user, self.tokenizer, texts, self.config.max_user_tokens, self.dim, extra=history_means)

    @classmethod
    def from_artifact(cls, artifact: Artifact, options: RuntimeOptions) -> OnnxTowers:
        spec = onnx_spec(artifact)
        config = RetrievalConfig.parse_dict(artifact.read_json(spec["retrieval_config"]), source=f"{artifact.path}/{spec['retrieval_config']}")
        tokenizer = OnnxTokenizer(artifact.file(spec["tokenizer"]["file"]), spec["tokenizer"])
        return cls(graph(artifact, spec, "item_tower", options), graph(artifact, spec, "user_tower", options),
                   tokenizer, config.towers, int(spec["dim"]))


def _encode(graph: OnnxGraph, tokenizer: OnnxTokenizer, texts: Sequence[str], max_tokens: int, dim: int,
            extra: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Tower vectors of `texts`, batched like recs.retrieval.encode (sorted by token count, padded
    per batch: less padding)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for rows, inputs in tokenizer.batches([t or " " for t in texts], max_tokens, batch_size):
        feed: dict[str, np.ndarray] = dict(inputs)
        if extra is not None:
            feed["history_mean"] = np.ascontiguousarray(extra[rows], dtype=np.float32)
        out[rows] = graph.run(feed)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


class OnnxRanker:
    """A LightGBM ranker exported to ONNX: `.predict(features) -> float32 scores`."""

    def __init__(self, graph: OnnxGraph, feature_names: Sequence[str]) -> None:
        self.graph = graph
        self.feature_names = tuple(feature_names)

    def predict(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.shape[1] != len(self.feature_names):
            raise ConfigError(f"{self.graph.name}: {x.shape[1]} feature columns for {len(self.feature_names)} features")
        scores = self.graph.run({self.graph.input_names[0]: x}).reshape(-1)
        return np.nan_to_num(scores.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


class OnnxCrossEncoder:
    """The cross-encoder as an ONNX graph: `.score(user_text, item_texts, deadline)` as
    `CrossEncoderReranker.score` (chunks and deadline by `recs.ranking.budget.PairBudget`): the raw
    residual logit, which RankingPipeline adds to the ranker's."""

    def __init__(self, graph: OnnxGraph, tokenizer: OnnxTokenizer, max_tokens: int) -> None:
        self.graph = graph
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.budget = PairBudget()  # this scorer's measured cost per pair, shared by its requests

    def score(self, user_text: str, item_texts: list[str], deadline: float | None = None) -> np.ndarray | None:
        if not item_texts:
            return np.zeros(0, dtype=np.float32)

        def chunk(start: int, stop: int) -> np.ndarray:
            texts = item_texts[start:stop]
            return self.graph.run(self.tokenizer.pairs(user_text or " ", texts, self.max_tokens))

        return self.budget.run(len(item_texts), chunk, deadline)


def onnx_spec(artifact: Artifact) -> dict[str, Any]:
    """The `onnx` component's config (graphs, I/O names, tokenizer), checked."""
    if not artifact.has_component(ONNX_COMPONENT):
        raise ArtifactError(f"{artifact.path}: no '{ONNX_COMPONENT}' component; make one with `recs export`")
    spec = artifact.component(ONNX_COMPONENT).config
    fmt = spec.get("format")
    if not isinstance(fmt, int) or fmt > ONNX_FORMAT:
        raise ArtifactError(f"{artifact.path}: ONNX export format {fmt!r} is not readable by this recs (<= {ONNX_FORMAT})")
    for key in ("graphs", "tokenizer", "retrieval_config", "dim"):
        if key not in spec:
            raise ArtifactError(f"{artifact.path}: the '{ONNX_COMPONENT}' component lacks '{key}'")
    return spec


def graph(artifact: Artifact, spec: dict[str, Any], name: str, options: RuntimeOptions) -> OnnxGraph:
    """Session for graph `name` at `options.precision` (fp32 when no int8 graph was exported)."""
    entry = spec["graphs"].get(name)
    if entry is None:
        raise ArtifactError(f"{artifact.path}: no ONNX graph '{name}' (exported: {sorted(spec['graphs'])})")
    relpath = entry.get(options.precision) or entry["fp32"]
    session = OnnxGraph(artifact.file(relpath), options, name=f"{relpath}")
    # Exports made before the fusion was dropped hold SkipLayerNormalization in the fused graph
    # (fp32, and an int8 quantised from it), which these providers run slower than Add + LayerNorm.
    fused_graph = relpath == entry["fp32"] or entry.get("int8_from") == "fused"
    if fused_graph and "SkipLayerNormalization" in (entry.get("fusion") or {}) and "SkipLayerNormFusion" in onnx_disabled_optimizers(session.providers):
        log.warning("%s: exported with SkipLayerNormalization nodes, which run slower on CPU than Add + "
                    "LayerNormalization (~15%% of an int8 tower's time): export it again (`recs export`)", relpath)
    return session


# ------------------------------------------------------------------------------------ set scorer


class OnnxSetScorer:
    """`recs.bundling.scorer.SetScorer` with its net as two ONNX graphs (`set_scorer`: whole sets,
    `set_completion`: rest + each candidate); the same numpy-facing methods, no torch."""

    def __init__(self, score_graph: OnnxGraph, complete_graph: OnnxGraph, item_vectors: np.ndarray, cooc: Any,
                 history_max_items: int = 20, history_half_life: float = 5.0, report: dict[str, Any] | None = None) -> None:
        self.score_graph = score_graph
        self.complete_graph = complete_graph
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.cooc = cooc
        self.history_max_items = history_max_items
        self.history_half_life = history_half_life
        self.report = report or {}

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def rebased(self, item_vectors: np.ndarray, new_row_of_old: np.ndarray) -> OnnxSetScorer:
        """The same graphs over a changed catalog (`recs.retrieval.itemchanges`)."""
        return OnnxSetScorer(self.score_graph, self.complete_graph, item_vectors,
                             self.cooc.remap(new_row_of_old, len(item_vectors)), self.history_max_items,
                             self.history_half_life, self.report)

    @property
    def has_preference_head(self) -> bool:
        return bool(self.report.get("preference_pairs", 0))

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        means = history_means(histories, self.item_vectors, self.history_max_items, self.history_half_life)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return (means / np.maximum(norms, 1e-12)).astype(np.float32), norms[:, 0] > 0

    def set_features(self, sets: np.ndarray, own: np.ndarray | bool = False) -> dict[str, np.ndarray]:
        sets = np.asarray(sets, np.int64)
        own = np.broadcast_to(np.asarray(own, bool), sets.shape) & (sets >= 0)
        return {
            "x": self.item_vectors[np.maximum(sets, 0)],
            "pop": self.cooc.popularity_feature(sets, own).astype(np.float32),
            "pair": self.cooc.pair_features(sets[:, :, None], sets[:, None, :], own[:, :, None], own[:, None, :]).astype(np.float32),
            "mask": sets >= 0,
        }

    def _user_feed(self, n: int, users: np.ndarray | None, has_user: np.ndarray | None) -> dict[str, np.ndarray]:
        # No user = a zero vector flagged absent: the graph then computes what the torch net does
        # with `user=None` (a zero user projection, preference 0).
        if users is None:
            return {"user": np.zeros((n, self.item_vectors.shape[1]), np.float32), "has_user": np.zeros(n, bool)}
        has = np.ones(n, bool) if has_user is None else np.asarray(has_user, bool)
        return {"user": np.ascontiguousarray(users, dtype=np.float32).reshape(n, -1), "has_user": has}

    def score(self, sets: Sequence[Sequence[int]], users: np.ndarray | None = None, has_user: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        from recs.bundling.sets import pad

        if not len(sets):
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        padded = pad([np.asarray(s, np.int64) for s in sets])
        feed = {**self.set_features(padded), **self._user_feed(len(padded), users, has_user)}
        set_logit, pref = self.score_graph.run_all(feed)
        return set_logit.astype(np.float32), pref.astype(np.float32)

    def completion_inputs(self, block: list[np.ndarray], cand: np.ndarray, user: np.ndarray | None) -> dict[str, np.ndarray]:
        """The `set_completion` graph's inputs for rests `block` and candidate rows `cand`."""
        from recs.bundling.sets import pad

        rest = self.set_features(pad(block))
        cross = np.zeros((len(block), len(cand), rest["pair"].shape[-1]), np.float32)
        for b, members in enumerate(block):
            for member in members:
                cross[b] += self.cooc.row_features(int(member))[cand]
        users = None if user is None else np.repeat(np.asarray(user, np.float32).reshape(1, -1), len(block), axis=0)
        return {
            "x_rest": rest["x"], "pop_rest": rest["pop"], "pair_rest": rest["pair"], "mask_rest": rest["mask"],
            "x_cand": self.item_vectors[cand][None], "pop_cand": self.cooc.popularity_feature(cand).astype(np.float32)[None],
            "pair_cross": cross, **self._user_feed(len(block), users, None),
        }

    def complete(self, rests: Sequence[Sequence[int]], candidates: np.ndarray | None = None, user: np.ndarray | None = None, chunk: int = 16) -> np.ndarray:
        cand = np.arange(self.n_items) if candidates is None else np.asarray(candidates, np.int64)
        out = np.zeros((len(rests), len(cand)), np.float32)
        for start in range(0, len(rests), chunk):
            block = [np.asarray(r, np.int64) for r in rests[start : start + chunk]]
            scores = self.complete_graph.run(self.completion_inputs(block, cand, user))
            for b, rest in enumerate(block):
                scores[b, np.isin(cand, rest)] = -np.inf
            out[start : start + len(block)] = scores
        return out


def load_onnx_bundler(path: str | Path | Artifact, retriever: Retriever, options: RuntimeOptions | None = None) -> Any:
    """`recs.bundling.bundler.Bundler` over the exported set scorer (as `Bundler.load` does for
    the torch one: same files under `set_scorer/`, the net replaced by its graphs)."""
    from recs.bundling.bundler import FOLDER, READABLE_FORMATS, Bundler, read_item_model
    from recs.bundling.config import BundlerConfig
    from recs.bundling.cooc import CoocStats

    options = options or RuntimeOptions()
    artifact = path if isinstance(path, Artifact) else open_artifact(path)
    spec = onnx_spec(artifact)
    if "set_scorer" not in spec["graphs"]:
        raise ArtifactError(f"{artifact.path}: no exported set scorer (was `recs export` run on an artifact with one?)")
    meta = artifact.read_json(f"{FOLDER}/config.json")
    if meta.get("format") not in READABLE_FORMATS:
        # The graphs hold the whole net (format 1 or 2 alike): the files beside them are the same.
        raise ArtifactError(f"{artifact.path}: set scorer format {meta.get('format')!r}, this recs reads {', '.join(map(str, READABLE_FORMATS))}")
    config = BundlerConfig.parse_dict(meta["config"], source=f"{artifact.path}/{FOLDER}/config.json")
    saved_ids = artifact.read_json(f"{FOLDER}/item_ids.json")
    cooc = CoocStats.from_arrays(artifact.read_safetensors(f"{FOLDER}/cooc.safetensors"), len(saved_ids))
    if saved_ids != retriever.catalog.item_ids:
        mapping = np.array([retriever.catalog.row_of.get(i, -1) for i in saved_ids], dtype=np.int64)
        cooc = cooc.remap(mapping, len(retriever.catalog.row_of))
    bundles = None
    if f"{FOLDER}/bundles.parquet" in artifact.files:
        bundles = artifact.read_parquet(f"{FOLDER}/bundles.parquet")
    scorer = OnnxSetScorer(
        graph(artifact, spec, "set_scorer", options), graph(artifact, spec, "set_completion", options),
        retriever.item_vectors, cooc, config.train.history_max_items, config.train.history_half_life, meta.get("report") or {},
    )
    from recs.bundling.item_model import booster_name

    def trees(mode: str) -> OnnxRanker:  # with the features the graph was exported with (checked by the item model)
        name = booster_name(mode)
        return OnnxRanker(graph(artifact, spec, name, options), spec["graphs"].get(name, {}).get("feature_names", ()))

    return Bundler(retriever, scorer, config, bundles, read_item_model(artifact, artifact.files, trees))


def is_onnx_export(path: str | Path | Artifact) -> bool:
    """Whether `path` is a `recs export` folder; reads only its manifest (no checksums: the
    loader that follows verifies the whole folder)."""
    import json

    if isinstance(path, Artifact):
        return path.has_component(ONNX_COMPONENT)
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
        return ONNX_COMPONENT in (manifest.get("components") or {})
    except (OSError, ValueError, AttributeError):
        return False  # the regular loader reports what is wrong with the folder


def read_towers(artifact: Artifact, precision: Precision = "fp32") -> TowerEncoders:
    """The encoders of a torch artifact or an ONNX export, alone (no catalog, index or log): the
    export's ONNX towers (onnxruntime, `precision`) when it is one, else the torch towers. fp32 by
    default: new item vectors as close as can be to the ones the catalog was encoded with."""
    if is_onnx_export(artifact):
        return OnnxTowers.from_artifact(artifact, RuntimeOptions(precision=precision))
    from recs.retrieval.encode import TorchTowers

    config = RetrievalConfig.parse_dict(artifact.read_json("retrieval_config.json"), source=f"{artifact.path}/retrieval_config.json")
    return TorchTowers.read(artifact, config.towers)
