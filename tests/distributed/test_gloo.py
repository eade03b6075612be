"""Data parallelism on CPU: two gloo ranks train the tiny config and must end with identical, updated weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from lzero_ext.distributed import DistContext

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join(rank: int, port: int) -> DistContext:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return DistContext.from_env(backend="gloo")


def _train_rank(rank: int, port: int, out: str) -> None:
    """One rank: the tiny end-to-end config (seed = rank, own exp dir so what each rank writes can be told apart)."""
    from lzero_ext.entry.hybrid_loop import HybridTrainer
    from lzero_ext.utils.config import deep_merge
    from tests.integration.conftest import TINY
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

    dist = _join(rank, port)
    try:
        cfg, create_cfg = get_priorzero_debug_config(seed=rank, exp_name=str(Path(out) / f"run{rank}"),
                                                     overrides=deep_merge(TINY, {}))
        trainer = HybridTrainer(cfg, create_cfg, dist=dist)
        start = trainer.policy.learn_mode.state_dict()
        initial = {k: v.clone() for k, v in start['world_model']['model'].items()}
        initial_llm = {k: v.clone() for k, v in start['llm']['model'].items()}
        try:
            trainer.run()
        finally:
            trainer.close()
        state = trainer.policy.learn_mode.state_dict()
        torch.save(dict(initial=initial, initial_llm=initial_llm, world_model=state['world_model']['model'], llm=state['llm']['model'],
                        env_steps=trainer.collector.envstep, wm_updates=trainer.wm_updates,
                        llm_updates=trainer.llm_updates), Path(out) / f"rank{rank}.pt")
    finally:
        dist.close()


def _skip_rank(rank: int, port: int, out: str) -> None:
    """Rank 1 reports an invalid step: both ranks must learn it, and valid gradients are averaged."""
    dist = _join(rank, port)
    try:
        params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
        params[0].grad = torch.full((3,), float(rank + 1))  # params[1] has no gradient: counts as zero
        averaged_ok = dist.all_reduce_gradients(params, ok=True)
        mixed_ok = dist.all_reduce_gradients(params, ok=rank == 0)
        module = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(module.weight, float(rank))
        dist.broadcast_state(module)
        torch.save(dict(averaged_ok=averaged_ok, mixed_ok=mixed_ok, grad=params[0].grad, grad1=params[1].grad,
                        weight=module.weight.detach(), any_stop=dist.any_true(rank == 1),
                        env_sum=dist.sum(rank + 1)), Path(out) / f"rank{rank}.pt")
    finally:
        dist.close()


def _spawn(fn, out: Path) -> list[dict]:
    mp.spawn(fn, args=(_free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def test_single_process_context_is_a_no_op():
    dist = DistContext.from_env(env={})
    assert not dist.enabled and dist.is_main and dist.device in ("cpu", "cuda:0")
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    assert dist.all_reduce_gradients([p]) and torch.equal(p.grad, torch.full((2,), 3.0))
    assert not dist.all_reduce_gradients([p], ok=False)
    assert dist.all_true(True) and not dist.any_true(False) and dist.sum(4) == 4.0


def test_gradient_averaging_skip_flag_and_broadcast(tmp_path):
    results = _spawn(_skip_rank, tmp_path)
    for r in results:
        # after the first all-reduce: mean of 1 and 2; the second (rank 1 invalid) averages rank 0's 1.5 with 0
        assert torch.allclose(r['grad'], torch.full((3,), 0.75))
        assert torch.equal(r['grad1'], torch.zeros(2))
        assert r['averaged_ok'] and not r['mixed_ok']
        assert torch.equal(r['weight'], torch.zeros(2, 2))  # rank 0's weights everywhere
        assert r['any_stop'] and r['env_sum'] == 3.0


def test_two_gloo_ranks_train_identical_weights(tmp_path):
    rank0, rank1 = _spawn(_train_rank, tmp_path)
    assert rank0['initial'].keys() == rank1['initial'].keys()
    for name in rank0['initial']:  # broadcast: same start despite different seeds
        assert torch.equal(rank0['initial'][name], rank1['initial'][name]), name
    changed = False
    for name, value in rank0['world_model'].items():
        assert torch.equal(value, rank1['world_model'][name]), f"world model {name} differs across ranks"
        changed |= not torch.equal(value, rank0['initial'][name])
    assert changed, "the world model did not train"
    assert rank0['llm'].keys() == rank1['llm'].keys() and rank0['llm']
    changed = False
    for name, value in rank0['llm'].items():
        assert torch.equal(rank0['initial_llm'][name], rank1['initial_llm'][name]), name
        assert torch.equal(value, rank1['llm'][name]), f"LLM {name} differs across ranks"
        changed |= not torch.equal(value, rank0['initial_llm'][name])
    assert changed, "the LLM did not train"
    assert rank0['wm_updates'] == rank1['wm_updates'] > 0 and rank0['llm_updates'] == rank1['llm_updates'] > 0
    for r in (rank0, rank1):  # env steps are counted per rank (one collector each)
        assert r['env_steps'] == 2 * 8  # max_iter * collector n_steps
    assert list((tmp_path / "run0" / "checkpoints").glob("ckpt_*.pt"))
    assert (tmp_path / "run0" / "log" / "metrics.jsonl").is_file()
    assert not (tmp_path / "run1").exists(), "only rank 0 writes logs and checkpoints"
