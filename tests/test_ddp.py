"""Data-parallel training (recs/distributed.py): 2 processes with gloo on CPU train the towers
(and the cross-encoder) as one process does on the same global batch, and the gather keeps its
gradients."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from recs.distributed import World, gather_with_grad, world
from recs.retrieval.losses import in_batch_softmax_loss

RANKS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _join(rank: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(RANKS),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)


def _setup(model_dir: Path, **train: object):
    """A tiny catalog with repeated items and two-item baskets (accidental hits, also-bought
    masks), the tiny BERT without dropout (a step must be deterministic to be compared)."""
    from recs.encoders import load_backbone, load_tokenizer
    from recs.retrieval.pairs import Catalog, TrainingExamples, UserState
    from recs.retrieval.towers import TowerConfig, TwoTowerModel
    from recs.retrieval.trainer import TrainConfig, ValidationSet

    words = ["tent", "lantern", "coffee", "mug", "phone", "case", "charger", "boots", "stove", "kettle"]
    texts = [f"{words[i % 10]} {words[(3 * i) % 10]} model {i}" for i in range(30)]
    catalog = Catalog([f"I{i}" for i in range(30)], texts, texts, {f"I{i}": i for i in range(30)})
    rng = np.random.default_rng(7)
    states, baskets, pair_state, pair_item = [], [], [], []
    for s in range(24):
        history = rng.choice(30, size=3, replace=False).tolist()
        states.append(UserState(" ; ".join(f"purchase: {texts[h]}" for h in history), history))
        basket = frozenset(int(i) for i in rng.choice(12, size=2, replace=False))  # few items: repeats
        baskets.append(basket)
        for item in sorted(basket):
            pair_state.append(s)
            pair_item.append(item)
    examples = TrainingExamples(states, np.asarray(pair_state), np.asarray(pair_item), baskets)
    backbone = load_backbone(model_dir)
    backbone.config.attention_probs_dropout_prob = backbone.config.hidden_dropout_prob = 0.0
    for module in backbone.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):
            module.dropout_prob = 0.0
    model = TwoTowerModel(backbone, TowerConfig(model=str(model_dir)))
    settings = {"epochs": 2, "batch_size": 16, "max_pairs_per_epoch": 32, "hard_negatives": 3, "warmup_ratio": 0.0,
                "valid_ks": (10,), "train_layers": None, "lr": 1e-3, "head_lr": 3e-3, **train}
    return model, load_tokenizer(model_dir), catalog, examples, ValidationSet([], []), TrainConfig(**settings)


def _train(model_dir: Path, work: Path, resume: bool = False, **train: object):
    from recs.retrieval.checkpoint import model_state
    from recs.retrieval.trainer import train_towers

    torch.manual_seed(0)
    model, tokenizer, catalog, examples, valid, config = _setup(model_dir, **train)
    report = train_towers(model, tokenizer, catalog, examples, valid, config, work, resume=resume, show_progress=False)
    return report, model_state(model)


def _worker(rank: int, port: int, model_dir: str, out: str, runs: list[dict]) -> None:
    from safetensors.torch import save_file

    from recs.distributed import distributed_session

    _join(rank, port)
    with distributed_session():
        for index, run in enumerate(runs):
            report, state = _train(Path(model_dir), Path(out) / "work", **run)
            save_file(state, str(Path(out) / f"run{index}-rank{rank}.safetensors"))
            if rank == 0:
                losses = [h["loss"] for h in report.history if "loss" in h]
                (Path(out) / f"run{index}.json").write_text(json.dumps({"losses": losses, "steps": report.steps}))


def _spawn(model_dir: Path, out: Path, runs: list[dict]) -> None:
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(model_dir), str(out), runs), nprocs=RANKS, join=True)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_two_processes_train_like_one_on_the_global_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """2 ranks x 8 rows = 1 process x 16 rows: losses and weights after 4 steps (2 epochs), with
    logQ, also-bought masks, repeated items and hard negatives; then a resumed third epoch."""
    from safetensors.torch import load_file

    _spawn(tiny_model_dir, tmp_path / "ddp", [{}, {"epochs": 3, "resume": True}])
    single, single_state = _train(tiny_model_dir, tmp_path / "single")
    ddp = json.loads((tmp_path / "ddp" / "run0.json").read_text())
    assert ddp["steps"] == single.steps == 4
    np.testing.assert_allclose(ddp["losses"], [h["loss"] for h in single.history if "loss" in h], atol=1e-5)
    rank0, rank1 = (load_file(tmp_path / "ddp" / f"run0-rank{r}.safetensors") for r in range(RANKS))
    _assert_same_weights(rank0, rank1, atol=0)  # DDP keeps the replicas identical
    initial = _setup(tiny_model_dir)[0].state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in single_state.items()), "training moved no weight"
    _assert_same_weights(rank0, single_state, atol=1e-4)
    # Resume: the third epoch starts from rank 0's checkpoint, as a single process resuming does.
    resumed, resumed_state = _train(tiny_model_dir, tmp_path / "single", resume=True, epochs=3)
    ddp_resumed = json.loads((tmp_path / "ddp" / "run1.json").read_text())
    assert ddp_resumed["steps"] == resumed.steps == 6
    _assert_same_weights(load_file(tmp_path / "ddp" / "run1-rank0.safetensors"), resumed_state, atol=1e-4)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "ddp" / "work" / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def _gather_worker(rank: int, port: int, out: str) -> None:
    from recs.distributed import distributed_session

    _join(rank, port)
    with distributed_session():
        torch.manual_seed(0)
        users = torch.randn(2 * RANKS, 4, requires_grad=True)
        items = torch.randn(2 * RANKS, 4, requires_grad=True)
        local = slice(2 * rank, 2 * rank + 2)
        gathered = gather_with_grad(items[local])
        loss = in_batch_softmax_loss(users[local], gathered, torch.arange(2 * RANKS), 0.5, row_offset=2 * rank)
        loss.backward()
        torch.save({"users": users.grad[local].clone(), "items": items.grad[local].clone(), "gathered": gathered.detach()},
                   Path(out) / f"grad{rank}.pt")


def test_gather_with_grad_gives_each_rank_the_whole_batch_gradient(tmp_path: Path) -> None:
    """Summed over ranks, the per-rank losses' gradients equal RANKS x the gradient of the global
    batch's mean loss, items included (their gradient comes from every rank's rows)."""
    torch.multiprocessing.spawn(_gather_worker, args=(_free_port(), str(tmp_path)), nprocs=RANKS, join=True)
    torch.manual_seed(0)
    users = torch.randn(2 * RANKS, 4, requires_grad=True)
    items = torch.randn(2 * RANKS, 4, requires_grad=True)
    in_batch_softmax_loss(users, items, torch.arange(2 * RANKS), 0.5).backward()
    for rank in range(RANKS):
        got = torch.load(tmp_path / f"grad{rank}.pt")
        local = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(got["gathered"], items.detach())
        # DDP averages over ranks: (1 / RANKS) * sum = the single-process gradient.
        torch.testing.assert_close(got["users"] / RANKS, users.grad[local])
        torch.testing.assert_close(got["items"] / RANKS, items.grad[local])


def test_single_process_world_and_env_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world() == World(0, 1, 0) and world().is_main and not world().distributed
    tensor = torch.ones(2, 3)
    assert gather_with_grad(tensor) is tensor  # no process group: the identity
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    from recs.errors import ConfigError

    with pytest.raises(ConfigError, match="RANK=2"):
        world()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="not an integer"):
        world()


def test_recs_train_nproc_starts_torchrun_with_the_same_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`recs train --nproc 2` runs this very command under torchrun (without --nproc), before
    the writer lock and any data are touched; torchrun's exit code is the command's."""
    import subprocess

    from typer.testing import CliRunner

    from recs.cli import app

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--data", "shop", "--out", str(out), "--epochs", "2", "--lora",
                                      "--nproc", "2", "--lr", "0.001"])
    assert result.exit_code == 3, result.output
    (command,) = calls
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    args = command[6:]
    assert args[:2] == ["recs.cli", "train"] and "--nproc" not in args
    assert "--lora" in args
    args.remove("--lora")
    pairs = dict(zip(args[2::2], args[3::2], strict=True))
    assert pairs["--out"] == str(out) and pairs["--data"] == "shop" and pairs["--epochs"] == "2" and pairs["--lr"] == "0.001"
    assert "--seed" not in pairs  # defaults are left to the config
    assert not out.exists() and not calls[1:]
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume-from", str(tmp_path), "--nproc", "2"])
    assert result.exit_code == 2 and "--resume-from trains in one process" in result.output


@pytest.mark.slow
def test_recs_train_nproc_2_writes_one_artifact(tiny_model_dir: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    """The real thing: torchrun, 2 gloo processes, rank 0 writes a loadable artifact, no leftovers."""
    import subprocess
    import sys

    from recs.retrieval.retriever import Retriever

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "recs.cli", "train", "--data", str(small_demo_dir), "--out", str(out), "--model",
         str(tiny_model_dir), "--epochs", "1", "--max-pairs", "64", "--nproc", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout and done.stdout.count("saved ") == 1
    assert len(Retriever.load(out).item_vectors) > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model.work")) == []


def _fit_cross_encoder(model_dir: Path, work: Path) -> list[float]:
    """A tiny cross-encoder (no dropout) fitted for 2 epochs of 3 steps of 3 queries: 2 ranks
    share each step's queries unevenly (1 and 2)."""
    from recs.encoders import load_tokenizer
    from recs.ranking.cross_encoder import (
        CrossEncoderConfig,
        CrossEncoderModel,
        CrossEncoderReranker,
        RerankQuery,
    )

    torch.manual_seed(0)
    backbone = _setup(model_dir)[0].item_backbone
    rng = np.random.default_rng(3)
    words = ["tent", "lantern", "coffee", "mug", "phone", "case", "charger", "boots"]
    queries = [RerankQuery(f"purchase: {words[q % 8]} ; view: {words[(q * 3) % 8]}",
                           [f"{words[(q + i) % 8]} item {i}" for i in range(4)],
                           np.eye(4, dtype=np.float32)[q % 4], rng.normal(size=4).astype(np.float32))
               for q in range(13)]
    config = CrossEncoderConfig(epochs=2, queries_per_step=3, lr=1e-4, head_lr=1e-2, train_layers=None, patience=5,
                                max_tokens=32)
    reranker = CrossEncoderReranker(CrossEncoderModel(backbone), load_tokenizer(model_dir), config)
    report = reranker.fit(queries, work, show_progress=False)
    return [h["loss"] for h in report.history if h.get("loss") is not None]


def _ce_worker(rank: int, port: int, model_dir: str, out: str) -> None:
    from recs.distributed import distributed_session

    _join(rank, port)
    with distributed_session():
        losses = _fit_cross_encoder(Path(model_dir), Path(out) / "work")
    if rank == 0:
        (Path(out) / "losses.json").write_text(json.dumps(losses))


def test_cross_encoder_trains_on_two_processes_like_on_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch.multiprocessing.spawn(_ce_worker, args=(_free_port(), str(tiny_model_dir), str(tmp_path / "ddp")), nprocs=RANKS, join=True)
    single = _fit_cross_encoder(tiny_model_dir, tmp_path / "single")
    assert len(single) == 2
    np.testing.assert_allclose(json.loads((tmp_path / "ddp" / "losses.json").read_text()), single, atol=1e-5)
    # The last epoch's weights (the checkpoint; the best-epoch rule may keep the zero residual).
    last = "ce_checkpoint/model.safetensors"
    ddp, one = (load_file(tmp_path / run / last) for run in ("ddp/work", "single"))
    # The head's bias shifts a whole list's logits: the listwise softmax ignores it, its gradient
    # is rounding noise, which Adam scales to full steps in both runs alike: not comparable.
    del ddp["head.bias"], one["head.bias"]
    _assert_same_weights(ddp, one, atol=1e-4)


def test_other_commands_are_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import sys

    from recs.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(sys, "argv", ["recs", "train-ranker", "--model", "m", "--data", "d"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "runs in one process" in capsys.readouterr().err
    # The library's one-process steps too: each rank would take the artifact's lock in turn.
    from recs.errors import ConfigError
    from recs.serving.fit import fit_all, train_ranking_step

    with pytest.raises(ConfigError, match="runs in one process"):
        fit_all(None, None, Path("unused"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="runs in one process"):
        train_ranking_step(None, None, None, Path("unused"))  # type: ignore[arg-type]
