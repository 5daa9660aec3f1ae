"""GPU check: the project's CUDA paths, each measured in one short run (issue 15 part 4).

    python benchmarks/gpu_check.py [--sections ddp,onnx_cuda,faiss_gpu,rerank,train]
        [--install-gpu-extra [--wheels DIR]] [--tokenizer DIR] [--out FILE]
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json   # every path, on CPU

Sections (each a function returning result rows; one failing does not stop the others):

- `ddp`: the towers' trainer (`train_towers`, bf16 autocast on CUDA) under
  `python -m torch.distributed.run --standalone --nproc_per_node=N` on every visible GPU (nccl),
  against 1 GPU: pairs/s (with and without the per-epoch validation pass) and the scaling.
- `onnx_cuda`: the item tower exported by `recs.export` and run by `recs.serving`'s `OnnxGraph` with
  onnxruntime's CUDA execution provider: items/s at batch 256 x 32 tokens; fails unless the
  session's `get_providers()` holds `CUDAExecutionProvider`; cosine of its vectors to torch's.
- `faiss_gpu`: flat and IVF-Flat search on the GPU (`index_cpu_to_gpu`) against the CPU on the same
  200k random normalised vectors (dim 384): top-10 overlap (flat >= 0.99 or the section fails) and
  queries/s both; also `ItemIndex` (kind flat) on the GPU gives the CPU's neighbours.
- `rerank`: `CrossEncoderReranker.score` latency p50 / p95 for R = 20 and 100 candidates on CUDA.
- `train`: the towers' (several batch / trained-layer settings) and the cross-encoder's training
  loops on CUDA, as before.

Random weights shaped like all-MiniLM-L6-v2 (6 layers, hidden 384) with MiniLM's tokenizer and the
demo shop: this measures speed and checks the CUDA code paths, not quality.

Without CUDA the script refuses to run (exit 2) unless `--cpu-smoke`: then every section runs its
code path on CPU with tiny sizes (a tiny BERT, gloo with 2 processes for DDP, faiss CPU against a
CPU copy, onnxruntime's CPU provider) and no GPU assertion: what tests/test_gpu_check.py runs.

`--install-gpu-extra` first does what `make setup-gpu` does, with this interpreter's pip
(uninstall faiss-cpu / onnxruntime, install the `[gpu]` extra; with `--wheels DIR` from that
folder alone, for a machine that reaches no package index), then runs the rest in a fresh process.
benchmarks/gpu_run.sh is the whole sequence for a lent GPU machine.

`--out FILE` merges by section: the rows of every section not re-run are kept (an older file of the
first format, {"towers", "cross_encoder"}, is read as the `train` section). Exit status 1 when a
section failed, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

SECTIONS = ("ddp", "onnx_cuda", "faiss_gpu", "rerank", "train")
RESULTS_FILE = _REPO / "benchmarks" / "results" / "gpu_check.json"
CUDA_EP = "CUDAExecutionProvider"
FLAT_MIN_OVERLAP = 0.99
ONNX_MIN_COSINE = 0.99


class SectionFailed(RuntimeError):
    """A section ran and its check failed (a GPU path not taken, results that differ)."""


class SectionSkipped(RuntimeError):
    """A section cannot run here (smoke mode only: something optional is missing)."""


@dataclass(frozen=True)
class Sizes:
    """Every size a section uses; `smoke()` shrinks them to seconds on 2 CPU cores."""

    bert_layers: int = 6
    bert_hidden: int = 384
    shop_scale: float = 1.0
    valid_users: int = 500
    ddp_batch_per_rank: int = 256
    ddp_epochs: int = 3
    ddp_max_pairs: int | None = None
    onnx_batch: int = 256
    onnx_tokens: int = 32
    onnx_reps: int = 50
    faiss_items: int = 200_000
    faiss_dim: int = 384
    faiss_queries: int = 1_000
    faiss_nlist: int = 1_024
    faiss_nprobe: int = 32
    faiss_k: int = 10
    rerank_sizes: tuple[int, ...] = (20, 100)
    rerank_reps: int = 50
    train_pairs: int = 4096
    train_settings: str = "64:2,64:all,256:all,1024:all"
    ce_queries: int = 400
    ce_queries_per_step: int = 16

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(bert_layers=2, bert_hidden=32, shop_scale=0.25, valid_users=20, ddp_batch_per_rank=8,
                   ddp_epochs=1, ddp_max_pairs=32, onnx_batch=16, onnx_reps=2, faiss_items=4_000, faiss_dim=32,
                   faiss_queries=50, faiss_nlist=32, faiss_nprobe=8, rerank_reps=2, train_pairs=32,
                   train_settings="16:all", ce_queries=8, ce_queries_per_step=4)


# --------------------------------------------------------------------------------------- context


@dataclass
class Context:
    """What several sections share, each built on first use: the BERT folder, the demo shop and
    its training examples. `smoke`: CPU, tiny sizes, no GPU assertion."""

    work: Path
    smoke: bool
    sizes: Sizes
    tokenizer_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> str:
        from recs.device import torch_device

        return torch_device()

    @cached_property
    def model_dir(self) -> Path:
        from recs.encoders import build_tiny_bert

        hidden, layers = self.sizes.bert_hidden, self.sizes.bert_layers
        folder = self.work / f"bert-{layers}x{hidden}"
        if (folder / "model.safetensors").is_file():  # an earlier run with the same --work made it
            return folder
        # all-MiniLM-L6-v2's proportions: heads 32 wide (12 at 384), a feed-forward 4x as wide.
        return build_tiny_bert(folder, hidden=hidden, layers=layers, heads=max(1, hidden // 32),
                               intermediate=4 * hidden, tokenizer_dir=self.tokenizer_dir)

    @cached_property
    def shop_dir(self) -> Path:
        from recs.data.demo import write_demo_shop

        folder = self.work / f"shop-{self.sizes.shop_scale:g}"
        if not (folder / "bundles.csv").is_file():  # written last
            write_demo_shop(folder, seed=0, scale=self.sizes.shop_scale)
        return folder

    @cached_property
    def shop(self) -> Shop:
        return load_shop_examples(self.model_dir, self.shop_dir, self.sizes.valid_users)


@dataclass
class Shop:
    tokenizer: Any
    catalog: Any
    examples: Any
    valid: Any


def load_shop_examples(model_dir: Path, shop_dir: Path, valid_users: int) -> Shop:
    """The demo shop's training pairs and validation users, as `recs train` builds them."""
    from recs.data.load import load_dataset
    from recs.data.splits import leave_last_out
    from recs.data.text import render_item
    from recs.encoders.backbone import load_tokenizer
    from recs.retrieval.pairs import Catalog, build_examples, state_from_events
    from recs.retrieval.trainer import make_validation_set

    dataset, _ = load_dataset(shop_dir)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    catalog = Catalog.from_items(dataset.items, lambda f: [render_item(r) for r in f.iter_rows(named=True)])
    examples = build_examples(split.fit_events, catalog, new_items_only=True)
    states = {str(u[0]): state_from_events(g, catalog) for u, g in split.fit_events.group_by("user_id")}
    valid = make_validation_set(states, split.test, catalog, valid_users, 0)
    return Shop(load_tokenizer(str(model_dir)), catalog, examples, valid)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ ddp


def section_ddp(ctx: Context) -> list[dict[str, Any]]:
    """Towers training pairs/s under torchrun: 1 process, then one per visible GPU (2 gloo
    processes in smoke mode)."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise (SectionSkipped if ctx.smoke else SectionFailed)("this torch build has no torch.distributed")
    gpus = 0 if ctx.smoke else torch.cuda.device_count()
    widths = [1, 2] if ctx.smoke else sorted({1, gpus})
    if not ctx.smoke and gpus < 2:
        ctx.notes.append(f"ddp: {gpus} GPU visible, so torchrun ran 1 process: DDP across GPUs not exercised")
    _ = ctx.shop  # the examples are built once here, to fail early; each rank rebuilds its own
    rows = []
    for nproc in widths:
        spec = {"model_dir": str(ctx.model_dir), "shop_dir": str(ctx.shop_dir), "valid_users": ctx.sizes.valid_users,
                "batch_size": ctx.sizes.ddp_batch_per_rank * nproc, "epochs": ctx.sizes.ddp_epochs,
                "max_pairs": ctx.sizes.ddp_max_pairs, "out": str(ctx.work / f"ddp-{nproc}.json"),
                "train_dir": str(ctx.work / f"ddp-train-{nproc}")}
        spec_path = ctx.work / f"ddp-{nproc}.spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(Path(__file__).resolve()), "--ddp-worker", str(spec_path)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
        if ctx.smoke:
            env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even where a GPU is present
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            tail = (done.stdout + done.stderr).strip()[-3000:]
            raise SectionFailed(f"torchrun --nproc_per_node={nproc} exited {done.returncode}:\n{tail}")
        row = {"method": "towers_ddp", **json.loads(Path(spec["out"]).read_text(encoding="utf-8")),
               "wall_seconds": round(time.perf_counter() - began, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if len(rows) > 1:
        one, many = rows[0], rows[-1]
        many["scaling_vs_1"] = round(many["train_pairs_per_s"] / max(one["train_pairs_per_s"], 1e-9), 2)
        many["efficiency"] = round(many["scaling_vs_1"] / many["world_size"], 2)
    return rows


def ddp_worker(spec_path: Path) -> int:
    """One torchrun rank: the project's trainer on the demo shop; rank 0 writes the figures."""
    import numpy as np
    import torch

    from recs.distributed import distributed_session
    from recs.encoders.backbone import load_backbone
    from recs.retrieval.config import TowerConfig, TrainConfig
    from recs.retrieval.towers import TwoTowerModel
    from recs.retrieval.trainer import train_towers, validate

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    shop = load_shop_examples(Path(spec["model_dir"]), Path(spec["shop_dir"]), spec["valid_users"])
    with distributed_session() as ranks:
        device = "cuda" if torch.cuda.is_available() else "cpu"  # this rank's own GPU, once the group is made
        torch.manual_seed(0)
        model = TwoTowerModel(load_backbone(spec["model_dir"]), TowerConfig(model=spec["model_dir"]))
        config = TrainConfig(epochs=spec["epochs"], batch_size=spec["batch_size"], train_layers=None,
                             max_pairs_per_epoch=spec["max_pairs"], valid_users=spec["valid_users"], patience=spec["epochs"])
        validate_s = 0.0
        if ranks.is_main:
            # Rank 0 validates after every epoch while the others wait: timed apart (second call:
            # the first pays CUDA's warm-up) so that training's own pairs/s can be told.
            model.to(device)
            for _ in range(2):
                _sync()
                began = time.perf_counter()
                validate(model, shop.tokenizer, shop.catalog, shop.valid, config.valid_ks, device)
                _sync()
                validate_s = time.perf_counter() - began
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        report = train_towers(model, shop.tokenizer, shop.catalog, shop.examples, shop.valid, config,
                              Path(spec["train_dir"]), show_progress=False)
        if not ranks.is_main:
            return 0
        pairs = report.steps * config.batch_size
        train_s = max(report.seconds - report.epochs_run * validate_s, 1e-9)
        last = report.history[-1] if report.history else {}
        row = {"world_size": ranks.size, "backend": "nccl" if device == "cuda" else "gloo",
               "dtype": "bf16 autocast" if device == "cuda" else "fp32", "global_batch": config.batch_size,
               "steps": report.steps, "epochs": report.epochs_run, "pairs_available": len(shop.examples),
               "seconds": round(report.seconds, 2), "validate_seconds": round(validate_s, 3),
               "pairs_per_s": round(pairs / max(report.seconds, 1e-9), 1), "train_pairs_per_s": round(pairs / train_s, 1),
               "loss": last.get("loss"),
               "finite": all(np.isfinite(v) for v in last.values() if isinstance(v, float))}
        if device == "cuda":
            row["peak_gib_rank0"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        Path(spec["out"]).write_text(json.dumps(row), encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------------ onnx_cuda


def section_onnx_cuda(ctx: Context) -> list[dict[str, Any]]:
    """The exported item tower on onnxruntime's CUDA provider: items/s and cosine to torch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    if not ctx.smoke:
        if hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu loads CUDA / cuDNN from the nvidia-* wheels (torch's) when asked first;
            # whether that worked is for the provider checks below to say.
            try:
                ort.preload_dlls()
            except Exception as err:
                ctx.notes.append(f"onnxruntime.preload_dlls() failed: {err}")
        if CUDA_EP not in ort.get_available_providers():
            raise SectionFailed(f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}: no {CUDA_EP} "
                                "(the CPU onnxruntime is installed; run with --install-gpu-extra)")
    # Checked first: recs.serving imports faiss, which a bare GPU image may lack.
    from recs.encoders.backbone import load_backbone
    from recs.export.towers import ItemTowerGraph, example_batch, export_module, torch_outputs
    from recs.retrieval.config import TowerConfig
    from recs.retrieval.towers import TwoTowerModel
    from recs.serving.onnx_runtime import OnnxGraph, RuntimeOptions

    shop, sizes = ctx.shop, ctx.sizes
    torch.manual_seed(0)
    model = TwoTowerModel(load_backbone(str(ctx.model_dir)), TowerConfig(model=str(ctx.model_dir))).eval()
    module = ItemTowerGraph(model)
    path = ctx.work / "item_tower.onnx"
    export_module(module, example_batch(shop.tokenizer), path)
    providers = ["CPUExecutionProvider"] if ctx.smoke else [CUDA_EP, "CPUExecutionProvider"]
    graph = OnnxGraph(path, RuntimeOptions(precision="fp32", providers=providers, strict_providers=True))
    got = graph.session.get_providers()
    if not ctx.smoke and CUDA_EP not in got:
        raise SectionFailed(f"the session runs on {got}, not {CUDA_EP}")
    texts = [shop.catalog.texts[i % len(shop.catalog)] for i in range(sizes.onnx_batch)]
    enc = shop.tokenizer(texts, truncation=True, max_length=sizes.onnx_tokens, padding="max_length", return_tensors="np")
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    for _ in range(3):
        vectors = graph.run(feed)
    began = time.perf_counter()
    for _ in range(sizes.onnx_reps):
        vectors = graph.run(feed)
    seconds = time.perf_counter() - began
    reference = torch_outputs(module, feed)
    cosine = np.sum(vectors * reference, axis=1) / np.maximum(
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)
    row = {"method": "item_tower_onnx", "providers": got, "batch": sizes.onnx_batch, "tokens": sizes.onnx_tokens,
           "reps": sizes.onnx_reps, "items_per_s": round(sizes.onnx_batch * sizes.onnx_reps / max(seconds, 1e-9), 1),
           "ms_per_batch": round(1000 * seconds / sizes.onnx_reps, 3), "cosine_min": round(float(cosine.min()), 6),
           "cosine_mean": round(float(cosine.mean()), 6), "onnxruntime": ort.__version__}
    print(json.dumps(row), flush=True)
    if not row["cosine_min"] >= ONNX_MIN_COSINE:
        raise SectionFailed(f"ONNX item vectors differ from torch's: cosine min {row['cosine_min']} < {ONNX_MIN_COSINE}")
    return [row]


# ------------------------------------------------------------------------------------ faiss_gpu


def _overlap(a: Any, b: Any) -> float:
    """Mean share of each query's top-k ids found in the other's top-k (-1 padding ignored)."""
    import numpy as np

    shares = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, len(x[x >= 0])) for x, y in zip(np.asarray(a), np.asarray(b), strict=True)]
    return float(np.mean(shares)) if shares else 0.0


def _timed_search(index: Any, queries: Any, k: int) -> tuple[Any, float]:
    index.search(queries[:8], k)  # warm-up (GPU kernels, OpenMP threads)
    began = time.perf_counter()
    _, labels = index.search(queries, k)
    return labels, len(queries) / max(time.perf_counter() - began, 1e-9)


def section_faiss_gpu(ctx: Context) -> list[dict[str, Any]]:
    """Flat and IVF-Flat on the GPU against the CPU on the same random normalised vectors; smoke
    mode compares the CPU index with a CPU clone (the same code path)."""
    try:
        import faiss
    except ImportError as err:
        raise (SectionSkipped if ctx.smoke else SectionFailed)(f"faiss is not installed ({err})") from None
    import numpy as np

    from recs.device import faiss_has_gpu

    if not ctx.smoke and not faiss_has_gpu():
        raise SectionFailed(f"faiss {faiss.__version__} has no GPU (the faiss-cpu build, or no GPU visible): "
                            "run with --install-gpu-extra")
    sizes = ctx.sizes
    rng = np.random.default_rng(0)
    base = rng.standard_normal((sizes.faiss_items, sizes.faiss_dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = rng.standard_normal((sizes.faiss_queries, sizes.faiss_dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    resources = None if ctx.smoke else faiss.StandardGpuResources()

    def on_device(index: Any) -> Any:
        return faiss.clone_index(index) if resources is None else faiss.index_cpu_to_gpu(resources, 0, index)

    k, rows = sizes.faiss_k, []
    flat = faiss.IndexFlatIP(sizes.faiss_dim)
    flat.add(base)
    exact, cpu_qps = _timed_search(flat, queries, k)
    got, dev_qps = _timed_search(on_device(flat), queries, k)
    rows.append({"method": "flat", "items": sizes.faiss_items, "dim": sizes.faiss_dim, "queries": sizes.faiss_queries,
                 "k": k, "overlap@k": round(_overlap(exact, got), 4), "cpu_qps": round(cpu_qps, 1),
                 "gpu_qps": round(dev_qps, 1), "device": "cpu clone" if ctx.smoke else "gpu"})

    quantizer = faiss.IndexFlatIP(sizes.faiss_dim)
    ivf = faiss.IndexIVFFlat(quantizer, sizes.faiss_dim, sizes.faiss_nlist, faiss.METRIC_INNER_PRODUCT)
    train = base[rng.choice(len(base), size=min(len(base), 64 * sizes.faiss_nlist), replace=False)]
    began = time.perf_counter()
    ivf.train(train)
    train_s = time.perf_counter() - began
    ivf.add(base)
    ivf.nprobe = sizes.faiss_nprobe  # index_cpu_to_gpu copies it
    cpu_labels, cpu_qps = _timed_search(ivf, queries, k)
    dev_labels, dev_qps = _timed_search(on_device(ivf), queries, k)
    rows.append({"method": "ivf_flat", "items": sizes.faiss_items, "dim": sizes.faiss_dim, "queries": sizes.faiss_queries,
                 "k": k, "nlist": sizes.faiss_nlist, "nprobe": sizes.faiss_nprobe, "train_seconds": round(train_s, 2),
                 "overlap@k": round(_overlap(cpu_labels, dev_labels), 4),
                 "recall@k_cpu": round(_overlap(exact, cpu_labels), 4), "recall@k_gpu": round(_overlap(exact, dev_labels), 4),
                 "cpu_qps": round(cpu_qps, 1), "gpu_qps": round(dev_qps, 1), "device": "cpu clone" if ctx.smoke else "gpu"})
    rows.append(_item_index_row(ctx, base, queries, exact))
    for row in rows:
        print(json.dumps(row), flush=True)
    flat_row, index_row = rows[0], rows[2]
    if flat_row["overlap@k"] < FLAT_MIN_OVERLAP or index_row["overlap@k"] < FLAT_MIN_OVERLAP:
        raise SectionFailed(f"flat search on the GPU differs from the CPU: overlap {flat_row['overlap@k']} "
                            f"(ItemIndex {index_row['overlap@k']}) < {FLAT_MIN_OVERLAP}")
    return rows


def _item_index_row(ctx: Context, base: Any, queries: Any, exact: Any) -> dict[str, Any]:
    """The project's own path: `ItemIndex` (flat) searches on the GPU when faiss has one, and falls
    back to the CPU silently: here the GPU copy must really have been used."""
    import numpy as np

    from recs.retrieval.index import ItemIndex

    ids = [f"I{i}" for i in range(len(base))]
    index = ItemIndex.build(ids, base, kind="flat", use_gpu=not ctx.smoke)
    index.search(queries[:8], ctx.sizes.faiss_k)
    began = time.perf_counter()
    found, _ = index.search(queries, ctx.sizes.faiss_k)
    qps = len(queries) / max(time.perf_counter() - began, 1e-9)
    used_gpu = index.searched_on_gpu  # the fallback to the CPU is silent by design
    if not ctx.smoke and not used_gpu:
        raise SectionFailed("ItemIndex(kind='flat') searched on the CPU although faiss has a GPU")
    labels = np.asarray([[int(i[1:]) for i in row] for row in found], dtype=np.int64)
    return {"method": "item_index_flat", "items": len(base), "queries": len(queries), "k": ctx.sizes.faiss_k,
            "overlap@k": round(_overlap(exact, labels), 4), "qps": round(qps, 1), "used_gpu": used_gpu}


# --------------------------------------------------------------------------------------- rerank


def section_rerank(ctx: Context) -> list[dict[str, Any]]:
    """`CrossEncoderReranker.score` latency for R candidates, as the serving path calls it."""
    import numpy as np
    import torch

    from recs.encoders.backbone import load_backbone
    from recs.ranking.config import CrossEncoderConfig
    from recs.ranking.cross_encoder import CrossEncoderModel, CrossEncoderReranker

    shop, device = ctx.shop, ctx.device
    if not ctx.smoke and device != "cuda":
        raise SectionFailed("torch sees no CUDA device")
    torch.manual_seed(0)
    reranker = CrossEncoderReranker(CrossEncoderModel(load_backbone(str(ctx.model_dir))), shop.tokenizer, CrossEncoderConfig())
    reranker.model.to(device)
    user = shop.examples.states[0].text
    rows = []
    for size in ctx.sizes.rerank_sizes:
        texts = [shop.catalog.texts[i % len(shop.catalog)] for i in range(size)]
        for _ in range(1 if ctx.smoke else 3):  # warm-up: CUDA kernels, the tokenizer's caches
            reranker.score(user, texts)
        latencies = []
        for _ in range(ctx.sizes.rerank_reps):
            began = time.perf_counter()
            scores = reranker.score(user, texts)  # returns numpy: the GPU work is finished
            latencies.append(1000 * (time.perf_counter() - began))
        row = {"method": "cross_encoder_score", "R": size, "device": device, "dtype": "fp32",
               "max_tokens": reranker.config.max_tokens, "reps": ctx.sizes.rerank_reps,
               "p50_ms": round(float(np.percentile(latencies, 50)), 2), "p95_ms": round(float(np.percentile(latencies, 95)), 2),
               "scores_finite": bool(scores is not None and np.isfinite(scores).all())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- train


def section_train(ctx: Context) -> list[dict[str, Any]]:
    """The towers' training loop for several (batch size, trained layers) settings, then the
    cross-encoder's listwise loop: steps/s, the loss, metrics finite."""
    import numpy as np
    import torch

    from recs.encoders.backbone import load_backbone
    from recs.ranking.config import CrossEncoderConfig
    from recs.ranking.cross_encoder import CrossEncoderModel, CrossEncoderReranker, RerankQuery
    from recs.retrieval.config import TowerConfig, TrainConfig
    from recs.retrieval.towers import TwoTowerModel
    from recs.retrieval.trainer import train_towers

    shop, sizes, model_dir = ctx.shop, ctx.sizes, str(ctx.model_dir)
    cuda = torch.cuda.is_available()
    rows: list[dict[str, Any]] = []
    settings = [(int(b), None if t == "all" else int(t)) for b, t in (x.split(":") for x in sizes.train_settings.split(","))]
    for batch_size, train_layers in settings:
        model = TwoTowerModel(load_backbone(model_dir), TowerConfig(model=model_dir))
        config = TrainConfig(epochs=1, batch_size=batch_size, train_layers=train_layers,
                             max_pairs_per_epoch=max(sizes.train_pairs, batch_size * 4), valid_users=sizes.valid_users)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        report = train_towers(model, shop.tokenizer, shop.catalog, shop.examples, shop.valid, config,
                              ctx.work / f"towers-{batch_size}-{train_layers}", show_progress=False)
        seconds = time.perf_counter() - began
        last = report.history[-1] if report.history else {}
        row = {"method": "towers", "batch_size": batch_size, "train_layers": train_layers, "steps": report.steps,
               "seconds": round(seconds, 2), "pairs_per_s": round(report.steps * batch_size / max(report.seconds, 1e-9), 1),
               "loss": last.get("loss"), "valid_ndcg@10": last.get("ndcg@10"),
               "finite": all(np.isfinite(v) for v in last.values() if isinstance(v, float)),
               "pairs_available": len(shop.examples)}
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)

    # Cross-encoder: listwise steps on queries made from the demo's training baskets.
    rng = np.random.default_rng(0)
    examples, catalog = shop.examples, shop.catalog
    queries = []
    for s in range(min(sizes.ce_queries, len(examples.states))):
        positives = sorted(examples.basket_items[s])
        negatives = rng.choice(len(catalog), size=min(15, len(catalog)), replace=False).tolist()
        items = positives[:1] + [n for n in negatives if n not in examples.basket_items[s]]
        queries.append(RerankQuery(examples.states[s].text, [catalog.texts[r] for r in items],
                                   np.array([1.0] + [0.0] * (len(items) - 1), dtype=np.float32)))
    per_step = sizes.ce_queries_per_step
    reranker = CrossEncoderReranker(CrossEncoderModel(load_backbone(model_dir)), shop.tokenizer,
                                    CrossEncoderConfig(epochs=1, train_layers=None, queries_per_step=per_step))
    began = time.perf_counter()
    ce = reranker.fit(queries, ctx.work / "ce", show_progress=False)
    scores = reranker.score(queries[0].user_text, queries[0].item_texts)
    row = {"method": "cross_encoder", "steps": ce.steps, "seconds": round(time.perf_counter() - began, 2),
           "queries_per_s": round(ce.steps * per_step / max(ce.seconds, 1e-9), 1), "valid_mrr": ce.best_metric,
           "scores_finite": bool(scores is not None and np.isfinite(scores).all())}
    print(json.dumps(row), flush=True)
    rows.append(row)
    if not all(r.get("finite", r.get("scores_finite")) for r in rows):
        raise SectionFailed("a loss, a validation metric or a score is not finite")
    return rows


SECTION_FUNCTIONS: dict[str, Callable[[Context], list[dict[str, Any]]]] = {
    "ddp": section_ddp, "onnx_cuda": section_onnx_cuda, "faiss_gpu": section_faiss_gpu,
    "rerank": section_rerank, "train": section_train,
}


# -------------------------------------------------------------------------------------- results


def run_facts(smoke: bool) -> dict[str, Any]:
    """When, where and with what a section ran."""
    import torch

    try:  # the report's own helpers; they import faiss, which a bare GPU image may lack
        from recs.evaluation.report import machine_info, versions

        machine, packages = machine_info(), versions()
    except ImportError:
        machine = {"cpu": None, "cores": os.cpu_count() or 1, "gpu": None}
        packages = {"python": sys.version.split()[0], "torch": torch.__version__}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
        machine["gpus"] = torch.cuda.device_count()
    packages["torch"] = torch.__version__
    return {"created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "smoke": smoke, "machine": machine,
            "versions": packages}


def read_results(path: Path) -> dict[str, Any]:
    """An earlier results file as {"sections", "rows"}; the first format (a `towers` list and a
    `cross_encoder` object from the training loops alone) becomes the `train` section."""
    if not path.is_file():
        return {"sections": {}, "rows": []}
    document = json.loads(path.read_text(encoding="utf-8"))
    if "sections" in document:
        return {"sections": dict(document["sections"]), "rows": list(document.get("rows", []))}
    rows = [{"section": "train", "method": "towers", **r} for r in document.get("towers", [])]
    if document.get("cross_encoder"):
        rows.append({"section": "train", "method": "cross_encoder", **document["cross_encoder"]})
    facts = {"created": None, "smoke": False, "machine": {"gpu": document.get("gpu")},
             "versions": {"torch": document.get("torch")}, "status": "ok",
             "notes": [f"pairs_available {document.get('pairs_available')} (first format of this file)"]}
    return {"sections": {"train": facts} if rows else {}, "rows": rows}


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new`'s sections replace `old`'s; every other section keeps its rows."""
    rerun = set(new["sections"])
    return {"benchmark": "gpu_check", "sections": {**{k: v for k, v in old["sections"].items() if k not in rerun}, **new["sections"]},
            "rows": [r for r in old["rows"] if r.get("section") not in rerun] + new["rows"]}


# ----------------------------------------------------------------------------------------- main


def install_gpu_extra(wheels: Path | None) -> None:
    """`make setup-gpu` with this interpreter's pip: the CPU twins out, the `[gpu]` extra in
    (from `wheels` alone when given: a machine that reaches no index)."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "uninstall", "--yes", "faiss-cpu", "onnxruntime"], check=False)
    source = ["--no-index", "--find-links", str(wheels), "onnxruntime-gpu", "faiss-gpu-cu12"] if wheels else ["-e", f"{_REPO}[gpu]"]
    done = subprocess.run([*pip, "install", "--quiet", *source], check=False)
    if done.returncode:
        raise SystemExit(f"gpu_check: installing the [gpu] extra failed (pip exited {done.returncode})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--cpu-smoke", action="store_true", help="every section's code path on CPU, tiny sizes, no GPU asserts")
    parser.add_argument("--install-gpu-extra", action="store_true", help="uninstall faiss-cpu/onnxruntime, install [gpu] first")
    parser.add_argument("--wheels", type=Path, default=None, help="with --install-gpu-extra: install from this folder only")
    parser.add_argument("--tokenizer", type=Path, default=None, help="folder with MiniLM's tokenizer files")
    parser.add_argument("--out", type=Path, default=None, help=f"results JSON, merged by section (e.g. {RESULTS_FILE.relative_to(_REPO)})")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker is not None:
        return ddp_worker(args.ddp_worker)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        print(f"gpu_check: unknown section(s) {unknown or names}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.cpu_smoke and args.out is not None and args.out.resolve() == RESULTS_FILE:
        print(f"gpu_check: --cpu-smoke figures do not go into {RESULTS_FILE.relative_to(_REPO)}", file=sys.stderr)
        return 2
    if args.install_gpu_extra:
        install_gpu_extra(args.wheels)
        # A fresh interpreter: nothing imported here may hold the CPU builds' modules.
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--install-gpu-extra"]
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *rest], check=False).returncode

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; on a machine without one, --cpu-smoke runs every section's "
              "code path on CPU", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="recs-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work, args.cpu_smoke, Sizes.smoke() if args.cpu_smoke else Sizes(), args.tokenizer)
    new: dict[str, Any] = {"sections": {}, "rows": []}
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        facts = run_facts(args.cpu_smoke)
        began = time.perf_counter()
        ctx.notes.clear()
        try:
            rows = SECTION_FUNCTIONS[name](ctx)
            facts["status"] = "ok"
        except SectionSkipped as err:
            rows, facts["status"], facts["reason"] = [], "skipped", str(err)
            print(f"[{name}] skipped: {err}", flush=True)
        except Exception as err:
            failed.append(name)
            rows, facts["status"] = [], "failed"
            facts["error"] = f"{type(err).__name__}: {err}"[:4000]
            print(f"[{name}] FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        facts["seconds"] = round(time.perf_counter() - began, 1)
        if ctx.notes:
            facts["notes"] = list(ctx.notes)
        new["sections"][name] = facts
        new["rows"] += [{"section": name, **r} for r in rows]
        if args.out is not None:  # after every section: a run stopped at its time cap keeps what it finished
            from recs.io import atomic_write_text

            atomic_write_text(args.out, json.dumps(merge_results(read_results(args.out), new), indent=2) + "\n")
    print(json.dumps(new, indent=2))
    print("gpu_check: " + ", ".join(f"{k} {v['status']}" for k, v in new["sections"].items()), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
