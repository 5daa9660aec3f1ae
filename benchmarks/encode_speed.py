"""Encoding speed: torch eager fp32 vs ONNX fp32 vs ONNX int8, measured in one run as ratios.

    python benchmarks/encode_speed.py [--model default] [--threads N] [--rounds 5] [--users 300] [--quick]
                                      [--ce-layers 2,3]

The item tower (and user tower) of an untrained `TwoTowerModel` over the backbone (default:
all-MiniLM-L6-v2), and a cross-encoder over the same backbone, are exported with
`recs.export.quantize.export_transformer` exactly as `recs export --int8` does (TorchScript
exporter, onnxruntime basic optimisation, the transformer optimiser's BERT fusions for fp32, dynamic
int8 per channel on the unfused graph) and run with the serving runtime
(`recs.serving.onnx_runtime.OnnxGraph`). Texts are the demo shop's item texts, tokenised
ahead of time to exactly 32 or 128 tokens (model time only, same batches for every variant).
The variants are timed round-robin (torch, fp32, int8, torch, ...) so that load from other
processes hits all three alike; each figure is the median over `--rounds`. onnxruntime threads do
not spin-wait between calls here (`spinning=False`), and torch's OpenMP threads wait passively
(`OMP_WAIT_POLICY=PASSIVE`, unless set): spinning threads of either would steal the cores from
the other's rounds on a shared machine.

Rows (dataset `demo`): methods `torch`, `onnx_fp32`, `onnx_int8`, and the alternatives of `graph_variants`.
- slice `all` = batch 64, 32 tokens: `items_per_s`, `ratio_vs_torch` (torch's median time over
  the variant's), `ratio_round_min` / `ratio_round_max` (the lowest and highest ratio within one
  round, where the two ran back to back: how far load moved it), `cosine` (mean cosine with
  torch's vectors), `cosine_min`;
- slices `b1_len32`, `b1_len128`, `b64_len128`: the same at the other settings (batch 1: also
  `p50_ms` / `p99_ms` over every call, model time only);
- slice `user_latency`: one user per call, tokenisation included: `p50_ms`, `p99_ms`, `cosine`;
- slice `cross_encoder_r20`: one request's cross-encoder pass, serially: the user's text paired
  with R = 20 candidate texts, cut to `[ranking.cross_encoder] max_tokens` (default 48), tokenised and scored in one batch: `p50_ms`, `p95_ms`,
  `p99_ms`, `max_abs_diff` (scores against torch's; the head is random, not the zero one of an
  untrained cross-encoder, so that the scores differ). The methods' names are for the cross-encoder
  of the default depth (`[ranking.cross_encoder] layers`, default: the first 4); each depth
  of `--ce-layers N[,M...]` adds `torch_lN`, `onnx_fp32_lN`, `onnx_int8_lN` (the first N layers,
  as `recs.encoders.keep_first_layers` cuts them; not the alternatives), timed in the same rounds,
  `ratio_vs_torch` and `max_abs_diff` against torch at the same depth;
- slice `ndcg_zero_shot`: two-tower NDCG@10 on the demo shop (leave-last-out, full ranking, the
  untrained towers; int8 re-encodes the catalog with its own item tower), and the per-user
  difference with torch: `ndcg_delta_vs_torch` and its paired 95% interval (`ndcg_delta_ci_low`,
  `ndcg_delta_ci_high`). The plot (`encode_speed.png`) shows every `ratio_vs_torch`.
Every row's notes name the CPU (model, cores, AVX-512 / VNNI / AMX flags from /proc/cpuinfo) and
the thread settings: the ratios move with the CPU far more than with anything else.
Writes benchmarks/results/encode_speed.json and .md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script: `python benchmarks/encode_speed.py`
    sys.path.insert(0, str(_REPO))

# torch's OpenMP threads spin-wait at every barrier by default; on a shared, loaded CPU that made
# a batch-1 MiniLM call take ~0.8 s instead of ~20 ms. Passive waiting is the fair counterpart of
# onnxruntime's spinning=False below (set before torch loads OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

BENCHMARK = "encode_speed"
RESULTS_DIR = _REPO / "benchmarks" / "results"
# What `recs export --int8` writes: `onnx_fp32` (fused) and `onnx_int8` (quantised from the
# graph that `recs.export.quantize.INT8_FROM_FUSED` names for it). Timed in the same rounds, the
# alternatives it did not pick, so that each choice is re-measured on this CPU:
# `onnx_fp32_unfused` (`recs export --no-fuse`, the export before issue 17), the other int8
# graph (`onnx_int8_fused`: with `QAttention`, or `onnx_int8_unfused`) and the export's int8 graph
# with onnxruntime's CPU SkipLayerNormFusion left on (`onnx_int8_skipln`, what sessions ran before
# `recs.device.onnx_disabled_optimizers`): see `graph_variants`.
SETTINGS = (("all", 64, 32), ("b1_len32", 1, 32), ("b1_len128", 1, 128), ("b64_len128", 64, 128))
CROSS_R = 20
# The suffix of a `--ce-layers N` cross-encoder's methods (torch_l2, onnx_int8_l2, ...).
OTHER_DEPTH = re.compile(r"_l\d+$")
# The columns printed (a column no row has is left out).
TABLE_METRICS = ("items_per_s", "ratio_vs_torch", "ratio_round_min", "ratio_round_max", "cosine", "cosine_min",
                 "p50_ms", "p95_ms", "p99_ms", "max_abs_diff", "ndcg@10", "ndcg_delta_vs_torch")
# The /proc/cpuinfo flags that decide int8 and fp32 GEMM speed (VNNI: int8 dot products).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="backbone folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and onnxruntime (0: all cores)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per setting (median reported)")
    parser.add_argument("--users", type=int, default=300, help="test users for the NDCG slice (0: skip it)")
    parser.add_argument("--latency-calls", type=int, default=100, help="user-tower calls for p50/p99")
    parser.add_argument("--ce-layers", type=layer_list, default=(),
                        help="cross-encoder depths to time besides the default one, comma-separated (2,3): rows torch_l2, onnx_int8_l2, ...")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script (not for results)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def layer_list(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected layer counts such as 2,3") from None
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: layer counts are positive integers")
    return depths


def demo_texts(shop: Path) -> tuple[Any, list[str]]:
    from recs.data.demo import write_demo_shop
    from recs.data.load import load_dataset
    from recs.data.text import DEFAULT_ITEM_TEMPLATE, render_item

    write_demo_shop(shop, seed=0)
    dataset = load_dataset(shop)[0]
    texts = [render_item(r, DEFAULT_ITEM_TEMPLATE) for r in dataset.items.iter_rows(named=True)]
    return dataset, texts


def cpu_description() -> str:
    """'<model>, <n> cores, flags: ...' from /proc/cpuinfo (the platform's name elsewhere)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    present = [f for f in CPU_FLAGS if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(present) or 'none of ' + '/'.join(CPU_FLAGS)}"


def token_batch(tokenizer: Any, texts: list[str], length: int) -> dict[str, np.ndarray]:
    # Long settings repeat each text so that every row really has `length` tokens.
    source = [" ; ".join([t] * 8) for t in texts] if length > 48 else texts
    enc = tokenizer(source, truncation=True, max_length=length, padding="max_length", return_tensors="np")
    return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def graph_variants(graph: str, alternatives: bool = True) -> tuple[tuple[str, str, str], ...]:
    """(method, precision, file suffix) of the graphs timed for the exported graph `graph`
    (`item_tower`, `user_tower`, `cross_encoder`): the export's, then the alternatives."""
    from recs.export.quantize import INT8_FROM_FUSED

    chosen = (("onnx_fp32", "fp32", ""), ("onnx_int8", "int8", ".int8"))
    other = "onnx_int8_unfused" if graph in INT8_FROM_FUSED else "onnx_int8_fused"
    return (*chosen, ("onnx_fp32_unfused", "fp32", ".unfused"), (other, "int8", ".other.int8"),
            ("onnx_int8_skipln", "int8_skipln", ".int8")) if alternatives else chosen


def export_graphs(module: Any, example: dict[str, Any], work: Path, name: str, graph: str, alternatives: bool = True) -> dict[str, Any]:
    """`<name>.onnx` and `<name>.int8.onnx` as `recs export --int8` writes the exported graph
    `graph`; with `alternatives`, `<name>.unfused.onnx` and `<name>.other.int8.onnx` beside them.
    Returns the export's `io` (`fusion`, `int8_from`)."""
    from recs.export.quantize import (
        INT8_FROM_FUSED,
        export_transformer,
        quantize_graph,
        scratch_graphs,
    )

    io = export_transformer(module, example, work, work / f"{name}.onnx", work / f"{name}.int8.onnx", int8_fused=graph in INT8_FROM_FUSED)
    if alternatives:
        # The unfused graph is the export's own basic-optimised one (`recs export --no-fuse` writes it).
        shutil.copyfile(scratch_graphs(work, work / f"{name}.onnx")[1], work / f"{name}.unfused.onnx")
        quantize_graph(work / (f"{name}.unfused.onnx" if io["int8_from"] == "fused" else f"{name}.onnx"), work / f"{name}.other.int8.onnx")
    return io


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from recs.encoders.backbone import load_backbone, load_tokenizer
    from recs.retrieval.config import TowerConfig
    from recs.retrieval.towers import TwoTowerModel

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rounds = 2 if args.quick else args.rounds
    model_name = args.model
    tokenizer = load_tokenizer(model_name)
    model = TwoTowerModel(load_backbone(model_name), TowerConfig(model=model_name)).eval()
    deepest = int(model.item_backbone.config.num_hidden_layers)
    if any(n > deepest for n in args.ce_layers):  # said now, not after the towers' rounds
        print(f"--ce-layers {','.join(map(str, args.ce_layers))}: {model_name} has {deepest} transformer layers", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="recs-encode-speed-"))
    try:
        return _run(args, threads, rounds, model, tokenizer, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, threads: int, rounds: int, model: Any, tokenizer: Any, work: Path) -> int:
    import torch

    from recs.evaluation.report import format_table, write_results
    from recs.export.towers import ItemTowerGraph, UserTowerGraph, example_batch
    from recs.serving.onnx_runtime import OnnxGraph, RuntimeOptions

    model_name = args.model
    dataset, texts = demo_texts(work / "shop")
    texts = texts[:64]
    where = f"{cpu_description()}; torch {threads} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), onnxruntime {threads} intra-op threads, no spinning"
    print(where, flush=True)

    print(f"exporting {model_name} towers to {work} ...", flush=True)
    graphs: dict[str, dict[str, OnnxGraph]] = {}
    session: dict[str, Any] = {"providers": ["CPUExecutionProvider"], "threads": threads, "inter_op_threads": 1, "spinning": False}
    options = {p: RuntimeOptions(precision=p, **session) for p in ("fp32", "int8")}  # type: ignore[arg-type]
    # The export's int8 graph as sessions ran it before: onnxruntime's CPU SkipLayerNormFusion on.
    options["int8_skipln"] = RuntimeOptions(precision="int8", disabled_optimizers=[], **session)
    for name, module in (("item", ItemTowerGraph(model)), ("user", UserTowerGraph(model))):
        example = example_batch(tokenizer)
        if name == "user":
            example["history_mean"] = torch.nn.functional.normalize(torch.randn(2, model.dim), dim=1)
        io = export_graphs(module, example, work, name, f"{name}_tower")
        print(f"{name} tower fused operators: {io['fusion']}; int8 quantised from the {io['int8_from']} graph", flush=True)
        graphs[name] = {m: OnnxGraph(work / f"{name}{suffix}.onnx", options[p]) for m, p, suffix in graph_variants(f"{name}_tower")}

    methods = ("torch", *graphs["item"])

    def item_fn(method: str, batch: dict[str, np.ndarray]) -> Any:
        if method == "torch":
            tensors = {k: torch.from_numpy(v) for k, v in batch.items()}

            def run() -> np.ndarray:
                with torch.no_grad():
                    return model.encode_items(**tensors).numpy()
            return run
        graph = graphs["item"][method]
        return lambda: graph.run(batch)

    rows: list[dict[str, Any]] = []
    for label, batch_size, length in SETTINGS:
        full = token_batch(tokenizer, texts, length)
        batch = {k: v[:batch_size] for k, v in full.items()}
        fns = {m: item_fn(m, batch) for m in methods}
        outputs = {m: fn() for m, fn in fns.items()}  # warm-up, and the vectors compared below
        reps = max(1, (20 if batch_size == 1 else 1) // (2 if args.quick else 1))
        times: dict[str, list[float]] = {m: [] for m in methods}
        calls: dict[str, list[float]] = {m: [] for m in methods}  # each call's seconds (p99 at batch 1)
        for _ in range(rounds):
            for method, fn in fns.items():
                each = [timed(fn) for _ in range(reps)]
                calls[method] += each
                times[method].append(sum(each) / reps)
        torch_s = statistics.median(times["torch"])
        for method in methods:
            seconds = statistics.median(times[method])
            cos = cosine(outputs[method], outputs["torch"])
            latency = {"p50_ms": float(np.percentile(calls[method], 50)) * 1000, "p99_ms": float(np.percentile(calls[method], 99)) * 1000}
            # Each round times every method back to back: its own ratio shows how far load moved it.
            per_round = [t / m for t, m in zip(times["torch"], times[method], strict=True)]
            rows.append({
                "dataset": "demo", "method": method, "slice": label,
                "metrics": {"items_per_s": batch_size / seconds, "ratio_vs_torch": torch_s / seconds,
                            "ratio_round_min": min(per_round), "ratio_round_max": max(per_round),
                            "cosine": float(cos.mean()), "cosine_min": float(cos.min()), **(latency if batch_size == 1 else {})},
                "notes": f"item tower, batch {batch_size}, {length} tokens, median of {rounds} rounds; {where}",
            })
        print(format_table([r for r in rows if r["slice"] == label], TABLE_METRICS), flush=True)

    rows += user_latency(model, tokenizer, graphs["user"], dataset, args, where)
    rows += cross_encoder_latency(model_name, tokenizer, dataset, texts, work, options, args, where)
    if args.users > 0:
        rows += zero_shot_ndcg(model, tokenizer, graphs, dataset, 40 if args.quick else args.users)
    json_path, md_path = write_results(BENCHMARK, rows, args.out)
    png_path = plot_speed_ratios(rows, args.out / f"{BENCHMARK}.png")
    print(format_table(rows, TABLE_METRICS))
    print(f"wrote {json_path}, {md_path} and {png_path}")
    return 0


def plot_speed_ratios(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars of each variant's speed against torch per setting (the default-depth cross-encoder's
    rows only: the `--ce-layers` ones have their own torch)."""
    from recs.evaluation.report import plot_metrics

    default_depth = [r for r in rows if "ratio_vs_torch" in r["metrics"] and not OTHER_DEPTH.search(r["method"])]
    return plot_metrics(default_depth, path, metric="ratio_vs_torch")


def onnx_tokenizer(tokenizer: Any) -> Any:
    """The serving tokenizer (`OnnxTokenizer`) over the HF tokenizer's tokenizer.json, as
    `recs export` writes it."""
    from tokenizers import Tokenizer

    from recs.serving.onnx_runtime import OnnxTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        clean = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        clean.no_padding()
        clean.no_truncation()
        clean.save(str(path))
        return OnnxTokenizer(path, {"pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token})


def user_latency(model: Any, tokenizer: Any, graphs: dict[str, Any], dataset: Any, args: argparse.Namespace, where: str) -> list[dict[str, Any]]:
    """One user per call, as a request does: tokenise + user tower (+ the history term)."""
    import torch

    titles = dataset.items["title"].head(12).to_list()
    text = " ; ".join(f"purchase: {t}" for t in titles)
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((1, model.dim)).astype(np.float32)
    mean /= np.linalg.norm(mean)
    max_tokens = model.config.max_user_tokens
    onnx_tok = onnx_tokenizer(tokenizer)

    def torch_call() -> np.ndarray:
        enc = tokenizer([text], truncation=True, max_length=max_tokens, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model.encode_users(enc["input_ids"], enc["attention_mask"], torch.from_numpy(mean)).numpy()

    def onnx_call(graph: Any) -> Any:
        def call() -> np.ndarray:
            feed = dict(onnx_tok([text], max_tokens))
            feed["history_mean"] = mean
            return graph.run(feed)
        return call

    calls = {"torch": torch_call} | {m: onnx_call(g) for m, g in graphs.items()}
    reference = torch_call()
    n = 20 if args.quick else args.latency_calls
    samples: dict[str, list[float]] = {m: [] for m in calls}
    for _ in range(n):
        for method, call in calls.items():
            samples[method].append(timed(call) * 1000)
    rows = []
    for method, call in calls.items():
        ms = np.asarray(samples[method])
        rows.append({
            "dataset": "demo", "method": method, "slice": "user_latency",
            "metrics": {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                        "cosine": float(cosine(call(), reference)[0])},
            "notes": f"user tower, 1 user per call, {max_tokens} max tokens, tokenisation included, {n} calls; {where}",
        })
    return rows


def cross_encoder_latency(model_name: str, tokenizer: Any, dataset: Any, texts: list[str], work: Path, options: dict[str, Any],
                          args: argparse.Namespace, where: str) -> list[dict[str, Any]]:
    """One request's cross-encoder pass, as `OnnxCrossEncoder.score` / `CrossEncoderReranker.score`
    run it without a deadline: R = 20 pairs, tokenised and scored in one batch; at the default
    depth and at each of `--ce-layers`, round-robin."""
    import torch

    from recs.encoders.backbone import keep_first_layers, load_backbone
    from recs.export.towers import CrossEncoderGraph, example_batch
    from recs.ranking.config import CrossEncoderConfig
    from recs.ranking.cross_encoder import CrossEncoderModel, CrossEncoderReranker
    from recs.serving.onnx_runtime import OnnxCrossEncoder, OnnxGraph

    full = int(load_backbone(model_name).config.num_hidden_layers)
    # What `recs fit` trains: at most `layers` of the backbone's, pairs of `max_tokens`.
    default, tokens = min(CrossEncoderConfig().layers or full, full), CrossEncoderConfig().max_tokens
    depths = list(dict.fromkeys([default, *args.ce_layers]))  # the default first, each depth once
    example = example_batch(tokenizer, pairs=True)
    onnx_tok = onnx_tokenizer(tokenizer)
    scorers: dict[str, Any] = {}
    same_depth: dict[str, str] = {}  # method -> the torch method of its depth (ratios, differences)
    depth_of: dict[str, int] = {}
    for depth in depths:
        tag = "" if depth == default else f"_l{depth}"  # matches OTHER_DEPTH
        # A fresh copy per depth: the first `depth` layers as `[ranking.cross_encoder] layers` keeps them.
        ce = CrossEncoderModel(keep_first_layers(load_backbone(model_name), depth)).eval()
        torch.manual_seed(0)
        torch.nn.init.normal_(ce.head.weight, std=0.05)  # a zero head scores 0 everywhere: nothing to compare
        # The alternatives are measured at the default depth only.
        io = export_graphs(CrossEncoderGraph(ce), example, work, f"cross{tag}", "cross_encoder", alternatives=depth == default)
        variants = graph_variants("cross_encoder", alternatives=depth == default)
        print(f"cross-encoder ({depth} of {full} layers) fused operators: {io['fusion']}; int8 quantised from the {io['int8_from']} graph", flush=True)
        added = {f"torch{tag}": CrossEncoderReranker(ce, tokenizer, CrossEncoderConfig(max_tokens=tokens, layers=depth))}
        for method, precision, suffix in variants:
            added[f"{method}{tag}"] = OnnxCrossEncoder(OnnxGraph(work / f"cross{tag}{suffix}.onnx", options[precision]), onnx_tok, tokens)
        scorers |= added
        same_depth |= dict.fromkeys(added, f"torch{tag}")
        depth_of |= dict.fromkeys(added, depth)
    titles = dataset.items["title"].head(12).to_list()
    user_text = " ; ".join(f"purchase: {t}" for t in titles)
    candidates = [f"{t} | bought together with your last order" for t in texts[:CROSS_R]]
    references = {m: scorers[m].score(user_text, candidates) for m in set(same_depth.values())}
    n = 20 if args.quick else args.latency_calls
    samples: dict[str, list[float]] = {m: [] for m in scorers}
    for scorer in scorers.values():
        scorer.score(user_text, candidates)  # warm-up
    with torch.no_grad():
        for _ in range(n):
            for method, scorer in scorers.items():
                samples[method].append(timed(lambda s=scorer: s.score(user_text, candidates)) * 1000)
    rows = []
    for method, scorer in scorers.items():
        ms = np.asarray(samples[method])
        torch_p50 = float(np.percentile(samples[same_depth[method]], 50))
        rows.append({
            "dataset": "demo", "method": method, "slice": f"cross_encoder_r{CROSS_R}",
            "metrics": {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                        "p99_ms": float(np.percentile(ms, 99)), "ratio_vs_torch": torch_p50 / float(np.percentile(ms, 50)),
                        "max_abs_diff": float(np.abs(scorer.score(user_text, candidates) - references[same_depth[method]]).max())},
            "notes": f"cross-encoder ({depth_of[method]} of {full} layers), 1 user x {CROSS_R} candidates in one batch, "
                     f"{tokens} max tokens, tokenisation included, {n} calls, serial; {where}",
        })
    print(format_rows(rows), flush=True)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    from recs.evaluation.report import format_table

    return format_table(rows, ["p50_ms", "p95_ms", "p99_ms", "ratio_vs_torch", "max_abs_diff"])


def zero_shot_ndcg(model: Any, tokenizer: Any, graphs: dict[str, dict[str, Any]], dataset: Any, n_users: int) -> list[dict[str, Any]]:
    """NDCG@10 of the untrained towers per variant; each variant encodes catalog and users itself."""
    from recs.data.splits import leave_last_out
    from recs.evaluation.metrics import hit_matrix, mean_ranking_metrics, ndcg_from_hits
    from recs.evaluation.paired import paired_difference
    from recs.retrieval.config import RetrievalConfig, TowerConfig
    from recs.retrieval.encode import TorchTowers
    from recs.retrieval.retriever import Retriever
    from recs.serving.onnx_runtime import OnnxTowers

    split = leave_last_out(dataset.events, dataset.items["item_id"])
    truth: dict[str, set[str]] = {}
    for user, item in split.test.select("user_id", "item_id").iter_rows():
        truth.setdefault(str(user), set()).add(str(item))
    users = sorted(truth)[:n_users]
    config = RetrievalConfig(towers=TowerConfig(model=model.config.model))
    onnx_tok = onnx_tokenizer(tokenizer)
    retrievers: dict[str, Retriever] = {"torch": Retriever.assemble(TorchTowers(model, tokenizer), config, dataset.items, split.fit_events)}
    for method in ("onnx_fp32", "onnx_int8"):
        towers = OnnxTowers(graphs["item"][method], graphs["user"][method], onnx_tok, config.towers, model.dim)
        retrievers[method] = Retriever.assemble(towers, config, dataset.items, split.fit_events)
    rows = []
    per_user: dict[str, dict[str, float]] = {}
    for method, retriever in retrievers.items():
        vectors = retriever.user_vectors([retriever.context(user_id=u).state for u in users])
        top = np.argsort(-(vectors @ retriever.item_vectors.T), axis=1, kind="stable")[:, :10]
        ranked = [[retriever.catalog.item_ids[j] for j in row] for row in top]
        hits, n_rel = hit_matrix(ranked, [truth[u] for u in users], 10)
        metrics = mean_ranking_metrics(hits, n_rel, [10])
        per_user[method] = dict(zip(users, ndcg_from_hits(hits, n_rel, 10).tolist(), strict=True))  # every user has a test item
        # "Unchanged within noise": the paired 95% interval of the per-user NDCG@10 difference with torch.
        paired = paired_difference(per_user[method], per_user["torch"])
        rows.append({
            "dataset": "demo", "method": method, "slice": "ndcg_zero_shot",
            "metrics": {"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"],
                        "ndcg_delta_vs_torch": paired["delta"], "ndcg_delta_ci_low": paired["ci_low"],
                        "ndcg_delta_ci_high": paired["ci_high"]},
            "notes": f"untrained towers, leave-last-out, full ranking over {len(retriever.catalog)} items, first {len(users)} test "
                     "users; ndcg_delta_*: the per-user NDCG@10 difference with torch, mean and paired 95% interval",
        })
        print(f"{method}: ndcg@10 {metrics['ndcg@10']:.4f}, vs torch {paired['delta']:+.4f} "
              f"[95% CI {paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}]", flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
