"""`export_artifact`: a trained artifact -> a self-contained, torch-free serving folder.

The folder is an artifact like any other (manifest, sha256 per file, atomic save) holding:

    items.parquet, item_vectors.npy            component "catalog"       (copied)
    index/                                     component "index"         (copied)
    events.parquet, neighbour_*.npy            component "interactions"  (copied)
    retrieval_config.json, tokenizer.json      \
    onnx/user_tower.onnx, onnx/item_tower.onnx  |
    onnx/cross_encoder.onnx                     |  component "onnx": graphs, I/O names, tokenizer
    onnx/{ranker,discover}.onnx                 |  settings, rank options, parity report
    onnx/*.int8.onnx  (with int8=True)          |
    onnx/set_scorer.onnx, set_completion.onnx   |  (when the artifact has a "set_scorer" component;
    onnx/item_booster_{anchor,user}.onnx        |  the bundle item model's trees;
    set_scorer/ (cooc, ids, config, bundles,   /   its torch weights and LightGBM text stay behind)
      item_model.json)

`recs.serving.onnx_runtime` (and `Engine.load`, which dispatches there) serves it. The target is
locked and checked before any work; scratch graphs go to ``.<out>.work`` beside it (deleted at
the end, or by the next writer after a kill), never to the system temp folder.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recs.artifacts import Artifact, ArtifactWriter, artifact_lock, open_artifact
from recs.errors import ConfigError
from recs.io import remove_tree, work_dir_of
from recs.serving.onnx_runtime import (
    ONNX_COMPONENT,
    ONNX_FORMAT,
    OnnxGraph,
    OnnxRanker,
    OnnxTokenizer,
    RuntimeOptions,
)

log = logging.getLogger(__name__)

COPIED_COMPONENTS = ("catalog", "index", "interactions")
PARITY_USERS = 16

__all__ = ["ExportResult", "export_artifact"]


@dataclass
class ExportResult:
    path: Path
    graphs: dict[str, dict[str, Any]]
    parity: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            name: {p: (self.path / spec[p]).stat().st_size for p in ("fp32", "int8") if p in spec}
            for name, spec in self.graphs.items()
        }


def export_artifact(
    model: str | Path,
    out: str | Path,
    int8: bool = False,
    opset: int | None = None,
    check: bool = True,
    fuse: bool = True,
) -> ExportResult:
    """Export the artifact at `model` to an ONNX serving folder at `out` (replaced atomically).

    `int8` adds dynamically quantised graphs of the transformer parts; `check` runs the parity
    checks (fp32 failures raise `ParityError`; int8 results are reported); `fuse` applies
    onnxruntime's BERT fusions to the transformer graphs (`recs.export.quantize.fuse_graph`)."""
    from recs.export.towers import DEFAULT_OPSET
    from recs.serving.engine import Engine

    if Path(out).absolute() == Path(model).absolute():
        raise ConfigError("--out must differ from --model (the export is a separate folder)")
    with artifact_lock(out):  # checked and locked before any work
        source = open_artifact(model)
        if source.has_component(ONNX_COMPONENT):
            raise ConfigError(f"{model} is already an exported ONNX folder; export the torch artifact it came from")
        for name in (*COPIED_COMPONENTS, "towers"):
            if not source.has_component(name):
                from recs.errors import ArtifactError

                raise ArtifactError(f"{model}: no '{name}' component; was it made by `recs train`?")
        engine = Engine.load(source.path)
        exporter = _Exporter(engine, source, int8, opset or DEFAULT_OPSET, fuse)
        scratch = work_dir_of(out)
        try:
            with ArtifactWriter(out) as writer:
                scratch.mkdir()
                exporter.run(writer, scratch, check)
        finally:
            remove_tree(scratch)
    return ExportResult(Path(out), exporter.graphs, exporter.parity, exporter.skipped)


class _Exporter:
    def __init__(self, engine: Any, source: Artifact, int8: bool, opset: int, fuse: bool = True) -> None:
        self.fuse = fuse
        self.engine = engine
        self.retriever = engine.retriever
        self.pipeline = engine.pipeline
        self.source = source
        self.int8 = int8
        self.opset = opset
        self.graphs: dict[str, dict[str, Any]] = {}
        self.parity: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.files: list[str] = []
        self.modules: dict[str, Any] = {}  # graph name -> the torch module it came from
        self.tokenizer_spec: dict[str, Any] = {}

    # -- steps -----------------------------------------------------------------------------------

    def run(self, writer: ArtifactWriter, tmp: Path, check: bool) -> None:
        from recs.export.ranker import export_ranker
        from recs.export.towers import (
            CrossEncoderGraph,
            ItemTowerGraph,
            UserTowerGraph,
            example_batch,
        )
        from recs.ranking.config import CROSS_ENCODER_COMBINATION
        from recs.ranking.pipeline import write_rank_options

        self._copy(writer)
        write_rank_options(writer, self.engine.options)
        tokenizer_spec = self._tokenizer(writer)
        r = self.retriever
        towers = r.torch_towers()
        self._transformer(writer, tmp, "item_tower", ItemTowerGraph(towers.model), example_batch(towers.tokenizer),
                          r.config.towers.max_item_tokens)
        user_batch = example_batch(towers.tokenizer)
        user_batch["history_mean"] = _unit_rows(len(user_batch["input_ids"]), towers.dim)
        self._transformer(writer, tmp, "user_tower", UserTowerGraph(towers.model), user_batch, r.config.towers.max_user_tokens)
        cross = self.pipeline.cross_encoder
        if cross is not None:
            self._transformer(writer, tmp, "cross_encoder", CrossEncoderGraph(cross.model), example_batch(cross.tokenizer, pairs=True),
                              cross.config.max_tokens)
            self.graphs["cross_encoder"]["combination"] = CROSS_ENCODER_COMBINATION
        for name, ranker in self.pipeline.rankers().items():
            rel = f"onnx/{name}.onnx"
            self.graphs[name] = {"fp32": rel, **export_ranker(ranker, writer.file(rel))}
            self.files.append(rel)
        self._set_scorer(writer.path, check)
        if check:
            self._check(writer.path)
        spec = {
            "format": ONNX_FORMAT,
            "opset": self.opset,
            "dim": towers.dim,
            "graphs": self.graphs,
            "precisions": ["fp32", "int8"] if self.int8 else ["fp32"],
            "tokenizer": tokenizer_spec,
            "retrieval_config": "retrieval_config.json",
            "parity": self.parity,
            "source": {"path": str(self.source.path), "created": self.source.created},
        }
        writer.add_component(ONNX_COMPONENT, "onnx", files=self.files, config=spec)

    def _copy(self, writer: ArtifactWriter) -> None:
        for name in COPIED_COMPONENTS:
            comp = self.source.component(name)
            for rel in comp.files:
                shutil.copy2(self.source.path / rel, writer.file(rel))
            writer.add_component(name, comp.kind, files=list(comp.files), config=comp.config)
        shutil.copy2(self.source.file("retrieval_config.json"), writer.file("retrieval_config.json"))
        self.files.append("retrieval_config.json")

    def _tokenizer(self, writer: ArtifactWriter) -> dict[str, Any]:
        """tokenizer.json without the padding/truncation state a HF tokenizer leaves in it (the
        runtime sets both per call, as the HF tokenizer does)."""
        from tokenizers import Tokenizer

        hf = self.retriever.towers.tokenizer
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError("the model's tokenizer is not a fast (tokenizers) tokenizer; cannot write tokenizer.json")
        tok = Tokenizer.from_str(backend.to_str())
        tok.no_truncation()
        tok.no_padding()
        tok.save(str(writer.file("tokenizer.json")))
        self.files.append("tokenizer.json")
        self.tokenizer_spec = {
            "file": "tokenizer.json",
            "pad_id": int(hf.pad_token_id if hf.pad_token_id is not None else 0),
            "pad_token": str(hf.pad_token or "[PAD]"),
            "pad_type_id": int(getattr(hf, "pad_token_type_id", 0) or 0),
            "token_type_ids": "token_type_ids" in list(getattr(hf, "model_input_names", ["token_type_ids"])),
        }
        return self.tokenizer_spec

    def _transformer(self, writer: ArtifactWriter, tmp: Path, name: str, module: Any, example: dict[str, Any], max_tokens: int) -> None:
        from recs.export.quantize import INT8_FROM_FUSED, export_transformer

        rel, rel8 = f"onnx/{name}.onnx", f"onnx/{name}.int8.onnx"
        io = export_transformer(module, example, tmp, writer.file(rel), writer.file(rel8) if self.int8 else None, self.opset, self.fuse,
                                int8_fused=name in INT8_FROM_FUSED)
        entry: dict[str, Any] = {"fp32": rel, **io, "max_tokens": int(max_tokens)}
        self.files.append(rel)
        if self.int8:
            entry["int8"] = rel8
            self.files.append(rel8)
        self.graphs[name] = entry
        self.modules[name] = module

    def _set_scorer(self, root: Path, check: bool) -> None:
        if not self.source.has_component("set_scorer"):
            return
        try:
            from recs.export.set_scorer import export_set_scorer
        except ImportError as err:  # the bundling stage is optional in a deployment
            self.skipped.append(f"set_scorer ({err})")
            return
        specs, files, parity = export_set_scorer(self.source, self.retriever, root, self.opset, check)
        self.graphs.update(specs)
        self.files.extend(files)
        self.parity.update(parity)

    # -- parity -----------------------------------------------------------------------------------

    def _check(self, root: Path) -> None:
        from recs.export.parity import graph_parity, parity_texts, tokenizer_parity
        from recs.export.towers import torch_outputs

        options = RuntimeOptions(precision="fp32", providers=["CPUExecutionProvider"])
        r = self.retriever
        texts = list(r.catalog.texts[:64])
        onnx_tok = OnnxTokenizer(root / "tokenizer.json", self.tokenizer_spec)
        tokenizer_parity(r.towers.tokenizer, onnx_tok, parity_texts(texts, 16) + parity_texts(texts, 4, long=True),
                         pairs=parity_texts(texts[::-1], 20, long=True))
        self.parity["tokenizer"] = {"equal_to_hf": True}
        rng = np.random.default_rng(0)
        dim = r.towers.dim

        def batches_for(tokenizer: Any, pairs: bool, history: bool) -> Any:
            def make(batch_size: int, length: int) -> list[dict[str, np.ndarray]]:
                long = length > 32
                first = parity_texts(texts, 64, long)
                second = parity_texts(texts[::-1], 64, long) if pairs else None
                groups = [slice(i, i + 1) for i in range(2)] if batch_size == 1 else [slice(0, batch_size)]
                out = []
                for g in groups:
                    enc = tokenizer(first[g], None if second is None else second[g], truncation=True,
                                    max_length=length, padding=True, return_tensors="np")
                    batch = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
                    batch["token_type_ids"] = np.asarray(enc["token_type_ids"], dtype=np.int64) if "token_type_ids" in enc else np.zeros_like(batch["input_ids"])
                    if history:
                        n = len(batch["input_ids"])
                        mean = rng.standard_normal((n, dim)).astype(np.float32)
                        mean *= (0.8 / np.linalg.norm(mean, axis=1, keepdims=True)) * (np.arange(n) % 2)[:, None]
                        batch["history_mean"] = mean
                    out.append(batch)
                return out
            return make

        for name, entry in self.graphs.items():
            module = self.modules.get(name)
            if module is None:
                continue
            sessions = {p: OnnxGraph(root / entry[p], RuntimeOptions(precision=p, providers=options.providers), name=entry[p])  # type: ignore[arg-type]
                        for p in ("fp32", "int8") if p in entry}
            is_cross = name == "cross_encoder"
            tokenizer = self.pipeline.cross_encoder.tokenizer if is_cross else r.towers.tokenizer
            self.parity[name] = graph_parity(
                name, lambda b, m=module: torch_outputs(m, b), sessions,
                batches_for(tokenizer, pairs=is_cross, history=name == "user_tower"),
                "scores" if is_cross else "vectors",
            )
        features = self._ranker_features()
        for name, ranker in self.pipeline.rankers().items():
            from recs.export.ranker import checked_ranker_parity

            # real rows where there are some; rows at every split threshold always
            x = features.get(name, np.zeros((0, len(ranker.feature_names)), dtype=np.float32))
            graph = OnnxGraph(root / self.graphs[name]["fp32"], options, name=self.graphs[name]["fp32"])
            self.parity[name] = checked_ranker_parity(name, ranker, OnnxRanker(graph, self.graphs[name]["feature_names"]), x)

    def _ranker_features(self) -> dict[str, np.ndarray]:
        """Real candidate features of a few users (what the rankers see when serving)."""
        from recs.retrieval.filters import Filters

        p, r = self.pipeline, self.retriever
        if not p.rankers():
            return {}
        users = r.events["user_id"].unique(maintain_order=True).head(PARITY_USERS).to_list()
        contexts = [r.context(user_id=str(u)) for u in users]
        vectors = r.user_vectors([c.state for c in contexts])
        first_x = [p.first_stage(context, vector, Filters())[1] for context, vector in zip(contexts, vectors, strict=True)]
        out: dict[str, np.ndarray] = {}
        for name in ("ranker", "discover"):  # both score the candidates' feature rows
            if getattr(p, name) is not None and first_x:
                out[name] = np.concatenate(first_x).astype(np.float32)
        return out


def _unit_rows(n: int, dim: int) -> Any:
    import torch

    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    return x / x.norm(dim=1, keepdim=True)
